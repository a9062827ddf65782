"""Workload kernels (numba) of :mod:`coel_env.core.workload`: the synthetic streams'
points of a window, categorical draws by inverse CDF, and the window's sort.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
