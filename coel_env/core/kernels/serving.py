"""Serving kernels (numba): the cost model of a plan, the kernel-latency grid it reads,
and one epoch's requests, routes and FIFO queues.

The serving cost of a (model plan, home) is a sum over experts of the kernel-fit
latency (:meth:`coel_env.profiles.KernelFit.latency_ms`) at each expert's expected
token count. Evaluating the fit costs about eight transcendental functions per
expert and pass; the world does it for every expert of every (plan, home) after
each popularity refresh and for every new plan. Here the fit of each (model,
device, bits) is instead tabulated once on a fine grid of token counts
(:data:`GRID_PER_OCTAVE` points per doubling, value and derivative exact at the
nodes) and read by cubic Hermite interpolation. The grid's relative error is
below 1e-10 on the fits of the catalog (``tests/test_evaluation.py``; in
CUDA-graph mode, where the smaller of two fits is taken, up to ~1e-5 in the one
segment where they cross), far inside the
fits' own error against measurements (several percent, see ``coel profile``).

The cost model (:func:`cost_kernel`, :func:`table_kernel`, :func:`activity_kernel`,
:func:`placement_kernel`) serves :mod:`coel_env.core.evaluation`; the epoch's
requests (:func:`route_table`, :func:`group_requests`, :func:`serve_kernel`,
:func:`group_work`) serve ``World._serve`` (:mod:`coel_env.core.world`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Grid points per doubling of the token count (uniform in tokens within an octave; a
#: power of two: the position within an octave is read from the mantissa bits).
GRID_PER_OCTAVE = 256
GRID_BITS = 8  # log2(GRID_PER_OCTAVE)
#: The grid spans 1 .. 2**GRID_OCTAVES tokens per expert; beyond, the last segment is
#: extended linearly (there the fit is compute-bound: linear in tokens).
GRID_OCTAVES = 16


def grid_tokens() -> np.ndarray:
    """Token counts at the grid nodes: ``2**o * (1 + j / GRID_PER_OCTAVE)``."""
    s = GRID_PER_OCTAVE
    octs = np.arange(GRID_OCTAVES, dtype=float)[:, None]
    pts = (2.0**octs * (1.0 + np.arange(s)[None, :] / s)).ravel()
    return np.append(pts, 2.0**GRID_OCTAVES)


_SHIFT = 52 - GRID_BITS  # mantissa bits below the grid index
_FRAC = float(1 << _SHIFT)
_LOW = (1 << _SHIFT) - 1
_OCTAVE_START = 2.0 ** np.arange(GRID_OCTAVES + 1)


@njit(cache=True, error_model="numpy")
def grid_position(t: float, as_int: np.ndarray) -> tuple[int, float, float]:
    """Where ``t`` tokens fall on the grid (see :func:`grid_tokens`): (node, position
    in [0, 1) towards the next node, tokens between the two); beyond the grid (last
    node, tokens past it, -1).

    ``as_int`` is the int64 view of a one-element float64 buffer holding ``t``: the
    octave and the position within it are read from its exponent and mantissa bits.
    """
    if t <= 1.0:
        return 0, 0.0, 0.0
    b = as_int[0]
    o = (b >> 52) - 1023  # octave: 2**o <= t < 2**(o + 1)
    if o >= GRID_OCTAVES:
        return GRID_OCTAVES * GRID_PER_OCTAVE, t - 2.0**GRID_OCTAVES, -1.0
    g = o * GRID_PER_OCTAVE + ((b >> _SHIFT) & (GRID_PER_OCTAVE - 1))
    return g, (b & _LOW) / _FRAC, _OCTAVE_START[o] / GRID_PER_OCTAVE


@njit(cache=True, error_model="numpy")
def grid_value(values, slopes, r: int, g: int, s: float, width: float) -> float:
    """Row ``r`` of the grid at a :func:`grid_position`: cubic Hermite interpolation
    between the nodes' values and derivatives (beyond the grid: the last tangent)."""
    if width < 0:
        return values[r, g] + slopes[r, g] * s
    s2 = s * s
    s3 = s2 * s
    return (
        (2.0 * s3 - 3.0 * s2 + 1.0) * values[r, g]
        + (s3 - 2.0 * s2 + s) * width * slopes[r, g]
        + (3.0 * s2 - 2.0 * s3) * values[r, g + 1]
        + (s3 - s2) * width * slopes[r, g + 1]
    )


@njit(cache=True)
def _pow2_exponents(ns):
    """``j`` where ``ns[k] == 2**j`` (1 <= ns[k] <= 2**30), else -1; and whether any is -1."""
    pow2 = np.full(ns.size, -1, np.int64)
    need_log = False
    for k in range(ns.size):
        n = ns[k]
        if n >= 1.0 and n <= 2.0**30:
            m, e = math.frexp(n)
            if m == 0.5:
                pow2[k] = e - 1
        if pow2[k] < 0:
            need_log = True
    return pow2, need_log


@njit(cache=True, error_model="numpy")
def _activity(q, ns):
    """Per pass and expert the probability that it is active, ``1 - (1 - q)**n``, and
    the tokens it then processes, ``n q / P(active)`` [K, L*E] (0 for experts that get
    no tokens). Passes of 2**j tokens (every decode bucket and prefill point) take
    ``(1 - q)**n`` by repeated squaring (all experts squared together, in order of j:
    the chains of different experts overlap); other sizes by exp."""
    k_pts = ns.size
    n_exp = q.size
    pa_out = np.zeros((k_pts, n_exp))
    ta_out = np.zeros((k_pts, n_exp))
    pow2, need_log = _pow2_exponents(ns)
    cur = np.empty(n_exp)  # (1 - q)**(2**level)
    for i in range(n_exp):
        cur[i] = 1.0 - q[i]
    level = 0
    lq = np.zeros(n_exp if need_log else 0)
    if need_log:
        for i in range(n_exp):
            qi = q[i]
            if qi > 0.0:
                lq[i] = math.log1p(-qi) if qi < 1.0 else -math.inf
    done = np.zeros(k_pts, np.bool_)
    for _ in range(k_pts):
        k = -1  # the next pass: smallest power of two first, then the others
        for kk in range(k_pts):
            if not done[kk] and (k < 0 or (pow2[kk] >= 0 and (pow2[k] < 0 or pow2[kk] < pow2[k]))):
                k = kk
        done[k] = True
        n = ns[k]
        j = pow2[k]
        if j >= 0:
            while level < j:
                for i in range(n_exp):
                    cur[i] = cur[i] * cur[i]
                level += 1
        pa_k = pa_out[k]
        ta_k = ta_out[k]
        # a loop without branches or scatters: vectorised
        if j >= 0:
            for i in range(n_exp):
                p = 1.0 - cur[i]
                ok = q[i] > 0.0 and p > 0.0
                pa_k[i] = p if ok else 0.0
                ta_k[i] = n * q[i] / max(p, 1e-12) if ok else 0.0
        else:
            for i in range(n_exp):
                p = -math.expm1(n * lq[i])
                ok = q[i] > 0.0 and p > 0.0
                pa_k[i] = p if ok else 0.0
                ta_k[i] = n * q[i] / max(p, 1e-12) if ok else 0.0
    return pa_out, ta_out


@njit(cache=True, error_model="numpy")
def activity_kernel(
    q: np.ndarray,  # [L*E] expected tokens per expert of one token (t / n)
    ns: np.ndarray,  # [K] tokens of each pass
    values: np.ndarray,  # [R, G] grid rows: latency at the nodes [ms]
    slopes: np.ndarray,  # [R, G] its derivative [ms per token]
    disp_row: int,  # row of the home's dispatch kernel
):
    """What a popularity snapshot implies whatever the plan: per pass and expert the
    probability that it is active and the tokens it then processes [K, L*E]
    (:func:`_activity`), and the dispatch time of the active experts summed over
    experts [K] (it runs on the home). :func:`cost_kernel` computes the same together
    with :func:`table_kernel`'s costs; this stands alone for the tests' two-pass
    reference."""
    pa_out, ta_out = _activity(q, ns)
    disp = np.zeros(ns.size)
    bits = np.zeros(1)
    as_int = bits.view(np.int64)
    for k in range(ns.size):
        acc = 0.0
        for i in range(q.size):
            pa = pa_out[k, i]
            if pa <= 0.0:
                continue
            bits[0] = ta_out[k, i]
            g, sf, width = grid_position(ta_out[k, i], as_int)
            acc += pa * grid_value(values, slopes, disp_row, g, sf, width)
        disp[k] = acc
    return pa_out, ta_out, disp


@njit(cache=True, error_model="numpy")
def _grid_pass(ta_k, values, slopes, expert_row, disp_row, ms_out, disp_out):
    """Each expert's kernel latency at its token count ``ta_k`` [L*E] (grid row
    ``expert_row``) into ``ms_out``, and the dispatch kernel's (row ``disp_row``) into
    ``disp_out`` when ``disp_row >= 0``. No sums: the experts are independent. The
    grid position is :func:`grid_position`'s, read from the bits of ``ta_k``."""
    ti = ta_k.view(np.int64)
    for i in range(ta_k.size):
        t = ta_k[i]
        if t <= 1.0:
            g, sf, width = 0, 0.0, 0.0
        else:
            b = ti[i]
            o = (b >> 52) - 1023
            if o >= GRID_OCTAVES:
                g, sf, width = GRID_OCTAVES * GRID_PER_OCTAVE, t - 2.0**GRID_OCTAVES, -1.0
            else:
                g = o * GRID_PER_OCTAVE + ((b >> _SHIFT) & (GRID_PER_OCTAVE - 1))
                sf = (b & _LOW) / _FRAC
                width = _OCTAVE_START[o] / GRID_PER_OCTAVE
        if disp_row >= 0:
            disp_out[i] = grid_value(values, slopes, disp_row, g, sf, width)
        ms_out[i] = grid_value(values, slopes, expert_row[i], g, sf, width)


@njit(cache=True, error_model="numpy")
def _pass_sums(k, pa_k, ta_k, ms, dv, with_disp, fetch_ms, server, home, n_layers,
               act_bytes_per_token, bw_gbit_s, latency_ms, busy, p_any, tok_s, n_tok,
               top_k):  # fmt: skip
    """One pass's latency (experts in order, summed over layers; the path latency once
    per (layer, remote server) used), its activation bytes, its dispatch time (the sum
    of ``pa_k * dv`` when ``with_disp``), and each server's busy time (into ``busy[k]``;
    the home's summed apart, then stored: the same additions).

    Activations cross the path once per token and remote expert (``top_k`` 0), or once
    per token and remote server holding any of its experts (``top_k`` > 0: the pass's
    ``n_tok`` tokens route to the experts on server ``s`` with the expected count
    ``T_s``; a token picks its ``top_k`` experts, each on ``s`` with probability
    ``T_s / (n_tok * top_k)``, so ``n_tok * (1 - (1 - T_s / (n_tok * top_k))**top_k)``
    tokens reach ``s``: all of them when ``s`` holds every expert of the layer, ``T_s``
    for a single expert up to the chance that a token picks it twice). ``tok_s`` is
    scratch [n]."""
    per_server = top_k > 0.0
    per_layer = pa_k.size // n_layers
    tot = 0.0
    net = 0.0
    acc = 0.0
    busy_home = 0.0
    for layer in range(n_layers):
        any_remote = False
        for i in range(layer * per_layer, (layer + 1) * per_layer):
            p = pa_k[i]
            if p <= 0.0:
                continue
            if with_disp:
                acc += p * dv[i]
            s = server[i]
            if s == home:
                busy_home += ms[i] * p
                tot += p * (ms[i] + fetch_ms[i])
            else:
                busy[k, s] += ms[i] * p
                tot += p * (ms[i] + fetch_ms[i])
                if per_server:
                    tok_s[s] += p * ta_k[i]
                else:
                    one_way = ta_k[i] * act_bytes_per_token
                    tot += p * 2.0 * one_way * 8.0 / (max(bw_gbit_s[s], 1e-9) * 1e6)
                    net += p * 2.0 * one_way
                p_any[s] += p
                any_remote = True
        if any_remote:  # path latency once per (layer, remote server) used
            for s in range(p_any.size):
                if p_any[s] > 0.0:
                    if per_server:  # the tokens that reach s, there and back
                        share = min(tok_s[s] / (n_tok * top_k), 1.0)
                        one_way = n_tok * (1.0 - (1.0 - share) ** top_k) * act_bytes_per_token
                        tot += 2.0 * one_way * 8.0 / (max(bw_gbit_s[s], 1e-9) * 1e6)
                        net += 2.0 * one_way
                        tok_s[s] = 0.0
                    tot += min(1.0, p_any[s]) * 2.0 * latency_ms[s]
                    p_any[s] = 0.0
    busy[k, home] = busy_home
    return tot, net, acc


@njit(cache=True, error_model="numpy")
def table_kernel(
    pa: np.ndarray,  # [K, L*E] P(expert active) (see activity_kernel)
    ta: np.ndarray,  # [K, L*E] tokens it processes when active
    n_layers: int,
    values: np.ndarray,  # [R, G] grid rows: latency at the nodes [ms]
    slopes: np.ndarray,  # [R, G] its derivative [ms per token]
    expert_row: np.ndarray,  # [L*E] row of each expert's fit
    fetch_ms: np.ndarray,  # [L*E]
    server: np.ndarray,  # [L*E] server each expert runs on
    home: int,
    n_servers: int,
    act_bytes_per_token: float,  # activation bytes of one token one way (keep ratio applied)
    bw_gbit_s: np.ndarray,  # [n] bottleneck bandwidth home -> server
    latency_ms: np.ndarray,  # [n] path latency home -> server
    disp: np.ndarray,  # [K] dispatch time (activity_kernel), added on the home
    home_ms: np.ndarray,  # [K] what else runs on the home GPU, added after it
    ns=None,  # [K] tokens of each pass (needed with top_k > 0)
    top_k=0.0,  # > 0: activations once per token and remote server (see _pass_sums)
):
    """Per pass: latency of the pass [K] (experts summed over layers, then ``disp``,
    then ``home_ms``), busy time per server [K, n] and activation bytes [K] (the
    plan-dependent part of :meth:`ServingModel.table`)."""
    k_pts, n_exp = pa.shape
    total, busy, net, p_any, tok_s, ms = _pass_buffers(k_pts, n_servers, n_exp)
    for k in range(k_pts):
        _grid_pass(ta[k], values, slopes, expert_row, -1, ms, ms)
        n_tok = 0.0 if ns is None else ns[k]
        total[k], net[k], _ = _pass_sums(
            k, pa[k], ta[k], ms, ms, False, fetch_ms, server, home, n_layers,
            act_bytes_per_token, bw_gbit_s, latency_ms, busy, p_any, tok_s, n_tok, top_k,
        )  # fmt: skip
    _add_home(total, busy, home, disp, home_ms)
    return total, busy, net


@njit(cache=True, error_model="numpy")
def _pass_buffers(k_pts, n_servers, n_exp):
    """The per-pass outputs (latency [K], busy time [K, n], activation bytes [K], zeroed)
    and the scratch of :func:`_pass_sums` (``p_any``, ``tok_s`` [n], zeroed) and of
    :func:`_grid_pass` (``ms`` [E]) that :func:`table_kernel` and :func:`cost_kernel` fill."""
    total = np.zeros(k_pts)
    busy = np.zeros((k_pts, n_servers))
    net = np.zeros(k_pts)
    p_any = np.zeros(n_servers)
    tok_s = np.zeros(n_servers)
    ms = np.empty(n_exp)
    return total, busy, net, p_any, tok_s, ms


@njit(cache=True, error_model="numpy")
def _add_home(total, busy, home, disp, home_ms):
    """Add the dispatch, then the rest of the home's work, to each pass."""
    for k in range(total.size):
        total[k] += disp[k]
        busy[k, home] += disp[k]
    for k in range(total.size):
        total[k] += home_ms[k]
        busy[k, home] += home_ms[k]


@njit(cache=True, error_model="numpy")
def cost_kernel(
    q: np.ndarray,  # [L*E] as activity_kernel
    ns: np.ndarray,  # [K]
    values: np.ndarray,  # [R, G]
    slopes: np.ndarray,  # [R, G]
    disp_row: int,
    n_layers: int,  # the rest as table_kernel
    expert_row: np.ndarray,
    fetch_ms: np.ndarray,
    server: np.ndarray,
    home: int,
    n_servers: int,
    act_bytes_per_token: float,
    bw_gbit_s: np.ndarray,
    latency_ms: np.ndarray,
    home_ms: np.ndarray,
    top_k=0.0,
):
    """:func:`activity_kernel` and :func:`table_kernel` in one call (the same
    operations in the same order: equal results), for a snapshot whose activity is
    not known yet. Returns both kernels' outputs."""
    k_pts = ns.size
    n_exp = q.size
    pa_out, ta_out = _activity(q, ns)
    disp = np.zeros(k_pts)
    total, busy, net, p_any, tok_s, ms = _pass_buffers(k_pts, n_servers, n_exp)
    dv = np.empty(n_exp)
    for k in range(k_pts):
        _grid_pass(ta_out[k], values, slopes, expert_row, disp_row, ms, dv)
        total[k], net[k], disp[k] = _pass_sums(
            k, pa_out[k], ta_out[k], ms, dv, True, fetch_ms, server, home, n_layers,
            act_bytes_per_token, bw_gbit_s, latency_ms, busy, p_any, tok_s, ns[k], top_k,
        )  # fmt: skip
    _add_home(total, busy, home, disp, home_ms)
    return pa_out, ta_out, disp, total, busy, net


@njit(cache=True, error_model="numpy")
def token_share_uncapped(popularity, top_k):
    """Expected tokens per expert of one token, flat ``[L * E]``, when no expert gets
    more than every token (``top_k * p <= 1 + 1e-12``): ``min(top_k * p, 1)`` clipped to
    [0, 1], as :func:`coel_env.core.routing.expected_counts` gives then; None
    otherwise (the caller caps and spreads the excess)."""
    p = popularity.ravel()
    out = np.empty(p.size)
    for i in range(p.size):
        v = top_k * p[i]
        if v > 1.0 + 1e-12:
            return None
        out[i] = min(max(min(v, 1.0), 0.0), 1.0)
    return out


@njit(cache=True, error_model="numpy")
def _lindley_pass(idx, keep, b0, arrive_scale, arr_ms, work, w):
    """Lindley's recursion over the kept arrivals ``idx[keep]`` of one FIFO queue.

    ``W_i = max(0, W_{i-1} + S_{i-1} - (a_i - a_{i-1}))`` with ``W_0`` from the backlog
    ``b0``, written as ``u_i - min(0, min_{j <= i} u_j)`` with ``u_i = b0 + sum_{j < i}
    S_j - a_i``; arrival times ``a`` are in units of work the server does by then
    (``arr_ms * arrive_scale``). Writes each one's wait [ms of work] to ``w``."""
    c = 0.0
    low = math.inf
    for j in range(idx.size):
        if not keep[j]:
            continue
        i = idx[j]
        u = b0 + c - arr_ms[i] * arrive_scale
        c += work[i]
        low = min(low, u)
        w[j] = u - min(0.0, low)


@njit(cache=True, error_model="numpy")
def queue_kernel(home, arr_ms, work, up, avail, b0, limit_ms, epoch_ms, backlog, util):
    """FIFO queues of one epoch at every home with arrivals (see ``World._serve``).

    Each home admits its arrivals in order; a request that would wait behind more than
    ``limit_ms`` of work is dropped, and the queue is walked again without the dropped
    ones (twice at most). Updates ``backlog`` and ``util`` of those homes in place.

    Returns:
        (served [n_req] bool, wait [n_req] ms, dropped per server [n]).
    """
    n_req = home.size
    n = up.size
    served = np.zeros(n_req, np.bool_)
    wait = np.zeros(n_req)
    dropped_at = np.zeros(n)
    count = np.zeros(n + 1, np.int64)
    for r in range(n_req):
        if home[r] >= 0:
            count[home[r] + 1] += 1
    start = np.cumsum(count)
    fill = start[:-1].copy()
    order = np.empty(start[-1], np.int64)
    for r in range(n_req):  # requests of each home, in arrival order
        h = home[r]
        if h >= 0:
            order[fill[h]] = r
            fill[h] += 1
    for h in range(n):
        idx = order[start[h] : start[h + 1]]
        if idx.size == 0:
            continue
        if not up[h] or avail[h] <= 0:
            dropped_at[h] += idx.size
            continue
        a_h = avail[h]
        keep = np.ones(idx.size, np.bool_)
        w = np.zeros(idx.size)
        for _ in range(2):  # admit, then re-queue without the dropped ones
            _lindley_pass(idx, keep, b0[h], a_h, arr_ms, work, w)
            all_ok = True
            for j in range(idx.size):
                if keep[j] and w[j] > limit_ms:
                    all_ok = False
            if all_ok:
                break
            for j in range(idx.size):
                if keep[j] and w[j] > limit_ms:
                    keep[j] = False
        _lindley_pass(idx, keep, b0[h], a_h, arr_ms, work, w)
        total = b0[h]
        last = -1
        n_kept = 0
        for j in range(idx.size):
            if keep[j]:
                i = idx[j]
                served[i] = True
                wait[i] = w[j] / a_h
                total += work[i]
                last = j
                n_kept += 1
        dropped_at[h] += idx.size - n_kept
        if last >= 0:
            i = idx[last]
            end = w[last] + work[i] - (epoch_ms - arr_ms[i]) * a_h
        else:
            end = b0[h] - epoch_ms * a_h
        backlog[h] = max(0.0, end)
        util[h] = min(1.0, (total - backlog[h]) / epoch_ms)
    return served, wait, dropped_at


@njit(cache=True, error_model="numpy")
def group_requests(origin, model, out_tok, routes, home, group, demand, count, out_sum):
    """Home and (model, home) group of each request (-1: no present, reachable home),
    arrivals per (model, origin), and per group the count and output-token sum (filled
    into the given arrays)."""
    n = routes.shape[1]
    for r in range(origin.size):
        m = model[r]
        o = origin[r]
        demand[m * n + o] += 1.0
        h = routes[m, o]
        home[r] = h
        if h >= 0:
            g = m * n + h
            group[r] = g
            count[g] += 1.0
            out_sum[g] += out_tok[r]
        else:
            group[r] = -1


@njit(cache=True, error_model="numpy")
def group_work(groups, step_busy, pre_busy, net, batch_g, out_g, in_g, p0, is_cloud, busy):
    """Device time, activation bytes and cloud tokens of the served (model, home) groups
    (in group order, as ``World._serve`` summed them): each group's decode step per
    sequence times its output tokens plus the prefill per prompt token (at ``p0``
    tokens) times its input tokens. Adds to ``busy`` [n] in place.

    Returns:
        (activation bytes, tokens served by the cloud).
    """
    act = 0.0
    cloud = 0.0
    n = busy.size
    for j in range(groups.size):
        g = groups[j]
        o = out_g[g]
        i = in_g[g]
        bb = batch_g[g]
        for s in range(n):
            busy[s] = busy[s] + (step_busy[j, s] / bb * o + pre_busy[j, s] / p0 * i)
        act += net[j, 0] / bb * o + net[j, 1] / p0 * i
        if is_cloud[g % n]:
            cloud += o + i
    return act, cloud


@njit(cache=True, error_model="numpy")
def route_table(latency_ms, homes, ptr, up):
    """Home of each (model, origin) [n_models, n]: the present home
    (``homes[ptr[m]:ptr[m + 1]]``, in order) with the lowest path latency from the
    origin, the first on ties; -1 where no present home is reachable."""
    n_m = ptr.size - 1
    n = latency_ms.shape[0]
    tab = np.full((n_m, n), -1, np.int64)
    for m in range(n_m):
        for o in range(n):
            best = np.inf
            for j in range(ptr[m], ptr[m + 1]):
                h = homes[j]
                if up[h] and latency_ms[o, h] < best:
                    best = latency_ms[o, h]
                    tab[m, o] = h
    return tab


@njit(cache=True, error_model="numpy")
def outcome_buffers(n_served):
    """The epoch's request outcomes to fill, for :func:`serve_kernel` and
    :func:`coel_env.core.kernels.batching.batch_requests`: latency and time to first
    token per served request [n_served], counts (no model, dropped, SLO met, quality
    violations; zeroed) and sums (inter-token time, quality loss, output tokens; zeroed)."""
    lat = np.empty(n_served)
    ttft = np.empty(n_served)
    counts = np.zeros(4, np.int64)
    sums = np.zeros(3)
    return lat, ttft, counts, sums


@njit(cache=True, error_model="numpy")
def serve_kernel(
    home, group, origin, arrival_s, in_tok, out_tok, slo_ms, quality_floor,  # requests
    ok_g, a0_g, a1_g, tpot_g, batch_g, q_g,  # per (model, home) group
    latency_ms, avail, up, b0, t0_s, epoch_ms, limit_ms,
):  # fmt: skip
    """Serve one epoch's requests (the per-request part of ``World._serve``).

    Requests of a servable group get prefill ``a0 + a1 * input_tokens`` and
    ``output_tokens`` decode steps of ``tpot``; each brings ``prefill + out * tpot /
    batch`` of work to its home's FIFO queue (:func:`queue_kernel`); latency adds the
    round trip and the wait, and service slows down by the home's available share.

    Returns:
        served [n_req], latency and TTFT of the served requests [ms] (arrival order),
        dropped per server, backlog and utilisation per server, served output and input
        tokens per group, and counts: (no-model drops, overload drops, SLO met, quality
        violations), sums over served requests: (tpot, quality loss, output tokens).
    """
    n_req = home.size
    n = up.size
    n_g = ok_g.size
    no_model = np.zeros(n_req, np.bool_)
    hq = np.empty(n_req, np.int64)
    work = np.zeros(n_req)
    prefill = np.zeros(n_req)
    service = np.zeros(n_req)
    arr_ms = np.empty(n_req)
    for r in range(n_req):
        g = group[r]
        arr_ms[r] = (arrival_s[r] - t0_s) * 1000.0
        if g < 0 or not ok_g[g]:
            no_model[r] = True
            hq[r] = -1
            continue
        hq[r] = home[r]
        pre = a0_g[g] + a1_g[g] * in_tok[r]
        prefill[r] = pre
        service[r] = pre + out_tok[r] * tpot_g[g]
        work[r] = pre + out_tok[r] * tpot_g[g] / batch_g[g]
    # homes without arrivals: the backlog drains (an absent server loses it)
    backlog = np.zeros(n)
    util = np.zeros(n)
    for h in range(n):
        if not up[h]:
            continue
        if avail[h] <= 0:
            backlog[h] = b0[h]
        else:
            backlog[h] = max(0.0, b0[h] - epoch_ms * max(avail[h], 0.0))
            util[h] = min(1.0, (b0[h] - backlog[h]) / epoch_ms)
    served, wait, dropped_at = queue_kernel(
        hq, arr_ms, work, up, avail, b0, limit_ms, epoch_ms, backlog, util
    )
    lat, ttft, counts, sums = outcome_buffers(np.count_nonzero(served))
    out_g = np.zeros(n_g)
    in_g = np.zeros(n_g)
    k = 0
    for r in range(n_req):
        if not served[r]:
            if no_model[r]:
                counts[0] += 1
            else:
                counts[1] += 1
            continue
        h = hq[r]
        g = group[r]
        base = 2.0 * latency_ms[origin[r], h] + wait[r]
        slowdown = 1.0 / max(avail[h], 1e-9)
        lat[k] = base + service[r] * slowdown
        ttft[k] = base + prefill[r] * slowdown
        q = q_g[g]
        if q <= quality_floor[r] and lat[k] <= slo_ms[r]:
            counts[2] += 1
        if q > quality_floor[r]:
            counts[3] += 1
        sums[0] += tpot_g[g]
        sums[1] += q
        sums[2] += out_tok[r]
        out_g[g] += out_tok[r]
        in_g[g] += in_tok[r]
        k += 1
    return served, lat, ttft, dropped_at, backlog, util, out_g, in_g, counts, sums


@njit(cache=True, error_model="numpy")
def placement_kernel(location, bits, fetch_policy, up, latency_home, home, unified, pcie_gbps,
                     bytes_by_bits):  # fmt: skip
    """Where each expert of a model plan runs for requests at ``home``: on the home if it
    holds it, else on the nearest present holder (the first of equals).

    Returns:
        (servable, server [L*E], kernel key [L*E] ``(server * 2 + on host CPU) * 32 +
        bits``, PCIe fetch time [L*E] [ms], servers used [n] bool).
    """
    n_l, n_e, n = location.shape
    server = np.empty(n_l * n_e, np.int64)
    key = np.empty(n_l * n_e, np.int64)
    fetch_ms = np.zeros(n_l * n_e)
    used = np.zeros(n, np.bool_)
    for layer in range(n_l):
        fetch = fetch_policy[layer] != 0
        for e in range(n_e):
            i = layer * n_e + e
            s = -1
            if location[layer, e, home] != 0 and up[home]:
                s = home
            else:
                best = np.inf
                for c in range(n):
                    if c != home and location[layer, e, c] != 0 and up[c]:
                        if latency_home[c] < best:
                            best = latency_home[c]
                            s = c
                if s < 0:
                    return False, server, key, fetch_ms, used
            server[i] = s
            used[s] = True
            b = bits[layer, e]
            on_host = location[layer, e, s] == 2 and not unified[s]
            cpu = on_host and not fetch
            if on_host and fetch:
                fetch_ms[i] = bytes_by_bits[b] / (pcie_gbps[s] * 1e6)
            key[i] = (s * 2 + (1 if cpu else 0)) * 32 + b
    return True, server, key, fetch_ms, used
