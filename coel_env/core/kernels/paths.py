"""Shortest-path kernels (numba) of :mod:`coel_env.core.topology`: latency-shortest
paths over the links (from scratch or after a change of links) and their bottleneck
bandwidths.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
