"""Perception kernels (numba): the world's true status vectors and the status
broadcasts that carry them to each observer (:mod:`coel_env.core.perception`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
def _message(out, o, s, truth, truth0, weight, interp, r):
    """Write what round ``r``'s message from ``s`` tells observer ``o`` into ``out[o, s]``:
    ``truth``, or with ``interp`` the status when the round was sent (see
    :func:`broadcast_rounds`)."""
    if interp:
        w = weight[r]
        for f in range(truth.shape[1]):
            out[o, s, f] = truth0[s, f] + w * (truth[s, f] - truth0[s, f])
    else:
        out[o, s, :] = truth[s, :]


@njit(cache=True, error_model="numpy")
def broadcast_rounds(
    rounds, t1_s, reach, alive, lat_s, hops, lost, truth, truth0, weight,
    status, sent_s, fl_status, fl_sent, fl_arrive,
):  # fmt: skip
    """One epoch of status broadcasts (see :meth:`coel_env.core.perception.Perception.advance`).

    Delivers messages in flight that arrive by ``t1_s`` (unless the observer has newer
    news), then sends every round in ``rounds`` to each present observer within reach:
    the newest message that arrives by ``t1_s`` is delivered, the newest one still on
    its way replaces any older one in flight. ``lost[r, o, s]`` drops a message (an
    empty array: no losses). A message carries ``truth`` (the status at ``t1_s``), or,
    when ``weight`` holds one entry per round, ``truth0 + weight[r] * (truth - truth0)``
    (the status when round ``r`` was sent). Every server knows itself at ``t1_s``.

    Returns:
        hop-weighted messages sent (link-bytes / message bytes).
    """
    n = alive.size
    n_r = rounds.size
    lossy = lost.shape[0] > 0
    interp = weight.size > 0
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
                _message(status, o, s, truth, truth0, weight, interp, here)
                sent_s[o, s] = rounds[here]
            if flying >= 0:
                _message(fl_status, o, s, truth, truth0, weight, interp, flying)
                fl_sent[o, s] = rounds[flying]
                fl_arrive[o, s] = rounds[flying] + lat_s[o, s]
    for i in range(n):
        status[i, i, :] = truth[i, :]
        sent_s[i, i] = t1_s
    return link_msgs
