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
  path, paying the path latency once per layer and remote server;
* the router, dispatch, shared experts, dense FFN layers, attention and the
  LM head run on the home GPU.

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

from dataclasses import dataclass

import numpy as np

from coel_env import cost
from coel_env.catalog import MoEModel
from coel_env.core.plan import ABSENT, FETCH, GPU, HOST, ModelPlan
from coel_env.core.routing import _expected_counts
from coel_env.profiles import DeviceProfile

ACT_BYTES = 2  # bf16 activations
#: Prompt lengths at which prefill is costed; prefill of other lengths is linear between.
PREFILL_POINTS = (128, 2048)


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
    """Cost of serving models on a set of servers (devices fixed at construction)."""

    def __init__(
        self,
        gpus: list[DeviceProfile],
        cpus: list[DeviceProfile],
        mode: str,
        kv_len: int = 1024,
    ) -> None:
        self.gpus = gpus
        self.cpus = cpus
        self.mode = mode
        self.n = len(gpus)
        self.kv_len = kv_len
        self.unified = np.array([g.unified_memory for g in gpus])
        self.pcie_gbps = np.array(
            [np.inf if (g.unified_memory or g.pcie is None) else g.pcie.gbps for g in gpus]
        )
        self._att: dict = {}
        self._placements: dict = {}

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

    def _placement(self, mp: ModelPlan, home: int, latency_ms: np.ndarray, up: np.ndarray):
        """Where each expert of ``mp`` runs for requests at ``home`` (cached per plan/paths/up).

        Returns None when an expert has no replica on a present, reachable server;
        else ``(server [L, E], groups, remote_servers)`` where each group is
        ``(flat indices, fits, weight bytes, server, fetch ms)``.
        """
        key = (id(mp), home)  # plans hold nothing on absent servers (the world strips them)
        hit = self._placements.get(key)
        if hit is not None and hit[0] is mp:
            return hit[1]
        m = mp.spec
        held = (mp.location != ABSENT) & up[None, None, :]
        local = held[:, :, home]
        cand = np.where(held, latency_ms[home][None, None, :], np.inf)
        cand[:, :, home] = np.where(local, -1.0, np.inf)
        server = cand.argmin(axis=2)
        if not np.isfinite(np.take_along_axis(cand, server[:, :, None], 2)).all():
            self._placements[key] = (mp, None)
            return None
        tier = np.take_along_axis(mp.location, server[:, :, None], 2)[:, :, 0]
        pol = np.broadcast_to(mp.host_policy[:, None] == FETCH, tier.shape)
        flat_server, flat_tier, flat_bits = server.ravel(), tier.ravel(), mp.bits.ravel()
        flat_pol = pol.ravel()
        groups = []
        for s in np.unique(flat_server):
            for b in np.unique(flat_bits[flat_server == s]):
                sel = (flat_server == s) & (flat_bits == b)
                w = float(m.expert_bytes(int(b)))
                uni = bool(self.unified[s])
                on_gpu = sel & ((flat_tier == GPU) | ((flat_tier == HOST) & (flat_pol | uni)))
                on_cpu = sel & (flat_tier == HOST) & ~flat_pol & ~uni
                fetch_ms = np.where(
                    (flat_tier == HOST) & flat_pol & ~uni, w / (self.pcie_gbps[s] * 1e6), 0.0
                )
                for mask, dev in ((on_gpu, self.gpus[s]), (on_cpu, self.cpus[s])):
                    idx = np.flatnonzero(mask)
                    if idx.size:
                        groups.append((idx, dev, int(b), w, int(s), fetch_ms[idx]))
        remote = [(int(s), server == s) for s in np.unique(server) if s != home]
        out = (server, groups, remote)
        self._placements[key] = (mp, out)
        return out

    def keep_only(self, plans) -> None:
        """Forget placements of model plans that are no longer in force (bounded cache)."""
        live = {id(mp) for mp in plans}
        for k in [k for k in self._placements if k[0] not in live]:
            del self._placements[k]

    def forget_remote(self) -> None:
        """Paths changed: forget placements that use other servers (and unservable ones)."""
        for k, (_, out) in list(self._placements.items()):
            if out is None or out[2]:
                del self._placements[k]

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
        m = mp.spec
        n = max(float(n), 1.0)
        busy = np.zeros(self.n)
        placed = self._placement(mp, home, latency_ms, up)
        if placed is None:
            return StepCost(np.inf, busy, 0.0, False)
        server, groups, remote_servers = placed
        t = _expected_counts(popularity, n, m.top_k)  # [L, E]
        q = np.clip(t / n, 0.0, 1.0)
        pa = 1.0 - (1.0 - q) ** n
        ta = np.where(pa > 0, t / np.maximum(pa, 1e-12), 0.0)
        flops = (2.0 * m.expert_params) * ta.ravel()
        pa_flat = pa.ravel()
        expert_ms = np.zeros(flops.size)
        ops = 5 if m.gated else 3
        for idx, dev, b, w, s, fetch in groups:
            ms = self._fit_ms(dev, b, w, flops[idx], ops)
            expert_ms[idx] = ms + fetch
            busy[s] += float(ms @ pa_flat[idx])
        expert_ms = expert_ms.reshape(t.shape)
        # dispatch and router on the home GPU
        d = m.d_model
        g16 = self.gpus[home]
        moved = 3.0 * ACT_BYTES * ta * d
        disp = self._fit_ms(g16, 16, moved, np.ones_like(moved), cost.DISPATCH_OPS)
        router = float(
            self._fit_ms(g16, 16, ACT_BYTES * d * m.n_experts, 2.0 * n * d * m.n_experts, 6)
        )
        layer_ms = router + (pa * (expert_ms + disp)).sum(axis=1)
        busy[home] += m.n_moe_layers * router + float((pa * disp).sum())
        # remote experts: activations out and back, path latency once per (layer, server)
        net_bytes = 0.0
        if remote_servers:
            remote = server != home
            one_way = ta * d * ACT_BYTES * mp.keep_ratio
            bw = bandwidth_gbit_s[home][server]
            xfer = np.where(remote, 2 * one_way * 8 / (np.maximum(bw, 1e-9) * 1e6), 0.0)
            layer_ms = layer_ms + (pa * xfer).sum(axis=1)
            net_bytes = float((pa * remote * 2 * one_way).sum())
            for s, at_s in remote_servers:
                p_any = np.minimum(1.0, (pa * at_s).sum(axis=1))
                layer_ms = layer_ms + p_any * 2 * latency_ms[home, s]
        total = float(layer_ms.sum())
        if m.n_shared_experts:
            shared = float(
                cost.ffn_latency_ms(
                    g16, d, m.d_ff_shared * m.n_shared_experts, m.gated, n, mode=self.mode
                )
            )
            total += m.n_moe_layers * shared
            busy[home] += m.n_moe_layers * shared
        dense = self._attention_ms(m, home, n, phase)
        total += dense
        busy[home] += dense
        return StepCost(total, busy, net_bytes, True)


def prefill_line(costs: list[StepCost]) -> tuple[float, float]:
    """(intercept, slope per token) of prefill latency through :data:`PREFILL_POINTS`."""
    (p1, p2), (c1, c2) = PREFILL_POINTS, costs
    slope = max((c2.ms - c1.ms) / (p2 - p1), 0.0)
    return max(c1.ms - slope * p1, 0.0), slope


def bucket(n: float) -> int:
    """Batch sizes are costed at powers of two (cache key)."""
    return int(2 ** round(np.log2(max(n, 1.0))))
