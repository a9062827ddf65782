"""Summary kernels (numba): latency percentiles of the world's metrics and the
per-group summaries and unit floats of the envs' observations.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
