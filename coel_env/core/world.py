"""The CoEL world: servers, links, models, requests, broadcasts and updates, epoch by epoch.

``World(scenario)`` builds the instance (topology and devices, from the
scenario's ``instance_seed``); ``reset(seed)`` starts an episode (workload,
routing drift, broadcasts, dynamics: one generator each, spawned from the
seed); ``step(plan)`` runs one update epoch under ``plan`` (``None`` keeps the
plan in force) and returns an :class:`EpochReport`.

What a step does, in order:

1. the dynamics move (background load, links, servers, demand, task mix) and
   routing popularity drifts; a server that leaves loses its experts: they are
   removed from the plan in force, and a requested plan that places anything on
   an absent server is infeasible;
2. a requested plan is checked (:func:`coel_env.core.plan.check_plan`): an
   infeasible one is not deployed, the plan in force stays, and the report
   says why (``feasible``, ``infeasibility``);
3. moving to a new plan costs migration bytes and time
   (:mod:`coel_env.core.updating`), which take serving capacity in this epoch (with
   ``updating.migration: durable`` the copies run over as many epochs as they take and
   what has not landed serves from where it was);
4. the epoch's requests arrive and are served (:mod:`coel_env.core.evaluation`);
   every arrived request is served or dropped;
5. servers broadcast their status (:mod:`coel_env.core.perception`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coel_env import quality
from coel_env.catalog import BITS, get_model
from coel_env.core import topology as topo
from coel_env.core.batching import ContinuousBatching, kv_bytes_per_token
from coel_env.core.dynamics import Dynamics, DynamicsState
from coel_env.core.evaluation import (
    PREFILL_POINTS,
    StepCost,
    bucket,
    prefill_line,
    serving_model_for,
)
from coel_env.core.io import (
    load_azure_trace,
    load_esft,
    load_eua,
    load_fiddler,
    load_generic_trace,
    load_graphml,
)
from coel_env.core.kernels.perception import free_memory, status_kernel
from coel_env.core.kernels.placement import holds_all, same_local
from coel_env.core.kernels.routing import mix_popularity, popularity_moved
from coel_env.core.kernels.serving import group_requests, group_work, route_table, serve_kernel
from coel_env.core.kernels.summaries import p50_p95
from coel_env.core.perception import Perception
from coel_env.core.plan import (
    ABSENT,
    GB,
    InfeasibilityReport,
    ModelPlan,
    Plan,
    check_plan,
    memory_use_gb,
    single_server_plan,
)
from coel_env.core.routing import NO_DRIFT, DriftConfig, RoutingModel
from coel_env.core.scenario import Scenario, load_scenario
from coel_env.core.updating import MigrationReport, Moves, migration_cost, no_migration
from coel_env.core.workload import (
    AZURE_CONV_FIT,
    Requests,
    SloConfig,
    SyntheticStream,
    SyntheticWorkload,
    TraceMapping,
    TraceWorkload,
    WorkloadConfig,
)
from coel_env.profiles import get_device

#: Epochs between refreshes of the routing popularity used for costing (a real system
#: re-estimates expert popularity periodically; costs are cached in between).
COST_REFRESH_EPOCHS = 5
#: A (model, server) popularity that moved less than this (mean L1 distance per layer,
#: out of 2) keeps its cached serving costs at a refresh.
POP_TOLERANCE = 0.1
#: Passes costed together when a (model, home) snapshot is first needed: one-sequence
#: decode (Little's law starts from it, and most epochs' batches round to it: ~75% of
#: (model, home) epochs on ``default`` and ``large``) and the prefill points; a larger
#: batch bucket is costed when first needed.
TABLE_POINTS = ((1, "decode"),) + tuple((p, "prefill") for p in PREFILL_POINTS)
_TABLE_NS = tuple(p[0] for p in TABLE_POINTS)
_TABLE_PHASES = tuple(p[1] for p in TABLE_POINTS)
#: Fields of a server's broadcast status vector.
STATUS_FIELDS = (
    "free_gpu_frac",
    "free_host_frac",
    "utilisation",
    "dropped_frac",
    "background",
    "up",
    "link_scale",
)
_UP = STATUS_FIELDS.index("up")


@dataclass(frozen=True)
class EpochReport:
    """What happened in one epoch (all counts over the epoch).

    Percentiles are over the epoch's served requests (0 when none was served);
    ``slo_attainment`` is 1.0 for an epoch without arrivals, so aggregate runs
    from the counts (``slo_met / requests_arrived``), not by averaging it.
    ``World.last_latency_ms`` / ``last_ttft_ms`` hold the epoch's per-request
    values for exact run percentiles.

    With ``updating.migration: durable`` the migration fields count what moved in the
    epoch (``migration_s``: how long copies were under way in it), ``moves_in_flight``
    the copies still under way at its end and ``migration_bytes_left`` their bytes to
    send (both 0 otherwise); ``World.last_move_s`` holds how long a move took when its
    last copy landed in the epoch.

    ``view_mae`` is the mean absolute error of the controller's (server 0's) broadcast
    view against the true status at the epoch's end, over every status field of the
    other servers it has heard from (:meth:`Perception.view_error
    <coel_env.core.perception.Perception.view_error>`).
    """

    epoch: int
    t_s: float
    requests_arrived: int
    requests_served: int
    requests_dropped: int
    dropped_no_model: int
    dropped_overload: int
    slo_met: int
    slo_attainment: float
    latency_p50_ms: float
    latency_p95_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_mean_ms: float
    throughput_tok_s: float
    quality_loss: float
    quality_violations: int
    energy_j: float
    activation_bytes: float
    broadcast_bytes: float
    migration_bytes: float
    migration_pcie_bytes: float
    migration_s: float
    cloud_cost: float
    utilisation: tuple[float, ...]
    gpu_memory_gb: tuple[float, ...]
    host_memory_gb: tuple[float, ...]
    feasible: bool
    infeasibility: str
    moves_in_flight: int = 0
    migration_bytes_left: float = 0.0
    view_mae: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: :func:`coel_env.quality.bits_loss` by bit width (a lookup instead of a select).
_BITS_LOSS = np.zeros(17)
for _b in BITS:
    _BITS_LOSS[_b] = float(quality.bits_loss(np.asarray(_b)))


@functools.cache
def _keep_loss(keep_ratio: float) -> float:
    """:func:`coel_env.quality.token_keep_loss` (plans use a few discrete ratios)."""
    return float(quality.token_keep_loss(keep_ratio))


def _p50_p95(x: np.ndarray) -> tuple[float, float]:
    """Median and 95th percentile (0 for no data), as ``np.percentile(x, (50, 95))``
    (linear interpolation, numpy's formula) without its overhead on small arrays."""
    if not x.size:
        return 0.0, 0.0
    return p50_p95(x)


class World:
    """A CoEL world (see the module docstring).

    Args:
        scenario: a :class:`Scenario`, a preset name or a YAML path.
        overrides: scenario overrides (nested or dotted keys).
    """

    def __init__(
        self, scenario: Scenario | str | Path = "default", overrides: Mapping | None = None
    ) -> None:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario, overrides)
        elif overrides:
            raise ValueError("overrides apply to a preset name or file, not to a Scenario object")
        self.scenario = sc = scenario
        inst = np.random.default_rng(sc.instance_seed)
        self.topology = _build_topology(sc, inst)
        self.n = self.topology.n
        self.servers = self.topology.servers
        self.is_cloud = np.array([s.is_cloud for s in self.servers])
        self.models = tuple(sc.models)
        self.specs = tuple(get_model(m) for m in self.models)
        self.gpus = [get_device(s.gpu) for s in self.servers]
        self.cpus = [get_device(s.host_cpu) for s in self.servers]
        self.unified = np.array([g.unified_memory for g in self.gpus])
        self.gpu_capacity_gb = np.array([s.gpu_memory_gb for s in self.servers], float)
        self.host_capacity_gb = np.array([s.host_memory_gb for s in self.servers], float)
        self.pcie_gbps = np.array(
            [np.inf if (g.unified_memory or g.pcie is None) else g.pcie.gbps for g in self.gpus]
        )
        self.kv_reserve_gb = {m: sc.serving.kv_reserve_gb for m in self.models}
        self._power_busy = np.array([g.power_busy_w for g in self.gpus], float)
        self._power_idle = np.array([g.power_idle_w for g in self.gpus], float)
        self._price = sum(s.cost_per_1k_tokens for s in self.servers if s.is_cloud)
        self.serving = serving_model_for(self.gpus, self.cpus, sc.serving)
        self._prune_prompt = sc.serving.pruning == "prompt"
        self._moves = None
        if sc.updating.migration == "durable":
            self._moves = Moves(
                self.n, self.topology.edges, self.topology.edge_bandwidth_gbit_s, self.pcie_gbps,
                sc.serving.store_gbit_s,
            )  # fmt: skip
        self._batching = None
        if sc.serving.batching == "continuous":
            self._batching = ContinuousBatching(
                self.n, len(self.models), sc.serving.max_batch, sc.serving.step_tokens
            )
            self._kv_token_bytes = np.array([kv_bytes_per_token(m) for m in self.specs], float)
        self.tasks = tuple(sc.workload.tasks)
        self._routing_base = _build_routing(sc, self.specs, self.tasks, inst)
        self.workload = _build_workload(sc, self.n, self.is_cloud, len(self.models), self.tasks)
        self._base_rates = np.where(self.is_cloud, 0.0, sc.workload.rate_per_s)
        self._rate_floor = np.maximum(self._base_rates, 1e-9)[:, None]
        self.slo = SloConfig(sc.workload.ttft_ms, sc.workload.tpot_ms, sc.workload.quality_floor)
        edges = self.topology.edges
        self._ends = np.asarray(list(edges), np.int64).reshape(-1)  # u0, v0, u1, v1, ...
        self._degree = np.bincount(self._ends, minlength=self.n)
        if sc.dynamics.hotspots:  # only then: the distances are not needed otherwise
            self.dynamics = Dynamics(
                sc.dynamics, self.n, len(edges), self.is_cloud,
                distance_km=_distances_km(self.topology), site_weight=_users_per_server(
                    self.topology),
            )  # fmt: skip
        else:
            self.dynamics = Dynamics(sc.dynamics, self.n, len(edges), self.is_cloud)
        field_bytes = 4 * (len(STATUS_FIELDS) + len(self.models))
        for m in self.specs:  # hosted-experts map: 4 bits per expert; requirements table
            field_bytes += math.ceil(m.n_moe_layers * m.n_experts * 4 / 8) + 6 * 4
        self.n_status = len(STATUS_FIELDS) + len(self.models)
        paths = self.topology.paths
        self.perception = Perception(
            sc.perception, paths.latency_ms, paths.hops, self.n_status, field_bytes
        )
        self._seeded = False
        self.pop_version = 0  # bumped at every popularity refresh (never reset)

    # ---------------------------------------------------------------- episode

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: nothing deployed but the naive plan, no news yet.

        Raises:
            ValueError: ``seed`` is a negative integer (numpy's seeds are >= 0).
        """
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed < 0:
            raise ValueError(f"seed={seed!r} is not allowed; must be None or an integer >= 0")
        rng = np.random.default_rng(seed)
        self._rng_work, self._rng_route, self._rng_perc, self._rng_dyn = rng.spawn(4)
        self._arrivals = None
        if isinstance(self.workload, SyntheticWorkload):
            self._arrivals = SyntheticStream(self.workload, self._rng_work)
        n_t = len(self.tasks)
        mix = self._rng_dyn.dirichlet(np.ones(n_t), size=self.n)
        self.dyn: DynamicsState = self.dynamics.initial(mix, self._rng_dyn)
        self.routing = {name: rm for name, rm in self._routing_base.items()}
        for rm in self.routing.values():
            rm.reset()
        self.perception.reset()
        self.paths = self.topology.paths
        self._hist = None  # (time, state) of the paths and popularity (sub_epoch views)
        if self.scenario.perception.sampling == "sub_epoch":
            self._hist = {"paths": [(0.0, self.paths)], "pop": []}
        self._view_mae = 0.0
        self._failed: bytes | None = None  # link_up of the paths in force
        self.t_s = 0.0
        self.epoch = 0
        self._cache: dict = {}
        self._remote: set = set()  # keys of cost entries that use other servers
        self.serving.reset()
        self._mem: tuple = (None, None)
        self._mem_status: tuple = (None, None)
        self._pop = {}
        self._pop_mean: tuple = (None, {})  # (key, popularity_estimate())
        self._share: dict = {}  # (model, home) -> token share of its popularity snapshot
        self._qplan: dict = {}
        self._checked = None
        self._route_key = None
        self._route_tab = None
        self._last = {
            "utilisation": np.zeros(self.n),
            "dropped": np.zeros(self.n),
            "demand": np.zeros((self.n, len(self.models))),
        }
        self.plan = self.naive_plan()
        self._backlog = np.zeros(self.n)  # queued GPU work per server [ms]
        if self._batching is not None:
            self._batching.reset()
        if self._moves is not None:
            self._moves.reset(self.plan)
        self.last_move_s = np.zeros(0)
        self.last_latency_ms = np.zeros(0)
        self.last_ttft_ms = np.zeros(0)
        self._seeded = True
        self._refresh_popularity()
        self._broadcast(0.0)

    def naive_plan(self) -> Plan:
        """Each model on each edge server that can hold it whole at 16 bits (GPU first,
        spilling to host memory), in server order; servers that cannot hold it send
        their requests to the nearest one that does. A model no server can hold is
        not deployed (its requests are dropped)."""
        gpu_free = self.gpu_capacity_gb.copy()
        host_free = np.where(self.unified, 0.0, self.host_capacity_gb)
        plans: dict[str, ModelPlan] = {}
        for name, m in zip(self.models, self.specs, strict=True):
            dense = m.non_expert_bytes(16) / GB + self.kv_reserve_gb[name]
            experts = m.n_moe_layers * m.n_experts * m.expert_bytes(16) / GB
            loc = np.zeros((m.n_moe_layers, m.n_experts, self.n), np.int8)
            homes = []
            for s in range(self.n):
                if self.is_cloud[s]:
                    continue
                room = gpu_free[s] - dense
                if room < 0 or room + host_free[s] < experts:
                    continue
                one = single_server_plan(name, s, self.n, room)
                loc[:, :, s] = one.location[:, :, s]
                on_gpu = (one.location[:, :, s] == 1).sum() * m.expert_bytes(16) / GB
                gpu_free[s] -= dense + on_gpu
                host_free[s] -= experts - on_gpu
                homes.append(s)
            if homes:
                plans[name] = ModelPlan(
                    name, loc, np.full(loc.shape[:2], 16, np.int8), tuple(homes),
                    np.zeros(m.n_moe_layers, np.int8),
                )  # fmt: skip
        return Plan(plans)

    def check(self, plan: Plan) -> InfeasibilityReport:
        """Check ``plan`` against the true capacities and present servers (the last
        answer is kept: an env checks a plan, then steps with it)."""
        up = self.dyn.server_up
        last = getattr(self, "_checked", None)
        if last is not None and last[0] is plan and last[1] == up.tobytes():
            return last[2]
        rep = check_plan(
            plan,
            self.gpu_capacity_gb,
            self.host_capacity_gb,
            up=up,
            unified=self.unified,
            kv_reserve_gb=self.kv_reserve_gb,
        )
        self._checked = (plan, up.tobytes(), rep)
        return rep

    @property
    def deploying(self) -> Plan | None:
        """The plan being deployed under ``updating.migration: durable``: the one the
        moves in flight carry out (the plan in force once they have landed), whose parts
        that have landed serve already; None under ``one_epoch``. While moves are in
        flight the plan in force (:attr:`plan`) mixes old and landed copies, and a server
        that receives copies before its old ones leave may hold more than its memory."""
        return None if self._moves is None else self._moves.target

    @property
    def started(self) -> bool:
        """Whether :meth:`reset` has started an episode (:meth:`step` needs one)."""
        return self._seeded

    def step(self, plan: Plan | None = None) -> EpochReport:
        """One update epoch under ``plan`` (None: keep the plan in force).

        Raises:
            RuntimeError: before the first :meth:`reset`.
            TypeError: ``plan`` is neither a :class:`~coel_env.core.plan.Plan` nor None.
        """
        if not self._seeded:
            raise RuntimeError("call reset(seed) before step()")
        if plan is not None and not isinstance(plan, Plan):
            raise TypeError(
                f"plan must be a Plan or None (None keeps the plan in force), not "
                f"{type(plan).__name__} {plan!r:.60}"
            )
        sc = self.scenario
        dt = sc.epoch_s
        t0, t1 = self.t_s, self.t_s + dt
        # 1) dynamics
        old_up = self.dyn.server_up
        self.dyn = self.dynamics.step(self.dyn)
        refresh = self.epoch % COST_REFRESH_EPOCHS == 0
        if sc.routing.drift and refresh and self.epoch > 0:
            for rm in self.routing.values():  # exact OU step over the refresh period
                rm.step(self._rng_route, dt=float(COST_REFRESH_EPOCHS))
        paths_changed = False
        if sc.dynamics.links:
            link_up = self.dyn.link_up
            failed = link_up.tobytes()  # the set of failed links
            if refresh or failed != self._failed:  # bandwidth is re-sampled at refreshes
                self._failed = failed
                self.paths = self.topology._routes_with(self.dyn.link_scale, link_up)
                self.perception.set_paths(self.paths.latency_ms, self.paths.hops)
                paths_changed = True
                if self._hist is not None:
                    _keep(self._hist["paths"], t0, self.paths)
        up = self.dyn.server_up
        up_changed = up is not old_up and up.tobytes() != old_up.tobytes()
        if up_changed:  # bool [n]
            before = self.plan
            self.plan = _strip(self.plan, up)
            self._forget_changed(before, self.plan)
        # 2) plan check
        feasible, why = True, ""
        new = self.plan
        if up_changed and plan is not None and sc.updating.departed == "strip":
            plan = _strip(plan, ~(old_up & ~up))  # without the servers that just left
        if plan is not None and plan is not self.plan:
            rep = self.check(plan)
            if rep.feasible:
                new = plan
            else:
                feasible, why = False, str(rep)
        # 3) migration
        mig = no_migration(self.n)
        move = None
        if self._moves is not None:
            move = self._move(new, up, up_changed, dt)
            mig = MigrationReport(move.network_bytes, move.pcie_bytes, move.load_s, move.landed)
        elif new is not self.plan:
            mig = migration_cost(
                self.plan,
                new,
                latency_ms=self.paths.latency_ms,
                bottleneck_gbit_s=self.paths.bottleneck_gbit_s,
                pcie_gbps=self.pcie_gbps,
                store_gbit_s=sc.serving.store_gbit_s,
                up=up,
            )
            self._forget_changed(self.plan, new)
            self.plan = new
        if paths_changed:
            self._drop_path_dependent_costs()
        if refresh:
            self._refresh_popularity()
        # 4) requests
        rates = self._base_rates * self.dyn.demand * up
        if isinstance(self.workload, SyntheticWorkload):
            reqs = self._arrivals.next_window(t0, dt, rates, self.dyn.task_mix)
        else:
            reqs = self.workload.generate(t0, dt)
            if len(reqs):
                reqs = reqs[up[reqs.origin]]  # trace requests at absent servers are not offered
        served = self._serve(reqs, mig, dt)
        gpu_mem, host_mem = self._memory()
        if move is not None:  # what landed serves from the next epoch
            self._use(self._moves.effective())
            self.last_move_s = np.array([] if move.done_s is None else [move.done_s])
        mig_s = float(mig.time_s.max()) if mig.time_s.size else 0.0
        if move is not None:  # durable: how long copies were under way in the epoch
            mig_s = move.active_s
        # 5) broadcasts
        broadcast = self._broadcast(t1)
        report = EpochReport(
            epoch=self.epoch,
            t_s=t0,
            **served,
            broadcast_bytes=broadcast,
            view_mae=self._view_mae,
            migration_bytes=mig.network_bytes,
            migration_pcie_bytes=mig.pcie_bytes,
            migration_s=mig_s,
            gpu_memory_gb=tuple(gpu_mem.tolist()),
            host_memory_gb=tuple(host_mem.tolist()),
            feasible=feasible,
            infeasibility=why,
            moves_in_flight=move.in_flight if move is not None else 0,
            migration_bytes_left=move.bytes_left if move is not None else 0.0,
        )
        self.t_s = t1
        self.epoch += 1
        return report

    # ------------------------------------------------------------- internals

    def _move(self, new: Plan, up: np.ndarray, up_changed: bool, dt: float):
        """Durable migration (``updating.migration: durable``): retarget the moves when a
        new plan is deployed (or servers came or went), serve the plan in force now, and
        send for the epoch (:class:`coel_env.core.updating.Moves`)."""
        mv = self._moves
        target = mv.target
        if new is not self.plan and new is not target and not _same_plan(new, target):
            target = new
        elif up_changed:
            target = _strip(target, up)
        else:
            target = None
        if target is not None:
            mv.retarget(self.plan, target, self.paths.latency_ms, up, self.t_s)
            self._use(mv.effective())
        return mv.advance(dt, self.paths, self.dyn.link_scale, self.dyn.link_up, self.t_s)

    def _use(self, plan: Plan) -> None:
        """Put ``plan`` in force (costs of the models whose plan changed are forgotten)."""
        if plan is not self.plan:
            self._forget_changed(self.plan, plan)
            self.plan = plan

    def _refresh_popularity(self) -> None:
        """Popularity per (model, server) from the server's task mix (the cost snapshot).

        A (model, server) whose popularity moved less than :data:`POP_TOLERANCE`
        (mean L1 distance per layer) since its snapshot keeps it, and its cached costs.
        """
        self.pop_version += 1  # the snapshot may change: readers of ``_pop`` re-read it
        for name in self.models:
            rm = self.routing[name]
            cur = rm.popularities()  # [T, L, E], in rm.tasks order
            new = mix_popularity(self.dyn.task_mix, cur)  # einsum "st,tle->sle"
            old = self._pop.get(name)
            if old is None:
                self._pop[name] = new
                continue
            # mean L1 distance per layer > POP_TOLERANCE, per server: compiled, except
            # when a distance is within rounding of the tolerance (then numpy's sums)
            moved = popularity_moved(new, old, POP_TOLERANCE)
            if moved is None:
                moved = np.abs(new - old).sum(axis=2).mean(axis=1) > POP_TOLERANCE
            for h in np.flatnonzero(moved):
                old[h] = new[h]
                self._cache.pop((name, int(h)), None)
                self._share.pop((name, int(h)), None)
                self._share.pop((name, int(h), "rows"), None)
        if self._hist is not None:  # the snapshot from now on (copies: ``_pop`` is updated)
            _keep(self._hist["pop"], self.t_s, {k: v.copy() for k, v in self._pop.items()})

    def _forget_changed(self, old: Plan, new: Plan) -> None:
        """Forget cached costs of the models whose plan object changed, except at homes
        that hold every expert under both plans, in the same tier and at the same bit
        widths: requests there use no other server, so their costs (and quality loss)
        are the same under both plans."""
        up = self.dyn.server_up
        for name in self.models:
            mo, mn = old.models.get(name), new.models.get(name)
            if mo is mn:
                continue
            keys = [k for k in self._cache if k[0] == name]
            if not keys:
                continue
            keep = None
            if (
                mo is not None
                and mn is not None
                and mo.bits.tobytes() == mn.bits.tobytes()  # same shapes: the same model
                and mo.host_policy.tobytes() == mn.host_policy.tobytes()
            ):
                homes = np.array([k[1] for k in keys], np.int64)
                keep = same_local(mo.location, mn.location, homes, up)
            for i, key in enumerate(keys):
                if keep is None or not keep[i]:
                    del self._cache[key]
        self.serving.keep_only(new.models.values())

    def _entry(self, name: str, home: int) -> dict:
        """The cost entry of a (model, home) under the plan in force (created empty;
        entries whose requests use other servers are noted: they depend on the paths)."""
        entry = self._cache.get((name, home))
        if entry is None:
            entry = self._cache[(name, home)] = {}
            mp = self.plan.models.get(name)
            if mp is None or not _all_local(mp, home):
                self._remote.add((name, home))
        return entry

    def _cost(self, name: str, mp: ModelPlan, home: int, n: float, phase: str) -> StepCost:
        """Cost of a pass, from the (model, home) table (filled in one sweep, see below)."""
        entry = self._entry(name, home)
        key = (bucket(n) if phase == "decode" else int(n), phase)
        c = entry.get(key)
        if c is None:
            points, ns, phases = [key], [key[0]], [key[1]]
            if not entry:  # a new snapshot: the points most epochs need, in one sweep
                points, ns, phases = TABLE_POINTS, _TABLE_NS, _TABLE_PHASES
            pop = self._pop[name][home]
            share = self._share.get((name, home))
            if share is None:
                share = self._share[(name, home)] = self.serving.token_share(mp.spec, pop)
            tab = self.serving.table(
                mp, home, pop, ns, phases,
                self.paths.latency_ms, self.paths.bottleneck_gbit_s, self.dyn.server_up,
                token_share=share,
            )  # fmt: skip
            for i, p in enumerate(points):
                entry[p] = tab.at(i)
            c = entry.get(key)
            if c is None:
                c = entry[key] = self._cost(name, mp, home, n, phase)
        return c

    def _drop_path_dependent_costs(self) -> None:
        """Paths changed: forget costs of (model, home) pairs that use remote experts
        (those noted when their entries were made; an entry kept across a plan change
        holds every expert on its home under both plans)."""
        for key in self._remote:
            self._cache.pop(key, None)
        self._remote.clear()
        self.serving.forget_remote()

    def _routes(self, up: np.ndarray) -> np.ndarray:
        """Home of each (model, origin) [n_models, n] (-1: no present, reachable home);
        cached until the plan, the paths or the present servers change."""
        key = (self.plan, self.paths, up.tobytes())
        old = self._route_key
        if old is not None and old[0] is key[0] and old[1] is key[1] and old[2] == key[2]:
            return self._route_tab
        homes = []
        ptr = [0]
        for name in self.models:
            mp = self.plan.models.get(name)
            if mp is not None:
                homes += mp.home
            ptr.append(len(homes))
        tab = route_table(
            self.paths.latency_ms, np.array(homes, np.int64), np.array(ptr, np.int64), up
        )
        self._route_key, self._route_tab = key, tab
        return tab

    def _group_requests(self, reqs: Requests, mig: MigrationReport, dt: float) -> tuple:
        """Route the epoch's requests to their homes and group them per (model, home).

        Returns:
            ``(up, avail, home, gkey, demand, cnt, out_sum)``: the servers' up mask, each
            server's available share of the epoch (background load and migration time
            taken off), each request's home and group key, the demand [n, models] per
            second, and per group the request count and output-token sum.
        """
        n, n_m = self.n, len(self.models)
        n_req = len(reqs)
        up = self.dyn.server_up
        avail = (1.0 - self.dyn.background) * (1.0 - np.minimum(1.0, mig.time_s / dt)) * up
        n_g = n_m * n
        home = np.empty(n_req, np.int64)
        gkey = np.empty(n_req, np.int64)
        demand = np.zeros(n_g)
        cnt = np.zeros(n_g)
        out_sum = np.zeros(n_g)
        group_requests(
            reqs.origin, reqs.model, reqs.output_tokens, self._routes(up), home, gkey,
            demand, cnt, out_sum,
        )  # fmt: skip
        demand = demand.reshape(n_m, n).T / dt
        return up, avail, home, gkey, demand, cnt, out_sum

    def _serve(self, reqs: Requests, mig: MigrationReport, dt: float) -> dict:
        """Serve the epoch's requests; returns the report's serving fields.

        Requests are grouped per (model, home): each group's costs are looked up once;
        the requests themselves and the homes' FIFO queues are walked in compiled loops
        (:func:`coel_env.core.kernels.serve_kernel`).
        """
        if self._batching is not None:
            return self._serve_continuous(reqs, mig, dt)
        n, n_m = self.n, len(self.models)
        n_req = len(reqs)
        epoch_ms = dt * 1000.0
        n_g = n_m * n
        up, avail, home, gkey, demand, cnt, out_sum = self._group_requests(reqs, mig, dt)
        step_ms = np.zeros(n_g)
        bb_g = np.ones(n_g)
        a0_g = np.zeros(n_g)
        a1_g = np.zeros(n_g)
        q_g = np.zeros(n_g)
        ok_g = np.zeros(n_g, bool)
        groups = []
        net = []
        step_busy = []
        pre_busy = []
        cnt_l, out_l = cnt.tolist(), out_sum.tolist()
        cache = self._cache
        for g in np.flatnonzero(cnt).tolist():
            mi, h = divmod(g, n)
            name = self.models[mi]
            entry = cache.get((name, h))
            # (one-sequence decode ms, prefill line, quality loss) of the (model, home)
            known = entry.get("serve") if entry is not None else None
            if known is None:
                known = self._serve_entry(name, mi, h)
                if known is None:  # not servable
                    continue
                entry = cache[(name, h)]
            c1_ms, line, q = known
            b = max(1.0, cnt_l[g] / dt * (out_l[g] / cnt_l[g]) * c1_ms / 1000.0)  # Little's law
            bb = bucket(b)
            step = entry.get((bb, "decode"))
            if step is None:
                step = self._cost(name, self.plan.models[name], h, b, "decode")
            a0_g[g], a1_g[g] = line[0], line[1]
            bb_g[g] = float(bb)
            step_ms[g] = step.ms
            q_g[g] = q
            ok_g[g] = True
            groups.append(g)
            step_busy.append(step.busy_ms)
            if self._prune_prompt:  # only the kept prompt tokens are prefilled
                keep = self.plan.models[name].keep_ratio
                a1_g[g] = line[1] * keep
                pre_busy.append(line[2].busy_ms * keep)
                net.append((step.net_bytes, line[2].net_bytes * keep))
            else:
                pre_busy.append(line[2].busy_ms)
                net.append((step.net_bytes, line[2].net_bytes))
        served, lat_s, ttft_s, dropped_at, backlog, util, out_g, in_g, counts, sums = serve_kernel(
            home,
            gkey,
            reqs.origin,
            reqs.arrival_s,
            reqs.input_tokens,
            reqs.output_tokens,
            reqs.slo_ms,
            reqs.quality_floor,
            ok_g,
            a0_g,
            a1_g,
            step_ms,
            bb_g,
            q_g,
            self.paths.latency_ms,
            avail,
            up,
            self._backlog,
            self.t_s,
            epoch_ms,
            self.scenario.serving.max_queue_s * 1000.0,
        )  # fmt: skip
        self._backlog = backlog
        busy = np.zeros(n)
        act_bytes = cloud_tokens = 0.0
        if groups:
            act_bytes, cloud_tokens = group_work(
                np.array(groups, np.int64), np.array(step_busy), np.array(pre_busy),
                np.array(net), bb_g, out_g, in_g, float(PREFILL_POINTS[0]), self.is_cloud, busy,
            )  # fmt: skip
        busy = np.minimum(busy, epoch_ms)
        self._last = {"utilisation": util, "dropped": dropped_at, "demand": demand}
        return self._serve_report(
            n_req, lat_s, ttft_s, counts, sums, dt, self._energy_j(up, busy, epoch_ms),
            float(act_bytes), cloud_tokens, util,
        )  # fmt: skip

    def _energy_j(self, up: np.ndarray, busy: np.ndarray, epoch_ms: float) -> float:
        """GPU energy of an epoch [J]: busy and idle board power of the present servers."""
        return (
            float(
                (
                    np.where(
                        up, self._power_busy * busy + self._power_idle * (epoch_ms - busy), 0.0
                    )
                ).sum()
            )
            / 1000
        )

    def _serve_report(
        self, n_req, lat_s, ttft_s, counts, sums, dt, energy, act_bytes, cloud_tokens, util
    ) -> dict:
        """The serving part of an epoch's report from the served requests' latencies
        (kept for exact run percentiles) and the serving loop's counts and sums."""
        lat_q, ttft_q = _p50_p95(lat_s), _p50_p95(ttft_s)
        self.last_latency_ms = lat_s  # served requests of this epoch, for exact run percentiles
        self.last_ttft_ms = ttft_s
        n_served = lat_s.size
        n_slo = int(counts[2])
        return {
            "requests_arrived": n_req,
            "requests_served": n_served,
            "requests_dropped": n_req - n_served,
            "dropped_no_model": int(counts[0]),
            "dropped_overload": int(counts[1]),
            "slo_met": n_slo,
            "slo_attainment": n_slo / n_req if n_req else 1.0,
            "latency_p50_ms": lat_q[0],
            "latency_p95_ms": lat_q[1],
            "ttft_p50_ms": ttft_q[0],
            "ttft_p95_ms": ttft_q[1],
            "tpot_mean_ms": float(sums[0]) / n_served if n_served else 0.0,
            "throughput_tok_s": float(sums[2]) / dt,
            "quality_loss": float(sums[1]) / n_served if n_served else 0.0,
            "quality_violations": int(counts[3]),
            "energy_j": energy,
            "activation_bytes": act_bytes,
            "cloud_cost": cloud_tokens / 1000 * self._price,
            "utilisation": tuple(util.tolist()),
        }

    def _serve_continuous(self, reqs: Requests, mig: MigrationReport, dt: float) -> dict:
        """:meth:`_serve` under continuous batching (``serving.batching: continuous``;
        :mod:`coel_env.core.batching`): each (model, home) group with arrivals or carried
        sequences is costed (prefill line, decode pass at each costed batch size, KV
        pool), then every home's engines are run through the epoch."""
        n, n_m = self.n, len(self.models)
        n_req = len(reqs)
        epoch_ms = dt * 1000.0
        n_g = n_m * n
        up, avail, home, gkey, demand, cnt, out_sum = self._group_requests(reqs, mig, dt)
        cb = self._batching
        pts = cb.points
        ok_g = np.zeros(n_g, bool)
        a0_g = np.zeros(n_g)
        a1_g = np.zeros(n_g)
        q_g = np.zeros(n_g)
        kv_cap = np.zeros(n_g)
        scale_g = np.ones(n_g)
        dec_g = np.ones((n_g, len(pts)))
        gpu_use = self._memory()[0]
        free_gb = np.maximum(self.gpu_capacity_gb - gpu_use, 0.0)
        n_homed = np.zeros(n)
        for mp in self.plan.models.values():
            n_homed[list(mp.home)] += 1
        costed = {}
        groups = np.union1d(np.flatnonzero(cnt), cb.carried_groups())
        for g in groups.tolist():
            mi, h = divmod(g, n)
            name = self.models[mi]
            mp = self.plan.models.get(name)
            if mp is None or not up[h] or h not in mp.home:
                continue
            entry = self._cache.get((name, h))
            known = entry.get("serve") if entry is not None else None
            if known is None:
                known = self._serve_entry(name, mi, h)
                if known is None:  # not servable
                    continue
            _, line, q = known
            curve = self._decode_curve(name, mp, h, pts)
            ok_g[g] = True
            a0_g[g], a1_g[g] = line[0], line[1]
            q_g[g] = q
            dec_g[g] = curve[0]
            pool_gb = self.kv_reserve_gb[name] + free_gb[h] / max(n_homed[h], 1.0)
            kv_cap[g] = pool_gb * GB / self._kv_token_bytes[mi]
            costed[g] = (curve, line[2])
            if self._prune_prompt:  # only the kept prompt tokens are prefilled and cached
                scale_g[g] = mp.keep_ratio
        res = cb.serve(
            reqs, home, gkey, ok_g, a0_g, a1_g, dec_g, kv_cap, q_g, scale_g, avail,
            self.paths.latency_ms, self.t_s, epoch_ms, self.scenario.serving.max_queue_s * 1000.0,
        )  # fmt: skip
        busy = np.zeros(n)
        act_bytes = 0.0
        for g, ((_, c_busy, c_net), pre) in costed.items():
            w = res.w_dec[g]
            busy += w @ c_busy
            act_bytes += float(w @ c_net)
            if res.prefill_ms[g] > 0 and pre.ms > 0:
                busy += res.prefill_ms[g] / pre.ms * pre.busy_ms
                act_bytes += res.prefill_tokens[g] * pre.net_bytes / PREFILL_POINTS[0]
        served = res.status == 1
        at_cloud = served & (home >= 0) & self.is_cloud[np.maximum(home, 0)]
        cloud_tokens = float(reqs.input_tokens[at_cloud].sum() + reqs.output_tokens[at_cloud].sum())
        busy = np.minimum(busy, epoch_ms)
        energy = self._energy_j(up, busy, epoch_ms)
        util = np.minimum(res.work_ms / epoch_ms, 1.0) * up
        self._last = {"utilisation": util, "dropped": res.dropped_at, "demand": demand}
        return self._serve_report(
            n_req, res.latency_ms, res.ttft_ms, res.counts, res.sums, dt, energy, act_bytes,
            cloud_tokens, util,
        )  # fmt: skip

    def _decode_curve(self, name: str, mp: ModelPlan, h: int, points: tuple) -> tuple:
        """Decode passes of a (model, home) group at each batch size in ``points``
        (powers of two): (ms [P], busy per server [P, n], activation bytes [P]), kept in
        its cost entry; the sizes not costed yet are costed in one sweep."""
        entry = self._entry(name, h)
        curve = entry.get("curve")
        if curve is None:
            missing = [b for b in points if (b, "decode") not in entry]
            if missing:
                share = self._share.get((name, h))
                pop = self._pop[name][h]
                if share is None:
                    share = self._share[(name, h)] = self.serving.token_share(mp.spec, pop)
                tab = self.serving.table(
                    mp, h, pop, missing, ("decode",) * len(missing),
                    self.paths.latency_ms, self.paths.bottleneck_gbit_s, self.dyn.server_up,
                    token_share=share,
                )  # fmt: skip
                for i, b in enumerate(missing):
                    entry[(b, "decode")] = tab.at(i)
            steps = [entry[(b, "decode")] for b in points]
            curve = entry["curve"] = (
                np.array([c.ms for c in steps]),
                np.array([c.busy_ms for c in steps]),
                np.array([c.net_bytes for c in steps]),
            )
        return curve

    def _serve_entry(self, name: str, mi: int, h: int) -> tuple | None:
        """(one-sequence decode ms, prefill line, quality loss) of a (model, home) group,
        kept in its cost entry; None when the group is not servable."""
        mp = self.plan.models[name]
        c1 = self._cost(name, mp, h, 1, "decode")
        if not c1.servable:
            return None
        entry = self._entry(name, h)
        line = entry.get("prefill_line")
        if line is None:
            pre = [self._cost(name, mp, h, p, "prefill") for p in PREFILL_POINTS]
            line = entry["prefill_line"] = (*prefill_line(pre), pre[0])
        out = entry["serve"] = (c1.ms, line, self._quality(mp, self.specs[mi], h))
        return out

    def _memory(self) -> tuple[np.ndarray, np.ndarray]:
        """GPU and host memory the plan in force uses per server [GB] (cached per plan)."""
        if self._mem[0] is not self.plan:
            self._mem = (self.plan, memory_use_gb(self.plan, self.n, self.kv_reserve_gb))
        return self._mem[1]

    def _quality(self, mp: ModelPlan, m, home: int) -> float:
        """:func:`coel_env.quality.quantization_loss` of ``mp`` at ``home``'s popularity
        (plus the token-keep loss when experts are remote), with the per-expert losses
        of the plan's bit widths computed once per plan."""
        entry = self._entry(mp.model, home)
        if "q" not in entry:
            if self._qplan.get(mp.model, (None,))[0] is not mp:
                loss = _BITS_LOSS[mp.bits]
                ws = 0.0
                shared = 0.0
                if m.n_shared_experts:
                    ws = quality.SHARED_SENSITIVITY * (m.n_shared_experts / m.top_k)
                    shared = float(_BITS_LOSS[16])
                keep = _keep_loss(mp.keep_ratio)
                self._qplan[mp.model] = (mp, loss, ws, shared, keep, not loss.any())
            _, loss, ws, shared, keep, exact16 = self._qplan[mp.model]
            if exact16 and not shared:
                value = 0.0
            else:
                shares = self._share.get((mp.model, home, "rows"))
                if shares is None:  # rows of the popularity normalised (per snapshot)
                    pop = self._pop[mp.model][home]
                    tot = pop.sum(axis=1, keepdims=True)
                    shares = np.where(tot > 0, pop / np.where(tot > 0, tot, 1.0), 1 / pop.shape[1])
                    self._share[(mp.model, home, "rows")] = shares
                routed = np.einsum("le,le->l", shares, loss)
                value = (
                    float(((routed + ws * shared) / (1.0 + ws)).mean())
                    if ws
                    else float(routed.mean())
                )
            if self._prune_prompt or not _all_local(mp, home):
                value += keep
            entry["q"] = value
        return entry["q"]

    def true_status(self) -> np.ndarray:
        """Each server's true status vector [n, len(STATUS_FIELDS) + n_models]."""
        if self._mem_status[0] is not self.plan:  # the memory fields change with the plan
            gpu, host = self._memory()
            self._mem_status = (
                self.plan,
                free_memory(gpu, host, self.gpu_capacity_gb, self.host_capacity_gb, self.unified),
            )
        last = self._last
        out = np.empty((self.n, self.n_status))
        status_kernel(
            out, self._mem_status[1], last["utilisation"], last["demand"].sum(axis=1),
            last["dropped"], self.scenario.epoch_s, self.dyn.background, self.dyn.server_up,
            self._ends, self.dyn.link_scale, self.dyn.link_up, self._degree, last["demand"],
            self._rate_floor[:, 0],
        )  # fmt: skip
        return out

    def _broadcast(self, t1: float) -> float:
        truth = self.true_status()
        out = self.perception.advance(t1, truth, self._rng_perc, self.dyn.server_up)
        self._view_mae = self.perception.view_error(0, truth)
        return out

    def view_network(self, server: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """The path latency [n, n] [ms], path bandwidth [n, n] [Gbit/s] and expert
        popularity per model [L, E] that ``server`` knows: the truth (the paths in force,
        :meth:`popularity_estimate`) unless ``perception.sampling`` is ``sub_epoch``;
        then as broadcast: the paths in force when the oldest news ``server`` holds from
        a server it believes present was sent (:meth:`view_paths`), and the mean over
        servers of each one's popularity snapshot in force when its news was sent (the
        oldest kept for a server never heard from)."""
        if self._hist is None:
            return self.paths.latency_ms, self.paths.bottleneck_gbit_s, self.popularity_estimate()
        sent, oldest = self._sent(server)
        paths = _as_of(self._hist["paths"], oldest)
        pops = self._hist["pop"]
        out = {}
        for name in self.models:
            acc = 0.0
            for s in range(self.n):
                snap = _as_of(pops, float(sent[s]) if np.isfinite(sent[s]) else -np.inf)
                acc = acc + snap[name][s]
            out[name] = acc / self.n
        return paths.latency_ms, paths.bottleneck_gbit_s, out

    def view_paths(self, server: int):
        """The paths (latency, bottleneck bandwidth) that ``server`` knows: those in force
        unless ``perception.sampling`` is ``sub_epoch``, then those in force when the
        oldest news it holds from a server it believes present was sent (the paths of
        :meth:`view_network`, without building the popularity)."""
        if self._hist is None:
            return self.paths
        return _as_of(self._hist["paths"], self._sent(server)[1])

    def _sent(self, server: int) -> tuple[np.ndarray, float]:
        """When each piece of news ``server`` holds was sent [s], and the oldest of those
        from servers it believes present (now, if none)."""
        status, age = self.view(server)
        sent = self.t_s - age
        up = np.isfinite(age) & (status[:, STATUS_FIELDS.index("up")] > 0.5)
        oldest = float(sent[up].min()) if up.any() else self.t_s
        return sent, oldest

    def view(self, server: int) -> tuple[np.ndarray, np.ndarray]:
        """What ``server`` believes of every server: status [n, F] and age [n] [s].

        A server not heard from for more than ``perception.timeout_periods`` broadcast
        periods is believed absent (its ``up`` field reads 0; the rest of its last
        message is kept): a heartbeat failure detector. The arrays are read-only.

        Raises:
            TypeError: ``server`` is not an integer.
            ValueError: ``server`` is not an index 0..n-1.
        """
        if isinstance(server, bool) or not isinstance(server, int | np.integer):
            raise TypeError(
                f"server must be an integer 0..{self.n - 1}, not {type(server).__name__} {server!r}"
            )
        if not 0 <= server < self.n:
            raise ValueError(f"server={server!r} is not allowed; servers are 0..{self.n - 1}")
        status, age = self.perception.view(server, self.t_s)  # a row view, a new array
        silent = age > self.scenario.perception.timeout_s  # never heard: inf, up is 0 already
        if silent.any() and status[silent, _UP].any():
            status = status.copy()
            status[silent, _UP] = 0.0
        status.setflags(write=False)  # this view only: the perception's state stays writable
        age.setflags(write=False)
        return status, age

    # ------------------------------------------------------- read-only state

    @property
    def base_rates_per_s(self) -> np.ndarray:
        """Each server's base request rate before the dynamics' demand factor [1/s]
        (0 at the cloud); a read-only array."""
        out = self._base_rates.view()
        out.setflags(write=False)
        return out

    def memory_use_gb(self) -> tuple[np.ndarray, np.ndarray]:
        """GPU and host memory the plan in force uses per server [GB] (copies)."""
        gpu, host = self._memory()
        return gpu.copy(), host.copy()

    def popularity_estimate(self) -> dict[str, np.ndarray]:
        """Each model's expert popularity [L, E], the mean over servers of their routing
        snapshots: the estimate the envs, baselines and MILP decide with.

        The same read-only arrays are returned until the popularity is refreshed (the
        epoch after a change), so callers may memoise on their identity.
        """
        key = self.pop_version
        if self._pop_mean[0] != key:
            est = {name: pop.mean(axis=0) for name, pop in self._pop.items()}
            for a in est.values():
                a.setflags(write=False)
            self._pop_mean = (key, est)
        return self._pop_mean[1]


def _all_local(mp: ModelPlan, home: int) -> bool:
    """Whether ``home`` holds every expert of ``mp`` (memoised on the plan: it is
    immutable)."""
    memo = mp.__dict__.setdefault("_all_local", {})
    hit = memo.get(home)
    if hit is None:
        hit = memo[home] = holds_all(mp.location, home)
    return hit


#: Changes of the paths and popularity kept for views (``perception.sampling: sub_epoch``).
HISTORY = 8


def _keep(hist: list, t_s: float, state) -> None:
    """Record that ``state`` is in force from ``t_s`` on (the last :data:`HISTORY`)."""
    if hist and hist[-1][0] == t_s:
        hist[-1] = (t_s, state)
    else:
        hist.append((t_s, state))
    del hist[:-HISTORY]


def _as_of(hist: list, t_s: float):
    """The state in force at ``t_s`` (the oldest kept before it)."""
    out = hist[0][1]
    for t, state in hist:
        if t <= t_s:
            out = state
        else:
            break
    return out


def _same_plan(a: Plan, b: Plan) -> bool:
    """Whether two plans deploy the same models the same way."""
    return a is b or (
        set(a.models) == set(b.models) and all(a.models[k] == b.models[k] for k in a.models)
    )


def _strip(plan: Plan, up: np.ndarray) -> Plan:
    """The plan without anything on absent servers (their experts vanish).

    Model plans that hold nothing on an absent server are kept as they are (same
    objects), and so is the plan when nothing changes, so cached costs survive.
    """
    out = {}
    changed = False
    down = ~np.asarray(up, bool)
    for name, mp in plan.models.items():
        if not (mp.location[:, :, down] != ABSENT).any() and all(up[h] for h in mp.home):
            out[name] = mp
            continue
        changed = True
        homes = tuple(h for h in mp.home if up[h])
        if not homes:
            continue
        loc = np.where(up[None, None, :], mp.location, ABSENT).astype(np.int8)
        out[name] = ModelPlan(name, loc, mp.bits, homes, mp.host_policy, mp.keep_ratio)
    return Plan(out) if changed else plan


def _distances_km(t: topo.Topology) -> np.ndarray:
    """Distances between the servers [km] (for demand hot spots): great-circle when every
    edge server has coordinates (EUA, GraphML), planar for generated topologies
    (``pos_km``), else the shortest path's latency at the speed of light in fibre; the
    cloud is far from everything."""
    n = t.n
    edge = [i for i, s in enumerate(t.servers) if not s.is_cloud]
    d = np.full((n, n), np.inf)
    idx = np.array(edge, np.int64)
    srv = [t.servers[i] for i in edge]
    pos = [t.graph.nodes[i].get("pos_km") for i in edge]
    if all(s.lat is not None for s in srv):
        la = np.array([s.lat for s in srv])
        lo = np.array([s.lon for s in srv])
        sub = topo.haversine_km(la[:, None], lo[:, None], la[None, :], lo[None, :])
    elif all(p is not None for p in pos):
        xy = np.asarray(pos, float)
        sub = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    else:
        sub = np.asarray(t.latency_ms, float)[np.ix_(idx, idx)] / topo.PROPAGATION_MS_PER_KM
    d[np.ix_(idx, idx)] = sub
    np.fill_diagonal(d, 0.0)
    return d


def _users_per_server(t: topo.Topology) -> np.ndarray | None:
    """How many of the topology's users (EUA) are attached to each server; None without
    users."""
    if t.users is None:
        return None
    return np.bincount(np.asarray(t.users, np.int64), minlength=t.n).astype(float)


def _need_file(key: str, path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise ValueError(f"{key}={path!r} does not exist")


def _build_topology(sc: Scenario, rng: np.random.Generator) -> topo.Topology:
    t = sc.topology
    _need_file("topology.path", t.path)
    _need_file("topology.users_path", t.users_path)
    mix = dict(t.device_mix)
    if t.kind == "random_geometric":
        g = topo.random_geometric(
            t.n_servers, area_km=t.area_km, device_mix=mix, rng=rng,
            link_bandwidth_gbit_s=tuple(t.link_gbit_s),
        )  # fmt: skip
    elif t.kind == "waxman":
        g = topo.waxman(
            t.n_servers, alpha=t.waxman_alpha, beta=t.waxman_beta, area_km=t.area_km,
            device_mix=mix, rng=rng, link_bandwidth_gbit_s=tuple(t.link_gbit_s),
        )  # fmt: skip
    elif t.kind == "graphml":
        g = load_graphml(
            t.path, device_mix=mix, rng=rng, largest_component=True,
            default_latency_ms=t.default_latency_ms,
        )  # fmt: skip
    else:
        g = load_eua(
            t.path, n_servers=t.n_servers, k_nearest=t.k_nearest, device_mix=mix, rng=rng,
            users_csv=t.users_path, link_bandwidth_gbit_s=tuple(t.link_gbit_s),
        )  # fmt: skip
    if sc.cloud.enabled:
        g = topo.add_cloud(
            g, wan_latency_ms=sc.cloud.wan_latency_ms, wan_bandwidth_gbit_s=sc.cloud.wan_gbit_s,
            cost_per_1k_tokens=sc.cloud.cost_per_1k_tokens,
        )  # fmt: skip
    return g


def _build_routing(sc: Scenario, specs, tasks, rng) -> dict[str, RoutingModel]:
    drift = DriftConfig() if sc.routing.drift else NO_DRIFT
    out = {}
    for m in specs:
        real = None
        if m.name == "deepseek-v2-lite" and sc.routing.esft_dir:
            real = load_esft(sc.routing.esft_dir).popularity
        elif m.name == "mixtral-8x7b" and sc.routing.fiddler_dir:
            real = load_fiddler(sc.routing.fiddler_dir)
        if real is not None:  # map the world's tasks onto the data's tasks, in order, cycling
            keys = sorted(real)
            pops = {
                t: real[t] if t in real else real[keys[i % len(keys)]] for i, t in enumerate(tasks)
            }
            out[m.name] = RoutingModel(m.name, pops, drift=drift)
        else:
            out[m.name] = RoutingModel.synthetic(m.name, rng, tasks, drift=drift)
    return out


def _build_workload(sc: Scenario, n: int, is_cloud: np.ndarray, n_models: int, tasks):
    w = sc.workload
    _need_file("workload.trace", w.trace)
    slo = SloConfig(w.ttft_ms, w.tpot_ms, w.quality_floor)
    if w.kind == "synthetic":
        rates = tuple(0.0 if c else w.rate_per_s for c in is_cloud)
        cfg = WorkloadConfig.from_fit(
            AZURE_CONV_FIT, n, rates_per_s=rates, task_names=tuple(tasks),
            model_mix=tuple((1.0 / n_models,) * n_models for _ in range(n)),
            diurnal_amplitude=w.diurnal_amplitude, diurnal_period_s=w.diurnal_period_s,
            diurnal_phase_rad=w.diurnal_phase_rad, slo=slo,
        )  # fmt: skip
        return SyntheticWorkload(cfg)
    edge = [i for i in range(n) if not is_cloud[i]]
    mapping = TraceMapping(
        servers=tuple(str(i) for i in edge), models=tuple(sc.models), tasks=tuple(tasks), slo=slo
    )
    loader = load_azure_trace if w.kind == "azure" else load_generic_trace
    reqs = loader(
        w.trace, time_scale=w.time_scale, mapping=mapping, rng=np.random.default_rng(0),
        sort=w.sort,
    )  # fmt: skip
    origin = np.asarray(edge, np.int32)[reqs.origin]
    reqs = Requests(**{**{f.name: getattr(reqs, f.name) for f in dataclasses.fields(reqs)},
                       "origin": origin})  # fmt: skip
    return TraceWorkload(reqs, loop=w.loop)
