"""Multi-agent CoEL: every edge server is an agent (a PettingZoo ``ParallelEnv``).

In CoEL each edge server decides from what it perceives of its neighbours.
:func:`parallel_env` offers that over the same core (:class:`~coel_env.core.world.World`)
as the single-agent ``CoEL-v0``: the same scenarios, traces, topologies,
device profiles and reward terms. The env's agents, spaces, rewards, starting
state, episode end and arguments are documented the Gymnasium way in
:class:`CoELParallelEnv`.

What each agent knows of the network (:func:`agent_views`): with
``perception.sampling: epoch_end``, the paths in force and the shared popularity
estimate (:func:`popularity_estimate`), the same for all; with ``sub_epoch`` (the
default), its own :meth:`World.view_network
<coel_env.core.world.World.view_network>`: the path latency and the popularity per
model as broadcast to it (stale, lossy), read once per agent per step. Either way its
view of the servers' status is its own :meth:`World.view`. Its observation (latency row,
order of the servers, popularity shares, its own part) and the decoding of its action
(nearest servers, groups, GPU fill order, the holders its part uses) both come from it;
the world (serving, memory, presence, the demand admission is ordered by) stays true.

Combining the actions into one plan (:func:`combine`, deterministic):
    every present agent that asks to be a home of a model proposes a *part*:
    its home plus where each expert it uses lives. A home's current part is,
    per expert, its nearest present holder by the path latency the agent knows
    (itself when it holds it): with the paths in force, exactly the replica that
    serves its requests in the world. Proposals are admitted one
    by one, the servers with the highest demand for the model in the last
    epoch first (the demand each server broadcasts; ties: lower model index,
    then lower server index), against the true free GPU and host memory left
    by the parts admitted before (a redeployed part fills each server's GPU in
    the order of the popularity the agent knows, then its host memory; unified
    memory counts both). A
    part that does not fit, or uses an absent server (a stale view), is
    refused: that agent is not a home of the model this epoch. Bit widths,
    keep ratio and host policy are one per model (all replicas alike): the
    *lead*, the model's first admitted part, sets them; later parts add homes
    and replicas. A model no part was admitted for is not deployed (its
    requests are dropped). The combined plan is checked with
    :meth:`World.check`; if it were still infeasible (a guard: admission
    follows the same memory rules), the plan in force stays and the team's
    ``invalid_reward`` is -1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from coel_env.catalog import BITS
from coel_env.core.groups import group_of
from coel_env.core.plan import ABSENT, GB, GPU, HOST, KEEP_RATIOS, ModelPlan, Plan, reuse_unchanged
from coel_env.core.rewards import report_info, reward_terms, total_reward
from coel_env.core.world import STATUS_FIELDS, World
from coel_env.envs.actions import N_NEAREST
from coel_env.envs.config import check_config, check_render_mode
from coel_env.envs.config import resolve_config as merge_config
from coel_env.envs.observations import AGE_PERIODS, DEMAND_SCALE

#: Local reward terms; each has a config key of the same name holding its weight.
LOCAL_TERMS = ("rejected_reward", "local_drop_reward")
#: Path latency that fills the latency feature [ms] (a metro edge path is ~1-20 ms).
LATENCY_REF_MS = 100.0
#: Update choices of an agent, per model.
KEEP, ADJUST, REDEPLOY, WITHDRAW = 0, 1, 2, 3
#: The env's versions (its Version History says how they differ) and the current one.
VERSIONS = (0, 1)
CURRENT_VERSION = 1
UPDATES = ("keep", "adjust", "redeploy", "withdraw")


def default_config() -> dict[str, Any]:
    """Every configuration key with its default and unit (``CoEL-v0``'s, less
    ``controller``: every agent observes its own view)."""
    from coel_env.envs import CoELEnv

    cfg = CoELEnv.default_config()
    for key in ("action", "observation", "controller", "max_steps"):  # the env's own
        cfg.pop(key)
    cfg["max_cycles"] = 200  # epochs per episode (truncation) [epochs]
    cfg["rejected_reward"] = 0.2  # weight of -share of the agent's refused home proposals
    cfg["local_drop_reward"] = 0.2  # weight of -the dropped share the agent broadcasts
    return cfg


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` over :func:`default_config`, validated (unknown keys raise)."""
    cfg = merge_config(default_config(), ("config", config))
    check_config(cfg)
    return cfg


def build_world(cfg: Mapping[str, Any]) -> World:
    """The world of a (resolved) config: scenario, overrides, trace, topology, profiles
    (built as the single-agent envs build theirs)."""
    from coel_env.envs.coel import build_world as build

    return build(dict(cfg))


def edge_servers(world: World) -> tuple[int, ...]:
    """The servers that are agents: every server but a cloud node."""
    return tuple(int(s) for s in np.flatnonzero(~np.asarray(world.is_cloud, bool)))


def agent_name(server: int) -> str:
    return f"server_{server}"


def popularity_estimate(world: World) -> dict[str, np.ndarray]:
    """The shared popularity estimate per model [L, E] (the one the single-agent envs
    observe: :meth:`coel_env.core.world.World.popularity_estimate`)."""
    return world.popularity_estimate()


def agent_views(
    world: World, servers: tuple[int, ...] | None = None
) -> dict[int, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] | None:
    """What each agent knows of the network under ``perception.sampling: sub_epoch``:
    per agent server (default: :func:`edge_servers`), its
    :meth:`World.view_network <coel_env.core.world.World.view_network>` (path latency,
    path bandwidth and popularity per model as broadcast to it). None under any other
    sampling: every agent then knows the paths in force and :func:`popularity_estimate`."""
    if world.scenario.perception.sampling != "sub_epoch":
        return None
    return {s: world.view_network(s) for s in (edge_servers(world) if servers is None else servers)}


def nearest(world: World, server: int, latency_ms: np.ndarray | None = None) -> np.ndarray:
    """All servers by path latency from ``server`` (itself first; ties by index), by
    ``latency_ms`` [n, n] (default: the paths in force)."""
    if latency_ms is None:
        latency_ms = world.paths.latency_ms
    lat = np.asarray(latency_ms[server], float).copy()
    lat[server] = -1.0
    return np.argsort(lat, kind="stable")


def home_parts(
    mp: ModelPlan, latency_ms: np.ndarray, up: np.ndarray, homes: tuple[int, ...] | None = None
) -> dict[int, np.ndarray]:
    """Each home's part of ``mp`` (or of the ``homes`` given): per expert, the server
    whose replica serves that home (itself when it holds one, else the nearest present
    holder by ``latency_ms``; -1: none), [L, E]."""
    held = (mp.location != ABSENT) & np.asarray(up, bool)[None, None, :]
    out = {}
    for h in mp.home if homes is None else homes:
        cand = np.where(held, np.asarray(latency_ms[h], float)[None, None, :], np.inf)
        cand[:, :, h] = np.where(held[:, :, h], -1.0, np.inf)
        srv = cand.argmin(axis=2)
        ok = np.isfinite(np.take_along_axis(cand, srv[:, :, None], 2)[:, :, 0])
        out[int(h)] = np.where(ok, srv, -1)
    return out


# ----------------------------------------------------------------------------- actions


class ServerActions:
    """The action encoding of one agent: one block per model (layout: :class:`CoELParallelEnv`)."""

    def __init__(self, world: World, n_groups: int) -> None:
        self.world = world
        self.n_groups = n_groups
        self.models = world.models

    def fields(self) -> list[int]:
        g = self.n_groups
        return [len(UPDATES), 2] + [N_NEAREST] * g + [2] + [len(BITS)] * g + [len(KEEP_RATIOS), 2]

    def space_nvec(self) -> np.ndarray:
        return np.array(self.fields() * len(self.models), np.int64)

    def split(self, action: np.ndarray) -> list[dict[str, Any]]:
        """The action's fields, one dict per model."""
        g, k = self.n_groups, len(self.fields())
        out = []
        for i in range(len(self.models)):
            a = np.asarray(action[i * k : (i + 1) * k], np.int64)
            out.append({
                "update": int(a[0]), "spread": int(a[1]), "place": a[2 : 2 + g],
                "replicate": int(a[2 + g]), "bits": a[3 + g : 3 + 2 * g],
                "keep": KEEP_RATIOS[int(a[3 + 2 * g])], "host_policy": int(a[4 + 2 * g]),
            })  # fmt: skip
        return out


@dataclass
class Combined:
    """The plan the agents' actions combine into, and what happened to each proposal.

    Attributes:
        plan: the combined plan (the plan in force where nothing changes).
        proposed: per agent server, the models it proposed to be a home of.
        refused: per agent server, the models whose proposal was refused.
        lead: per model, the server that set its compression.
        feasible: the combined plan passed :meth:`World.check` (else ``plan`` is
            the plan in force).
        infeasibility: why not, when not.
    """

    plan: Plan
    proposed: dict[int, list[str]] = field(default_factory=dict)
    refused: dict[int, list[str]] = field(default_factory=dict)
    lead: dict[str, int] = field(default_factory=dict)
    feasible: bool = True
    infeasibility: str = ""


class _Admission:
    """Parts admitted so far and the memory they use (the world's memory rules)."""

    def __init__(self, world: World, popularity: Mapping[str, np.ndarray]) -> None:
        self.w = world
        n = world.n
        self.up = np.asarray(world.dyn.server_up, bool)
        self.unified = np.asarray(world.unified, bool)
        self.gcap = np.asarray(world.gpu_capacity_gb, float)
        self.hcap = np.asarray(world.host_capacity_gb, float)
        self.gpu = np.zeros(n)
        self.host = np.zeros(n)
        self.loc: dict[str, np.ndarray] = {}
        self.bits: dict[str, np.ndarray] = {}
        self.homes: dict[str, list[int]] = {}
        self.setting: dict[str, tuple[float, np.ndarray]] = {}  # keep ratio, host policy
        self.pop = popularity
        self._size: dict[str, np.ndarray] = {}

    def _sizes(self, i: int, bits: np.ndarray) -> np.ndarray:
        m = self.w.specs[i]
        table = self._size.get(m.name)
        if table is None:
            table = np.zeros(17)
            for b in BITS:
                table[b] = m.expert_bytes(b) / GB
            self._size[m.name] = table
        return table[bits]

    def _dense(self, i: int) -> float:
        m = self.w.specs[i]
        return m.non_expert_bytes(16) / GB + self.w.kv_reserve_gb[m.name]

    def admit(
        self,
        i: int,
        home: int,
        hold: np.ndarray,
        tier: np.ndarray | None,
        bits: np.ndarray,
        keep: float,
        policy: np.ndarray,
        popularity: np.ndarray | None = None,
    ) -> bool:
        """Admit a part of model ``i`` homed at ``home`` holding ``hold`` [L, E, n] (bool),
        with tiers ``tier`` [L, E, n] (None: fill each server's GPU in the order of
        ``popularity`` [L, E], default the shared estimate's, then host memory). False
        (nothing changes) when it does not fit or uses an absent server."""
        name = self.w.models[i]
        L, E, n = hold.shape
        if not self.up[home] or (hold.any(axis=(0, 1)) & ~self.up).any():
            return False
        loc = self.loc.get(name)
        if loc is None:
            loc = np.zeros((L, E, n), np.int8)
        bits = self.bits.get(name, bits)
        new = hold & (loc == ABSENT)
        gpu, host = self.gpu.copy(), self.host.copy()
        if home not in self.homes.get(name, []):
            gpu[home] += self._dense(i)
        size = self._sizes(i, bits)  # [L, E]
        add = np.zeros((L, E, n), np.int8)
        pop = self.pop[name] if popularity is None else popularity
        order = np.argsort(-pop, axis=None, kind="stable")
        for s in np.flatnonzero(new.any(axis=(0, 1))):
            sel = new[:, :, s]
            if tier is not None:
                t = np.where(sel, tier[:, :, s], ABSENT)
                if self.unified[s]:
                    t = np.where(sel, GPU, ABSENT)
            elif self.unified[s]:
                t = np.where(sel, GPU, ABSENT)
            else:
                flat = sel.ravel()[order]
                sz = size.ravel()[order]
                cum = np.cumsum(np.where(flat, sz, 0.0))
                room = max(self.gcap[s] - gpu[s], 0.0) + 1e-9
                on_gpu = flat & (cum <= room)
                t_flat = np.where(flat, np.where(on_gpu, GPU, HOST), ABSENT)
                t = np.empty(L * E, np.int8)
                t[order] = t_flat
                t = t.reshape(L, E)
            add[:, :, s] = t
            gpu[s] += float(size[t == GPU].sum())
            host[s] += float(size[t == HOST].sum())
        need = np.where(self.unified, gpu + host, gpu)
        if (need > self.gcap + 1e-9).any() or ((host > self.hcap + 1e-9) & ~self.unified).any():
            return False
        self.gpu, self.host = gpu, host
        self.loc[name] = np.where(new, add, loc).astype(np.int8)
        if name not in self.bits:  # the lead sets the model's compression
            self.bits[name] = np.asarray(bits, np.int8)
            self.setting[name] = (keep, np.asarray(policy, np.int8))
        self.homes.setdefault(name, [])
        if home not in self.homes[name]:
            self.homes[name].append(home)
        return True

    def plan(self) -> Plan:
        out = {}
        for name in self.w.models:
            homes = self.homes.get(name)
            if not homes:
                continue
            keep, pol = self.setting[name]
            out[name] = ModelPlan(name, self.loc[name], self.bits[name], tuple(sorted(homes)),
                                  pol, keep)  # fmt: skip
        return Plan(out)


def combine(
    world: World,
    actions: Mapping[int, np.ndarray],
    n_groups: int,
    popularity: Mapping[str, np.ndarray] | None = None,
    views: Mapping[int, tuple] | None = None,
) -> Combined:
    """Combine the agents' actions (by server index) into one plan (module docstring).

    Args:
        world: the world about to step (its plan in force, true memory and presence).
        actions: per agent server, its action (valid for :class:`ServerActions`);
            a missing agent keeps.
        n_groups: popularity groups per layer.
        popularity: the shared popularity estimate (default: :func:`popularity_estimate`),
            what every agent decodes its action with unless it has a view.
        views: per agent server, what it knows of the network (:func:`agent_views`):
            its action is decoded with its own path latency (nearest servers and
            holders) and popularity (groups, GPU fill order). Default:
            :func:`agent_views` (None, the truth for all, unless
            ``perception.sampling`` is ``sub_epoch``).
    """
    w = world
    pop = popularity if popularity is not None else popularity_estimate(w)
    if views is None:
        views = agent_views(w)
    enc = ServerActions(w, n_groups)
    up = np.asarray(w.dyn.server_up, bool)
    lat = np.asarray(w.paths.latency_ms, float)
    demand = w.true_status()[:, len(STATUS_FIELDS) :]  # what each server broadcasts
    agents = edge_servers(w)
    proposals = []  # (priority key, model index, server, spec)
    out = Combined(plan=w.plan)
    for s in agents:
        out.proposed[s], out.refused[s] = [], []
        if not up[s]:
            continue
        a = actions.get(s)
        fields = enc.split(a) if a is not None else None
        for i, name in enumerate(w.models):
            f = fields[i] if fields is not None else {"update": KEEP}
            mp = w.plan.models.get(name)
            is_home = mp is not None and s in mp.home
            u = f["update"]
            if u == WITHDRAW or (u in (KEEP, ADJUST) and not is_home):
                continue
            proposals.append(((-float(demand[s, i]), i, s), i, s, f))
            out.proposed[s].append(name)
    adm = _Admission(w, pop)
    for _, i, s, f in sorted(proposals, key=lambda p: p[0]):
        name, m = w.models[i], w.specs[i]
        mp = w.plan.models.get(name)
        view = views.get(s) if views is not None else None
        p_s = pop[name] if view is None else view[2][name]
        groups = group_of(p_s, n_groups)
        if f["update"] in (KEEP, ADJUST):
            # its current part: the holders nearest by the latency it knows
            srv = home_parts(mp, lat if view is None else view[0], up, (s,))[s]
            L, E = srv.shape
            hold = np.zeros((L, E, w.n), bool)
            ok = srv >= 0
            li, ei = np.nonzero(ok)
            hold[li, ei, srv[ok]] = True
            tier = mp.location
            if f["update"] == KEEP:
                bits, keep, pol = mp.bits, mp.keep_ratio, mp.host_policy
            else:
                bits = np.asarray(BITS)[f["bits"]][groups].astype(np.int8)
                keep = f["keep"]
                pol = np.full(m.n_moe_layers, f["host_policy"], np.int8)
        else:
            lat_s = None if view is None else view[0]
            near = nearest(w, s, lat_s)[np.minimum(np.arange(N_NEAREST), w.n - 1)]
            target = near[f["place"]] if f["spread"] else np.full(n_groups, s)
            hold = np.zeros((m.n_moe_layers, m.n_experts, w.n), bool)
            for g in range(n_groups):
                sel = groups == g
                hold[sel, target[g]] = True
                if f["replicate"] and target[g] != s:
                    hold[sel, s] = True
            tier = None
            bits = np.asarray(BITS)[f["bits"]][groups].astype(np.int8)
            keep = f["keep"]
            pol = np.full(m.n_moe_layers, f["host_policy"], np.int8)
        if adm.admit(i, s, hold, tier, bits, keep, pol, None if view is None else p_s):
            out.lead.setdefault(name, s)
        else:
            out.refused[s].append(name)
    plan = reuse_unchanged(adm.plan(), w.plan)
    if plan is not w.plan:
        rep = w.check(plan)
        if not rep.feasible:
            out.feasible, out.infeasibility = False, str(rep)
            plan = w.plan
    out.plan = plan
    return out


# ------------------------------------------------------------------------ observations


class ServerObservation:
    """The observation vector of every agent (layout: :class:`CoELParallelEnv`)."""

    def __init__(self, world: World, n_groups: int, max_cycles: int) -> None:
        self.world = world
        self.n_groups = n_groups
        self.max_cycles = max(1, int(max_cycles))
        n, m = world.n, len(world.models)
        self.n_status = len(STATUS_FIELDS) + m
        self.per_server = self.n_status + 6  # + age, heard, latency, 2 capacities, cloud
        self.per_model = n_groups + 2 + 3 * n_groups + 3
        self.dim = n * self.per_server + m * self.per_model + 1
        self._scale = np.ones(self.n_status)
        self._scale[STATUS_FIELDS.index("link_scale")] = 2.0
        self._scale[len(STATUS_FIELDS) :] = DEMAND_SCALE

    def space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.dim,), np.float32)

    def observe_all(
        self,
        popularity: Mapping[str, np.ndarray],
        lead: Mapping[str, int] | None = None,
        views: Mapping[int, tuple] | None = None,
    ) -> dict[int, np.ndarray]:
        """Every agent's observation, by server index. ``lead``: each model's lead server
        in the last combination (unknown: the plan's first home). ``views``: per agent
        server, what it knows of the network (:func:`agent_views`): its latency row, its
        order of the servers, the popularity shares of the groups and its own part come
        from it. Default: :func:`agent_views` (None unless ``perception.sampling`` is
        ``sub_epoch``: then every agent sees the paths in force and ``popularity``)."""
        w = self.world
        if views is None:
            views = agent_views(w)
        g = self.n_groups
        lat = np.asarray(w.paths.latency_ms, float)
        up = np.asarray(w.dyn.server_up, bool)
        period = w.scenario.perception.period_s
        gcap = np.asarray(w.gpu_capacity_gb, float)
        hcap = np.asarray(w.host_capacity_gb, float)
        static = np.column_stack([
            gcap / max(gcap.max(), 1e-9), hcap / max(hcap.max(), 1e-9),
            np.asarray(w.is_cloud, float),
        ])  # fmt: skip
        agents = edge_servers(w)
        n_edge = max(len(agents), 1)

        def info(pop, lat, agent=None):  # per model; agent: only its own part
            model_info = []
            for name, m in zip(w.models, w.specs, strict=True):
                p = pop[name]
                groups = group_of(p, g)
                share = np.array([p[groups == k].sum() for k in range(g)]) / m.n_moe_layers
                mp = w.plan.models.get(name)
                parts = {}
                if mp is not None:
                    homes = None if agent is None else (agent,) if agent in mp.home else ()
                    parts = home_parts(mp, lat, up, homes)
                ld = (lead or {}).get(name, mp.home[0] if mp is not None else -1)
                model_info.append((name, groups, share, mp, parts, ld))
            return model_info

        if views is None:
            model_info = info(popularity, lat)
        progress = min(w.epoch / self.max_cycles, 1.0)
        out = {}
        for a in agents:
            if views is not None:  # what this agent knows (sub_epoch)
                lat_v, _, pop_v = views[a]
                lat = np.asarray(lat_v, float)
                model_info = info(pop_v, lat, a)
            status, age = w.view(a)
            heard = np.isfinite(age)
            age_n = np.where(heard, np.clip(age / (AGE_PERIODS * period), 0.0, 1.0), 1.0)
            srv = np.clip(np.asarray(status, float) / self._scale, 0.0, 1.0)
            lat_n = np.clip(lat[a] / LATENCY_REF_MS, 0.0, 1.0)
            block = np.column_stack([srv, age_n, heard, lat_n, static])
            parts = [block[nearest(w, a, lat)].ravel()]
            for _name, groups, share, mp, hp, ld in model_info:
                mine = np.zeros(3 * g)
                flags = [0.0, 0.0]
                tail = [0.0, 0.0, 0.0]
                if mp is not None:
                    tail = [mp.keep_ratio, 1.0, len(mp.home) / n_edge]
                    if a in hp:
                        flags = [1.0, float(ld == a)]
                        s_of = hp[a]
                        tier = np.take_along_axis(mp.location, np.maximum(s_of, 0)[:, :, None],
                                                  2)[:, :, 0]  # fmt: skip
                        for k in range(g):
                            sel = groups == k
                            mine[k] = mp.bits[sel].mean() / 16.0
                            mine[g + k] = (tier[sel] == GPU).mean()
                            mine[2 * g + k] = (s_of[sel] != a).mean()
                parts.append(np.concatenate([share, flags, mine, tail]))
            parts.append([progress])
            obs = np.concatenate(parts).astype(np.float32)
            out[a] = np.clip(np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        return out


def local_terms(world: World, combined: Combined, server: int) -> dict[str, float]:
    """The local reward terms of one agent after the epoch (unweighted, in [-1, 0])."""
    dropped = float(world.true_status()[server, STATUS_FIELDS.index("dropped_frac")])
    n_models = max(len(world.models), 1)
    return {
        "rejected_reward": -len(combined.refused.get(server, [])) / n_models,
        "local_drop_reward": -min(max(dropped, 0.0), 1.0),
    }


# ---------------------------------------------------------------------------------- env


class CoELParallelEnv(ParallelEnv):
    """Multi-agent CoEL: every edge server an agent (PettingZoo ``ParallelEnv``).

    ## Description

    In CoEL each edge server decides from what it perceives of its neighbours. This env
    offers that over the same core as the single-agent ``CoEL-v0``: the same scenarios,
    traces, topologies, device profiles and reward terms (default scenario
    ``default``: 5 edge servers, two models, one step per 10 s epoch).

    The agents are ``server_<i>`` for every edge server ``i`` of the world (a cloud node
    is not an agent; it can still hold experts its neighbours place there). All agents
    live for the whole episode: a server that has left the network stays an agent whose
    actions are ignored while it is absent (PettingZoo agents cannot come back once
    removed, and servers do). Each epoch the agents' actions are combined into one plan
    (:func:`combine`, described in the module docstring): every present agent that asks
    to be a home of a model proposes a part, proposals are admitted against the true
    free memory, the servers with the most demand for the model first, and the first
    admitted part (the *lead*) sets the model's bit widths, keep ratio and host policy.

    ## Action Space

    ``MultiDiscrete``, the same for every agent (:class:`ServerActions`), with
    ``5 + 2 * n_groups`` fields per model, models in scenario order; on ``default``
    with the default ``n_groups`` 4: 26 fields, 100 choices. Per model:

    - ``update`` (4): 0 keep (a home keeps its part as it is; a non-home stays out),
      1 adjust (a home keeps its placement and proposes bits, keep ratio and host
      policy), 2 redeploy (become or stay a home with a new part), 3 withdraw (stop
      being a home);
    - ``spread`` (2): 0 the model whole on the agent, 1 group ``g`` on ``place_g``;
    - ``place_g`` (4, one per group): 0 the agent itself, k its k-th nearest server by
      path latency (as the agent knows it, the order of its observation's blocks);
    - ``replicate`` (2): 1 also keeps a copy of the groups placed away on the agent;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``keep`` (4): token keep ratio, index into (1, 0.75, 0.5, 0.25);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are
      fetched over PCIe (1).

    A missing agent's action counts as keep; the actions of absent servers are ignored.
    A proposal that does not fit the memory left by the parts admitted before it, or
    that uses an absent server (a stale view), is refused: the agent is not a home of
    the model this epoch (``infos[agent]["refused"]``, ``rejected_reward``). A model
    no part was admitted for is not deployed (its requests are dropped). Should the
    combined plan still fail :meth:`World.check` (a guard), the plan in force stays,
    ``invalid_reward`` is -1 and ``infos[agent]["invalid_action"]`` is True. An action
    outside the space raises ``ValueError`` naming the agent and the field.

    ## Observation Space

    ``Box(0, 1, (118,), float32)`` on ``default``, the same shape for every agent (so one
    parameter-shared policy serves all of them; :class:`ServerObservation`): in general
    ``n * (13 + m) + m * (4 * n_groups + 5) + 1`` values for ``n`` servers and ``m``
    models. Every entry is finite and in [0, 1]:

    1. one block of ``13 + m`` values per server, in the agent's own order: itself
       first, then the others by path latency from it (nearest first, ties by index), so
       block ``k`` is the server that placement choice ``k`` addresses. Each block is
       what the agent last heard of that server by broadcast (stale, lossy; its own entry
       fresh): free GPU and host memory shares, utilisation, dropped share, background
       load, present, link multiplier / 2, demand per model / (5 x base rate); then the
       age of that news / (5 broadcast periods), a "heard at all" flag, the path latency
       / :data:`LATENCY_REF_MS`, GPU and host capacity over the world's largest, and an
       "is the cloud" flag;
    2. per model, ``4 * n_groups + 5`` values: the popularity share of each group (by
       the estimate the agent knows, below), then the agent's own part of the plan in force:
       "I am a home", "I lead the model's compression", per group the mean bit width
       / 16, the share on a GPU and the share held away from the agent; the model's keep
       ratio, a "deployed" flag and its number of homes / edge servers;
    3. the episode's progress: epoch / ``max_cycles``.

    The path latency (feature, order of the blocks) and the popularity (group shares)
    are what the agent knows (:func:`agent_views`): under ``perception.sampling:
    epoch_end`` the paths in force and the shared estimate, the same for all agents;
    under ``sub_epoch`` (the default) its own ``World.view_network`` (as broadcast to it:
    stale, lossy), with which its action is decoded too.

    ## Rewards

    Every agent gets the team reward, ``sum(config[t] * terms[t])`` over the eight
    terms of ``CoEL-v0`` (:data:`coel_env.core.rewards.REWARD_TERMS`, computed by the
    same function, so the team return equals the ``CoEL-v0`` / ``agents.harness``
    return of the same plans), plus two local terms weighted by the config keys of the
    same name (:data:`LOCAL_TERMS`):

    - ``rejected_reward`` [0.2]: -share of the agent's home proposals that were refused
      (it asked for memory that was not there);
    - ``local_drop_reward`` [0.2]: -the dropped share it broadcasts (requests dropped at
      it as a home per request arrived at it), capped at -1.

    ``infos[agent]`` holds every term unweighted (``"rewards"``), the team reward
    (``"team_reward"``), the models the agent proposed, had refused and is a home of
    (``"proposed"``, ``"refused"``, ``"home"``), ``"invalid_action"`` and the epoch's
    true metrics (as the single-agent envs).

    ## Starting State

    The world's naive plan (each model whole at 16 bits on every edge server that can
    hold it); no broadcast heard yet but each agent's own. ``reset(seed=s)`` resets the
    world with ``World.reset(s)``, the same instance ``agents.harness`` plays for seed
    ``s``; ``reset()`` without a seed draws the world's seed from the env's generator.
    ``infos`` are empty dicts; ``options`` is accepted and unused.

    ## Episode End

    Never terminates; every agent is truncated after ``max_cycles`` epochs (default
    200, as ``CoEL-v0``), after which ``agents`` is empty and ``step`` raises
    ``RuntimeError`` until ``reset``.

    ## Arguments

    ```python
    import coel_env

    env = coel_env.parallel_env(config={"scenario": "inter", "max_cycles": 100})
    observations, infos = env.reset(seed=0)
    ```

    ``render_mode``: None or ``"ansi"``. ``config`` overrides :func:`default_config`
    (unknown keys raise ``ValueError`` naming the valid ones): the keys of
    ``CoELEnv.default_config()`` less ``controller`` (every agent observes its own view)
    and ``max_steps``, plus ``max_cycles`` [200] (epochs per episode), ``rejected_reward``
    [0.2] and ``local_drop_reward`` [0.2].

    ## Version History

    - v1 (``coel_parallel_v1``, ``parallel_env(version=1)``, current): seeded as the
      single-agent envs are: ``reset(seed=s)`` seeds the env's ``np_random``
      (``gymnasium.utils.seeding``), which draws the world's seed, so env seed ``s`` is
      not the harness's instance ``s`` (training never plays the comparison's
      instances).
    - v0 (``coel_parallel_v0``, ``parallel_env(version=0)``): initial release; the world
      was reset with the seed itself (the harness's instance). Kept so that the
      published multi-agent policy (trained on v0) can be retrained as it was.
    """

    metadata = {"render_modes": ["ansi"], "name": "coel_parallel_v1", "is_parallelizable": True}

    default_config = staticmethod(default_config)

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        version: int = CURRENT_VERSION,
    ):
        if isinstance(version, bool) or version not in VERSIONS:
            raise ValueError(f"version={version!r} is not allowed; versions: {list(VERSIONS)}")
        self.version = int(version)
        self.metadata = {**type(self).metadata, "name": f"coel_parallel_v{self.version}"}
        self.config = resolve_config(config)
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.world = build_world(self.config)
        self.servers = edge_servers(self.world)
        if not self.servers:
            raise ValueError("the scenario has no edge server: no agent to act")
        self.possible_agents = [agent_name(s) for s in self.servers]
        self._server_of = {agent_name(s): s for s in self.servers}
        self.max_cycles = int(self.config["max_cycles"])
        g = self.config["n_groups"]
        self.action_type = ServerActions(self.world, g)
        self.observation_type = ServerObservation(self.world, g, self.max_cycles)
        nvec = self.action_type.space_nvec()
        self._obs_spaces = {a: self.observation_type.space() for a in self.possible_agents}
        self._act_spaces = {a: spaces.MultiDiscrete(nvec) for a in self.possible_agents}
        self.agents: list[str] = []
        self.np_random = np.random.default_rng()
        self._lead: dict[str, int] = {}
        self._views: dict[int, tuple] | None = None
        self._last_report = None

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode (``options`` is accepted for the API and unused)."""
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        if seed is not None and self.version == 0:
            world_seed = int(seed)  # v0: the harness's instance for this seed
        else:
            world_seed = int(self.np_random.integers(2**63 - 1))
        self.world.reset(world_seed)
        self.agents = list(self.possible_agents)
        self._lead = {}
        self._last_report = None
        self._pop = popularity_estimate(self.world)
        obs = self._observe()
        infos = {a: {} for a in self.agents}
        return obs, infos

    def _observe(self) -> dict[str, np.ndarray]:
        # what each agent knows now (sub_epoch; else None): observed and, next step,
        # what its action is decoded with (one view_network per agent per step)
        self._views = agent_views(self.world, self.servers)
        by_server = self.observation_type.observe_all(self._pop, self._lead, self._views)
        return {agent_name(s): o for s, o in by_server.items()}

    def _check_action(self, agent: str, action) -> np.ndarray:
        nvec = self._act_spaces[agent].nvec
        try:
            a = np.asarray(action)
        except Exception:  # noqa: BLE001 - anything that is not array-like
            raise ValueError(f"{agent}: action {action!r} is not an array of integers") from None
        if a.shape != nvec.shape:
            raise ValueError(
                f"{agent}: action has shape {a.shape}; the action space needs {nvec.shape}"
            )
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise ValueError(f"{agent}: action {a.tolist()} must be finite integers")
        bad = (a < 0) | (a >= nvec) | (a != np.round(a))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{agent}: action[{i}]={a[i].item()!r} is not allowed; field {i} takes "
                f"0..{int(nvec[i]) - 1}"
            )
        return a.astype(np.int64)

    def step(self, actions: Mapping[str, Any]):
        if not self.agents:
            raise RuntimeError("the episode is over; call reset()")
        unknown = [a for a in actions if a not in self._server_of]
        if unknown:
            raise ValueError(f"unknown agent {unknown[0]!r}; agents: {self.possible_agents}")
        by_server = {self._server_of[a]: self._check_action(a, act) for a, act in actions.items()}
        w = self.world
        comb = combine(w, by_server, self.config["n_groups"], self._pop, self._views)
        report = w.step(None if comb.plan is w.plan else comb.plan)
        self._lead = comb.lead
        self._last_report = report
        team = reward_terms(report, w, self.config, not comb.feasible)
        team_total = total_reward(team, self.config)
        self._pop = popularity_estimate(w)
        obs = self._observe()
        done = w.epoch >= self.max_cycles
        rewards, infos = {}, {}
        for a in self.agents:
            s = self._server_of[a]
            local = local_terms(w, comb, s)
            rewards[a] = team_total + sum(self.config[k] * v for k, v in local.items())
            infos[a] = {
                "rewards": {**team, **local},
                "team_reward": team_total,
                "proposed": list(comb.proposed.get(s, [])),
                "refused": list(comb.refused.get(s, [])),
                "home": [n for n, mp in w.plan.models.items() if s in mp.home],
                "invalid_action": not comb.feasible,
                **report_info(report),
            }
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self):
        if self.render_mode == "ansi":
            from coel_env.envs.render import render_ansi

            return render_ansi(self.world, self._last_report)
        return None

    def close(self) -> None:
        pass


def parallel_env(
    config: Mapping[str, Any] | None = None,
    render_mode: str | None = None,
    version: int = CURRENT_VERSION,
) -> CoELParallelEnv:
    """The multi-agent CoEL env (PettingZoo ``ParallelEnv``; see :class:`CoELParallelEnv`;
    ``version`` picks the seeding of its Version History)."""
    return CoELParallelEnv(config=config, render_mode=render_mode, version=version)
