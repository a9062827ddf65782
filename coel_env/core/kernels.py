"""Compiled inner loops of the world (numba), and the kernel-latency grid they read.

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
               act_bytes_per_token, bw_gbit_s, latency_ms, busy, p_any):  # fmt: skip
    """One pass's latency (experts in order, summed over layers; the path latency once
    per (layer, remote server) used), its activation bytes, its dispatch time (the sum
    of ``pa_k * dv`` when ``with_disp``), and each server's busy time (into ``busy[k]``;
    the home's summed apart, then stored: the same additions)."""
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
                one_way = ta_k[i] * act_bytes_per_token
                tot += p * 2.0 * one_way * 8.0 / (max(bw_gbit_s[s], 1e-9) * 1e6)
                net += p * 2.0 * one_way
                p_any[s] += p
                any_remote = True
        if any_remote:  # path latency once per (layer, remote server) used
            for s in range(p_any.size):
                if p_any[s] > 0.0:
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
):
    """Per pass: latency of the pass [K] (experts summed over layers, then ``disp``,
    then ``home_ms``), busy time per server [K, n] and activation bytes [K] (the
    plan-dependent part of :meth:`ServingModel.table`)."""
    k_pts, n_exp = pa.shape
    total = np.zeros(k_pts)
    busy = np.zeros((k_pts, n_servers))
    net = np.zeros(k_pts)
    p_any = np.zeros(n_servers)
    ms = np.empty(n_exp)
    for k in range(k_pts):
        _grid_pass(ta[k], values, slopes, expert_row, -1, ms, ms)
        total[k], net[k], _ = _pass_sums(
            k, pa[k], ta[k], ms, ms, False, fetch_ms, server, home, n_layers,
            act_bytes_per_token, bw_gbit_s, latency_ms, busy, p_any,
        )  # fmt: skip
    _add_home(total, busy, home, disp, home_ms)
    return total, busy, net


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
):
    """:func:`activity_kernel` and :func:`table_kernel` in one call (the same
    operations in the same order: equal results), for a snapshot whose activity is
    not known yet. Returns both kernels' outputs."""
    k_pts = ns.size
    n_exp = q.size
    pa_out, ta_out = _activity(q, ns)
    disp = np.zeros(k_pts)
    total = np.zeros(k_pts)
    busy = np.zeros((k_pts, n_servers))
    net = np.zeros(k_pts)
    p_any = np.zeros(n_servers)
    ms = np.empty(n_exp)
    dv = np.empty(n_exp)
    for k in range(k_pts):
        _grid_pass(ta_out[k], values, slopes, expert_row, disp_row, ms, dv)
        total[k], net[k], disp[k] = _pass_sums(
            k, pa_out[k], ta_out[k], ms, dv, True, fetch_ms, server, home, n_layers,
            act_bytes_per_token, bw_gbit_s, latency_ms, busy, p_any,
        )  # fmt: skip
    _add_home(total, busy, home, disp, home_ms)
    return pa_out, ta_out, disp, total, busy, net


@njit(cache=True, error_model="numpy")
def token_share_uncapped(popularity, top_k):
    """Expected tokens per expert of one token, flat ``[L * E]``, when no expert gets
    more than every token (``top_k * p <= 1 + 1e-12``): ``min(top_k * p, 1)`` clipped to
    [0, 1], as :func:`coel_env.core.routing._expected_counts` gives then; None
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
def p50_p95(x):
    """Median and 95th percentile of a non-empty ``x``, as ``np.percentile(x, (50, 95))``
    (linear interpolation, numpy's formula)."""
    s = np.sort(x)
    n = s.size
    out = np.empty(2)
    for j in range(2):
        v = (0.5, 0.95)[j] * (n - 1)
        i = int(v)
        g = v - i
        a = s[i]
        b = s[min(i + 1, n - 1)]
        d = b - a
        out[j] = b - d * (1 - g) if g >= 0.5 else a + d * g
    return out[0], out[1]


@njit(cache=True, error_model="numpy")
def unit_float32(x):
    """``x`` as float32 with NaN and -inf set to 0, +inf to 1, then clipped to [0, 1]
    (as ``astype(float32)``, ``nan_to_num(nan=0, posinf=1, neginf=0)`` and ``clip``:
    the same values, a -0.0 stays -0.0)."""
    out = np.empty(x.size, np.float32)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for i in range(x.size):
        v = np.float32(x[i])
        if np.isnan(v):
            v = zero
        elif v > one:
            v = one
        elif v < zero:
            v = zero
        out[i] = v
    return out


@njit(cache=True, error_model="numpy")
def plan_values_ok(location, bits_u8, host_policy, valid_bits, max_location, max_policy):
    """Whether a model plan's arrays hold only allowed values: locations in
    ``0..max_location``, bit widths (viewed as uint8) flagged in ``valid_bits``, host
    policies in ``0..max_policy``."""
    lo = 0
    hi = 0
    for v in location.ravel():  # no early exit: a vectorised min / max
        lo = min(lo, v)
        hi = max(hi, v)
    if lo < 0 or hi > max_location:
        return False
    ok = True
    for v in bits_u8.ravel():
        ok &= valid_bits[v]
    for v in host_policy:
        ok &= v >= 0 and v <= max_policy
    return ok


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
def free_memory(gpu, host, gpu_capacity, host_capacity, unified):
    """Free GPU and host memory shares per server [n, 2], clipped to [0, 1] (host 0 on
    unified memory); capacities are floored at 1e-9 GB."""
    n = gpu.size
    out = np.empty((n, 2))
    for s in range(n):
        out[s, 0] = min(max(1 - gpu[s] / max(gpu_capacity[s], 1e-9), 0.0), 1.0)
        if unified[s]:
            out[s, 1] = 0.0
        else:
            out[s, 1] = min(max(1 - host[s] / max(host_capacity[s], 1e-9), 0.0), 1.0)
    return out


@njit(cache=True, error_model="numpy")
def status_kernel(
    out, free, utilisation, arrived, dropped, epoch_s, background, up, ends, link_scale,
    link_up, degree, demand, rate_floor,
):  # fmt: skip
    """Fill the true status vectors ``out`` [n, F] (``World.true_status``): free memory
    shares, utilisation, dropped share of the arrived requests, background, present,
    mean bandwidth multiplier of the server's links (up ones; 1 without links), demand
    per model over the base rate. ``ends``: the links' end servers (u0, v0, u1, ...)."""
    n = out.shape[0]
    acc = np.zeros(n)
    for j in range(ends.size):
        e = j // 2
        acc[ends[j]] += link_scale[e] * (1.0 if link_up[e] else 0.0)
    for s in range(n):
        out[s, 0] = free[s, 0]
        out[s, 1] = free[s, 1]
        out[s, 2] = utilisation[s]
        out[s, 3] = dropped[s] / max(arrived[s] * epoch_s, 1.0)
        out[s, 4] = background[s]
        out[s, 5] = 1.0 if up[s] else 0.0
        out[s, 6] = acc[s] / max(degree[s], 1) if ends.size else 1.0
        for m in range(demand.shape[1]):
            out[s, 7 + m] = demand[s, m] / rate_floor[s]
    return out


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
    n_served = 0
    for r in range(n_req):
        if served[r]:
            n_served += 1
    lat = np.empty(n_served)
    ttft = np.empty(n_served)
    out_g = np.zeros(n_g)
    in_g = np.zeros(n_g)
    counts = np.zeros(4, np.int64)
    sums = np.zeros(3)
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
def take_points(points, ptr, used, span):
    """Points of each server's renewal stream that fall in its next ``span`` of
    operational time (see :class:`coel_env.core.workload.SyntheticStream`).

    Args:
        points: [n, K] increasing cumulative positions of each server's points.
        ptr: [n] first unconsumed point per server (advanced in place).
        used: [n] operational time consumed so far per server (advanced in place).
        span: [n] operational time of this window per server.

    Returns:
        (position within the window [0, span), server), grouped by server.
    """
    n, k_max = points.shape
    total = 0
    for i in range(n):
        end = used[i] + span[i]
        j = ptr[i]
        while j < k_max and points[i, j] < end:
            j += 1
        total += j - ptr[i]
    pos = np.empty(total)
    owner = np.empty(total, np.int64)
    at = 0
    for i in range(n):
        end = used[i] + span[i]
        j = ptr[i]
        while j < k_max and points[i, j] < end:
            pos[at] = points[i, j] - used[i]
            owner[at] = i
            at += 1
            j += 1
        ptr[i] = j
        used[i] = end
    return pos, owner


@njit(cache=True, error_model="numpy")
def inverse_cdf(u, cum, row):
    """Category of each uniform ``u[r]`` under the cumulative probabilities
    ``cum[row[r]]`` (how many of them are <= ``u[r]``, at most the last category), int16."""
    k = cum.shape[1]
    out = np.empty(u.size, np.int16)
    for r in range(u.size):
        c = cum[row[r]]
        j = 0
        for i in range(k):
            if u[r] >= c[i]:
                j += 1
        out[r] = min(j, k - 1)
    return out


@njit(cache=True, error_model="numpy")
def sort_into_window(t, owner, lo, hi):
    """``t`` sorted (stable) and clipped to ``[lo, hi]``, with ``owner`` in the same
    order (as ``np.argsort(kind="stable")`` then ``np.clip``)."""
    order = np.argsort(t, kind="mergesort")
    out = np.empty(t.size)
    own = np.empty(t.size, owner.dtype)
    for j in range(t.size):
        i = order[j]
        out[j] = min(max(t[i], lo), hi)
        own[j] = owner[i]
    return out, own


#: Relative margin around a threshold within which a compiled sum (any order) may not
#: decide a comparison: far above the rounding error of summing ~1e5 non-negative terms
#: in double precision (~1e5 x 1.1e-16 = 1e-11).
DECIDE_MARGIN = 1e-9


@njit(cache=True, error_model="numpy")
def popularity_moved(new, old, tol):
    """Per server (first axis of ``[S, L, E]``): whether the mean over layers of the L1
    distance between ``new`` and ``old`` exceeds ``tol``; None when some distance lies
    within :data:`DECIDE_MARGIN` of ``tol`` (the caller decides with numpy's sums)."""
    n_s, n_l, n_e = new.shape
    out = np.zeros(n_s, np.bool_)
    for s in range(n_s):
        d = 0.0
        for layer in range(n_l):
            for e in range(n_e):
                d += abs(new[s, layer, e] - old[s, layer, e])
        d /= n_l
        if abs(d - tol) <= DECIDE_MARGIN * tol:
            return None
        out[s] = d > tol
    return out


@njit(cache=True, error_model="numpy")
def ou_step(x, mu, a, c, noise, low, high):
    """``mu + (x - mu) * a + c * noise`` clipped to ``[low, high]`` (as the numpy
    expression and ``np.clip``), elementwise."""
    out = np.empty(x.shape)
    for i in range(x.size):
        v = mu + (x.flat[i] - mu) * a + c * noise.flat[i]
        if v < low:
            v = low
        elif v > high:
            v = high
        out.flat[i] = v
    return out


@njit(cache=True, error_model="numpy")
def holds_all(location, server):
    """Whether ``server`` holds every expert of a placement ``location`` [L, E, S]."""
    n_l, n_e, _ = location.shape
    for layer in range(n_l):
        for e in range(n_e):
            if location[layer, e, server] == 0:
                return False
    return True


@njit(cache=True, error_model="numpy")
def same_local(old_location, new_location, homes, up):
    """For each server of ``homes``: whether it is present and holds every expert in
    both placements [L, E, S], each in the same tier (GPU or host memory). Requests
    served there then run every expert on it, the same way under both plans."""
    n_l, n_e, _ = old_location.shape
    out = np.zeros(homes.size, np.bool_)
    for k in range(homes.size):
        h = homes[k]
        if not up[h]:
            continue
        ok = True
        for layer in range(n_l):
            for e in range(n_e):
                a = old_location[layer, e, h]
                if a == 0 or a != new_location[layer, e, h]:
                    ok = False
                    break
            if not ok:
                break
        out[k] = ok
    return out


@njit(cache=True, error_model="numpy")
def cumulative_rows(mix):
    """Row-wise cumulative probabilities, last column exactly 1 (as ``np.cumsum(mix,
    axis=1)``, a running sum, with the last column set)."""
    n, k = mix.shape
    out = np.empty((n, k))
    for i in range(n):
        c = mix[i, 0]
        out[i, 0] = c
        for j in range(1, k):
            c = c + mix[i, j]
            out[i, j] = c
        out[i, k - 1] = 1.0
    return out


@njit(cache=True, error_model="numpy")
def any_short(points, used, span):
    """Whether some server's drawn points end before its next window does."""
    last = points.shape[1] - 1
    for i in range(points.shape[0]):
        if points[i, last] < used[i] + span[i]:
            return True
    return False


@njit(cache=True, error_model="numpy")
def migration_kernel(
    new_loc, new_bits, old_loc, old_bits, alive, expert_bytes, latency_ms, bottleneck_gbit_s,
    pcie_gbps, store_gbit_s, time_s,
):  # fmt: skip
    """Expert copies of one model plan change (see :func:`coel_env.core.updating.migration_cost`).

    An expert whose old copy on a present server has enough bits only changes tier
    there (PCIe); any other new copy comes from the nearest present holder with enough
    bits, else from the store. Adds each server's receiving time to ``time_s``.

    Returns:
        (PCIe bytes, network bytes, copies moved).
    """
    n_l, n_e, n = new_loc.shape
    pcie = np.zeros(n)
    net = 0.0
    moved = 0
    for layer in range(n_l):
        for e in range(n_e):
            b_new = new_bits[layer, e]
            enough = old_bits[layer, e] >= b_new
            w = expert_bytes[layer, e]
            for dst in range(n):
                if new_loc[layer, e, dst] == 0:
                    continue
                if enough and alive[dst] and old_loc[layer, e, dst] != 0:
                    if old_loc[layer, e, dst] != new_loc[layer, e, dst]:
                        pcie[dst] += w
                        moved += 1
                    continue
                src = -1
                best = np.inf
                if enough:
                    for s in range(n):
                        if old_loc[layer, e, s] != 0 and alive[s] and latency_ms[s, dst] < best:
                            best = latency_ms[s, dst]
                            src = s
                    if src < 0:  # a holder at infinite latency is still a holder
                        for s in range(n):
                            if old_loc[layer, e, s] != 0 and alive[s]:
                                src = s
                                break
                gbit = bottleneck_gbit_s[src, dst] if src >= 0 else store_gbit_s
                net += w
                time_s[dst] += w * 8 / (max(gbit, 1e-9) * 1e9)
                moved += 1
    total_pcie = 0.0
    for s in range(n):
        if pcie[s] > 0:
            total_pcie += pcie[s]
            time_s[s] += pcie[s] / (pcie_gbps[s] * 1e9)
    return total_pcie, net, moved


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


#: Placements over fewer servers are scanned whole (finding the holders first costs
#: about as much as the scan there).
SPARSE_MIN_SERVERS = 16


@njit(cache=True, error_model="numpy")
def absent_holds(up, gpu, host):
    """Whether a server that is not present (``up`` False) has expert memory in use."""
    for s in range(up.size):
        if not up[s] and (gpu[s] > 0.0 or host[s] > 0.0):
            return True
    return False


@njit(cache=True, error_model="numpy")
def _scan_servers(location):
    """The servers worth looking at in a placement [L, E, S]: on
    :data:`SPARSE_MIN_SERVERS` or more, those (ascending) that hold any expert (one OR
    over it; often a few of many); on fewer, all of them (finding the holders would
    cost about as much as the scan)."""
    n_l, n_e, n = location.shape
    if n < SPARSE_MIN_SERVERS:
        return np.arange(n)
    flat = np.ascontiguousarray(location).reshape(n_l * n_e, n).view(np.uint8)
    held = np.zeros(n, np.uint8)
    for i in range(n_l * n_e):
        for s in range(n):
            held[s] |= flat[i, s]
    return np.flatnonzero(held)


@njit(cache=True, error_model="numpy")
def plan_scan_over(location, expert_gb, up, servers):
    """:func:`plan_scan` looking only at ``servers`` (ascending; the others hold
    nothing)."""
    n_l, n_e, n = location.shape
    gpu = np.zeros(n)
    host = np.zeros(n)
    down_at = -1
    missing = 0
    first_l = -1
    first_e = -1
    for layer in range(n_l):
        for e in range(n_e):
            w = expert_gb[layer, e]
            any_up = False
            for s in servers:
                t = location[layer, e, s]
                if t == 0:
                    continue
                if t == 1:
                    gpu[s] += w
                else:
                    host[s] += w
                if up[s]:
                    any_up = True
                elif down_at < 0 or s < down_at:
                    down_at = s
            if not any_up:
                missing += 1
                if first_l < 0:
                    first_l = layer
                    first_e = e
    return down_at, missing, first_l, first_e, gpu, host


@njit(cache=True, error_model="numpy")
def plan_scan(location, expert_gb, up):
    """One pass over a model plan's placement, over the servers holding its experts
    (:func:`_scan_servers`; each server's sums in expert order either way).

    Returns:
        (first absent server holding an expert (-1: none), experts without a copy on a
        present server, the first of them as (layer, expert) (-1, -1 if none), expert
        GB on each server's GPU [n], in its host memory [n]).
    """
    return plan_scan_over(location, expert_gb, up, _scan_servers(location))


@njit(cache=True, error_model="numpy")
def place_homes(location, groups, near, place, homes, spread, replicate):
    """Mark every expert [L, E] of a model on its group's server, for each home in turn:
    with ``spread`` the ``place[g]``-th nearest server to the home (``near[home]``),
    else the home itself; with ``replicate`` on the home as well. Writes tier 1 into
    ``location`` [L, E, n] (:func:`fill_tiers` then sets the tiers)."""
    n_l, n_e = groups.shape
    for h in range(homes.size):
        home = homes[h]
        for layer in range(n_l):
            for e in range(n_e):
                target = near[home, place[groups[layer, e]]] if spread else home
                location[layer, e, target] = 1
                if replicate:
                    location[layer, e, home] = 1


@njit(cache=True, error_model="numpy")
def fill_tiers(location, bits, layers, experts, gb_by_bits, free_gb, unified):
    """On each server holding experts of a model: GPU memory in the given (popularity)
    order while they fit, the rest in host memory (all on GPU with unified memory).
    Writes tiers 1 (GPU) / 2 (host) into ``location`` and takes the GPU share off
    ``free_gb``."""
    n = location.shape[2]
    budget = np.empty(n)
    for s in range(n):
        budget[s] = max(free_gb[s], 0.0) + 1e-9
    cum = np.zeros(n)
    used = np.zeros(n)
    holders = _scan_servers(location)
    for j in range(layers.size):  # each server's sums in this order, as one pass per server
        layer, e = layers[j], experts[j]
        w = gb_by_bits[bits[layer, e]]
        row = location[layer, e]
        for s in holders:
            if row[s] == 0:
                continue
            cum[s] += w
            if unified[s] or cum[s] <= budget[s]:
                row[s] = 1
                used[s] += w
            else:
                row[s] = 2
    for s in range(n):
        free_gb[s] -= used[s]


@njit(cache=True, error_model="numpy")
def group_summary(groups, popularity, bits, location, home, n_groups):
    """Per popularity group of one model plan: popularity share (mean over layers), mean
    bits / 16, share of experts on some GPU, share not held by ``home`` [4, G]."""
    n_l, n_e, n = location.shape
    out = np.zeros((4, n_groups))
    count = np.zeros(n_groups)
    for layer in range(n_l):
        for e in range(n_e):
            g = groups[layer, e]
            count[g] += 1.0
            out[0, g] += popularity[layer, e]
            out[1, g] += bits[layer, e]
            on_gpu = False
            for s in range(n):
                if location[layer, e, s] == 1:
                    on_gpu = True
                    break
            if on_gpu:
                out[2, g] += 1.0
            if location[layer, e, home] == 0:
                out[3, g] += 1.0
    for g in range(n_groups):
        out[0, g] /= n_l
        c = max(count[g], 1.0)
        out[1, g] /= c * 16.0
        out[2, g] /= c
        out[3, g] /= c
    return out


@njit(cache=True, error_model="numpy")
def broadcast_rounds(
    rounds, t1_s, reach, alive, lat_s, hops, lost, truth,
    status, sent_s, fl_status, fl_sent, fl_arrive,
):  # fmt: skip
    """One epoch of status broadcasts (see :meth:`coel_env.core.perception.Perception.advance`).

    Delivers messages in flight that arrive by ``t1_s`` (unless the observer has newer
    news), then sends every round in ``rounds`` to each present observer within reach:
    the newest message that arrives by ``t1_s`` is delivered, the newest one still on
    its way replaces any older one in flight. ``lost[r, o, s]`` drops a message (an
    empty array: no losses). Every server knows itself at ``t1_s``.

    Returns:
        hop-weighted messages sent (link-bytes / message bytes).
    """
    n = alive.size
    n_r = rounds.size
    lossy = lost.shape[0] > 0
    link_msgs = 0.0
    for o in range(n):
        for s in range(n):
            if fl_arrive[o, s] <= t1_s:  # in flight from earlier epochs
                if fl_sent[o, s] > sent_s[o, s]:
                    status[o, s, :] = fl_status[o, s, :]
                    sent_s[o, s] = fl_sent[o, s]
                fl_arrive[o, s] = np.inf
            if n_r == 0 or not (reach[o, s] and alive[o] and alive[s]):
                continue
            link_msgs += hops[o, s] * n_r
            here = -1
            flying = -1
            for r in range(n_r):
                if lossy and lost[r, o, s]:
                    continue
                if rounds[r] + lat_s[o, s] <= t1_s:
                    here = r
                else:
                    flying = r
            if here >= 0 and rounds[here] > sent_s[o, s]:
                status[o, s, :] = truth[s, :]
                sent_s[o, s] = rounds[here]
            if flying >= 0:
                fl_status[o, s, :] = truth[s, :]
                fl_sent[o, s] = rounds[flying]
                fl_arrive[o, s] = rounds[flying] + lat_s[o, s]
    for i in range(n):
        status[i, i, :] = truth[i, :]
        sent_s[i, i] = t1_s
    return link_msgs


@njit(cache=True, error_model="numpy")
def _adjacency(n, u, v, latency_ms):
    """Dense link latencies [n, n] (inf: no link; the least of parallel links) and each
    node's neighbours in increasing id (CSR: ``nbr[start[a]:start[a + 1]]``)."""
    adj = np.full((n, n), np.inf)
    for k in range(u.size):
        a, b, w = u[k], v[k], latency_ms[k]
        if w < adj[a, b]:
            adj[a, b] = w
            adj[b, a] = w
    # each node's neighbours in increasing id (the dense scan's relaxation order)
    start = np.zeros(n + 1, np.int64)
    for a in range(n):
        for b in range(n):
            if adj[a, b] < np.inf:
                start[a + 1] += 1
    for a in range(n):
        start[a + 1] += start[a]
    nbr = np.empty(start[n], np.int64)
    at = 0
    for a in range(n):
        for b in range(n):
            if adj[a, b] < np.inf:
                nbr[at] = b
                at += 1
    return adj, start, nbr


@njit(cache=True, error_model="numpy")
def _dijkstra_row(src, adj, start, nbr, dist, pred, hops, done, front):
    """Row ``src`` of :func:`shortest_paths` (written into ``dist``, ``pred``, ``hops``,
    which hold inf / -9999 / -1 in that row on entry)."""
    d = dist[src]
    done[:] = False
    d[src] = 0.0
    hops[src, src] = 0
    front[0] = src
    n_front = 1
    while n_front:
        at = 0  # the nearest reached node, the lowest id among equals
        for f in range(1, n_front):
            y, z = front[f], front[at]
            if d[y] < d[z] or (d[y] == d[z] and y < z):
                at = f
        x = front[at]
        best = d[x]
        n_front -= 1
        front[at] = front[n_front]
        done[x] = True
        for jj in range(start[x], start[x + 1]):
            j = nbr[jj]
            w = adj[x, j]
            if not done[j] and best + w < d[j]:
                if d[j] == np.inf:
                    front[n_front] = j
                    n_front += 1
                d[j] = best + w
                pred[src, j] = x
                hops[src, j] = hops[src, x] + 1


@njit(cache=True, error_model="numpy")
def shortest_paths(n, u, v, latency_ms):
    """Latency-shortest paths from every server over undirected links (Dijkstra on a
    dense graph: the nearest unsettled node first, the lowest id among equals).

    Returns:
        (dist [n, n] (inf: unreachable), predecessor of ``j`` on the path from ``i``
        [n, n] (-9999: none, as scipy), hops [n, n] (-1: unreachable)).
    """
    adj, start, nbr = _adjacency(n, u, v, latency_ms)
    dist = np.full((n, n), np.inf)
    pred = np.full((n, n), -9999, np.int64)
    hops = np.full((n, n), -1, np.int64)
    done = np.zeros(n, np.bool_)
    front = np.empty(n, np.int64)  # reached, unsettled nodes (finite distance)
    for src in range(n):
        _dijkstra_row(src, adj, start, nbr, dist, pred, hops, done, front)
    return dist, pred, hops


@njit(cache=True, error_model="numpy")
def shortest_paths_after(n, u, v, latency_ms, u0, v0, latency0_ms, dist0, pred0, hops0):
    """:func:`shortest_paths` over the links ``(u, v, latency_ms)``, given its result
    ``(dist0, pred0, hops0)`` over other links ``(u0, v0, latency0_ms)``: equal to it,
    computing again only the rows (sources) that the change of links can touch.

    A source's row stays as it was when no link it uses (``pred0``) is removed or
    changed, and every added or changed link ``(a, b)`` of latency ``w`` has
    ``dist0[a] + w > dist0[b]`` and ``dist0[b] + w > dist0[a]``: such a link never
    relaxes a node to its final distance, and Dijkstra's settling order (distance,
    then id) and first-come predecessors are set by the relaxations that do.

    Returns:
        (dist, pred, hops) as :func:`shortest_paths`, and the number of rows computed.
    """
    adj, start, nbr = _adjacency(n, u, v, latency_ms)
    adj0, _, _ = _adjacency(n, u0, v0, latency0_ms)
    redo = np.zeros(n, np.bool_)
    for a in range(n):
        for b in range(a + 1, n):
            w0, w1 = adj0[a, b], adj[a, b]
            if w0 == w1:
                continue
            for src in range(n):
                if redo[src]:
                    continue
                if w0 < np.inf and (pred0[src, b] == a or pred0[src, a] == b):
                    redo[src] = True  # a link on its paths is gone or changed
                elif w1 < np.inf and (
                    dist0[src, a] + w1 <= dist0[src, b] or dist0[src, b] + w1 <= dist0[src, a]
                ):
                    redo[src] = True  # a new or changed link may shorten (or tie) a path
    dist = dist0.copy()
    pred = pred0.copy()
    hops = hops0.copy()
    done = np.zeros(n, np.bool_)
    front = np.empty(n, np.int64)
    n_redo = 0
    for src in range(n):
        if redo[src]:
            dist[src, :] = np.inf
            pred[src, :] = -9999
            hops[src, :] = -1
            _dijkstra_row(src, adj, start, nbr, dist, pred, hops, done, front)
            n_redo += 1
    return dist, pred, hops, n_redo


@njit(cache=True, error_model="numpy")
def path_bottlenecks(dist, pred, hops, u, v, bandwidth_gbit_s):
    """Smallest link bandwidth along each shortest path [n, n] (inf on the diagonal, 0
    where unreachable), walking each path tree from its root, hop by hop."""
    n = dist.shape[0]
    bw = np.zeros((n, n))
    for k in range(u.size):
        bw[u[k], v[k]] = bandwidth_gbit_s[k]
        bw[v[k], u[k]] = bandwidth_gbit_s[k]
    bott = np.full((n, n), np.inf)
    depth = 0
    for i in range(n):
        for j in range(n):
            depth = max(depth, hops[i, j])
    for src in range(n):
        for h in range(1, depth + 1):
            for j in range(n):
                if hops[src, j] == h:
                    p = pred[src, j]
                    bott[src, j] = min(bott[src, p], bw[p, j])
        for j in range(n):
            if not np.isfinite(dist[src, j]):
                bott[src, j] = 0.0
    return bott


@njit(cache=True, error_model="numpy")
def mirrored_paths(dist, pred, hops, u, v, bandwidth_gbit_s):
    """The path matrices of :class:`coel_env.core.topology.PathMatrices` from a
    shortest-path tree: latency, hops and bottleneck bandwidth (:func:`path_bottlenecks`)
    of the path found from the lower id, mirrored (``[i, j]`` and ``[j, i]`` from row
    ``min(i, j)``), and a copy of the predecessors."""
    bott = path_bottlenecks(dist, pred, hops, u, v, bandwidth_gbit_s)
    n = dist.shape[0]
    lat = np.empty((n, n))
    hp = np.empty((n, n), np.int64)
    bt = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            a, b = (i, j) if i <= j else (j, i)
            lat[i, j] = dist[a, b]
            hp[i, j] = hops[a, b]
            bt[i, j] = bott[a, b]
    return lat, hp, bt, pred.copy()


@njit(cache=True, error_model="numpy")
def mix_popularity(mix, cur):
    """``np.einsum("st,tle->sle", mix, cur)``: each server's popularity from its task
    mix [S, T] and the tasks' popularities [T, L, E], summed over tasks in order from
    0.0 as numpy's einsum does (equal results)."""
    s_n, t_n = mix.shape
    _, l_n, e_n = cur.shape
    out = np.zeros((s_n, l_n, e_n))
    for s in range(s_n):
        for t in range(t_n):
            a = mix[s, t]
            for layer in range(l_n):
                for e in range(e_n):
                    out[s, layer, e] += a * cur[t, layer, e]
    return out
