"""Baseline deployment policies: random, naive, greedy, Fiddler-style and an LRU expert cache.

Every policy implements :class:`agents.base.Policy`. By default a policy sees
the controller's broadcast view (``sees="view"``); ``oracle=True`` makes it see
the true state, and its name gets the suffix ``-oracle``. Policies are
deterministic given the seed passed to ``reset`` (only :class:`RandomPolicy`
and :class:`LruPolicy` draw random numbers, from a generator seeded there).

* :class:`RandomPolicy` (``random``): a random plan each epoch (random homes,
  bits per popularity group, placement and GPU fill), the first of a few draws
  that the world accepts; ``None`` (keep) when none does. It never asks for an
  infeasible plan.
* :class:`NaivePolicy` (``naive``): the world's built-in plan
  (:meth:`~coel_env.core.world.World.naive_plan`), deployed once.
* :class:`GreedyPolicy` (``greedy``): every server with demand hosts each model
  it can (else the nearest server that can); on each home, bit widths of the
  least important experts (popularity x the demand the home serves) are lowered
  step by step (16 -> 8 -> 4 -> 3 -> 2) until the home's experts fit its GPU or
  the quality floor (with a margin) stops it; the most important experts go to
  the GPU, the rest to host memory; host experts run where the cost model says
  is faster (:func:`host_policy_by_cost`). Re-planned every epoch; ``None`` when
  the plan does not change.
* :class:`FiddlerPolicy` (``fiddler``): Fiddler's intra-device rule. Each model
  stays on its naive homes with the naive GPU budget at 16 bits, but the GPU
  holds the most popular experts, and each layer's host experts run on the host
  CPU or are fetched over PCIe, whichever the cost model says is faster for the
  expected token counts (:func:`host_policy_by_cost`).
* :class:`LruPolicy` (``lru``): mixtral-offloading's LRU expert cache. Each home
  keeps a per-layer GPU cache of the naive GPU budget at 16 bits; the tokens of
  the last epoch are simulated (routed token counts sampled from the popularity
  estimate) and the least recently used experts are evicted; the rest are in
  host memory and fetched over PCIe.

:data:`POLICIES` maps names to constructors; :func:`make_policy` builds one
(``"<name>-oracle"`` builds the oracle variant).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from agents.base import Observation, Policy
from coel_env import cost, quality
from coel_env.catalog import BITS, MoEModel
from coel_env.core.groups import group_of
from coel_env.core.plan import (
    FETCH,
    GB,
    GPU,
    HOST,
    KEEP_RATIOS,
    RUN_ON_CPU,
    ModelPlan,
    Plan,
    check_plan,
)
from coel_env.core.routing import expected_expert_tokens, expert_token_counts
from coel_env.core.workload import AZURE_CONV_FIT, SyntheticWorkload
from coel_env.core.world import World
from coel_env.profiles import DeviceProfile

__all__ = [
    "POLICIES",
    "FiddlerPolicy",
    "GreedyPolicy",
    "LruPolicy",
    "NaivePolicy",
    "RandomPolicy",
    "host_policy_by_cost",
    "make_policy",
]

#: Bit widths from widest to narrowest: the steps greedy lowering takes.
_LADDER = tuple(sorted(BITS, reverse=True))
#: A guess of one decode step's latency, to turn demand into a decode batch (Little's law).
_TPOT_GUESS_S = 0.05


# ------------------------------------------------------------------------------- helpers


def _dense_gb(world: World, name: str, spec: MoEModel) -> float:
    """GPU memory a home needs for the model's dense part and KV reserve [GB]."""
    return spec.non_expert_bytes(16) / GB + world.kv_reserve_gb[name]


def _expert_gb(spec: MoEModel) -> dict[int, float]:
    return {b: spec.expert_bytes(b) / GB for b in BITS}


def _sizes(spec: MoEModel, bits: np.ndarray) -> np.ndarray:
    """Size of each expert at its bit width [GB], the shape of ``bits``."""
    table = _expert_gb(spec)
    out = np.zeros(bits.shape)
    for b in BITS:
        out[bits == b] = table[b]
    return out


def _shared(spec: MoEModel) -> dict:
    """The shared-expert arguments of :func:`coel_env.quality.quantization_loss`, as the
    world uses them (shared experts stay at 16 bits)."""
    return {
        "shared_bits": 16 if spec.n_shared_experts else None,
        "shared_share": spec.n_shared_experts / spec.top_k,
    }


def model_quality_loss(spec: MoEModel, bits: np.ndarray, popularity: np.ndarray) -> float:
    """Quantization loss of ``bits`` under ``popularity``, as the world computes it."""
    return quality.quantization_loss(bits, popularity, **_shared(spec))


def _normalised(pop: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(pop, float), 0.0, None)
    tot = p.sum(axis=1, keepdims=True)
    return np.where(tot > 0, p / np.where(tot > 0, tot, 1.0), 1.0 / p.shape[1])


def _mean_tokens(world: World) -> tuple[float, float]:
    """Mean prompt and output tokens of a request (the workload's log-normal fits)."""
    wl = world.workload
    if isinstance(wl, SyntheticWorkload):
        fit_in, fit_out = wl.config.input_tokens, wl.config.output_tokens
    else:
        fit_in, fit_out = AZURE_CONV_FIT.input_tokens, AZURE_CONV_FIT.output_tokens

    def mean(t) -> float:
        return float(min(math.exp(t.mu_log + t.sigma_log**2 / 2), t.max_tokens))

    return mean(fit_in), mean(fit_out)


def _same_plan(a: Plan, b: Plan) -> bool:
    return set(a.models) == set(b.models) and all(a.models[k] == b.models[k] for k in a.models)


def _present(obs: Observation) -> np.ndarray:
    """Servers a policy may use: believed present, or never heard of yet but part of the
    plan in force (at the start the controller has heard from nobody but itself)."""
    used = np.zeros(obs.up.shape, bool)
    for mp in obs.plan.models.values():
        used[list(mp.home)] = True
        used |= (mp.location != 0).any(axis=(0, 1))
    return obs.up | (~np.isfinite(obs.age_s) & used)


def _live_naive(naive: Plan, models, up: np.ndarray):
    """``(index, name, naive model plan, its homes in ``up``)`` for every model the naive
    plan deploys on at least one server in ``up``."""
    for mi, name in enumerate(models):
        base = naive.models.get(name)
        if base is None:
            continue
        homes = [h for h in base.home if up[h]]
        if homes:
            yield mi, name, base, homes


def _rank_order(values: np.ndarray) -> np.ndarray:
    """Flat indices of ``values`` from the largest to the smallest (stable)."""
    return np.argsort(-values, axis=None, kind="stable")


def host_policy_by_cost(
    spec: MoEModel,
    gpu: DeviceProfile | str,
    cpu: DeviceProfile | str,
    popularity: np.ndarray,
    resident: np.ndarray,
    token_mix: Sequence[tuple[float, float]],
    *,
    bits: np.ndarray | None = None,
    mode: str = "eager",
) -> np.ndarray:
    """Per layer, run host experts on the host CPU or fetch them to the GPU (Fiddler's rule).

    For each pass of ``n`` tokens in ``token_mix`` (with its weight: how many such
    passes), each non-resident expert gets its expected token count; it is active
    with probability ``1 - (1 - t/n)^n`` and then processes ``t / P(active)``
    tokens (as the world costs it). A layer fetches when the weighted expected time
    of its non-resident experts is smaller with ``fetch_latency_ms`` + the GPU's
    ``expert_latency_ms`` than with the host CPU's ``expert_latency_ms``.

    Args:
        spec: the model.
        gpu: the home's GPU.
        cpu: the home's host CPU.
        popularity: routing popularity [L, E] (rows normalised here).
        resident: experts in GPU memory [L, E] (bool); the others are in host memory.
        token_mix: ``(tokens per pass, weight)`` pairs, e.g. a prefill and decode steps.
        bits: expert bit widths [L, E] (16 when None).
        mode: the serving mode of the kernels (``"eager"`` or ``"cudagraph"``).

    Returns:
        ``int8 [L]`` of :data:`~coel_env.core.plan.RUN_ON_CPU` / :data:`FETCH`; layers
        without host experts get ``RUN_ON_CPU``.
    """
    pop = _normalised(popularity)
    L, E = pop.shape
    bits = np.full((L, E), 16, np.int8) if bits is None else np.asarray(bits)
    host = ~np.asarray(resident, bool)
    layer = np.broadcast_to(np.arange(L)[:, None], (L, E))
    t_cpu = np.zeros(L)
    t_fetch = np.zeros(L)
    for n_tokens, weight in token_mix:
        n = max(int(round(n_tokens)), 1)
        t = expected_expert_tokens(pop, n, spec.top_k)
        pa = 1.0 - (1.0 - np.clip(t / n, 0.0, 1.0)) ** n
        ta = np.where(pa > 0, t / np.maximum(pa, 1e-12), 0.0)
        for b in np.unique(bits[host]):
            sel = host & (bits == b)
            on_cpu = cost.expert_latency_ms(spec, cpu, ta[sel], bits=int(b), mode=mode)
            on_gpu = cost.expert_latency_ms(spec, gpu, ta[sel], bits=int(b), mode=mode)
            fetch = float(cost.fetch_latency_ms(spec, gpu, 1, bits=int(b)))
            np.add.at(t_cpu, layer[sel], weight * pa[sel] * on_cpu)
            np.add.at(t_fetch, layer[sel], weight * pa[sel] * (on_gpu + fetch))
    return np.where(host.any(axis=1) & (t_fetch < t_cpu), FETCH, RUN_ON_CPU).astype(np.int8)


class _Baseline:
    """Name, what the policy sees, and a generator seeded in :meth:`reset`."""

    base_name = "baseline"

    def __init__(self, oracle: bool = False) -> None:
        self.sees = "oracle" if oracle else "view"
        self.name = self.base_name + ("-oracle" if oracle else "")
        self._rng = np.random.default_rng(0)

    def reset(self, world: World, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, world: World, obs: Observation) -> Plan | None:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sees={self.sees!r})"

    def _token_mix(self, world: World, rate_per_s: float) -> list[tuple[float, float]]:
        """Passes of one request at a home serving ``rate_per_s``: one prefill of the mean
        prompt, and the mean output's decode steps at the Little's-law batch."""
        n_in, n_out = _mean_tokens(world)
        batch = max(1.0, rate_per_s * n_out * _TPOT_GUESS_S)
        return [(n_in, 1.0), (batch, n_out)]


# -------------------------------------------------------------------------------- random


class RandomPolicy(_Baseline):
    """A random feasible plan every epoch (masked-random: never an infeasible one).

    Per model: 1..n random homes among the servers believed present, random bits
    per popularity group, each group on a random home (or, with ``spread``, a
    random present server), a random token keep ratio and host policy; on each
    server the GPU holds a random share of its free memory's worth of experts in
    random order, the rest host memory. The first draw that ``world.check``
    accepts is returned; ``None`` (keep the plan in force) after ``tries`` draws.
    """

    base_name = "random"

    def __init__(self, oracle: bool = False, *, tries: int = 10, n_groups: int = 4) -> None:
        super().__init__(oracle)
        self.tries = tries
        self.n_groups = n_groups

    def act(self, world: World, obs: Observation) -> Plan | None:
        for _ in range(self.tries):
            plan = self._sample(world, obs)
            if plan is not None and world.check(plan).feasible:
                return plan
        return None

    def _sample(self, world: World, obs: Observation) -> Plan | None:
        rng = self._rng
        present = np.flatnonzero(_present(obs))
        if not present.size:
            return None
        gpu_free = world.gpu_capacity_gb.astype(float).copy()
        out = {}
        for name, spec in zip(world.models, world.specs, strict=True):
            L, E = spec.n_moe_layers, spec.n_experts
            k = int(rng.integers(1, present.size + 1))
            homes = tuple(sorted(int(h) for h in rng.choice(present, size=k, replace=False)))
            groups = group_of(obs.popularity[name], self.n_groups)
            bits = np.asarray(BITS)[rng.integers(0, len(BITS), self.n_groups)][groups]
            spread = rng.random() < 0.5
            pool = present if spread else np.asarray(homes)
            target = rng.choice(pool, size=self.n_groups)
            loc = np.zeros((L, E, world.n), np.int8)
            for g in range(self.n_groups):
                loc[groups == g, target[g]] = HOST
            for h in homes:
                gpu_free[h] -= _dense_gb(world, name, spec)
            sizes = _sizes(spec, bits)
            for s in np.flatnonzero((loc != 0).any(axis=(0, 1))):
                held = np.flatnonzero(loc[:, :, s].ravel() != 0)
                order = rng.permutation(held)
                budget = max(gpu_free[s], 0.0) * rng.random()
                cum = np.cumsum(sizes.ravel()[order])
                on_gpu = order[cum <= budget]
                if world.unified[s]:
                    on_gpu = held
                flat = loc[:, :, s].ravel()
                flat[on_gpu] = GPU
                loc[:, :, s] = flat.reshape(L, E)
                gpu_free[s] -= float(sizes.ravel()[on_gpu].sum())
            policy = np.full(L, rng.integers(0, 2), np.int8)
            keep = KEEP_RATIOS[int(rng.integers(0, len(KEEP_RATIOS)))]
            out[name] = ModelPlan(name, loc, bits.astype(np.int8), homes, policy, keep)
        return Plan(out)


# --------------------------------------------------------------------------------- naive


class NaivePolicy(_Baseline):
    """The world's built-in plan (:meth:`World.naive_plan`), deployed once at the start."""

    base_name = "naive"

    def reset(self, world: World, seed: int) -> None:
        super().reset(world, seed)
        self._done = False

    def act(self, world: World, obs: Observation) -> Plan | None:
        if self._done:
            return None
        self._done = True
        plan = world.naive_plan()
        return None if _same_plan(plan, obs.plan) else plan


# -------------------------------------------------------------------------------- greedy


class GreedyPolicy(_Baseline):
    """Popularity-first, load-aware greedy placement with greedy bit lowering.

    Args:
        oracle: see the true state instead of the broadcast view.
        quality_margin: share of the quality floor the quantization loss may use
            (the popularity estimate is a mean over servers; each home's differs).
        demand_prior_epochs: the demand estimate per (server, model) starts at the
            scenario's mean rate and counts as this many epochs of observations; each
            fresh observation then gets weight ``1 / (prior + epochs seen)``.
        demand_smoothing: the smallest such weight (an exponential average from there).
    """

    base_name = "greedy"

    def __init__(
        self,
        oracle: bool = False,
        *,
        quality_margin: float = 0.8,
        demand_prior_epochs: float = 20.0,
        demand_smoothing: float = 0.02,
    ) -> None:
        super().__init__(oracle)
        if not 0 < quality_margin <= 1:
            raise ValueError(f"quality_margin={quality_margin!r} is not allowed; must be in (0, 1]")
        if not 0 < demand_smoothing <= 1:
            raise ValueError(
                f"demand_smoothing={demand_smoothing!r} is not allowed; must be in (0, 1]"
            )
        self.quality_margin = quality_margin
        if demand_prior_epochs < 0:
            raise ValueError(
                f"demand_prior_epochs={demand_prior_epochs!r} is not allowed; must be >= 0"
            )
        self.demand_smoothing = demand_smoothing
        self.demand_prior_epochs = demand_prior_epochs

    def reset(self, world: World, seed: int) -> None:
        super().reset(world, seed)
        prior = world.scenario.workload.rate_per_s / max(len(world.models), 1)
        self._demand = np.where(world.is_cloud, 0.0, prior)[:, None] * np.ones(
            (world.n, len(world.models))
        )
        self._weights: dict[tuple[int, int], float] = {}
        self._seen = np.zeros(world.n)
        self._order: list[int] = []

    def act(self, world: World, obs: Observation) -> Plan | None:
        fresh = obs.up & np.isfinite(obs.age_s)
        self._seen[fresh] += 1
        a = np.maximum(1.0 / (self.demand_prior_epochs + self._seen), self.demand_smoothing)
        a = np.where(fresh, a, 0.0)[:, None]
        self._demand = (1 - a) * self._demand + a * obs.demand_per_s
        plan = self.plan(world, obs)
        if plan is None or _same_plan(plan, obs.plan):
            return None
        return plan

    # ---------------------------------------------------------------- planning

    def plan(self, world: World, obs: Observation) -> Plan | None:
        """The greedy plan for ``obs`` (None when no model can be deployed)."""
        self._up = _present(obs)
        homes = self._homes(world, obs)
        if not homes:
            return None
        weight = self._home_weights(world, obs, homes)
        bits = self._lower_bits(world, obs, homes, weight)
        plan = self._place(world, obs, homes, weight, bits)
        rep = check_plan(
            plan,
            world.gpu_capacity_gb,
            world.host_capacity_gb,
            up=self._up,
            unified=world.unified,
            kv_reserve_gb=world.kv_reserve_gb,
        )
        if not rep.feasible:  # by construction this does not happen; keep the plan in force
            return None
        return plan

    def _budget(self, world: World, spec: MoEModel) -> float:
        return self.quality_margin * world.scenario.workload.quality_floor

    def _hosting_bits(self, world: World, spec: MoEModel) -> int:
        """The bit width whose size decides whether a server can host the model: 8, or the
        narrowest uniform width within the quality budget if that is wider."""
        ok = [
            b
            for b in _LADDER
            if model_quality_loss(spec, np.full((1, 1), b), None) <= self._budget(world, spec)
        ]
        return max(8, min(ok)) if ok else 16

    def _model_order(self, total: np.ndarray) -> list[int]:
        """Models by demand, most first (they get memory first); two neighbours swap only
        when the later one's demand exceeds the earlier one's by half, so that noise in the
        demand estimate does not flip which model gets the memory."""
        order = list(self._order) if self._order else [int(i) for i in np.argsort(-total)]
        swapped = True
        while swapped:
            swapped = False
            for k in range(len(order) - 1):
                a, b = order[k], order[k + 1]
                if total[b] > 1.5 * total[a]:
                    order[k], order[k + 1] = b, a
                    swapped = True
        self._order = order
        return order

    def _homes(self, world: World, obs: Observation) -> dict[int, list[int]]:
        """Homes per model index: each server with demand that can host the model, else
        the nearest server that can (models in order of demand, sharing memory)."""
        n = world.n
        up = self._up
        gpu_free = np.where(up, world.gpu_capacity_gb, 0.0).astype(float)
        total_free = np.where(
            world.unified, gpu_free, gpu_free + np.where(up, world.host_capacity_gb, 0.0)
        )
        demand = self._demand * up[:, None]
        lat = np.where(np.isfinite(obs.latency_ms), obs.latency_ms, np.inf)
        homes: dict[int, list[int]] = {}
        for i in self._model_order(demand.sum(axis=0)):
            name, spec = world.models[i], world.specs[i]
            dense = _dense_gb(world, name, spec)
            experts = (
                spec.n_moe_layers
                * spec.n_experts
                * _expert_gb(spec)[self._hosting_bits(world, spec)]
            )
            can = up & (gpu_free >= dense) & (total_free >= dense + experts)
            edge = up & ~world.is_cloud
            wants = [int(s) for s in np.argsort(-demand[:, i], kind="stable") if demand[s, i] > 0]
            if not wants:
                wants = [int(s) for s in np.flatnonzero(edge if edge.any() else up)]
            chosen = [s for s in wants if can[s]]
            for s in wants:
                if s in chosen:
                    continue
                by_dist = sorted(
                    (c for c in range(n) if up[c] and np.isfinite(lat[s, c])),
                    key=lambda c, s=s: (lat[s, c], obs.background[c], c),
                )
                for c in by_dist:
                    if c in chosen:
                        break
                    if can[c]:
                        chosen.append(c)
                        break
            for s in chosen:
                gpu_free[s] -= dense
                total_free[s] -= dense + experts
            if chosen:
                homes[int(i)] = sorted(chosen)
        return homes

    def _home_weights(self, world: World, obs: Observation, homes) -> dict[int, dict[int, float]]:
        """Request rate each home of each model serves (its catchment), as a power of two
        that changes only when the rate moves a factor 2 away from it, so that noise in the
        demand estimate does not reshuffle experts (and re-download raised bits)."""
        lat = np.where(np.isfinite(obs.latency_ms), obs.latency_ms, np.inf)
        out = {}
        for i, hs in homes.items():
            rate = dict.fromkeys(hs, 0.0)
            for s in range(world.n):
                if not self._up[s] or self._demand[s, i] <= 0:
                    continue
                h = min(hs, key=lambda h: (lat[s, h], h))
                if np.isfinite(lat[s, h]):
                    rate[h] += float(self._demand[s, i])
            out[i] = {}
            for h, r in rate.items():
                r = max(r, 1e-4)
                prev = self._weights.get((i, h))
                if prev is None or abs(math.log2(r / prev)) >= 1.0:  # hysteresis: a factor 2
                    prev = self._weights[(i, h)] = 2.0 ** round(math.log2(r))
                out[i][h] = prev
        return out

    def _lower_bits(self, world: World, obs: Observation, homes, weight) -> dict[int, np.ndarray]:
        """Bits per model: on each home (tightest GPU first), lower the least important
        experts one step at a time until the home's experts fit its GPU or the quality
        budget is spent. Replicas share bits, so a home starts from the bits lowered so far."""
        specs, names = world.specs, world.models
        bits = {i: np.full((s.n_moe_layers, s.n_experts), 16, np.int8) for i, s in
                ((i, specs[i]) for i in homes)}  # fmt: skip
        pop = {i: _normalised(obs.popularity[names[i]]) for i in homes}
        used = dict.fromkeys(homes, 0.0)
        budget = {i: self._budget(world, specs[i]) for i in homes}
        servers = sorted({h for hs in homes.values() for h in hs}, key=lambda s: (
            world.gpu_capacity_gb[s], s))  # fmt: skip
        for s in servers:
            ms = [i for i in homes if s in homes[i]]
            room = world.gpu_capacity_gb[s] - sum(_dense_gb(world, names[i], specs[i]) for i in ms)
            for b_old, b_new in zip(_LADDER[:-1], _LADDER[1:], strict=True):
                excess = sum(float(_sizes(specs[i], bits[i]).sum()) for i in ms) - room
                if excess <= 1e-9:
                    break
                cand_imp, cand_model, cand_idx, cand_save = [], [], [], []
                lossq = quality.bits_loss(np.array([b_old, b_new]))
                for i in ms:
                    spec = specs[i]
                    ws = quality.SHARED_SENSITIVITY * _shared(spec)["shared_share"]
                    ws = ws if spec.n_shared_experts else 0.0
                    idx = np.flatnonzero(bits[i].ravel() == b_old)
                    if not idx.size:
                        continue
                    p = pop[i].ravel()[idx]
                    order = np.argsort(p, kind="stable")
                    idx, p = idx[order], p[order]
                    delta = p * (lossq[1] - lossq[0]) / (spec.n_moe_layers * (1.0 + ws))
                    ok = np.cumsum(delta) <= budget[i] - used[i] + 1e-12
                    idx, p = idx[ok], p[ok]
                    cand_imp.append(weight[i][s] * spec.top_k * p)
                    cand_model.append(np.full(idx.size, i))
                    cand_idx.append(idx)
                    eg = _expert_gb(spec)
                    cand_save.append(np.full(idx.size, eg[b_old] - eg[b_new]))
                if not cand_idx:
                    continue
                imp = np.concatenate(cand_imp)
                order = np.argsort(imp, kind="stable")
                save = np.concatenate(cand_save)[order]
                take = min(int(np.searchsorted(np.cumsum(save), excess - 1e-12)) + 1, order.size)
                chosen = order[:take]
                mod = np.concatenate(cand_model)[chosen]
                idx = np.concatenate(cand_idx)[chosen]
                for i in ms:
                    sel = idx[mod == i]
                    flat = bits[i].ravel()
                    flat[sel] = b_new
                    bits[i] = flat.reshape(bits[i].shape)
                    used[i] = model_quality_loss(specs[i], bits[i], pop[i])
        return bits

    def _place(self, world: World, obs: Observation, homes, weight, bits) -> Plan:
        """Each home holds all experts of its models: the most important on the GPU while
        they fit, the rest in host memory; the host policy from the cost model."""
        specs, names = world.specs, world.models
        loc = {
            i: np.zeros((specs[i].n_moe_layers, specs[i].n_experts, world.n), np.int8)
            for i in homes
        }
        for s in sorted({h for hs in homes.values() for h in hs}):
            ms = [i for i in homes if s in homes[i]]
            room = world.gpu_capacity_gb[s] - sum(_dense_gb(world, names[i], specs[i]) for i in ms)
            imp = np.concatenate(
                [
                    weight[i][s] * specs[i].top_k * _normalised(obs.popularity[names[i]]).ravel()
                    for i in ms
                ]
            )
            size = np.concatenate([_sizes(specs[i], bits[i]).ravel() for i in ms])
            owner = np.concatenate([np.full(bits[i].size, i) for i in ms])
            offset = np.concatenate([np.arange(bits[i].size) for i in ms])
            order = np.argsort(-imp, kind="stable")
            on_gpu = np.zeros(imp.size, bool)
            on_gpu[order] = np.cumsum(size[order]) <= room + 1e-9
            if world.unified[s]:
                on_gpu[:] = True
            for i in ms:
                sel = owner == i
                flat = np.where(on_gpu[sel], GPU, HOST).astype(np.int8)
                loc[i][:, :, s] = flat[np.argsort(offset[sel])].reshape(bits[i].shape)
        out = {}
        mode = world.serving.mode  # the cost model's (a fused runtime: cudagraph kernels)
        for i, hs in homes.items():
            name, spec = names[i], specs[i]
            n_host = [(loc[i][:, :, h] == HOST).sum() for h in hs]
            h = hs[int(np.argmax(n_host))]
            policy = host_policy_by_cost(
                spec, world.gpus[h], world.cpus[h], obs.popularity[name],
                loc[i][:, :, h] == GPU, self._token_mix(world, weight[i][h]),
                bits=bits[i], mode=mode,
            )  # fmt: skip
            out[name] = ModelPlan(name, loc[i], bits[i], tuple(hs), policy)
        return Plan(out)


# ------------------------------------------------------------------------------- fiddler


class FiddlerPolicy(_Baseline):
    """Fiddler's intra-device rule on the naive homes: popular experts GPU-resident at 16
    bits (the naive GPU budget), per-layer CPU execution or PCIe fetch by the cost model."""

    base_name = "fiddler"

    def reset(self, world: World, seed: int) -> None:
        super().reset(world, seed)
        self._naive = world.naive_plan()

    def act(self, world: World, obs: Observation) -> Plan | None:
        out = {}
        mode = world.serving.mode  # the cost model's (a fused runtime: cudagraph kernels)
        up = _present(obs)
        for mi, name, base, homes in _live_naive(self._naive, world.models, up):
            spec = base.spec
            pop = obs.popularity[name]
            order = _rank_order(_normalised(pop))
            loc = np.zeros_like(base.location)
            for h in homes:
                flat = np.full(pop.size, HOST, np.int8)
                flat[order[: int((base.location[:, :, h] == GPU).sum())]] = GPU
                loc[:, :, h] = flat.reshape(pop.shape)
            n_host = [(loc[:, :, h] == HOST).sum() for h in homes]
            h = homes[int(np.argmax(n_host))]
            rate = float(obs.demand_per_s[up, mi].sum()) / len(homes)
            policy = host_policy_by_cost(
                spec, world.gpus[h], world.cpus[h], pop, loc[:, :, h] == GPU,
                self._token_mix(world, rate), mode=mode,
            )  # fmt: skip
            out[name] = ModelPlan(name, loc, base.bits, tuple(homes), policy)
        plan = Plan(out)
        return None if _same_plan(plan, obs.plan) else plan


# ----------------------------------------------------------------------------------- lru


class LruPolicy(_Baseline):
    """mixtral-offloading's LRU expert cache on the naive homes.

    Each (model, home) has a GPU cache of the naive plan's GPU budget at 16 bits,
    split evenly over the layers. Each epoch the last epoch's decode steps at that
    home are simulated (at most ``max_steps`` of them, the most recent): each
    step's routed token counts are sampled from the popularity estimate
    (:func:`coel_env.core.routing.expert_token_counts`) with the policy's
    generator, the experts a step touches become the most recently used, and each
    layer's cache keeps its most recently used experts. The other experts sit in
    host memory and are fetched over PCIe (``FETCH``).
    """

    base_name = "lru"

    def __init__(self, oracle: bool = False, *, max_steps: int = 32) -> None:
        super().__init__(oracle)
        if max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r} is not allowed; must be >= 1")
        self.max_steps = max_steps

    def reset(self, world: World, seed: int) -> None:
        super().reset(world, seed)
        self._naive = world.naive_plan()
        self._clock = 0
        self._last_used: dict[tuple[str, int], np.ndarray] = {}
        self.capacity: dict[tuple[str, int], np.ndarray] = {}
        for name, mp in self._naive.models.items():
            L, E = mp.spec.n_moe_layers, mp.spec.n_experts
            for h in mp.home:
                n_gpu = int((mp.location[:, :, h] == GPU).sum())
                cap = np.full(L, n_gpu // L)
                cap[: n_gpu % L] += 1
                cap = np.minimum(cap, E)
                self.capacity[(name, h)] = cap
                last = np.full((L, E), -np.inf)
                for layer in range(L):  # cold cache: the first experts of each layer
                    last[layer, : cap[layer]] = -1.0
                self._last_used[(name, h)] = last

    def cache(self, name: str, home: int) -> np.ndarray:
        """The GPU cache of ``name`` at ``home`` [L, E] (bool)."""
        last = self._last_used[(name, home)]
        cap = self.capacity[(name, home)]
        L, E = last.shape
        out = np.zeros((L, E), bool)
        for layer in range(L):
            order = np.lexsort((np.arange(E), -last[layer]))  # most recent first, then index
            out[layer, order[: cap[layer]]] = True
        return out

    def act(self, world: World, obs: Observation) -> Plan | None:
        n_in, n_out = _mean_tokens(world)
        epoch_s = world.scenario.epoch_s
        lat = np.where(np.isfinite(obs.latency_ms), obs.latency_ms, np.inf)
        out = {}
        up = _present(obs)
        for mi, name, base, homes in _live_naive(self._naive, world.models, up):
            spec = base.spec
            pop = _normalised(obs.popularity[name])
            rate = dict.fromkeys(homes, 0.0)
            for s in np.flatnonzero(up):
                h = min(homes, key=lambda h: (lat[s, h], h))
                rate[h] += float(obs.demand_per_s[s, mi])
            loc = np.zeros_like(base.location)
            for h in homes:
                requests = rate[h] * epoch_s
                if requests > 0:
                    batch = max(1, int(round(rate[h] * n_out * _TPOT_GUESS_S)))
                    steps = min(self.max_steps, max(1, int(round(requests * n_out / batch))))
                    self._touch(name, h, spec, pop, batch, steps)
                cached = self.cache(name, h)
                loc[:, :, h] = np.where(cached | world.unified[h], GPU, HOST)
            policy = np.full(spec.n_moe_layers, FETCH, np.int8)
            out[name] = ModelPlan(name, loc, base.bits, tuple(homes), policy)
        plan = Plan(out)
        return None if _same_plan(plan, obs.plan) else plan

    def _touch(self, name: str, home: int, spec: MoEModel, pop, batch: int, steps: int) -> None:
        last = self._last_used[(name, home)]
        for _ in range(steps):
            counts = expert_token_counts(pop, batch, spec.top_k, self._rng)
            last[counts > 0] = self._clock
            self._clock += 1


# ------------------------------------------------------------------------------ registry

#: Baseline constructors by name (each takes ``oracle=`` and its own keyword arguments).
POLICIES: dict[str, Callable[..., Policy]] = {
    "random": RandomPolicy,
    "naive": NaivePolicy,
    "greedy": GreedyPolicy,
    "fiddler": FiddlerPolicy,
    "lru": LruPolicy,
}


def make_policy(name: str, **kwargs) -> Policy:
    """Build the policy registered as ``name``; ``"<name>-oracle"`` builds its oracle
    variant (``oracle=True``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name in POLICIES:
        return POLICIES[name](**kwargs)
    if name.endswith("-oracle") and name[: -len("-oracle")] in POLICIES:
        return POLICIES[name[: -len("-oracle")]](oracle=True, **kwargs)
    known = sorted(POLICIES) + sorted(f"{k}-oracle" for k in POLICIES)
    raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(known)}")
