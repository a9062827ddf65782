"""Dynamics kernel (numba) of :mod:`coel_env.core.dynamics`: one Ornstein-Uhlenbeck
step, clipped.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
