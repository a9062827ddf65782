"""Readers of topology files: Internet Topology Zoo GraphML and the EUA data set (CSV).

Each reader parses its files and builds a :class:`coel_env.core.topology.Topology`
with the topology module's latency model (see there) and its server and link
assembly; missing data is filled with documented defaults and a
:class:`TopologyDataWarning`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.etree.ElementTree import ParseError

import networkx as nx
import numpy as np
import pandas as pd

from coel_env.core.checks import check_int, check_number, check_rng
from coel_env.core.topology import (
    LINK_BANDWIDTH_GBIT_S,
    PROPAGATION_MS_PER_KM,
    SWITCH_LATENCY_MS,
    Server,
    Topology,
    _assemble,
    _check_bandwidth_range,
    _check_coordinate,
    _check_device_mix,
    _connect_components,
    _draw_devices,
    _pairwise_haversine,
    haversine_km,
)

__all__ = ["TopologyDataWarning", "load_eua", "load_graphml"]


class TopologyDataWarning(UserWarning):
    """A topology file lacked some data and documented defaults were used."""


def _existing_file(path: str | Path, field: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{field}={str(path)!r}: no such file")
    return p


def _file_float(value: object, where: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise ValueError(f"{where}={value!r} is not allowed; must be a finite number")
    return v


def load_graphml(
    path: str | Path,
    *,
    device_mix: Mapping[str, float],
    rng: np.random.Generator,
    default_bandwidth_gbit_s: float = 1.0,
    default_latency_ms: float | None = None,
    largest_component: bool = False,
    switch_latency_ms: float = SWITCH_LATENCY_MS,
    name: str | None = None,
) -> Topology:
    """A topology from an Internet Topology Zoo GraphML file.

    Nodes are relabelled ``0..n-1`` in file order, named by their ``label``. Link
    latency is the haversine distance between the ends' ``Latitude``/``Longitude``
    at :data:`PROPAGATION_MS_PER_KM`, plus ``switch_latency_ms``. Link bandwidth is
    ``LinkSpeedRaw`` [bit/s] / 1e9. Parallel links collapse to one with the largest
    known bandwidth; self-loops are dropped. Each server's GPU is drawn from
    ``device_mix`` (the only use of ``rng``).

    Missing data, with a :class:`TopologyDataWarning` that says how much was filled:

    * nodes without coordinates (e.g. Cernet's foreign peers): their links get
      ``default_latency_ms`` if given, else the median latency of the located links;
      a file with no usable coordinates at all needs ``default_latency_ms``;
    * links without ``LinkSpeedRaw``: ``default_bandwidth_gbit_s``.

    Counts of what was filled are kept in ``graph.graph`` (``nodes_without_coordinates``,
    ``links_default_latency``, ``links_default_bandwidth``, ``parallel_links_collapsed``,
    ``self_loops_dropped``, ``nodes_dropped``).

    Args:
        path: the GraphML file.
        device_mix: GPU profile name -> weight.
        rng: the only source of randomness.
        default_bandwidth_gbit_s: bandwidth of links without ``LinkSpeedRaw`` [Gbit/s].
        default_latency_ms: latency of links with an unlocated end [ms] (one way,
            forwarding included); None uses the median of the located links.
        largest_component: keep only the largest connected component (with a warning)
            instead of refusing a disconnected graph.
        switch_latency_ms: per-link forwarding latency [ms].
        name: the topology's label; None uses the file's network label or its stem.

    Raises:
        ValueError: missing or malformed file, no nodes, non-numeric coordinates or
            speeds, no coordinates and no ``default_latency_ms``, a disconnected graph
            (naming the component sizes) without ``largest_component``, bad arguments.
    """
    p = _existing_file(path, "path")
    default_bandwidth_gbit_s = check_number(
        "default_bandwidth_gbit_s", default_bandwidth_gbit_s, strict=True, it=False
    )
    if default_latency_ms is not None:
        default_latency_ms = check_number("default_latency_ms", default_latency_ms, it=False)
    switch_latency_ms = check_number("switch_latency_ms", switch_latency_ms, it=False)
    _check_device_mix(device_mix)
    rng = check_rng(rng, it=False)
    try:
        raw = nx.read_graphml(p)
    except (ParseError, nx.NetworkXError, KeyError, TypeError, ValueError, UnicodeError) as e:
        raise ValueError(
            f"path={str(p)!r}: not readable as GraphML ({type(e).__name__}: {e})"
        ) from e
    nodes = list(raw.nodes)
    if not nodes:
        raise ValueError(f"path={str(p)!r}: the graph has no nodes")
    index = {node: i for i, node in enumerate(nodes)}
    names = [str(raw.nodes[x].get("label", x)) for x in nodes]

    coords: list[tuple[float, float] | None] = []
    for x, nm in zip(nodes, names, strict=True):
        d = raw.nodes[x]
        if d.get("Latitude") is None or d.get("Longitude") is None:
            coords.append(None)
            continue
        la = _file_float(d["Latitude"], f"{p.name}: node {nm!r} Latitude")
        lo = _file_float(d["Longitude"], f"{p.name}: node {nm!r} Longitude")
        coords.append(
            (
                _check_coordinate(la, f"{p.name}: node {nm!r} Latitude", 90.0),
                _check_coordinate(lo, f"{p.name}: node {nm!r} Longitude", 180.0),
            )
        )

    speeds: dict[tuple[int, int], float | None] = {}
    parallel = self_loops = 0
    for a, b, d in raw.edges(data=True):
        i, j = index[a], index[b]
        if i == j:
            self_loops += 1
            continue
        key = (min(i, j), max(i, j))
        speed = None
        if d.get("LinkSpeedRaw") is not None:
            where = f"{p.name}: link {names[key[0]]!r}-{names[key[1]]!r} LinkSpeedRaw"
            speed = _file_float(d["LinkSpeedRaw"], where) / 1e9
            if speed <= 0:
                raise ValueError(f"{where}={d['LinkSpeedRaw']!r} is not allowed; must be > 0")
        if key in speeds:
            parallel += 1
            known = [s for s in (speeds[key], speed) if s is not None]
            speed = max(known) if known else None
        speeds[key] = speed

    # Connectivity.
    h = nx.Graph()
    h.add_nodes_from(range(len(nodes)))
    h.add_edges_from(speeds)
    keep = list(range(len(nodes)))
    if len(nodes) > 1 and not nx.is_connected(h):
        comps = sorted(
            (sorted(c) for c in nx.connected_components(h)), key=lambda c: (-len(c), c[0])
        )
        sizes = [len(c) for c in comps]
        if not largest_component:
            raise ValueError(
                f"path={str(p)!r}: the graph is disconnected: {len(comps)} components of "
                f"sizes {sizes}; pass largest_component=True to keep the largest"
            )
        keep = comps[0]
        warnings.warn(
            f"{p.name}: graph is disconnected (component sizes {sizes}); kept the largest "
            f"({len(keep)} of {len(nodes)} nodes)",
            TopologyDataWarning,
            stacklevel=2,
        )
    new = {old: k for k, old in enumerate(keep)}
    links = sorted((new[u], new[v]) for u, v in speeds if u in new and v in new)
    link_speed = [speeds[(keep[u], keep[v])] for u, v in links]
    kept_coords = [coords[old] for old in keep]
    kept_names = [names[old] for old in keep]
    n = len(keep)

    # Latency.
    located = [
        k
        for k, (u, v) in enumerate(links)
        if kept_coords[u] is not None and kept_coords[v] is not None
    ]
    lat_ms = np.full(len(links), np.nan)
    if located:
        uu = np.array([links[k][0] for k in located])
        vv = np.array([links[k][1] for k in located])
        la = np.array([c[0] if c else np.nan for c in kept_coords])
        lo = np.array([c[1] if c else np.nan for c in kept_coords])
        dist = haversine_km(la[uu], lo[uu], la[vv], lo[vv])
        lat_ms[located] = dist * PROPAGATION_MS_PER_KM + switch_latency_ms
    unlocated_links = len(links) - len(located)
    unlocated_nodes = [kept_names[k] for k, c in enumerate(kept_coords) if c is None]
    if unlocated_links:
        if default_latency_ms is not None:
            fill, how = default_latency_ms, "default_latency_ms"
        elif located:
            fill, how = float(np.median(lat_ms[located])), "the median of the located links"
        else:
            raise ValueError(
                f"path={str(p)!r}: no node has Latitude/Longitude ({len(unlocated_nodes)} of "
                f"{n} nodes lack them), so link latency cannot be computed; pass "
                "default_latency_ms, or in a scenario set topology.default_latency_ms, e.g. "
                "--set topology.default_latency_ms=5"
            )
        lat_ms[np.isnan(lat_ms)] = fill
        warnings.warn(
            f"{p.name}: {len(unlocated_nodes)} of {n} nodes have no Latitude/Longitude "
            f"({', '.join(unlocated_nodes[:10])}); their {unlocated_links} of {len(links)} "
            f"links use latency {fill:.3g} ms ({how})",
            TopologyDataWarning,
            stacklevel=2,
        )

    # Bandwidth.
    missing_bw = sum(s is None for s in link_speed)
    bw = np.array([default_bandwidth_gbit_s if s is None else s for s in link_speed], dtype=float)
    if missing_bw:
        if missing_bw == len(links):
            what = f"no link has LinkSpeedRaw: all {len(links)} links use"
        else:
            what = f"{missing_bw} of {len(links)} links have no LinkSpeedRaw; they use"
        warnings.warn(
            f"{p.name}: {what} default_bandwidth_gbit_s={default_bandwidth_gbit_s:g}",
            TopologyDataWarning,
            stacklevel=2,
        )

    gpus = _draw_devices(device_mix, n, rng)
    servers = [
        Server(
            id=k, name=kept_names[k], gpu=gpus[k],
            lat=None if kept_coords[k] is None else kept_coords[k][0],
            lon=None if kept_coords[k] is None else kept_coords[k][1],
        )
        for k in range(n)
    ]  # fmt: skip
    meta = {
        "source": str(p),
        "network": str(raw.graph.get("Network", raw.graph.get("label", p.stem))),
        "nodes_without_coordinates": len(unlocated_nodes),
        "links_default_latency": unlocated_links,
        "links_default_bandwidth": missing_bw,
        "parallel_links_collapsed": parallel,
        "self_loops_dropped": self_loops,
        "nodes_dropped": len(nodes) - n,
    }
    label = name if name is not None else str(raw.graph.get("label", p.stem))
    return _assemble(
        servers=servers, edges=links, latency_ms=lat_ms, bandwidth_gbit_s=bw, meta=meta,
        name=label,
    )  # fmt: skip


def _read_csv(path: str | Path, field: str, required: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """A CSV with its columns looked up case-insensitively: (frame, lower name -> column)."""
    p = _existing_file(path, field)
    try:
        df = pd.read_csv(p)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{field}={str(p)!r}: not readable as CSV ({e})") from e
    cols = {str(c).strip().lower(): c for c in df.columns}
    missing = [r for r in required if r.lower() not in cols]
    if missing:
        raise ValueError(
            f"{field}={str(p)!r}: missing column(s) {missing}; required (any case): "
            f"{list(required)}; found: {[str(c) for c in df.columns]}"
        )
    if df.empty:
        raise ValueError(f"{field}={str(p)!r}: no data rows")
    return df, cols


def _csv_coordinates(
    df: pd.DataFrame, cols: dict, field: str, path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for key, bound in (("latitude", 90.0), ("longitude", 180.0)):
        col = cols[key]
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (np.abs(values) > bound)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{field}={str(path)!r}: column {col!r} line {r + 2}: value "
                f"{df[col].iloc[r]!r} is not allowed; must be a number in "
                f"[-{bound:g}, {bound:g}] ({int(bad.sum())} bad rows)"
            )
        out.append(values)
    return out[0], out[1]


def load_eua(
    sites_csv: str | Path,
    *,
    n_servers: int,
    k_nearest: int = 3,
    device_mix: Mapping[str, float],
    rng: np.random.Generator,
    users_csv: str | Path | None = None,
    select: str = "random",
    link_bandwidth_gbit_s: tuple[float, float] = LINK_BANDWIDTH_GBIT_S,
    switch_latency_ms: float = SWITCH_LATENCY_MS,
    max_user_distance_km: float | None = None,
    name: str = "eua",
) -> Topology:
    """A topology from the EUA data set: base stations as edge servers, users attached.

    The base stations (``LATITUDE``, ``LONGITUDE``; ``NAME`` or ``SITE_ID`` as name if
    present) are candidate sites. ``n_servers`` of them become servers: drawn without
    replacement with ``rng`` (``select="random"``), or the first ``n_servers`` rows
    (``select="first"``); servers keep the file's row order. Each server is linked to
    its ``k_nearest`` nearest servers (great-circle distance, latency as for every
    link); a disconnected result is joined by nearest pairs of components, as in
    :func:`~coel_env.core.topology.random_geometric`. Link bandwidth is drawn uniformly
    from ``link_bandwidth_gbit_s`` (EUA has no link data; assumed range).

    Users (``users_csv``: ``Latitude``, ``Longitude``) are attached to their nearest
    server; ``Topology.users[k]`` is user ``k``'s server.

    RNG draws, in order: the site subset (``select="random"``), link bandwidths, GPUs.

    Args:
        sites_csv: base-station CSV (e.g. ``site-optus-melbCBD.csv``).
        n_servers: servers to keep, 1..number of sites.
        k_nearest: links per server to its nearest servers, >= 1.
        device_mix: GPU profile name -> weight.
        rng: the only source of randomness.
        users_csv: optional user-position CSV (e.g. ``users-melbcbd-generated.csv``).
        select: ``"random"`` or ``"first"``.
        link_bandwidth_gbit_s: ``(lo, hi)`` of the uniform per-link bandwidth draw.
        switch_latency_ms: per-link forwarding latency [ms].
        max_user_distance_km: drop users farther than this from every server (with a
            warning); None keeps all (the nationwide ``users-aus.csv`` needs a bound).
        name: the topology's label.

    Column names are matched case-insensitively. Counts are kept in ``graph.graph``
    (``sites``, ``repaired_links``, ``users_dropped``).
    """
    df, cols = _read_csv(sites_csv, "sites_csv", ("LATITUDE", "LONGITUDE"))
    lat, lon = _csv_coordinates(df, cols, "sites_csv", sites_csv)
    n_sites = len(df)
    n = check_int("n_servers", n_servers, 1, it=False)
    if n > n_sites:
        raise ValueError(f"n_servers={n} is not allowed; the file has {n_sites} sites")
    k = check_int("k_nearest", k_nearest, 1, it=False)
    if select not in ("random", "first"):
        raise ValueError(f"select={select!r} is not allowed; allowed: 'random', 'first'")
    bw_range = _check_bandwidth_range(link_bandwidth_gbit_s)
    switch_latency_ms = check_number("switch_latency_ms", switch_latency_ms, it=False)
    if max_user_distance_km is not None:
        max_user_distance_km = check_number(
            "max_user_distance_km", max_user_distance_km, strict=True, it=False
        )
    _check_device_mix(device_mix)
    rng = check_rng(rng, it=False)

    users_lat = users_lon = None
    if users_csv is not None:
        udf, ucols = _read_csv(users_csv, "users_csv", ("Latitude", "Longitude"))
        users_lat, users_lon = _csv_coordinates(udf, ucols, "users_csv", users_csv)

    if select == "random":
        chosen = np.sort(rng.choice(n_sites, size=n, replace=False))
    else:
        chosen = np.arange(n)
    la, lo = lat[chosen], lon[chosen]
    dist = _pairwise_haversine(la, lo)
    links: set[tuple[int, int]] = set()
    for i in range(n):
        order = np.argsort(dist[i], kind="stable")
        for j in [int(x) for x in order if x != i][:k]:
            links.add((min(i, j), max(i, j)))
    repaired = _connect_components(dist, links)
    ordered = sorted(links)
    bw = rng.uniform(bw_range[0], bw_range[1], size=len(ordered))
    lat_ms = np.array([dist[u, v] for u, v in ordered]) * PROPAGATION_MS_PER_KM
    lat_ms = lat_ms + switch_latency_ms

    name_col = cols.get("name", cols.get("site_id"))
    names = [str(df[name_col].iloc[c]) if name_col is not None else f"site{int(c)}" for c in chosen]
    gpus = _draw_devices(device_mix, n, rng)
    servers = [
        Server(id=i, name=names[i] or f"site{int(chosen[i])}", gpu=gpus[i], lat=la[i], lon=lo[i])
        for i in range(n)
    ]

    users = None
    dropped = 0
    if users_lat is not None:
        d = haversine_km(users_lat[:, None], users_lon[:, None], la[None, :], lo[None, :])
        users = np.argmin(d, axis=1).astype(np.int64)
        if max_user_distance_km is not None:
            near = d.min(axis=1) <= max_user_distance_km
            dropped = int((~near).sum())
            users = users[near]
            if dropped:
                warnings.warn(
                    f"users_csv: dropped {dropped} of {len(near)} users farther than "
                    f"max_user_distance_km={max_user_distance_km:g} from every server",
                    TopologyDataWarning,
                    stacklevel=2,
                )
    meta = {
        "source": str(sites_csv),
        "users_source": None if users_csv is None else str(users_csv),
        "sites": n_sites,
        "site_rows": [int(c) for c in chosen],
        "repaired_links": repaired,
        "users_dropped": dropped,
    }
    return _assemble(
        servers=servers, edges=ordered, latency_ms=lat_ms, bandwidth_gbit_s=bw, meta=meta,
        name=name, users=users,
    )  # fmt: skip
