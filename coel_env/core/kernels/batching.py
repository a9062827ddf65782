"""Continuous batching kernel (numba): one epoch of iteration-level batching at every home
(``serving.batching: continuous``, ``World._serve``).

Each (model, home) pair is one serving engine, as a vLLM, TGI or llama.cpp server process
is: it keeps a FIFO queue of waiting requests and a running batch of at most
``max_batch`` sequences whose KV caches fit its pool. The engine advances one step at a
time; at every step boundary

* waiting requests join the batch in arrival order while a slot is free and the
  request's KV reservation (prompt plus output tokens) fits the pool; a request that
  has waited longer than ``limit_ms`` is dropped when it reaches the head, and one whose
  reservation exceeds the whole pool is dropped at once;
* a step runs one decode token for every sequence already running: the cost model's
  decode pass at the batch's real size (linear between the powers of two it is costed
  at); the rest of the step's token budget (``step_tokens``) goes to chunks of the
  prompts that joined, in order (chunked prefill, as vLLM runs it), and a step with
  chunks is one pass over them and the decode tokens: the cost model's prefill line
  ``a0 + a1 * tokens`` at all its tokens, at least the decode pass;
* a sequence's first output token comes with its prompt's last chunk; it leaves when
  its last output token is out.

The engines of the models homed on one GPU take their steps in turn: a home's step lasts
the sum of its engines' step costs, slowed by the home's available share (background
load, migration). Steps of an unchanged batch are taken together (until the next
completion, admissible arrival or the epoch's end), so the cost is per event, not per
token.

Every request arrived in the epoch is simulated to its end (requests of later epochs
join behind it: FIFO admission keeps them from overtaking it); the state at the first
step boundary at or after the epoch's end (running and waiting sequences, when the step
in progress ends) is carried to the next epoch, where those sequences run again as
"ghosts": they take batch slots, KV and step time, but were already reported.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from coel_env.core.kernels.serving import outcome_buffers

WAIT, PREFILL, DECODE, DONE, DROP = 0, 1, 2, 3, 4


@njit(cache=True, error_model="numpy")
def batch_point(b: float, top: int) -> tuple[int, float]:
    """Where a decode batch of ``b`` sequences falls among the costed sizes ``2**j``
    (``j = 0..top``): (j, weight of ``2**(j + 1)``); linear between the two."""
    if b <= 1.0:
        return 0, 0.0
    j = int(math.floor(math.log2(b)))
    if j >= top:
        return top, 0.0
    lo = 2.0**j
    return j, (b - lo) / lo


@njit(cache=True, error_model="numpy")
def _carry_one(i, h, epoch_ms, sq_model, sq_arr, pre_left, left, st, sq_kv, carry, n_c):
    """Append sequence ``i`` of home ``h`` to the carried arrays (arrival shifted to the
    next epoch's clock); returns the new count."""
    c_home, c_model, c_arr, c_in, c_left, c_state, c_kv, c_src = carry
    c_home[n_c] = h
    c_model[n_c] = sq_model[i]
    c_arr[n_c] = sq_arr[i] - epoch_ms
    c_in[n_c] = pre_left[i]
    c_left[n_c] = left[i]
    c_state[n_c] = st[i]
    c_kv[n_c] = sq_kv[i]
    c_src[n_c] = i
    return n_c + 1


@njit(cache=True, error_model="numpy")
def batch_kernel(
    sq_home, sq_model, sq_arr, sq_in, sq_left, sq_state, sq_kv, sq_req,  # sequences
    ptr,  # [n + 1]: sequences of home h are ptr[h]:ptr[h + 1]
    free_at,  # [n] when each home's step in progress ends [ms from the epoch's start]
    a0_g, a1_g, dec_ms_g, kv_cap_g,  # per (model, home) group g = model * n + home
    avail, max_batch, step_tokens, limit_ms, epoch_ms, n_req,
):  # fmt: skip
    """One epoch of continuous batching at every home (see the module docstring).

    Sequences are sorted by home; within a home, sequences carried from the last epoch
    come first, then the epoch's requests in arrival order. ``sq_arr``: arrival [ms from
    the epoch's start]; ``sq_in``: prompt tokens still to prefill; ``sq_left``: decode
    tokens after the first (running carried ones: those left); ``sq_state``: WAIT,
    PREFILL or DECODE; ``sq_kv``: KV tokens reserved; ``sq_req``: the request's index, -1
    for a carried one. ``dec_ms_g[g, j]``: decode step of ``2**j`` sequences [ms].
    ``step_tokens``: the tokens one engine's step takes at most (decode tokens first,
    then prompt chunks in admission order).

    Returns:
        per request: status (1 served, 2 dropped), first-token and last-token time [ms
        from the epoch's start]; per home: dropped requests, work done in the epoch
        [ms]; per group: decode weight on each costed size (steps in the epoch, split
        between the two sizes around the batch), decode tokens, prefill work [ms] and
        prefill tokens in the epoch; the carried sequences (home, model, arrival, prompt
        left, decode tokens left, state, KV); each home's step end for the next epoch.
    """
    n = avail.size
    n_g, n_pts = dec_ms_g.shape
    n_m = n_g // n
    top = n_pts - 1
    n_sq = sq_home.size
    status = np.zeros(n_req, np.int8)
    t_first = np.zeros(n_req)
    t_done = np.zeros(n_req)
    dropped_at = np.zeros(n)
    work = np.zeros(n)
    w_dec = np.zeros((n_g, n_pts))
    dec_tok = np.zeros(n_g)
    pre_ms = np.zeros(n_g)
    pre_tok = np.zeros(n_g)
    carry = (
        np.empty(n_sq, np.int64), np.empty(n_sq, np.int64), np.empty(n_sq), np.empty(n_sq),
        np.empty(n_sq, np.int64), np.empty(n_sq, np.int8), np.empty(n_sq),
        np.empty(n_sq, np.int64),
    )  # fmt: skip
    n_c = 0
    free_next = np.zeros(n)
    st = sq_state.copy()
    left = sq_left.copy()
    pre_left = sq_in.copy()
    for h in range(n):
        lo = ptr[h]
        hi = ptr[h + 1]
        free_next[h] = max(0.0, free_at[h] - epoch_ms)
        if lo == hi:
            continue
        if avail[h] <= 0.0:  # no capacity: arrivals dropped, carried ones wait
            for i in range(lo, hi):
                if sq_req[i] >= 0:
                    status[sq_req[i]] = 2
                    dropped_at[h] += 1
                else:
                    n_c = _carry_one(i, h, epoch_ms, sq_model, sq_arr, pre_left, left, st,
                                     sq_kv, carry, n_c)  # fmt: skip
            continue
        act = np.empty((n_m, hi - lo), np.int64)
        n_act = np.zeros(n_m, np.int64)
        kv_used = np.zeros(n_m)
        cur = np.full(n_m, hi, np.int64)
        pending = 0
        for i in range(lo, hi):
            m = sq_model[i]
            if st[i] == DECODE or st[i] == PREFILL:  # carried, running
                act[m, n_act[m]] = i
                n_act[m] += 1
                kv_used[m] += sq_kv[i]
            elif cur[m] == hi:
                cur[m] = i
            if sq_req[i] >= 0:
                pending += 1
        t = free_at[h]
        work[h] += min(t, epoch_ms) * avail[h]  # the step in progress at the epoch's start
        snap = False
        c_lo = n_c
        cost_m = np.zeros(n_m)
        pre_m = np.zeros(n_m)
        ptok_m = np.zeros(n_m)
        b_m = np.zeros(n_m)
        chunk = np.zeros(hi - lo)
        while True:
            # 1) the waiting requests that can join, in order
            for m in range(n_m):
                g = m * n + h
                i = cur[m]
                while i < hi:
                    if sq_model[i] != m or st[i] != WAIT:
                        i += 1
                        continue
                    if sq_arr[i] > t:
                        break
                    real = sq_req[i] >= 0
                    if sq_kv[i] > kv_cap_g[g] or (real and t - sq_arr[i] > limit_ms):
                        st[i] = DROP
                        if real:
                            status[sq_req[i]] = 2
                            dropped_at[h] += 1
                            pending -= 1
                        i += 1
                        continue
                    if n_act[m] >= max_batch or kv_used[m] + sq_kv[i] > kv_cap_g[g]:
                        break
                    st[i] = PREFILL
                    act[m, n_act[m]] = i
                    n_act[m] += 1
                    kv_used[m] += sq_kv[i]
                    i += 1
                cur[m] = i
            # 2) nothing running: idle until the next arrival (or done)
            busy = False
            for m in range(n_m):
                if n_act[m] > 0:
                    busy = True
            if not busy:
                nxt = np.inf
                for m in range(n_m):
                    if cur[m] < hi:
                        nxt = min(nxt, sq_arr[cur[m]])
                if nxt == np.inf:
                    break
                t = max(t, nxt)
                continue
            # 3) the step: each engine's decode tokens, then prompt chunks in its budget
            cost = 0.0
            has_pre = False
            k = 1 << 62
            for m in range(n_m):
                g = m * n + h
                b = 0
                for a in range(n_act[m]):
                    i = act[m, a]
                    if st[i] == DECODE:
                        b += 1
                        k = min(k, left[i])
                budget = max(step_tokens - b, 0.0)
                ptok = 0.0
                for a in range(n_act[m]):  # in admission order
                    i = act[m, a]
                    if st[i] == PREFILL:
                        c = min(pre_left[i], budget)
                        chunk[i - lo] = c
                        budget -= c
                        ptok += c
                        if c > 0.0 or pre_left[i] <= 0.0:
                            has_pre = True
                dec = 0.0
                if b > 0:
                    j, f = batch_point(float(b), top)
                    if f > 0.0:
                        dec = dec_ms_g[g, j] * (1.0 - f) + dec_ms_g[g, j + 1] * f
                    else:
                        dec = dec_ms_g[g, j]
                c = dec
                pre_m[m] = 0.0
                if ptok > 0.0:  # one pass over the chunks and the decode tokens
                    c = max(dec, a0_g[g] + a1_g[g] * (ptok + b))
                    pre_m[m] = c - dec
                ptok_m[m] = ptok
                b_m[m] = b
                cost_m[m] = c
                cost += c
            d = cost / avail[h]
            if has_pre or k < 1:
                k = 1
            if k > 1:  # an unchanged batch: until an admissible arrival or the epoch's end
                for m in range(n_m):
                    i = cur[m]
                    g = m * n + h
                    if i < hi and n_act[m] < max_batch and kv_used[m] + sq_kv[i] <= kv_cap_g[g]:
                        k = min(k, max(1, int(math.ceil((sq_arr[i] - t) / d))))
                if not snap and t < epoch_ms:
                    k = min(k, max(1, int(math.ceil((epoch_ms - t) / d))))
            if t < epoch_ms:  # the part of the steps inside the epoch
                frac = min(1.0, (epoch_ms - t) / (k * d)) if d > 0.0 else 1.0
                work[h] += cost * k * frac
                for m in range(n_m):
                    if cost_m[m] <= 0.0:
                        continue
                    g = m * n + h
                    pre_ms[g] += pre_m[m] * frac
                    pre_tok[g] += ptok_m[m] * frac
                    if b_m[m] > 0:
                        j, f = batch_point(b_m[m], top)
                        w_dec[g, j] += k * frac * (1.0 - f)
                        if f > 0.0:
                            w_dec[g, j + 1] += k * frac * f
                        dec_tok[g] += b_m[m] * k * frac
            t += k * d
            # 4) prompts done give their first token; decode tokens; sequences that leave
            for m in range(n_m):
                a = 0
                while a < n_act[m]:
                    i = act[m, a]
                    if st[i] == PREFILL:
                        pre_left[i] -= chunk[i - lo]
                        chunk[i - lo] = 0.0
                        if pre_left[i] > 0.0:
                            a += 1
                            continue
                        if sq_req[i] >= 0:
                            t_first[sq_req[i]] = t
                        st[i] = DECODE
                    else:
                        left[i] -= k
                    if left[i] <= 0:
                        st[i] = DONE
                        kv_used[m] -= sq_kv[i]
                        if sq_req[i] >= 0:
                            status[sq_req[i]] = 1
                            t_done[sq_req[i]] = t
                            pending -= 1
                        n_act[m] -= 1
                        act[m, a] = act[m, n_act[m]]
                        continue
                    a += 1
            # 5) the state at the epoch's end goes on to the next epoch
            if not snap and t >= epoch_ms:
                snap = True
                free_next[h] = t - epoch_ms
                for i in range(lo, hi):
                    if st[i] == WAIT or st[i] == PREFILL or st[i] == DECODE:
                        n_c = _carry_one(i, h, epoch_ms, sq_model, sq_arr, pre_left, left,
                                         st, sq_kv, carry, n_c)  # fmt: skip
            if snap and pending <= 0:
                break
        # a carried sequence that was dropped later must not be served next epoch
        keep = c_lo
        for c in range(c_lo, n_c):
            if st[carry[7][c]] != DROP:
                carry[0][keep] = carry[0][c]
                carry[1][keep] = carry[1][c]
                carry[2][keep] = carry[2][c]
                carry[3][keep] = carry[3][c]
                carry[4][keep] = carry[4][c]
                carry[5][keep] = carry[5][c]
                carry[6][keep] = carry[6][c]
                keep += 1
        n_c = keep
    out = (carry[0][:n_c], carry[1][:n_c], carry[2][:n_c], carry[3][:n_c], carry[4][:n_c],
           carry[5][:n_c], carry[6][:n_c])  # fmt: skip
    return (status, t_first, t_done, dropped_at, work, w_dec, dec_tok, pre_ms, pre_tok,
            out, free_next)  # fmt: skip


@njit(cache=True, error_model="numpy")
def batch_requests(
    status, t_first, t_done, group, origin, arr_ms, out_tok, slo_ms, quality_floor, q_g,
    home, latency_ms,
):  # fmt: skip
    """The served requests' latency and TTFT [ms] (arrival order; the round trip to the
    home added) and the report's counts (no-model drops, overload drops, SLO met,
    quality violations) and sums (mean inter-token time, quality loss, output tokens).
    ``status``: 0 no model, 1 served, 2 dropped (:func:`batch_kernel`'s, with 0 where the
    request had no servable home)."""
    n_req = status.size
    lat, ttft, counts, sums = outcome_buffers(np.count_nonzero(status == 1))
    k = 0
    for r in range(n_req):
        if status[r] != 1:
            counts[0 if status[r] == 0 else 1] += 1
            continue
        rtt = 2.0 * latency_ms[origin[r], home[r]]
        lat[k] = rtt + t_done[r] - arr_ms[r]
        ttft[k] = rtt + t_first[r] - arr_ms[r]
        q = q_g[group[r]]
        if q <= quality_floor[r] and lat[k] <= slo_ms[r]:
            counts[2] += 1
        if q > quality_floor[r]:
            counts[3] += 1
        if out_tok[r] > 1:
            sums[0] += (t_done[r] - t_first[r]) / (out_tok[r] - 1)
        sums[1] += q
        sums[2] += out_tok[r]
        k += 1
    return lat, ttft, counts, sums
