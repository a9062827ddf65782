"""Deployment plans: where every expert lives, at which bit width, and how it runs.

A :class:`Plan` holds one :class:`ModelPlan` per deployed model. Placement is a
small integer array so that the simulator can evaluate it with numpy:

* ``location[l, e, s]`` is :data:`ABSENT`, :data:`GPU` or :data:`HOST`: expert
  ``e`` of MoE layer ``l`` on server ``s``, in GPU memory or in host memory.
  Replicas are allowed (several servers non-absent).
* ``bits[l, e]``: the expert's weight bit width (all replicas alike).
* ``home``: the servers that run the model's dense part (attention,
  embeddings, router, shared experts) and take its requests; a request goes to
  the nearest home.
* ``host_policy[l]``: for experts in host memory of a server, run them on
  that server's host CPU (:data:`RUN_ON_CPU`) or copy them over PCIe to the
  GPU when tokens arrive (:data:`FETCH`), per layer.
* ``keep_ratio``: the share of tokens kept (pruning/fusion) in activations
  sent between servers.

:func:`check_plan` returns an explicit :class:`InfeasibilityReport` (which
server, which memory, by how much) instead of raising, so policies can be
penalised rather than crash.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from coel_env.catalog import BITS, MoEModel, get_model
from coel_env.core.kernels.placement import absent_holds, plan_scan, plan_values_ok
from coel_env.utils import frozen_reduce

ABSENT, GPU, HOST = 0, 1, 2
RUN_ON_CPU, FETCH = 0, 1
#: Token keep ratios a plan may use for inter-server activations (discrete, for the MILP
#: and the action space alike); 1.0 means no pruning.
KEEP_RATIOS = (1.0, 0.75, 0.5, 0.25)
GB = 1e9
#: ``_VALID_BITS[b]`` for an int8 bit width viewed as uint8: is it one of :data:`BITS`.
_VALID_BITS = np.zeros(256, bool)
_VALID_BITS[list(BITS)] = True


@functools.cache
def expert_gb_table(model: str) -> np.ndarray:
    """Bytes of one expert of ``model`` [GB] indexed by bit width (0 where not allowed)."""
    m = get_model(model)
    out = np.zeros(17)
    for b in BITS:
        out[b] = m.expert_bytes(b) / GB
    out.setflags(write=False)
    return out


@functools.cache
def dense_gb(model: str) -> float:
    """Non-expert weights of ``model`` at 16 bits [GB] (they sit on each home's GPU)."""
    return get_model(model).non_expert_bytes(16) / GB


@dataclass(frozen=True, eq=False)
class ModelPlan:
    """The deployment of one model. Arrays are copied and made read-only."""

    model: str
    location: np.ndarray  # int8 [L, E, S]
    bits: np.ndarray  # int8 [L, E]
    home: tuple[int, ...]
    host_policy: np.ndarray  # int8 [L]
    keep_ratio: float = 1.0

    def __post_init__(self) -> None:
        m = get_model(self.model)
        loc = np.array(self.location, dtype=np.int8)
        bits = np.array(self.bits, dtype=np.int8)
        pol = np.array(self.host_policy, dtype=np.int8)
        shape = (m.n_moe_layers, m.n_experts)
        valid = (
            loc.ndim == 3
            and loc.shape[:2] == shape
            and bits.shape == shape
            and pol.shape == (m.n_moe_layers,)
            and plan_values_ok(loc, bits.view(np.uint8), pol, _VALID_BITS, HOST, FETCH)
        )
        if not valid:  # say what is wrong
            _check_arrays(self.model, m, loc, bits, pol)
        if not self.home:
            raise ValueError(f"home of {self.model} is empty; at least one server must run it")
        n = loc.shape[2]
        bad_home = [h for h in self.home if not (0 <= h < n)]
        if bad_home:
            raise ValueError(f"home server {bad_home[0]} is not allowed; servers are 0..{n - 1}")
        if self.keep_ratio not in KEEP_RATIOS:
            raise ValueError(
                f"keep_ratio={self.keep_ratio!r} is not allowed; allowed: {KEEP_RATIOS}"
            )
        for name, arr in (("location", loc), ("bits", bits), ("host_policy", pol)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "home", tuple(int(h) for h in self.home))

    @property
    def spec(self) -> MoEModel:
        return get_model(self.model)

    @property
    def n_servers(self) -> int:
        return int(self.location.shape[2])

    def replicas(self) -> np.ndarray:
        """Number of servers holding each expert, [L, E]."""
        return (self.location != ABSENT).sum(axis=2)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelPlan):
            return NotImplemented
        return (
            self.model == other.model
            and self.home == other.home
            and self.keep_ratio == other.keep_ratio
            and _same_int8(self.location, other.location)
            and _same_int8(self.bits, other.bits)
            and _same_int8(self.host_policy, other.host_policy)
        )

    __hash__ = None  # type: ignore[assignment]


def _same_int8(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` of two int8 arrays (a byte comparison: no temporaries)."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _check_arrays(model: str, m: MoEModel, loc, bits, pol) -> None:
    """Raise on the first bad array of a model plan (field, value, what is allowed)."""
    shape = (m.n_moe_layers, m.n_experts)
    if loc.ndim != 3 or loc.shape[:2] != shape:
        raise ValueError(
            f"location of {model} has shape {loc.shape}; expected "
            f"({shape[0]}, {shape[1]}, n_servers)"
        )
    if loc.size and (loc.min() < ABSENT or loc.max() > HOST):
        bad = loc[~np.isin(loc, (ABSENT, GPU, HOST))].flat[0]
        raise ValueError(f"location value {bad} is not allowed; allowed: 0 absent, 1 GPU, 2 host")
    if bits.shape != shape:
        raise ValueError(f"bits of {model} has shape {bits.shape}; expected {shape}")
    if not _VALID_BITS[bits.view(np.uint8)].all():
        bad = bits[~np.isin(bits, BITS)].flat[0]
        raise ValueError(
            f"bits={bad} is not allowed; allowed bit widths: {', '.join(map(str, BITS))}"
        )
    if pol.shape != (m.n_moe_layers,) or (
        pol.size and (pol.min() < RUN_ON_CPU or pol.max() > FETCH)
    ):
        raise ValueError(
            f"host_policy of {model} must be {m.n_moe_layers} values in "
            f"{{0 run on CPU, 1 fetch}}; got shape {pol.shape}"
        )


@dataclass(frozen=True)
class Plan:
    """A deployment of several models over the same servers."""

    models: Mapping[str, ModelPlan] = field(default_factory=dict)

    __reduce__ = frozen_reduce

    def __post_init__(self) -> None:
        mp = dict(self.models)
        sizes = {p.n_servers for p in mp.values()}
        if len(sizes) > 1:
            raise ValueError(f"model plans disagree on the number of servers: {sorted(sizes)}")
        for k, p in mp.items():
            if k != p.model:
                raise ValueError(f"plan key {k!r} holds a plan for {p.model!r}")
        object.__setattr__(self, "models", MappingProxyType(mp))


@dataclass(frozen=True)
class Violation:
    """One reason a plan cannot run."""

    kind: str  # "gpu_memory", "host_memory", "missing_server", "no_replica", "server_down"
    server: int | None
    model: str | None
    detail: str
    over_gb: float = 0.0

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class InfeasibilityReport:
    """Every violation of a plan; ``feasible`` when there is none."""

    violations: tuple[Violation, ...] = ()

    @property
    def feasible(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        if self.feasible:
            return "feasible"
        return "infeasible: " + "; ".join(str(v) for v in self.violations)


def memory_use_gb(
    plan: Plan, n_servers: int, kv_reserve_gb: Mapping[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """GPU and host memory each server needs for ``plan`` [GB], shape [n_servers] each.

    The dense part (non-expert weights at 16 bits, plus a KV-cache reserve per
    model, ``kv_reserve_gb``) sits on each home server's GPU.
    """
    gpu = np.zeros(n_servers)
    host = np.zeros(n_servers)
    for name, mp in plan.models.items():
        g, h = _expert_memory_gb(mp)
        gpu += g
        host += h
        dense = dense_gb(mp.model) + (kv_reserve_gb or {}).get(name, 0.0)
        for s in mp.home:
            gpu[s] += dense
    return gpu, host


def _expert_memory_gb(mp: ModelPlan) -> tuple[np.ndarray, np.ndarray]:
    """GPU and host memory the experts of ``mp`` take per server [GB], from any scan of
    the plan (its arrays are read-only; the sums do not depend on who is present)."""
    d = mp.__dict__
    out = d.get("_full_scan") or d.get("_last_scan", (None, None))[1]
    if out is None:
        out = _scan(mp, np.ones(mp.n_servers, bool))
    return out[4], out[5]


def _scan(mp: ModelPlan, up: np.ndarray) -> tuple:
    """:func:`coel_env.core.kernels.placement.plan_scan` of ``mp`` for the present servers ``up``.

    A scan that finds no absent server holding an expert is kept as the plan's
    ``_full_scan``: it is the answer for every present set whose absent servers hold
    none of the plan's experts (an expert then lacks a present copy exactly when it has
    none at all; expert sizes are > 0, so a server holds one exactly when it has expert
    memory). Other sets are scanned (the last answer is kept too)."""
    d = mp.__dict__
    key = up.tobytes()
    last = d.get("_last_scan")
    if last is not None and last[0] == key:
        return last[1]
    full = d.get("_full_scan")
    if full is not None and not absent_holds(up, full[4], full[5]):
        return full
    out = plan_scan(mp.location, expert_gb_table(mp.model)[mp.bits], up)
    if out[0] < 0:
        d["_full_scan"] = out
    d["_last_scan"] = (key, out)
    return out


def check_plan(
    plan: Plan,
    gpu_capacity_gb: Sequence[float],
    host_capacity_gb: Sequence[float],
    *,
    up: Sequence[bool] | None = None,
    unified: Sequence[bool] | None = None,
    kv_reserve_gb: Mapping[str, float] | None = None,
) -> InfeasibilityReport:
    """Check a plan against server capacities and availability.

    Args:
        plan: the plan.
        gpu_capacity_gb: GPU memory per server [GB].
        host_capacity_gb: host memory per server [GB].
        up: which servers are present (a server that left holds nothing).
        unified: servers whose GPU and host share one memory pool (Jetson):
            GPU and host use count against ``gpu_capacity_gb`` together.
        kv_reserve_gb: GPU memory reserved per model on each home server.

    Returns:
        An :class:`InfeasibilityReport` naming each server, memory and excess.
    """
    n = len(gpu_capacity_gb)
    up_arr = np.ones(n, bool) if up is None else np.asarray(up, bool)
    uni = np.zeros(n, bool) if unified is None else np.asarray(unified, bool)
    out: list[Violation] = []
    for name, mp in plan.models.items():
        if mp.n_servers != n:
            out.append(
                Violation(
                    "missing_server",
                    None,
                    name,
                    f"{name}: plan has {mp.n_servers} servers, the world has {n}",
                )
            )
            continue
        down_at, n_missing, layer, e, _, _ = _scan(mp, up_arr)
        down = [s for s in mp.home if not up_arr[s]] + ([down_at] if down_at >= 0 else [])
        if down:
            s = int(min(down))
            out.append(Violation("server_down", s, name, f"{name}: server {s} is not present"))
        if n_missing:
            out.append(
                Violation(
                    "no_replica",
                    None,
                    name,
                    f"{name}: {int(n_missing)} experts have no replica on a "
                    f"present server (first: layer {layer} expert {e})",
                )
            )
    if any(v.kind == "missing_server" for v in out):
        return InfeasibilityReport(tuple(out))
    gpu, host = memory_use_gb(plan, n, kv_reserve_gb)
    gcap = np.asarray(gpu_capacity_gb, float)
    hcap = np.asarray(host_capacity_gb, float)
    gpu_need = np.where(uni, gpu + host, gpu)
    gpu_over = gpu_need > gcap + 1e-9
    host_over = ~uni & (host > hcap + 1e-9)
    for s in np.flatnonzero(gpu_over | host_over).tolist():  # servers over, in order
        if gpu_over[s]:
            what = "unified memory" if uni[s] else "GPU memory"
            out.append(
                Violation(
                    "gpu_memory",
                    s,
                    None,
                    f"server {s}: {what} needs {gpu_need[s]:.2f} GB of "
                    f"{gcap[s]:.2f} GB (over by {gpu_need[s] - gcap[s]:.2f} GB)",
                    float(gpu_need[s] - gcap[s]),
                )
            )
        if host_over[s]:
            out.append(
                Violation(
                    "host_memory",
                    s,
                    None,
                    f"server {s}: host memory needs {host[s]:.2f} GB of "
                    f"{hcap[s]:.2f} GB (over by {host[s] - hcap[s]:.2f} GB)",
                    float(host[s] - hcap[s]),
                )
            )
    return InfeasibilityReport(tuple(out))


def single_server_plan(
    model: str, server: int, n_servers: int, gpu_budget_gb: float, *, bits: int = 16
) -> ModelPlan:
    """Everything on one server: as many experts on the GPU as fit (layer by layer,
    expert index order), the rest in host memory and run on the host CPU.

    ``gpu_budget_gb`` is what the experts may use after the dense part.
    """
    m = get_model(model)
    per = m.expert_bytes(bits) / GB
    n_fit = int(max(gpu_budget_gb, 0.0) // per) if per > 0 else 0
    loc = np.zeros((m.n_moe_layers, m.n_experts, n_servers), np.int8)
    flat = np.full(m.n_moe_layers * m.n_experts, HOST, np.int8)
    flat[: min(n_fit, flat.size)] = GPU
    loc[:, :, server] = flat.reshape(m.n_moe_layers, m.n_experts)
    return ModelPlan(
        model=model,
        location=loc,
        bits=np.full((m.n_moe_layers, m.n_experts), bits, np.int8),
        home=(server,),
        host_policy=np.zeros(m.n_moe_layers, np.int8),
    )


def reuse_unchanged(plan: Plan, current: Plan) -> Plan:
    """``plan`` with every model plan equal to the one in force replaced by that object
    (and the plan in force itself when nothing changes), so the world sees no change
    and keeps its cached costs."""
    models = {}
    same = plan.models.keys() == current.models.keys()
    for name, mp in plan.models.items():
        old = current.models.get(name)
        if old is not None and (old is mp or old == mp):
            models[name] = old
        else:
            models[name] = mp
            same = False
    return current if same else Plan(models)
