"""Routing kernels (numba): each server's expert popularity from its task mix, and
whether it moved enough to refresh (``World``, :mod:`coel_env.core.routing`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
