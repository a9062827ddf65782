"""Evaluation of one epoch: what a plan costs the requests that arrive.

For each deployed model and each home server (where its dense part runs) the
serving cost comes from the cost model (:mod:`coel_env.cost`), in expectation
over routing:

* the batch's tokens are routed by the popularity at that home (the task mix of
  the requests it serves), giving each expert an expected token count ``t``;
  an expert is active with probability ``1 - (1 - t/n)^n`` and then processes
  ``t / P(active)`` tokens, so the eager per-active-expert cost is counted for
  the experts a batch really touches;
* each expert runs where the plan puts it: on the home GPU; in the home's host
  memory, run on the host CPU or fetched over PCIe per the layer's policy
  (on unified memory the GPU reads it in place); or on the nearest other
  server holding it, whose compute is added to a round trip of the expert's
  activations (``d_model`` x 2 bytes per token, times the keep ratio) over the
  path, paying the path latency once per layer and remote server; with
  ``activation_traffic="per_server"`` a token's activations cross once per remote
  server that holds any of its experts (the server sums its experts' outputs),
  not once per remote expert (see :func:`coel_env.core.kernels.serving._pass_sums`);
* the router, dispatch, shared experts, dense FFN layers, attention and the
  LM head run on the home GPU. The layer's parts come from the cost model's
  :func:`coel_env.cost.router_ms`, :func:`coel_env.cost.dispatch_ms` and
  :func:`coel_env.cost.shared_ms` with ``layer_terms`` (``"calibrated"``: the terms
  fitted to whole measured layers); no other copy of the layer formula is here. With
  ``"first-principles"`` (the default) the router's kernel fit is evaluated by
  :func:`_kernel_ms` (the same fit, vectorised) and the shared experts are their FFN
  without the output add and Qwen's gate (``combine=False``): so every recorded
  result stands bit for bit.

The runtime is ``mode``: eager PyTorch, the same kernels from CUDA graphs, or a
fused-kernel runtime (``fused``: the routed experts and their dispatch costed as one
fused kernel, :func:`_fused_ms`); a derived GPU's quantized kernels follow
``quant_scaling`` (see :class:`ServingModel`).

A decode step (one token for each of ``b`` concurrent sequences) and a prefill
(one prompt) are costed this way. Requests go to the nearest home; a home's
utilisation is the GPU work of its requests over the epoch's available time
(background load and migration take their share); work beyond
``max_utilisation`` is dropped (latest arrivals first) and the rest waits as
in an M/D/1 queue, ``W = rho / (2 (1 - rho)) * S``. A request's latency is
the network round trip to its home, the wait, the prefill and
``output_tokens`` decode steps.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from coel_env import cost
from coel_env.catalog import BITS, MoEModel, get_model
from coel_env.core.kernels.serving import (
    cost_kernel,
    grid_tokens,
    placement_kernel,
    table_kernel,
    token_share_uncapped,
)
from coel_env.core.plan import ModelPlan
from coel_env.core.routing import expected_counts
from coel_env.profiles import DeviceProfile, get_device

ACT_BYTES = 2  # bf16 activations
#: ``serving.activation_traffic`` values (the first is the default).
ACTIVATION_TRAFFIC = ("per_server", "per_expert")
#: ``serving.pruning`` values (the first is the default).
PRUNING = ("prompt", "bytes")
#: ``serving.mode`` values: a fused-kernel runtime (the default), eager PyTorch, and the
#: same kernels replayed from CUDA graphs (see :data:`FUSED_BW_EFFICIENCY`).
SERVING_MODES = ("fused", "eager", "cudagraph")
#: ``serving.quant_scaling`` values (the first is the default).
QUANT_SCALING = ("ratio", "throughput")
#: The measured GPU the derived ones are scaled from (``coel_env.profiles``).
QUANT_REFERENCE = "h200"
#: Fused-kernel runtimes (llama.cpp, MLC, vLLM's fused MoE kernel) run a layer's routed
#: experts in one kernel from CUDA graphs: no per-expert call or dispatch launch (the
#: tokens' gather and scatter are moves at the 16-bit efficiency), and a memory-bound
#: pass reads its weights at this share of the datasheet memory bandwidth,
#: by weight width (16 bits; 8 bits and below). Calibrated on llama.cpp's published
#: decode rates on an RTX 4090 (1008 GB/s), a GPU of the catalog, for LLaMA-3-8B
#: (8.03e9 weights; XiongjieDai/GPU-Benchmarks-on-LLM-Inference, in
#: ``shared/data/devices/llamacpp_llama3_gpu_tokens_per_s.csv``): F16 54.34 tokens/s of
#: 16.06 GB, 0.866; Q4_K_M 127.74 tokens/s of its 4.92 GB file, 0.623 (the int4 kernels
#: spend time dequantizing). MLC's INT4 decode on the Jetson Orin Nano (68 GB/s; the
#: same folder) reads its ~4.5 GB at 14 tokens/s, 0.93: a runtime tuned for one device
#: does better, so these are conservative.
FUSED_BW_EFFICIENCY = {16: 54.34 * 16.06 / 1008.0, 4: 127.74 * 4.92 / 1008.0}
#: Prompt lengths at which prefill is costed; prefill of other lengths is linear between.
PREFILL_POINTS = (128, 2048)
#: Popularity snapshots whose expert activity is kept (about 70 kB per snapshot and pass
#: on the catalog's largest models).
ACTIVITY_CACHE = 64


@dataclass(frozen=True)
class StepCost:
    """Cost of one forward pass of ``n`` tokens of one model at one home.

    Attributes:
        ms: latency of the pass [ms].
        busy_ms: device time per server the pass takes [n_servers] (GPU or host CPU).
        net_bytes: activation bytes sent between servers.
        servable: False when some expert the tokens need has no replica.
    """

    ms: float
    busy_ms: np.ndarray
    net_bytes: float
    servable: bool


class ServingModel:
    """Cost of serving models on a set of servers (devices fixed at construction).

    Args:
        gpus: each server's GPU profile.
        cpus: each server's host CPU profile.
        mode: one of :data:`SERVING_MODES` (``fused``: see :data:`FUSED_BW_EFFICIENCY`).
        kv_len: KV length a decode step attends over.
        layer_terms: how a layer's router and dispatch are costed (``coel_env.cost``).
        activation_traffic: one of :data:`ACTIVATION_TRAFFIC` (see ``_pass_sums``).
        pruning: one of :data:`PRUNING`: whether the keep ratio thins the bytes sent
            (``bytes``) or, with ``prompt``, leaves them whole (the world prunes prompts).
        quant_scaling: one of :data:`QUANT_SCALING`: a derived GPU's quantized experts
            with the reference's fit scaled by the datasheet (``throughput``) or with its
            own 16-bit kernels times the reference's measured quantized/16-bit ratio at the
            same token count (``ratio``).
    """

    def __init__(
        self,
        gpus: list[DeviceProfile],
        cpus: list[DeviceProfile],
        mode: str,
        kv_len: int = 1024,
        layer_terms: str = "first-principles",
        activation_traffic: str = "per_expert",
        pruning: str = "bytes",
        quant_scaling: str = "throughput",
    ) -> None:
        if layer_terms not in cost.LAYER_TERMS:
            raise ValueError(
                f"serving.layer_terms={layer_terms!r} is not allowed; allowed: {cost.LAYER_TERMS}"
            )
        self.gpus = gpus
        self.cpus = cpus
        if mode not in SERVING_MODES:
            raise ValueError(f"serving.mode={mode!r} is not allowed; allowed: {SERVING_MODES}")
        if quant_scaling not in QUANT_SCALING:
            raise ValueError(
                f"serving.quant_scaling={quant_scaling!r} is not allowed; allowed: {QUANT_SCALING}"
            )
        self.runtime = mode
        # a fused runtime replays CUDA graphs: everything but the routed experts is costed
        # as in cudagraph mode
        self.mode = "cudagraph" if mode == "fused" else mode
        self.quant_scaling = quant_scaling
        self.layer_terms = layer_terms
        if activation_traffic not in ACTIVATION_TRAFFIC:
            raise ValueError(
                f"serving.activation_traffic={activation_traffic!r} is not allowed; "
                f"allowed: {ACTIVATION_TRAFFIC}"
            )
        self.activation_traffic = activation_traffic
        if pruning not in PRUNING:
            raise ValueError(f"serving.pruning={pruning!r} is not allowed; allowed: {PRUNING}")
        self.pruning = pruning
        self.n = len(gpus)
        self.kv_len = kv_len
        self.unified = np.array([g.unified_memory for g in gpus])
        self.pcie_gbps = np.array(
            [np.inf if (g.unified_memory or g.pcie is None) else g.pcie.gbps for g in gpus]
        )
        self._att: dict = {}
        self._placements: dict = {}
        self._remote: set = set()  # keys of placements that use other servers (or none)
        self._fits: dict = {}
        self._grid = grid_tokens()
        self._row_index: dict = {}
        self._row_list: list = []
        self._home: dict = {}
        self._ns: dict = {}  # (passes, phases) -> pass sizes as an array, >= 1
        self._act: OrderedDict = OrderedDict()  # token share -> activity (LRU)
        self._rowmaps: dict = {}  # model -> grid row per (server, CPU?, bits) key
        self._values = self._slopes = np.zeros((0, self._grid.size))
        self._row_buf = (np.empty((0, self._grid.size)), np.empty((0, self._grid.size)))

    # ----------------------------------------------------------------- parts

    def _fit_ms(self, dev: DeviceProfile, bits: int, w, f, ops) -> np.ndarray:
        return cost._call_ms(dev, bits, self.mode, w, f, ops)

    def _attention_ms(self, m: MoEModel, home: int, n: float, phase: str) -> float:
        key = (m.name, home, int(n), phase)
        if key not in self._att:
            batch, kv = (max(1, round(n)), self.kv_len) if phase == "decode" else (1, int(n))
            a = cost.attention_latency_ms(
                m, self.gpus[home], batch=batch, kv_len=kv, phase=phase, mode=self.mode
            )
            head = m.d_model * m.vocab_size
            tokens = batch if phase == "decode" else 1  # prefill: only the last token's logits
            lm = float(self._fit_ms(self.gpus[home], 16, 2.0 * head, 2.0 * head * tokens, 1))
            dense = 0.0
            if m.n_dense_layers:
                dense = m.n_dense_layers * float(
                    cost.ffn_latency_ms(
                        self.gpus[home], m.d_model, m.d_ff_dense, m.gated, n, mode=self.mode
                    )
                )
            self._att[key] = m.n_layers * a["total_ms"] + lm + dense
        return self._att[key]

    def _fit_params(self, dev: DeviceProfile, bits: int) -> tuple[np.ndarray, ...]:
        """Parameters of the kernel fits of ``dev`` at ``bits`` (one row per fit used).

        Rows: ``(1/bw, 1/stream, 1/tflops, c_ms, op_ms, p)``; in CUDA-graph mode a second
        row holds the eager fit (a replay is never slower than the eager call, see
        :func:`coel_env.cost._call_ms`).
        """
        key = (dev.name, bits)
        hit = self._fits.get(key)
        if hit is None:
            modes = ("cudagraph", "eager") if self.mode == "cudagraph" else (self.mode,)
            rows = []
            for mode in modes:
                k = dev.kernel_for(bits, mode)[0]
                rows.append((1 / k.bw_gbps, 1 / k.stream_gbps, 1 / k.tflops, k.c_ms, k.op_ms, k.p))
            hit = self._fits[key] = tuple(np.array(r, float) for r in zip(*rows, strict=True))
        return hit

    def router_ms(self, m: MoEModel, home: int, tokens) -> np.ndarray:
        """One MoE layer's router at ``home`` for ``tokens``: :func:`coel_env.cost.router_ms`
        with this model's terms (first principles through :func:`_kernel_ms`, the
        vectorised evaluation of the same kernel fit)."""
        dev = self.gpus[home]
        g16 = self._fit_params(dev, 16)

        def kernel_ms(w, f, ops):
            return _kernel_ms(g16, w / 1e6, f, float(ops))

        return cost.router_ms(
            m, dev, tokens, mode=self.mode, terms=self.layer_terms, kernel_ms=kernel_ms
        )

    def shared_ms(self, m: MoEModel, home: int, tokens) -> np.ndarray:
        """One MoE layer's shared experts at ``home``: :func:`coel_env.cost.shared_ms`;
        with first principles their FFN alone (``combine=False``), as every recorded
        result has it."""
        return cost.shared_ms(
            m, self.gpus[home], tokens, mode=self.mode, terms=self.layer_terms,
            combine=self.layer_terms != "first-principles",
        )  # fmt: skip

    def _row(self, key: tuple, fn) -> int:
        """Index of a kernel-latency grid row (:mod:`coel_env.core.kernels.serving`), built once:
        ``fn(tokens)`` is the exact latency (vectorised over token counts)."""
        i = self._row_index.get(key)
        if i is None:
            i = self._row_index[key] = len(self._row_list)
            t, h = self._grid, 1e-5  # derivative by central difference (error ~1e-10)
            slope = (fn(t * (1 + h)) - fn(t * (1 - h))) / (2 * h * t)
            self._row_list.append((np.asarray(fn(t), float), slope))
            r = len(self._row_list)
            if r > self._row_buf[0].shape[0]:  # grow the row buffers by doubling
                grown = tuple(np.empty((2 * r, t.size)) for _ in range(2))
                for old, new in zip(self._row_buf, grown, strict=True):
                    new[: r - 1] = old[: r - 1]
                self._row_buf = grown
            self._row_buf[0][r - 1] = self._row_list[-1][0]
            self._row_buf[1][r - 1] = slope
            self._values = self._row_buf[0][:r]  # C-contiguous views of the first r rows
            self._slopes = self._row_buf[1][:r]
        return i

    def expert_fn(self, m: MoEModel, dev: DeviceProfile, bits: int):
        """One call of an expert of ``m`` at ``bits`` on ``dev`` [ms] as a function of its
        token count (vectorised over an array of counts): the fused kernel's share, the
        reference's quantized/16-bit ratio on this device's 16-bit kernels, or the kernel
        fit, as this model's ``mode`` and ``quant_scaling`` say. The world's grid rows and
        the MILP's coefficients (``agents.milp.from_world``) are both built from it."""
        w = float(_expert_bytes_table(m.name)[bits])
        ops = 5.0 if m.gated else 3.0
        flops = 2.0 * m.expert_params
        gpu = dev.kind == "gpu"
        if self.runtime == "fused" and gpu:
            return lambda t: _fused_ms(dev, bits, w, flops * t)
        if self.quant_scaling == "ratio" and bits < 16 and gpu and not dev.measured:
            # the measured reference's quantized/16-bit ratio at every token count, on
            # this device's 16-bit kernels
            ref = get_device(QUANT_REFERENCE)
            w16 = float(_expert_bytes_table(m.name)[16])

            def ratio_ms(t):
                f = flops * t
                quant = self._fit_ms(ref, bits, np.full(t.shape, w), f, ops)
                full = self._fit_ms(ref, 16, np.full(t.shape, w16), f, ops)
                return self._fit_ms(dev, 16, np.full(t.shape, w16), f, ops) * quant / full

            return ratio_ms
        return lambda t: self._fit_ms(dev, bits, np.full(t.shape, w), flops * t, ops)

    def _expert_row(self, m: MoEModel, dev: DeviceProfile, bits: int) -> int:
        return self._row((m.name, dev.name, bits), self.expert_fn(m, dev, bits))

    def dispatch_fn(self, m: MoEModel, home: int):
        """The home's dispatch of one active expert [ms] as a function of its token count
        (vectorised): the cost model's, or inside a fused kernel only the tokens' moves.
        Used by the world's grid rows and the MILP's coefficients."""
        dev, terms = self.gpus[home], self.layer_terms
        if self.runtime == "fused":  # inside the fused kernel: only the tokens' moves
            moved_mb = 3.0 * ACT_BYTES * m.d_model / 1e6  # gather, scale, scatter-add
            bw = FUSED_BW_EFFICIENCY[16] * dev.mem_bw_gbps
            return lambda t: moved_mb * t / bw
        return lambda t: cost.dispatch_ms(m, dev, t, mode=self.mode, terms=terms)

    def _disp_row(self, m: MoEModel, home: int) -> int:
        dev, terms = self.gpus[home], self.layer_terms
        # first principles depend on the model only through d_model (rows shared)
        key = (m.d_model, dev.name, "dispatch")
        if terms != "first-principles":
            key = (m.name, dev.name, "dispatch", terms)
        if self.runtime == "fused":
            key = (m.d_model, dev.name, "dispatch", "fused")
        return self._row(key, self.dispatch_fn(m, home))

    def _placement(self, mp: ModelPlan, home: int, latency_ms: np.ndarray, up: np.ndarray):
        """Where each expert of ``mp`` runs for requests at ``home`` (cached per plan/paths/up).

        Returns None when an expert has no replica on a present, reachable server;
        else a :class:`_Placement`: the server of each expert and, per expert (flat
        ``[L * E]``), the grid row of the kernel fit it runs with and its PCIe fetch time.
        """
        key = (id(mp), home)  # plans hold nothing on absent servers (the world strips them)
        hit = self._placements.get(key)
        if hit is not None and hit[0] is mp:
            return hit[1]
        m = mp.spec
        ok, flat_server, group, fetch_ms, used = placement_kernel(
            mp.location, mp.bits, mp.host_policy, up, latency_ms[home], home, self.unified,
            self.pcie_gbps, _expert_bytes_table(m.name),
        )  # fmt: skip
        if not ok:
            self._placements[key] = (mp, None)
            self._remote.add(key)
            return None
        # the grid row of each (server, CPU or GPU, bits), by lookup (rows built on demand)
        rowmap = self._rowmaps.get(m.name)
        if rowmap is None:
            rowmap = self._rowmaps[m.name] = np.full(self.n * 64, -1, np.int64)
        row = rowmap[group]
        if (row < 0).any():
            for gk in np.unique(group[row < 0]).tolist():
                s, cpu, b = gk // 64, bool((gk // 32) % 2), gk % 32
                rowmap[gk] = self._expert_row(m, self.cpus[s] if cpu else self.gpus[s], b)
            row = rowmap[group]
        remote = bool(used.sum() - used[home])  # some expert runs on another server
        out = _Placement(flat_server, row, fetch_ms, remote, self._disp_row(m, home))
        self._placements[key] = (mp, out)
        if remote:
            self._remote.add(key)
        return out

    def keep_only(self, plans) -> None:
        """Forget placements of model plans that are no longer in force (bounded cache)."""
        live = {id(mp) for mp in plans}
        for k in [k for k in self._placements if k[0] not in live]:
            del self._placements[k]
            self._remote.discard(k)

    def forget_remote(self) -> None:
        """Paths changed: forget placements that use other servers (and unservable ones)."""
        for k in self._remote:
            self._placements.pop(k, None)
        self._remote.clear()

    def reset(self) -> None:
        """Forget every placement (a new episode)."""
        self._placements.clear()
        self._remote.clear()

    def step(
        self,
        mp: ModelPlan,
        home: int,
        popularity: np.ndarray,
        n: float,
        latency_ms: np.ndarray,
        bandwidth_gbit_s: np.ndarray,
        up: np.ndarray,
        phase: str = "decode",
    ) -> StepCost:
        """Cost of one pass of ``n`` tokens of ``mp`` at ``home`` (see module doc)."""
        t = self.table(mp, home, popularity, (n,), (phase,), latency_ms, bandwidth_gbit_s, up)
        return t.at(0)

    def table(
        self,
        mp: ModelPlan,
        home: int,
        popularity: np.ndarray,
        ns,
        phases,
        latency_ms: np.ndarray,
        bandwidth_gbit_s: np.ndarray,
        up: np.ndarray,
        token_share: np.ndarray | None = None,
    ) -> CostTable:
        """Costs of passes of ``ns[k]`` tokens in phase ``phases[k]`` (one vectorised sweep).

        Equal to :meth:`step` at each point (the expert token counts of a batch of
        ``n`` are ``n`` times those of one token: the cap at ``n`` scales with it).
        ``token_share``: :meth:`token_share` of ``popularity`` when the caller has it.
        """
        m = mp.spec
        ns_key = (tuple(ns), tuple(phases))
        ns = self._ns.get(ns_key)
        if ns is None:  # the passes, as an array (a few distinct ones: kept)
            ns = np.maximum(np.asarray(ns_key[0], float), 1.0)
            ns.setflags(write=False)
            if len(self._ns) > 4096:  # bounded (odd batch sizes)
                self._ns.clear()
            self._ns[ns_key] = ns
        k_pts = ns.size
        placed = self._placement(mp, home, latency_ms, up)
        if placed is None:
            return CostTable(
                np.full(k_pts, np.inf), np.zeros((k_pts, self.n)), np.zeros(k_pts), False
            )
        q = self.token_share(m, popularity) if token_share is None else token_share
        home_ms = self._home_ms(m, home, ns, phases, ns_key)
        act = self._cached_activity(q, ns_key[0], placed.disp_row, token_share is not None)
        if act is None:  # a new snapshot: activity and costs in one pass
            pa, ta, disp, total, busy, net_bytes = cost_kernel(
                q, ns, self._values, self._slopes, placed.disp_row, m.n_moe_layers, placed.row,
                placed.fetch_ms, placed.server, home, self.n,
                self._act_bytes(mp), bandwidth_gbit_s[home], latency_ms[home],
                home_ms, self._traffic_k(m),
            )  # fmt: skip
            if token_share is not None:
                self._keep_activity(q, ns_key[0], placed.disp_row, (pa, ta, disp))
        else:
            pa, ta, disp = act
            total, busy, net_bytes = table_kernel(
                pa, ta, m.n_moe_layers, self._values, self._slopes, placed.row, placed.fetch_ms,
                placed.server, home, self.n, self._act_bytes(mp),
                bandwidth_gbit_s[home], latency_ms[home], disp, home_ms, ns, self._traffic_k(m),
            )  # fmt: skip
        return CostTable(total, busy, net_bytes, True)

    def _act_bytes(self, mp: ModelPlan) -> float:
        """Activation bytes of one token one way to a remote expert: ``d_model`` values,
        times the keep ratio when pruning thins the bytes sent (``pruning="bytes"``; with
        ``"prompt"`` the prompt loses tokens instead, see ``World._serve``)."""
        m = mp.spec
        if self.pruning == "bytes":
            return m.d_model * ACT_BYTES * mp.keep_ratio
        return float(m.d_model * ACT_BYTES)

    def _traffic_k(self, m: MoEModel) -> float:
        """The kernels' ``top_k``: 0 for activations per remote expert, the model's
        ``top_k`` for activations per remote server."""
        return float(m.top_k) if self.activation_traffic == "per_server" else 0.0

    def _cached_activity(self, q: np.ndarray, ns: tuple, disp_row: int, cache: bool):
        """The kept :func:`coel_env.core.kernels.serving.activity_kernel` output of a token share
        (None when not kept; kept for the most recent shares when the caller holds on to
        them: they are read-only). ``ns``: the passes as given to :meth:`table`."""
        if not cache:
            return None
        key = (id(q), ns, disp_row)
        hit = self._act.get(key)
        if hit is not None and hit[0] is q:
            self._act.move_to_end(key)
            return hit[1]
        return None

    def _keep_activity(self, q: np.ndarray, ns: tuple, disp_row: int, out: tuple) -> None:
        self._act[(id(q), ns, disp_row)] = (q, out)
        if len(self._act) > ACTIVITY_CACHE:
            self._act.popitem(last=False)

    @staticmethod
    def token_share(m: MoEModel, popularity: np.ndarray) -> np.ndarray:
        """Expected tokens per expert of one token, flat ``[L * E]`` (``t / n``)."""
        out = token_share_uncapped(popularity, float(1.0 * m.top_k))
        if out is None:  # some expert would get more than every token: cap and spread
            out = np.clip(expected_counts(popularity, 1.0, m.top_k), 0.0, 1.0).ravel()
        return out

    def _home_ms(self, m: MoEModel, home: int, ns: np.ndarray, phases, ns_key: tuple) -> np.ndarray:
        """What runs on the home GPU whatever the plan (router, shared experts, attention,
        dense layers, LM head) for each pass [K] (cached per model, home and passes;
        ``ns_key``: the passes and phases as :meth:`table` keys them)."""
        key = (m.name, home, ns_key)
        hit = self._home.get(key)
        if hit is not None:
            return hit
        # router and shared experts on the home GPU, once per MoE layer: the cost model's
        out = m.n_moe_layers * self.router_ms(m, home, ns)
        out = out + m.n_moe_layers * self.shared_ms(m, home, ns)
        dense = np.array(
            [self._attention_ms(m, home, float(n), ph) for n, ph in zip(ns, phases, strict=True)]
        )
        out = out + dense
        out.setflags(write=False)
        if len(self._home) > 4096:  # bounded (odd batch sizes)
            self._home.clear()
        self._home[key] = out
        return out


def serving_model_for(gpus: list[DeviceProfile], cpus: list[DeviceProfile], config) -> ServingModel:
    """The :class:`ServingModel` of a scenario's serving settings (``config``: its
    :class:`~coel_env.core.scenario.ServingConfig`) with every option the world costs
    with (mode, layer terms, activation traffic, pruning, quantized-kernel scaling): the
    world and the MILP baselines both build theirs here, so they cannot diverge."""
    return ServingModel(
        gpus, cpus, config.mode, layer_terms=config.layer_terms,
        activation_traffic=config.activation_traffic, pruning=config.pruning,
        quant_scaling=config.quant_scaling,
    )  # fmt: skip


@dataclass(frozen=True)
class _Placement:
    """Where the experts of one model plan run for one home (see ``_placement``)."""

    server: np.ndarray  # [L * E] server each expert runs on (int64)
    row: np.ndarray  # [L * E] kernel-latency grid row of each expert (int64)
    fetch_ms: np.ndarray  # [L * E] PCIe fetch before running (0 unless fetched)
    remote: bool  # some expert runs on another server
    disp_row: int  # grid row of the home's dispatch kernel


@dataclass(frozen=True)
class CostTable:
    """Costs of several passes of one model at one home (rows as :class:`StepCost`)."""

    ms: np.ndarray  # [K]
    busy_ms: np.ndarray  # [K, n_servers]
    net_bytes: np.ndarray  # [K]
    servable: bool

    def at(self, k: int) -> StepCost:
        return StepCost(float(self.ms[k]), self.busy_ms[k], float(self.net_bytes[k]), self.servable)


@functools.cache
def _expert_bytes_table(model: str) -> np.ndarray:
    """Bytes of one expert of ``model`` indexed by bit width."""
    m = get_model(model)
    out = np.zeros(17)
    for b in BITS:
        out[b] = float(m.expert_bytes(b))
    out.setflags(write=False)
    return out


def _fused_ms(dev: DeviceProfile, bits: int, weight_bytes: float, flops) -> np.ndarray:
    """One routed expert's share of a fused MoE kernel on GPU ``dev`` [ms]: its weights
    read at :data:`FUSED_BW_EFFICIENCY` of the datasheet bandwidth, or its matmuls at the
    device's CUDA-graph 16-bit throughput when compute-bound (the kernel dequantizes to
    16 bits), joined by the fit's smooth maximum; no per-call or dispatch time."""
    k16 = dev.kernel_for(16, "cudagraph")[0]
    eff = FUSED_BW_EFFICIENCY[16 if bits >= 16 else 4]
    w_mb = weight_bytes / 1e6
    f = np.maximum(np.asarray(flops, float), 1.0) / 1e9
    memory = w_mb / (eff * dev.mem_bw_gbps)
    return _smax(np.full(f.shape, memory), w_mb / k16.stream_gbps + f / k16.tflops, k16.p)


def _smax(a: np.ndarray, b: np.ndarray, p) -> np.ndarray:
    """Smooth maximum (a^p + b^p)^(1/p) of positive a, b, as :func:`coel_env.profiles._smax`,
    written ``hi * exp(log1p(exp(p log(lo / hi))) / p)``: four transcendental calls per
    element instead of three powers (a power costs about three of them)."""
    hi = np.maximum(a, b)
    lo = np.minimum(a, b)
    r = np.exp(p * np.log(lo / hi))
    return hi * np.exp(np.log1p(r) / p)


def _kernel_ms(par, w_mb, flops, ops: float) -> np.ndarray:
    """:meth:`coel_env.profiles.KernelFit.latency_ms` with per-element parameters.

    ``par`` holds ``(1/bw, 1/stream, 1/tflops, c_ms, op_ms, p)``, each ``[n_fits, ...]``
    broadcastable against ``w_mb`` and ``flops``; the smallest fit wins (CUDA graphs).
    """
    inv_bw, inv_st, inv_tp, c, op, p = par
    f = np.maximum(flops, 1.0) / 1e9
    out = None
    for i in range(inv_bw.shape[0]):
        kernel = _smax(w_mb * inv_bw[i], w_mb * inv_st[i] + f * inv_tp[i], p[i])
        floor = np.maximum(ops * op[i], 1e-12)
        ms = c[i] + _smax(floor, kernel, p[i])
        out = ms if out is None else np.minimum(out, ms)
    return out


def prefill_line(costs: list[StepCost]) -> tuple[float, float]:
    """(intercept, slope per token) of prefill latency through :data:`PREFILL_POINTS`."""
    (p1, p2), (c1, c2) = PREFILL_POINTS, costs
    slope = max((c2.ms - c1.ms) / (p2 - p1), 0.0)
    return max(c1.ms - slope * p1, 0.0), slope


def bucket(n: float) -> int:
    """Batch sizes are costed at powers of two (cache key)."""
    return int(2 ** round(math.log2(max(n, 1.0))))
