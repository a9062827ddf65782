"""Migration kernel (numba): the expert copies of one model plan change
(:mod:`coel_env.core.updating`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def _nearest_holder(old_loc, layer, e, dst, alive, latency_ms):
    """The present server nearest ``dst`` by path latency that holds expert ``(layer,
    e)`` under the old plan (a holder at infinite latency still counts); -1 if none."""
    n = old_loc.shape[2]
    src = -1
    best = np.inf
    for s in range(n):
        if old_loc[layer, e, s] != 0 and alive[s] and latency_ms[s, dst] < best:
            best = latency_ms[s, dst]
            src = s
    if src < 0:
        for s in range(n):
            if old_loc[layer, e, s] != 0 and alive[s]:
                src = s
                break
    return src


@njit(cache=True, error_model="numpy")
def migration_kernel(
    new_loc, new_bits, old_loc, old_bits, alive, expert_bytes, latency_ms, bottleneck_gbit_s,
    pcie_gbps, store_gbit_s, time_s,
):  # fmt: skip
    """Expert copies of one model plan change (see :func:`coel_env.core.updating.migration_cost`).

    An expert whose old copy on a present server has enough bits only changes tier
    there (PCIe); any other new copy comes from the nearest present holder with enough
    bits, else from the store (the copies of :func:`copy_list_kernel`, in its order).
    Adds each server's receiving time to ``time_s``.

    Returns:
        (PCIe bytes, network bytes, copies moved).
    """
    n = new_loc.shape[2]
    pcie = np.zeros(n)
    net = 0.0
    moved = 0
    _, _, dsts, srcs, sizes = copy_list_kernel(
        new_loc, new_bits, old_loc, old_bits, alive, expert_bytes, latency_ms
    )
    for k in range(sizes.size):
        dst, src, w = dsts[k], srcs[k], sizes[k]
        if src == dst:  # a tier change: the nearest holder is never dst itself
            pcie[dst] += w
            moved += 1
            continue
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
def copy_list_kernel(new_loc, new_bits, old_loc, old_bits, alive, expert_bytes, latency_ms):
    """The expert copies of one model plan change, one by one, with the source of each
    (:func:`migration_kernel` costs them).

    Returns:
        (layer, expert, destination, source, bytes) per copy [k]; the source is the
        destination itself for a tier change (PCIe), -1 for the model store.
    """
    n_l, n_e, n = new_loc.shape
    cap = n_l * n_e * n
    lay = np.empty(cap, np.int64)
    exp = np.empty(cap, np.int64)
    dst_out = np.empty(cap, np.int64)
    src_out = np.empty(cap, np.int64)
    size = np.empty(cap)
    k = 0
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
                        lay[k], exp[k], dst_out[k], src_out[k], size[k] = layer, e, dst, dst, w
                        k += 1
                    continue
                src = _nearest_holder(old_loc, layer, e, dst, alive, latency_ms) if enough else -1
                lay[k], exp[k], dst_out[k], src_out[k], size[k] = layer, e, dst, src, w
                k += 1
    return lay[:k], exp[:k], dst_out[:k], src_out[:k], size[:k]


@njit(cache=True, error_model="numpy")
def stream_left_kernel(starts, members, size, sent):
    """Bytes left per stream: its copies' ``size - sent``, summed one after the other in
    the stream's order (:meth:`coel_env.core.updating.Moves.advance`) [streams]."""
    k = starts.size - 1
    left = np.zeros(k)
    for j in range(k):
        acc = 0.0
        for i in range(starts[j], starts[j + 1]):
            c = members[i]
            acc += size[c] - sent[c]
        left[j] = acc
    return left


@njit(cache=True, error_model="numpy")
def consume_kernel(amounts, is_pcie, starts, members, size, sent, landed, dst, load_bytes,
                   net, pcie):  # fmt: skip
    """Hand each stream's bytes sent in a step to its copies, one after the other (the
    first copy not yet landed first): a copy lands when at most 1e-6 of its bytes are
    left, and its destination's ``load_bytes`` grows by its size. Streams in index order;
    ``amounts[j] > 0`` only for the streams that sent. Updates ``sent``, ``landed`` and
    ``load_bytes`` in place.

    Returns:
        (network bytes, PCIe bytes, copies landed): ``net`` and ``pcie`` plus the step's.
    """
    n_landed = 0
    for j in range(amounts.size):
        amount = amounts[j]
        if not amount > 0:
            continue
        if is_pcie[j]:
            pcie += amount
        else:
            net += amount
        for i in range(starts[j], starts[j + 1]):
            c = members[i]
            if landed[c]:
                continue
            take = min(amount, size[c] - sent[c])
            sent[c] += take
            amount -= take
            if size[c] - sent[c] <= 1e-6:
                load_bytes[dst[c]] += size[c]
                landed[c] = True
                n_landed += 1
            if amount <= 0:
                break
    return net, pcie, n_landed


@njit(cache=True, error_model="numpy")
def max_min_kernel(use_starts, use_idx, movable, cap, live):
    """Max-min fair rates by progressive filling (:func:`coel_env.core.updating._max_min`):
    stream ``j`` uses the resources ``use_idx[use_starts[j]:use_starts[j + 1]]`` (each
    once) and moves only if ``movable[j]`` and ``live[j]``; the tightest resource's
    free capacity is shared equally by its unfrozen streams, first. A stream whose
    resources are all unlimited gets an infinite rate [Gbit/s]."""
    k = live.size
    rate = np.zeros(k)
    free = cap.astype(np.float64).copy()
    todo = np.zeros(k, np.bool_)
    n_todo = 0
    for j in range(k):
        if live[j] and movable[j]:
            todo[j] = True
            n_todo += 1
    count = np.zeros(free.size)
    while n_todo:
        count[:] = 0.0
        for j in range(k):
            if todo[j]:
                for i in range(use_starts[j], use_starts[j + 1]):
                    count[use_idx[i]] += 1.0
        r = -1
        best = np.inf
        for i in range(free.size):  # the first smallest share (a NaN first, as np.argmin)
            v = free[i] / count[i] if count[i] > 0 else np.inf
            if v != v:
                r = i
                best = v
                break
            if r < 0 or v < best:
                r = i
                best = v
        if not np.isfinite(best):  # only unlimited resources left
            for j in range(k):
                if todo[j]:
                    rate[j] = np.inf
            break
        s = max(best, 0.0)
        for j in range(k):
            if not todo[j]:
                continue
            on_r = False
            for i in range(use_starts[j], use_starts[j + 1]):
                if use_idx[i] == r:
                    on_r = True
                    break
            if on_r:
                rate[j] = s
                for i in range(use_starts[j], use_starts[j + 1]):
                    free[use_idx[i]] -= s
                todo[j] = False
                n_todo -= 1
    return rate


@njit(cache=True, error_model="numpy")
def streams_kernel(src, dst, model, n, n_models):
    """Group copies into streams, one per (source, destination, model), numbered in the
    order of their first copy (:meth:`coel_env.core.updating.Moves.advance`).

    Returns:
        (heads, starts, members): each stream's first copy; the stream ``j``'s copies,
        in order, are ``members[starts[j]:starts[j + 1]]``.
    """
    k = src.size
    slot = np.full((n + 1) * n * n_models, -1, np.int64)
    sid = np.empty(k, np.int64)
    heads = np.empty(k, np.int64)
    n_s = 0
    for i in range(k):
        code = ((src[i] + 1) * n + dst[i]) * n_models + model[i]
        s = slot[code]
        if s < 0:
            s = slot[code] = n_s
            heads[n_s] = i
            n_s += 1
        sid[i] = s
    starts = np.zeros(n_s + 1, np.int64)
    for i in range(k):
        starts[sid[i] + 1] += 1
    for j in range(n_s):
        starts[j + 1] += starts[j]
    fill = starts[:-1].copy()
    members = np.empty(k, np.int64)
    for i in range(k):
        members[fill[sid[i]]] = i
        fill[sid[i]] += 1
    return heads[:n_s], starts, members
