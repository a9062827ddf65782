"""Placement kernels (numba): checks and scans of a model plan's placement
(:mod:`coel_env.core.plan`), what two placements share (``World``), and the
heuristic fills of the envs' actions (:func:`place_homes`, :func:`fill_tiers`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
