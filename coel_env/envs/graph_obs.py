"""The graph env's observation: padded, size-invariant arrays of servers, links, models,
expert groups and the draft plan (layout: :data:`SERVER_FEATURES` and the others; the env
docstring describes every key).

Everything is ``float32`` in [0, 1] except the validity masks (``MultiBinary``). Arrays are
padded with zeros up to ``max_servers`` / ``max_models``; ``server_mask`` and
``model_mask`` flag the real entries.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from numba import njit

from coel_env.core.observation import Observation
from coel_env.core.plan import expert_gb_table
from coel_env.core.world import STATUS_FIELDS, World
from coel_env.envs.graph_edits import N_BITS, PlanEditor
from coel_env.quality import bits_loss

AGE_PERIODS = 5.0  # ages are normalised by this many broadcast periods
DEMAND_SCALE = 5.0  # demand is normalised by this multiple of the base rate
LATENCY_SCALE_MS = 100.0  # path latency is normalised by this [ms]
BANDWIDTH_SCALE = 10.0  # path bandwidth is normalised by this [Gbit/s]
GPU_SCALE_GB = 160.0  # capacities are normalised by these [GB]
HOST_SCALE_GB = 512.0
MODEL_SCALE_GB = 100.0  # a model's experts at a bit width [GB]
DENSE_SCALE_GB = 10.0

SERVER_FEATURES = (
    "believed_up", "heard", "age", "is_controller", "is_cloud", "unified",
    "gpu_capacity", "host_capacity", "log_tflops", "memory_bandwidth",
    "free_gpu_share", "free_host_share", "utilisation", "dropped_share", "background",
    "link_scale", "demand", "degree",
    "draft_dense_share", "draft_gpu_share", "draft_host_share", "draft_homes",
)  # fmt: skip
MODEL_FEATURES = (
    "deployed", "layers", "experts", "dense_gb",
    *(f"experts_gb_{b}" for b in range(N_BITS)),
    "keep_ratio", "fetch_share", "homes", "demand",
    "quality_loss", "pop_on_gpu", "pop_at_homes", "migration",
)  # fmt: skip
PAIR_FEATURES = ("home", "demand", "held_share", "pop_held", "gpu_share", "gb_share")
GROUP_FEATURES = (
    "token_share", *(f"bits_share_{b}" for b in range(N_BITS)),
    "gb_share", "copies", "gpu_copies", "servers",
)  # fmt: skip
PLACEMENT_FEATURES = ("held_share", "gpu_share")
GLOBAL_FEATURES = ("progress", "edits_used", "migration", "changed")

_BITS_LOSS = np.array([float(bits_loss(np.asarray(b))) for b in (16, 8, 4, 3, 2)])


@njit(cache=True, error_model="numpy")
def new_copies_gb_of(location, before, gb_of_bits, bits):
    """GB of the expert copies in ``location`` [L, E, n] that ``before`` lacks, each
    expert's GB looked up as ``gb_of_bits[bits]`` (without building an [L, E] table)."""
    n_l, n_e, n = location.shape
    out = 0.0
    for layer in range(n_l):
        for e in range(n_e):
            for s in range(n):
                if location[layer, e, s] != 0 and before[layer, e, s] == 0:
                    out += gb_of_bits[bits[layer, e]]
    return out


@njit(cache=True, error_model="numpy")
def model_blocks(
    held, on_gpu, pop_held, copies, n_bits_of, group_size, home, gpu, host, gcap, sizes,
    demand, scalars, model, pair, group, place,
):  # fmt: skip
    """Write a deployed model's rows of the model [F], pair [S, F], group [G, F] and
    placement [G, S, 2] blocks (features: the env docstring), each clipped to [0, 1].
    ``scalars``: keep ratio, fetch share, quality-loss estimate, popularity share with a
    GPU copy, migration estimate."""
    n_g, n_b, n = held.shape
    n_exp = 0
    for g in range(n_g):
        n_exp += group_size[g]
    n_homes = 0
    pop_homes = 0.0
    dem = 0.0
    for s in range(n):
        dem += demand[s]
        if home[s]:
            n_homes += 1
            pop_homes += pop_held[s]
    vals = np.empty(8)
    vals[0] = 1.0
    vals[1] = scalars[0]
    vals[2] = scalars[1]
    vals[3] = n_homes / n
    vals[4] = dem / n
    vals[5] = scalars[2]
    vals[6] = scalars[3]
    vals[7] = pop_homes / n_homes if n_homes else 0.0
    model[0] = vals[0]
    for j in range(1, 8):
        model[8 + j] = min(max(vals[j], 0.0), 1.0)
    model[16] = min(max(scalars[4], 0.0), 1.0)
    full16 = 0.0
    for g in range(n_g):
        full16 += group_size[g] * sizes[0]
    for s in range(n):
        h = 0
        og = 0
        for g in range(n_g):
            for b in range(n_b):
                h += held[g, b, s]
            og += on_gpu[g, s]
        pair[s, 0] = 1.0 if home[s] else 0.0
        pair[s, 2] = min(h / n_exp, 1.0)
        pair[s, 3] = min(max(pop_held[s], 0.0), 1.0)
        pair[s, 4] = min(og / n_exp, 1.0)
        pair[s, 5] = min((gpu[s] + host[s]) / max(gcap[s], 1e-9), 1.0)
    for g in range(n_g):
        gsz = max(group_size[g], 1)
        gb = 0.0
        for b in range(n_b):
            group[g, 1 + b] = n_bits_of[g, b] / gsz
            gb += n_bits_of[g, b] * sizes[b]
        group[g, 1 + n_b] = min(gb / max(full16, 1e-9), 1.0)
        group[g, 2 + n_b] = min(copies[g] / gsz / n, 1.0)
        og_all = 0
        servers = 0
        for s in range(n):
            h = 0
            for b in range(n_b):
                h += held[g, b, s]
            og_all += on_gpu[g, s]
            if h > 0:
                servers += 1
            place[g, s, 0] = min(h / gsz, 1.0)
            place[g, s, 1] = min(on_gpu[g, s] / gsz, 1.0)
        group[g, 3 + n_b] = min(og_all / max(copies[g], 1), 1.0)
        group[g, 4 + n_b] = servers / n


class GraphObservation:
    """Builds the observation dict of one controller from the world and the editor."""

    def __init__(self, max_servers: int, max_models: int, n_groups: int) -> None:
        self.S, self.M, self.G = max_servers, max_models, n_groups

    def space(self) -> spaces.Dict:
        S, M, G = self.S, self.M, self.G

        def box(*shape):
            return spaces.Box(0.0, 1.0, shape, np.float32)

        return spaces.Dict({
            "server": box(S, len(SERVER_FEATURES)),
            "server_mask": spaces.MultiBinary(S),
            "latency": box(S, S),
            "bandwidth": box(S, S),
            "adjacency": box(S, S),
            "model": box(M, len(MODEL_FEATURES)),
            "model_mask": spaces.MultiBinary(M),
            "pair": box(M, S, len(PAIR_FEATURES)),
            "group": box(M, G, len(GROUP_FEATURES)),
            "placement": box(M, G, S, len(PLACEMENT_FEATURES)),
            "globals": box(len(GLOBAL_FEATURES)),
        })  # fmt: skip

    # --------------------------------------------------------------- per epoch

    def begin(self, world: World, controller: int) -> None:
        """What stays fixed through an epoch's edits: the controller's view, links."""
        S, M = self.S, self.M
        n, models = world.n, world.models
        view = Observation.from_view(world, controller)
        status, age = world.view(controller)
        self.world = world
        out = self._fixed = {
            "server": np.zeros((S, len(SERVER_FEATURES)), np.float32),
            "server_mask": np.zeros(S, np.int8),
            "latency": np.zeros((S, S), np.float32),
            "bandwidth": np.zeros((S, S), np.float32),
            "adjacency": np.zeros((S, S), np.float32),
            "model_mask": np.zeros(M, np.int8),
        }
        out["server_mask"][:n] = 1
        out["model_mask"][: len(models)] = 1
        f = out["server"]
        heard = np.isfinite(age)
        period = world.scenario.perception.period_s
        rate = world.scenario.workload.rate_per_s
        col = {k: i for i, k in enumerate(SERVER_FEATURES)}
        f[:n, col["believed_up"]] = view.up
        f[:n, col["heard"]] = heard
        f[:n, col["age"]] = np.where(heard, np.clip(age / (AGE_PERIODS * period), 0, 1), 1.0)
        f[controller, col["is_controller"]] = 1.0
        f[:n, col["is_cloud"]] = world.is_cloud
        f[:n, col["unified"]] = world.unified
        f[:n, col["gpu_capacity"]] = world.gpu_capacity_gb / GPU_SCALE_GB
        f[:n, col["host_capacity"]] = world.host_capacity_gb / HOST_SCALE_GB
        tflops = np.array([g.peak_tflops for g in world.gpus])
        f[:n, col["log_tflops"]] = np.log1p(tflops) / np.log1p(2000.0)
        f[:n, col["memory_bandwidth"]] = np.array([g.mem_bw_gbps for g in world.gpus]) / 5000.0
        for k in ("free_gpu_share", "free_host_share", "utilisation", "dropped_share"):
            name = {"free_gpu_share": "free_gpu_frac", "free_host_share": "free_host_frac",
                    "dropped_share": "dropped_frac"}.get(k, k)  # fmt: skip
            f[:n, col[k]] = np.where(heard, status[:, STATUS_FIELDS.index(name)], 0.0)
        f[:n, col["background"]] = view.background
        f[:n, col["link_scale"]] = np.where(
            heard, status[:, STATUS_FIELDS.index("link_scale")] / 2.0, 0.0
        )
        demand = view.demand_per_s / (DEMAND_SCALE * rate)  # [n, M]
        self._demand = np.nan_to_num(demand, nan=0.0, posinf=1.0)
        self._demand_pair = np.clip(self._demand, 0.0, 1.0)  # the pair block's column
        f[:n, col["demand"]] = self._demand.sum(axis=1) / max(len(models), 1)
        adj = np.zeros((n, n), bool)
        for u, v in world.topology.edges:
            adj[u, v] = adj[v, u] = True
        f[:n, col["degree"]] = adj.sum(axis=1) / 16.0
        out["latency"][:n, :n] = view.latency_ms / LATENCY_SCALE_MS
        out["bandwidth"][:n, :n] = view.bandwidth_gbit_s / BANDWIDTH_SCALE
        out["adjacency"][:n, :n] = adj
        for k in ("server", "latency", "bandwidth"):
            np.clip(np.nan_to_num(out[k], nan=1.0, posinf=1.0), 0.0, 1.0, out=out[k])
        self._col = col
        self._model_static = np.zeros((M, len(MODEL_FEATURES)), np.float32)
        for i, spec in enumerate(world.specs):
            ms = self._model_static[i]
            ms[1] = spec.n_moe_layers / 64.0
            ms[2] = spec.n_experts / 128.0
            ms[3] = spec.non_expert_bytes(16) / 1e9 / DENSE_SCALE_GB
            for b, bits in enumerate((16, 8, 4, 3, 2)):
                total = spec.n_moe_layers * spec.n_experts * spec.expert_bytes(bits) / 1e9
                ms[4 + b] = total / MODEL_SCALE_GB
        np.clip(self._model_static, 0.0, 1.0, out=self._model_static)
        self._model = np.zeros((M, len(MODEL_FEATURES)), np.float32)
        self._pair = np.zeros((M, S, len(PAIR_FEATURES)), np.float32)
        self._group = np.zeros((M, self.G, len(GROUP_FEATURES)), np.float32)
        self._place = np.zeros((M, self.G, S, len(PLACEMENT_FEATURES)), np.float32)
        self._built: dict = {}
        self._gcap = np.maximum(world.gpu_capacity_gb, 1e-9)
        self._hcap = np.maximum(world.host_capacity_gb, 1e-9)
        self._memo = self.__dict__.get("_memo") or {}  # per model: see _model_blocks

    # ------------------------------------------------------------ per edit step

    def observe(self, editor: PlanEditor, progress: float, edits_used: float) -> dict:
        """The observation dict for the editor's draft (a model's blocks are rebuilt only
        when its part of the draft changed)."""
        w = self.world
        n = w.n
        fx = self._fixed
        col = self._col
        server = fx["server"].copy()
        dense = editor.dense_total()
        gpu = dense.copy()
        host = np.zeros(n)
        homes = np.zeros(n)
        migration = 0.0
        for i, st in enumerate(editor.states):
            gpu += st.gpu
            host += st.host
            homes += st.home
            migration += self._model_blocks(editor, i, st)
        cap = self._gcap
        j = col["draft_dense_share"]  # the four draft columns follow one another
        draft = server[:n, j : j + 4]
        draft[:, 0] = dense / cap
        draft[:, 1] = gpu / cap
        draft[:, 2] = np.where(w.unified, 0.0, host / self._hcap)
        draft[:, 3] = homes / self.M
        # clipped to [0, 1] (the rest of ``server`` is clipped in begin); maximum and
        # minimum in place cost a third of np.clip's call
        np.minimum(np.maximum(draft, 0.0, out=draft), 1.0, out=draft)
        glob = np.array(
            [min(max(progress, 0.0), 1.0), min(max(edits_used, 0.0), 1.0),
             min(max(migration / 10.0, 0.0), 1.0), float(editor.changed)], np.float32,
        )  # fmt: skip
        return {
            "server": server,
            "server_mask": fx["server_mask"].copy(),
            "latency": fx["latency"].copy(),
            "bandwidth": fx["bandwidth"].copy(),
            "adjacency": fx["adjacency"].copy(),
            "model": self._model.copy(),
            "model_mask": fx["model_mask"].copy(),
            "pair": self._pair.copy(),
            "group": self._group.copy(),
            "placement": self._place.copy(),
            "globals": glob,
        }

    def _model_blocks(self, editor: PlanEditor, i: int, st) -> float:
        """Write model ``i``'s rows of the model, pair, group and placement blocks unless
        its state is the one they were built from; returns its migration estimate."""
        done = self._built.get(i)
        if done is not None and done[0] is st:
            return done[1]
        w = self.world
        n, G = w.n, self.G
        name = w.models[i]
        mp = editor.plan_of(i)
        model, pair = self._model[i], self._pair[i]
        group, place = self._group[i], self._place[i]
        model[:] = self._model_static[i]
        pair[:] = 0.0
        group[:] = 0.0
        place[:] = 0.0
        pair[:n, 1] = self._demand_pair[:, i]
        memo = self._memo.setdefault(i, {})  # per model: inputs (by identity) and value
        hit = memo.get("share")
        if hit is None or hit[0] is not st.groups or hit[1] is not st.pop_share:
            share = np.bincount(st.groups.ravel(), weights=st.pop_share.ravel(), minlength=G)
            hit = memo["share"] = (st.groups, st.pop_share, np.clip(share, 0.0, 1.0))
        group[:, 0] = hit[2]
        mig = 0.0
        if mp is not None:
            mig = self._migration(editor, i, name, mp)
            hit = memo.get("loss")
            if hit is None or hit[0] is not st.bidx or hit[1] is not st.pop_share:
                loss = float((_BITS_LOSS[st.bidx] * st.pop_share).sum())
                hit = memo["loss"] = (st.bidx, st.pop_share, loss)
            loss = hit[2]
            pol = mp.host_policy.tobytes()
            hit = memo.get("fetch")
            if hit is None or hit[0] != pol:
                hit = memo["fetch"] = (pol, float(mp.host_policy.mean()))
            fetch = hit[1]
            scalars = np.array([
                mp.keep_ratio, fetch,
                loss / max(w.scenario.workload.quality_floor, 1e-9) / 2.0, st.pop_gpu, mig / 10.0,
            ])  # fmt: skip
            model_blocks(
                st.held, st.on_gpu, st.pop_held, st.copies, st.n_bits_of, st.group_size,
                st.home, st.gpu, st.host, w.gpu_capacity_gb, editor._sizes[i], self._demand[:, i],
                scalars, model, pair, group, place,
            )  # fmt: skip
        self._built[i] = (st, mig)
        return mig

    def _migration(self, editor: PlanEditor, i: int, name: str, mp) -> float:
        """GB of expert copies the draft adds to the plan in force (an estimate of the
        migration the commit costs), memoised per model plan."""
        old = editor.start.models.get(name)
        if old is mp:
            return 0.0
        memo = self.__dict__.setdefault("_mig", {})
        hit = memo.get(name)
        if hit is not None and hit[0] is mp and hit[1] is old:
            return hit[2]
        before = old.location if old is not None else np.zeros_like(mp.location)
        gb = new_copies_gb_of(mp.location, before, expert_gb_table(name), mp.bits)
        memo[name] = (mp, old, gb)
        return gb
