"""Continuous batching at the homes (``serving.batching: continuous``).

:class:`ContinuousBatching` holds what one epoch leaves to the next (the sequences still
running or waiting at each home, and when each home's step in progress ends) and turns
an epoch's requests and the (model, home) costs the world looked up into the report's
serving figures, through the compiled :func:`coel_env.core.kernels.batching.batch_kernel`
(the model is described there). The world costs each (model, home) group with the cost
model: its prefill line, its decode pass at ``2**j`` sequences for ``j = 0..top`` (the
powers of two up to ``serving.max_batch``) and its KV pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coel_env.catalog import MoEModel
from coel_env.core.kernels.batching import DECODE, PREFILL, WAIT, batch_kernel, batch_requests
from coel_env.core.workload import Requests

#: Bytes of one cached K/V value (bf16 caches, as the cost model's attention assumes).
KV_VALUE_BYTES = 2


def kv_bytes_per_token(m: MoEModel) -> int:
    """KV-cache bytes one token of ``m`` takes: every attention block caches
    ``kv_cache_values_per_token`` values (GQA: K and V of each KV head; MLA: the latent
    and the RoPE key) at :data:`KV_VALUE_BYTES` bytes."""
    return m.n_layers * m.attention.kv_cache_values_per_token * KV_VALUE_BYTES


def batch_points(max_batch: int) -> tuple[int, ...]:
    """The decode batch sizes a group is costed at: ``1, 2, 4, ...`` up to the first power
    of two at or above ``max_batch``."""
    top = max(0, math.ceil(math.log2(max_batch)))
    return tuple(2**j for j in range(top + 1))


@dataclass
class BatchOutcome:
    """What :meth:`ContinuousBatching.serve` returns (arrays as the kernels give them).

    Attributes:
        status: per request: 0 no servable home, 1 served, 2 dropped (overload).
        latency_ms: served requests' end-to-end latency, arrival order [ms].
        ttft_ms: their time to first token [ms].
        counts: no-model drops, overload drops, SLO met, quality violations.
        sums: mean inter-token time, quality loss and output tokens over served requests.
        dropped_at: dropped requests per home [n].
        work_ms: device work each home did in the epoch [n] [ms, at full speed].
        w_dec: per group, decode steps in the epoch on each costed size [n_g, points].
        dec_tokens: per group, decode tokens in the epoch.
        prefill_ms: per group, prefill work in the epoch [ms].
        prefill_tokens: per group, prompt tokens prefilled in the epoch.
    """

    status: np.ndarray
    latency_ms: np.ndarray
    ttft_ms: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    dropped_at: np.ndarray
    work_ms: np.ndarray
    w_dec: np.ndarray
    dec_tokens: np.ndarray
    prefill_ms: np.ndarray
    prefill_tokens: np.ndarray


class ContinuousBatching:
    """Iteration-level batching at every home, epoch after epoch.

    Args:
        n: servers.
        n_models: deployed models.
        max_batch: most sequences per (model, home) engine.
        step_tokens: most tokens one engine's step takes (decode tokens and prompt chunks).
    """

    def __init__(self, n: int, n_models: int, max_batch: int, step_tokens: int) -> None:
        self.n = n
        self.n_models = n_models
        self.max_batch = int(max_batch)
        self.step_tokens = float(step_tokens)
        self.points = batch_points(max_batch)
        self.reset()

    def reset(self) -> None:
        """Nothing running or waiting anywhere (a new episode)."""
        e = np.zeros(0)
        ei = np.zeros(0, np.int64)
        self.carry = (ei, ei, e, e, ei, np.zeros(0, np.int8), e)
        self.free_at = np.zeros(self.n)

    def carried_groups(self) -> np.ndarray:
        """The (model, home) groups with sequences carried from the last epoch."""
        home, model = self.carry[0], self.carry[1]
        return np.unique(model * self.n + home)

    @property
    def in_flight(self) -> int:
        """Sequences running or waiting at the end of the last epoch."""
        return int(self.carry[0].size)

    def serve(
        self,
        reqs: Requests,
        home: np.ndarray,
        group: np.ndarray,
        ok_g: np.ndarray,
        a0_g: np.ndarray,
        a1_g: np.ndarray,
        dec_ms_g: np.ndarray,
        kv_cap_g: np.ndarray,
        q_g: np.ndarray,
        prompt_scale_g: np.ndarray,
        avail: np.ndarray,
        latency_ms: np.ndarray,
        t0_s: float,
        epoch_ms: float,
        limit_ms: float,
    ) -> BatchOutcome:
        """Serve one epoch's requests (``home``/``group``: each request's home and (model,
        home) group, -1 for none; the per-group arrays are indexed by ``model * n +
        home``; ``kv_cap_g`` in tokens; ``prompt_scale_g``: the share of prompt tokens
        prefilled and cached (token pruning), 1 without pruning)."""
        n = self.n
        n_req = len(reqs)
        arr_ms = (reqs.arrival_s - t0_s) * 1000.0
        g_ok = group >= 0
        g_ok[g_ok] = ok_g[group[g_ok]]
        real = np.flatnonzero(g_ok)
        c_home, c_model, c_arr, c_in, c_left, c_state, c_kv = self.carry
        keep = ok_g[c_model * n + c_home] if c_home.size else np.zeros(0, bool)
        rg = group[real]
        prompt = reqs.input_tokens[real] * prompt_scale_g[rg]
        out = reqs.output_tokens[real].astype(np.int64)
        sq_home = np.concatenate((c_home[keep], home[real]))
        order = np.argsort(sq_home, kind="stable")  # by home; carried first, then arrivals
        sq_home = sq_home[order]
        sq_model = np.concatenate((c_model[keep], rg // n))[order]
        sq_arr = np.concatenate((c_arr[keep], arr_ms[real]))[order]
        sq_in = np.concatenate((c_in[keep], prompt))[order]
        sq_left = np.concatenate((c_left[keep], np.maximum(out - 1, 0)))[order]
        sq_state = np.concatenate((c_state[keep], np.full(real.size, WAIT, np.int8)))[order]
        sq_kv = np.concatenate((c_kv[keep], prompt + out))[order]
        sq_req = np.concatenate((np.full(int(keep.sum()), -1, np.int64), real))[order]
        ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(sq_home, minlength=n), out=ptr[1:])
        (status, t_first, t_done, dropped_at, work, w_dec, dec_tok, pre_ms, pre_tok, carry,
         free_next) = batch_kernel(
            sq_home, sq_model, sq_arr, sq_in, sq_left, sq_state, sq_kv, sq_req, ptr,
            self.free_at, a0_g, a1_g, dec_ms_g, kv_cap_g, avail, self.max_batch,
            self.step_tokens, limit_ms,
            epoch_ms, n_req,
        )  # fmt: skip
        self.carry = carry
        self.free_at = free_next
        lat, ttft, counts, sums = batch_requests(
            status, t_first, t_done, group, reqs.origin, arr_ms, reqs.output_tokens,
            reqs.slo_ms, reqs.quality_floor, q_g, home, latency_ms,
        )  # fmt: skip
        return BatchOutcome(
            status, lat, ttft, counts, sums, dropped_at, work, w_dec, dec_tok, pre_ms, pre_tok
        )


__all__ = [
    "DECODE",
    "KV_VALUE_BYTES",
    "PREFILL",
    "WAIT",
    "BatchOutcome",
    "ContinuousBatching",
    "batch_points",
    "kv_bytes_per_token",
]
