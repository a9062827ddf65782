"""Edge-server topologies: servers, links, and the path matrices the simulator reads.

A :class:`Topology` is an undirected networkx graph with nodes ``0..n-1``. Each node
carries a :class:`Server` (node attribute ``server``); each link carries
``bandwidth_gbit_s`` and a one-way ``latency_ms``. Traffic follows the latency-shortest
path. The path matrices of that routing (latency, hop count and bottleneck bandwidth of
the chosen path, all pairs) are computed once per topology with
``scipy.sparse.csgraph`` and kept as read-only numpy arrays for the simulator's hot
path. :meth:`Topology.with_links` recomputes them when links degrade or fail.

Where topologies come from:

* synthetic: :func:`random_geometric` and :func:`waxman` (networkx generators);
* the Internet Topology Zoo (Knight et al., IEEE JSAC 2011), GraphML files:
  :func:`coel_env.core.io.topologies.load_graphml`;
* the EUA data set of base stations and users (Lai et al., ICSOC 2018), CSV files:
  :func:`coel_env.core.io.topologies.load_eua`;
* a cloud data centre joined to any of them over WAN links: :func:`add_cloud`.

Link latency model (every generator and loader)::

    latency_ms = distance_km * PROPAGATION_MS_PER_KM + switch_latency_ms

Distances are straight lines: Euclidean on the synthetic plane, great-circle
(haversine) between coordinates. Real fibre routes are longer than that, so the
propagation term is a lower bound.

Randomness: every function that draws takes an ``rng: np.random.Generator`` and
draws from nothing else (networkx generators get an integer seed drawn from it), so
the same seed gives the same topology.

The module is somewhat long (about 900 lines): servers, links, routing, the
generators and the cloud are one model; the topology files are read in
:mod:`coel_env.core.io.topologies`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.sparse.csgraph import connected_components, shortest_path

from coel_env import profiles
from coel_env.core.checks import check_int, check_number, check_rng, read_only
from coel_env.core.kernels.paths import mirrored_paths, shortest_paths, shortest_paths_after

__all__ = [
    "PROPAGATION_MS_PER_KM",
    "SWITCH_LATENCY_MS",
    "EARTH_RADIUS_KM",
    "LINK_BANDWIDTH_GBIT_S",
    "AREA_KM",
    "WAN_LATENCY_MS",
    "WAN_BANDWIDTH_GBIT_S",
    "CLOUD_GPU",
    "CLOUD_COST_PER_1K_TOKENS",
    "Server",
    "PathMatrices",
    "Topology",
    "random_geometric",
    "waxman",
    "add_cloud",
    "haversine_km",
]

#: One-way propagation delay in optical fibre [ms/km]. Light in silica fibre (group
#: index ~1.47) travels at ~2/3 c, ~204,000 km/s, i.e. ~4.9 us/km; ITU-T Rec. G.114
#: (Table 1, planning values) uses 5 us/km for optical fibre systems.
PROPAGATION_MS_PER_KM = 0.005
#: Per-link forwarding latency [ms]: serialisation, switching and light queueing in the
#: router at the end of a link. Assumed: datacentre switches forward in ~1 us, IP routers
#: in tens of us; 0.1 ms is a conservative round figure, not a measurement.
SWITCH_LATENCY_MS = 0.1
#: Mean Earth radius [km] (IUGG), for great-circle distances.
EARTH_RADIUS_KM = 6371.0
#: Range of the uniform draw of synthetic link bandwidth [Gbit/s]. Assumed: metro
#: edge links between 1 GbE and 10 GbE.
LINK_BANDWIDTH_GBIT_S = (1.0, 10.0)
#: Side of the square region of synthetic topologies [km]. Assumed: a metro area.
AREA_KM = 50.0
#: One-way latency of an edge-to-cloud WAN link [ms]. Assumed: measured RTTs from
#: end users to the nearest cloud region are tens of ms (Charyyev et al., "Latency
#: comparison of cloud datacenters and edge servers", GLOBECOM 2020); 30 ms one way
#: sits at the pessimistic end, with WAN queueing included.
WAN_LATENCY_MS = 30.0
#: Bandwidth of an edge-to-cloud WAN link [Gbit/s]. Assumed: a 10 GbE uplink per site.
WAN_BANDWIDTH_GBIT_S = 10.0
#: Device profile of the cloud node: the GPU we measured (coel_env.profiles).
CLOUD_GPU = "h200"
#: Price of cloud inference [USD per 1000 tokens]. Assumed order of magnitude: Mistral
#: AI's API listed open-mixtral-8x7b at $0.7 per million tokens (2024).
CLOUD_COST_PER_1K_TOKENS = 0.0007


# ---------------------------------------------------------------------------------------
# devices and link bandwidths


def _names_of_kind(kind: str) -> list[str]:
    return [d for d in profiles.device_names() if profiles.get_device(d).kind == kind]


def _device(name: object, field: str, kind: str) -> profiles.DeviceProfile:
    """The profile of a known device of the given kind, or a ValueError listing them."""
    if not isinstance(name, str) or name not in profiles.device_names():
        raise ValueError(
            f"{field}={name!r} is not a known device; known {kind} devices: "
            f"{', '.join(_names_of_kind(kind))}"
        )
    dev = profiles.get_device(name)
    if dev.kind != kind:
        raise ValueError(
            f"{field}={name!r} is a {dev.kind} profile, not a {kind}; known {kind} devices: "
            f"{', '.join(_names_of_kind(kind))}"
        )
    return dev


def _check_device_mix(device_mix: object) -> tuple[list[str], np.ndarray]:
    """Names (sorted, so the draw does not depend on insertion order) and probabilities."""
    if not isinstance(device_mix, Mapping) or not device_mix:
        raise ValueError(
            f"device_mix={device_mix!r} is not allowed; must be a non-empty mapping of GPU "
            f"profile name -> weight, e.g. {{'l4': 0.7, 'jetson-agx-orin-64gb': 0.3}}"
        )
    names = sorted(device_mix)
    weights = []
    for name in names:
        _device(name, f"device_mix key {name!r}", "gpu")
        weights.append(check_number(f"device_mix[{name!r}]", device_mix[name], it=False))
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"device_mix={dict(device_mix)!r} is not allowed; weights sum to 0")
    return names, np.asarray(weights) / total


def _draw_devices(device_mix: Mapping[str, float], n: int, rng: np.random.Generator) -> list[str]:
    names, p = _check_device_mix(device_mix)
    return [names[k] for k in rng.choice(len(names), size=n, p=p)]


def _check_bandwidth_range(value: object) -> tuple[float, float]:
    try:
        lo, hi = value  # type: ignore[misc]
        lo = check_number("link_bandwidth_gbit_s[0]", lo, strict=True, it=False)
        hi = check_number("link_bandwidth_gbit_s[1]", hi, strict=True, it=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"link_bandwidth_gbit_s={value!r} is not allowed; must be (lo, hi) with "
            f"0 < lo <= hi [Gbit/s] ({e})"
        ) from None
    if lo > hi:
        raise ValueError(f"link_bandwidth_gbit_s={value!r} is not allowed; needs lo <= hi")
    return lo, hi


# ---------------------------------------------------------------------------------------
# servers


@dataclass(frozen=True)
class Server:
    """One server: a GPU with its host CPU, or the cloud.

    Attributes:
        id: node id in its topology, ``0..n-1``.
        name: human-readable name (a city, a base station, ``"s3"``).
        gpu: GPU device profile name (:func:`coel_env.profiles.device_names`).
        host_cpu: CPU profile name; ``None`` means the GPU profile's ``host_cpu``.
            Always a name after construction.
        gpu_memory_gb: GPU memory [GB]; ``None`` means the GPU profile's ``memory_gb``.
        host_memory_gb: host memory [GB] for experts offloaded to the CPU; ``None``
            means the host CPU profile's ``memory_gb`` (64 GB for ``edge-x86-8c``, the
            host of the L4 and RTX 4090). On unified-memory GPUs (Jetson) CPU and GPU
            share one pool, already counted in ``gpu_memory_gb``, so it is 0 (and any
            other value is refused, to avoid counting the pool twice).
        lat: latitude [deg], or ``None`` for synthetic and cloud nodes.
        lon: longitude [deg], or ``None``.
        is_cloud: True for the cloud node of :func:`add_cloud`.
        cost_per_1k_tokens: price of serving on this server [USD per 1000 tokens]; 0 for
            edge servers run by the operator.
    """

    id: int
    name: str
    gpu: str
    host_cpu: str | None = None
    gpu_memory_gb: float | None = None
    host_memory_gb: float | None = None
    lat: float | None = None
    lon: float | None = None
    is_cloud: bool = False
    cost_per_1k_tokens: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "id", check_int("id", self.id, 0, it=False))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r} is not allowed; must be a non-empty string")
        gpu = _device(self.gpu, "gpu", "gpu")
        host_cpu = self.host_cpu if self.host_cpu is not None else gpu.host_cpu
        if host_cpu is None:
            raise ValueError(f"host_cpu=None: gpu={self.gpu!r} names no host CPU; pass host_cpu")
        cpu = _device(host_cpu, "host_cpu", "cpu")
        set_(self, "host_cpu", host_cpu)
        if self.gpu_memory_gb is None:
            set_(self, "gpu_memory_gb", float(gpu.memory_gb))
        else:
            mem = check_number("gpu_memory_gb", self.gpu_memory_gb, strict=True, it=False)
            set_(self, "gpu_memory_gb", mem)
        if gpu.unified_memory:
            if self.host_memory_gb not in (None, 0, 0.0):
                raise ValueError(
                    f"host_memory_gb={self.host_memory_gb!r} is not allowed for gpu="
                    f"{self.gpu!r}: unified memory is one pool, counted in gpu_memory_gb; "
                    "allowed: None or 0"
                )
            set_(self, "host_memory_gb", 0.0)
        elif self.host_memory_gb is None:
            set_(self, "host_memory_gb", float(cpu.memory_gb))
        else:
            set_(
                self,
                "host_memory_gb",
                check_number("host_memory_gb", self.host_memory_gb, it=False),
            )
        if (self.lat is None) != (self.lon is None):
            raise ValueError(
                f"lat={self.lat!r}, lon={self.lon!r}: give both coordinates or neither"
            )
        if self.lat is not None:
            set_(self, "lat", _check_coordinate(self.lat, "lat", 90.0))
            set_(self, "lon", _check_coordinate(self.lon, "lon", 180.0))
        if not isinstance(self.is_cloud, bool | np.bool_):
            raise ValueError(f"is_cloud={self.is_cloud!r} is not allowed; must be a bool")
        set_(self, "is_cloud", bool(self.is_cloud))
        set_(
            self,
            "cost_per_1k_tokens",
            check_number("cost_per_1k_tokens", self.cost_per_1k_tokens, it=False),
        )


def _check_coordinate(value: object, field: str, bound: float) -> float:
    v = check_number(field, value, minimum=-math.inf, it=False)
    if abs(v) > bound:
        raise ValueError(f"{field}={value!r} is not allowed; must be in [-{bound:g}, {bound:g}]")
    return v


# ---------------------------------------------------------------------------------------
# routing


@dataclass(frozen=True, eq=False)
class PathMatrices:
    """All-pairs properties of latency-shortest-path routing, ``[n, n]`` each.

    Attributes:
        latency_ms: one-way latency of the chosen path [ms]; 0 on the diagonal,
            ``inf`` between servers that no path joins.
        hops: links on the chosen path (int); 0 on the diagonal, -1 where unreachable.
        bottleneck_gbit_s: least link bandwidth on the chosen path [Gbit/s]; ``inf`` on
            the diagonal (a local transfer crosses no link), 0 where unreachable.
        predecessors: ``predecessors[i, j]`` is the server before ``j`` on the path from
            ``i`` (for ``i < j``; paths for ``i > j`` are those reversed), -9999 where
            none (scipy's convention).

    All four are symmetric in the path they describe: ``(i, j)`` and ``(j, i)`` use the
    same path, so the matrices are exactly symmetric.
    """

    latency_ms: np.ndarray
    hops: np.ndarray
    bottleneck_gbit_s: np.ndarray
    predecessors: np.ndarray

    @property
    def reachable(self) -> np.ndarray:
        """Boolean ``[n, n]``: a path joins ``i`` and ``j``."""
        return np.isfinite(self.latency_ms)

    @property
    def connected(self) -> bool:
        """True when every pair of servers is joined by a path."""
        return bool(np.isfinite(self.latency_ms).all())

    def path(self, src: int, dst: int) -> list[int]:
        """The servers on the chosen path from ``src`` to ``dst`` (both included).

        Returns:
            ``[src, ..., dst]``; ``[src]`` when they are equal; ``[]`` when unreachable.
        """
        n = self.latency_ms.shape[0]
        src = check_int("src", src, 0, it=False)
        dst = check_int("dst", dst, 0, it=False)
        if src >= n or dst >= n:
            raise ValueError(f"src={src}, dst={dst}: server ids must be in [0, {n - 1}]")
        if src == dst:
            return [src]
        if not np.isfinite(self.latency_ms[src, dst]):
            return []
        a, b = min(src, dst), max(src, dst)
        out = [b]
        while out[-1] != a:
            out.append(int(self.predecessors[a, out[-1]]))
        return out[::-1] if src == a else out


def _route(
    n: int, u: np.ndarray, v: np.ndarray, latency_ms: np.ndarray, bandwidth_gbit_s: np.ndarray
) -> PathMatrices:
    """Path matrices of latency-shortest-path routing over the given links."""
    return _bottleneck(_shortest_paths(n, u, v, latency_ms), u, v, bandwidth_gbit_s)


def _shortest_paths(n: int, u: np.ndarray, v: np.ndarray, latency_ms: np.ndarray) -> tuple:
    """Latency-shortest paths: (dist, predecessors, hops) [n, n] (bandwidth-independent;
    :func:`coel_env.core.kernels.paths.shortest_paths`)."""
    return shortest_paths(
        n, np.asarray(u, np.int64), np.asarray(v, np.int64), np.asarray(latency_ms, float)
    )


def _bottleneck(
    tree: tuple, u: np.ndarray, v: np.ndarray, bandwidth_gbit_s: np.ndarray
) -> PathMatrices:
    """Path matrices of the shortest-path ``tree`` with the links' bandwidths (one path
    per unordered pair, the one found from the lower id, mirrored)."""
    dist, pred, hops = tree
    lat, hp, bott, pred = mirrored_paths(
        dist, pred, hops, np.asarray(u, np.int64), np.asarray(v, np.int64),
        np.asarray(bandwidth_gbit_s, float),
    )  # fmt: skip
    return PathMatrices(
        latency_ms=read_only(lat),
        hops=read_only(hp),
        bottleneck_gbit_s=read_only(bott),
        predecessors=read_only(pred),
    )


# ---------------------------------------------------------------------------------------
# topology


class Topology:
    """Servers and links, with precomputed routing (immutable after construction).

    Args:
        graph: undirected ``networkx.Graph`` (not a multigraph) with nodes ``0..n-1``,
            node attribute ``server`` (a :class:`Server` whose ``id`` is the node) and
            link attributes ``bandwidth_gbit_s`` (> 0) and ``latency_ms`` (>= 0, one
            way). It must be connected. It is copied and frozen.
        users: optional int array: ``users[k]`` is the server user ``k`` is attached to
            (used to weight request origins).
        name: a label for reports.

    Attributes:
        name: the label.
        graph: the frozen copy of the graph (its attribute dicts are not deep-frozen;
            do not edit them).
        servers: ``Server`` per node, by id.
        n: number of servers.
        edges: links as ``(u, v)`` with ``u < v``, sorted; link arrays follow this order.
        edge_bandwidth_gbit_s: bandwidth per link [Gbit/s], ``[n_edges]``.
        edge_latency_ms: one-way latency per link [ms], ``[n_edges]``.
        paths: :class:`PathMatrices` of the intact topology.
        latency_ms, hops, bottleneck_gbit_s: shortcuts to ``paths``' matrices.
        users: the user -> server array, or None.
    """

    def __init__(
        self, graph: nx.Graph, *, users: np.ndarray | None = None, name: str = "topology"
    ) -> None:
        if not isinstance(graph, nx.Graph) or graph.is_directed() or graph.is_multigraph():
            raise ValueError(
                f"graph={type(graph).__name__} is not allowed; must be an undirected, simple "
                "networkx.Graph"
            )
        n = graph.number_of_nodes()
        if n < 1:
            raise ValueError("graph has 0 nodes; a topology needs at least 1 server")
        if set(graph.nodes) != set(range(n)):
            bad = sorted((x for x in graph.nodes if x not in range(n)), key=str)[:5]
            raise ValueError(f"graph nodes must be the integers 0..{n - 1}; found e.g. {bad!r}")
        servers = []
        for i in range(n):
            s = graph.nodes[i].get("server")
            if not isinstance(s, Server):
                raise ValueError(f"node {i}: attribute 'server'={s!r} is not a Server")
            if s.id != i:
                raise ValueError(f"node {i}: server.id={s.id} must equal the node id {i}")
            servers.append(s)
        links = []
        for a, b, d in graph.edges(data=True):
            if a == b:
                raise ValueError(f"link ({a}, {b}) is a self-loop; not allowed")
            u, v = min(a, b), max(a, b)
            bw = check_number(
                f"link ({u}, {v}) bandwidth_gbit_s",
                d.get("bandwidth_gbit_s"),
                strict=True,
                it=False,
            )
            lat = check_number(f"link ({u}, {v}) latency_ms", d.get("latency_ms"), it=False)
            links.append((u, v, bw, lat))
        links.sort()
        if n > 1 and not nx.is_connected(graph):
            sizes = sorted((len(c) for c in nx.connected_components(graph)), reverse=True)
            raise ValueError(
                f"graph is disconnected: {len(sizes)} components of sizes {sizes}; "
                "a topology must be connected"
            )
        if not isinstance(name, str):
            raise ValueError(f"name={name!r} is not allowed; must be a string")

        g = nx.Graph()
        g.graph.update(graph.graph)
        for i in range(n):
            g.add_node(i, **dict(graph.nodes[i]))
        for u, v, _, _ in links:
            g.add_edge(u, v, **dict(graph.edges[u, v]))
        nx.freeze(g)

        self.name = name
        self.graph = g
        self.servers: tuple[Server, ...] = tuple(servers)
        self.n = n
        self.edges: tuple[tuple[int, int], ...] = tuple((u, v) for u, v, _, _ in links)
        self.edge_bandwidth_gbit_s = read_only(np.array([x[2] for x in links], dtype=float))
        self.edge_latency_ms = read_only(np.array([x[3] for x in links], dtype=float))
        self._edge_u = read_only(np.array([x[0] for x in links], dtype=np.int64))
        self._edge_v = read_only(np.array([x[1] for x in links], dtype=np.int64))
        self._edge_index = {e: k for k, e in enumerate(self.edges)}
        self.paths = _route(
            n, self._edge_u, self._edge_v, self.edge_latency_ms, self.edge_bandwidth_gbit_s
        )
        self.latency_ms = self.paths.latency_ms
        self.hops = self.paths.hops
        self.bottleneck_gbit_s = self.paths.bottleneck_gbit_s
        self.users = None if users is None else read_only(_check_users(users, n))
        self._cache: dict[object, object] = {}  # lazily computed, never exposed mutable
        self._frozen = True

    def __setattr__(self, key: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"Topology is immutable; cannot set {key!r}")
        object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        clouds = len(self.cloud_ids)
        users = "" if self.users is None else f", users={len(self.users)}"
        return (
            f"Topology({self.name!r}, n={self.n}, links={len(self.edges)}, clouds={clouds}{users})"
        )

    @classmethod
    def from_links(
        cls,
        servers: Sequence[Server],
        links: Iterable[tuple[int, int, float, float]],
        *,
        users: np.ndarray | None = None,
        name: str = "topology",
    ) -> Topology:
        """Build from servers (ids ``0..n-1``) and ``(u, v, bandwidth_gbit_s, latency_ms)``."""
        g = nx.Graph()
        for s in servers:
            if not isinstance(s, Server):
                raise ValueError(f"servers contains {s!r}; must be Server objects")
            g.add_node(s.id, server=s)
        for link in links:
            u, v, bw, lat = link
            if u not in g or v not in g:
                raise ValueError(f"link {link!r} names a server that is not in servers")
            if g.has_edge(u, v):
                raise ValueError(f"link {link!r} is given twice")
            g.add_edge(u, v, bandwidth_gbit_s=bw, latency_ms=lat)
        return cls(g, users=users, name=name)

    @property
    def cloud_ids(self) -> tuple[int, ...]:
        """Ids of cloud servers."""
        return tuple(s.id for s in self.servers if s.is_cloud)

    @property
    def edge_ids(self) -> tuple[int, ...]:
        """Ids of edge (non-cloud) servers."""
        return tuple(s.id for s in self.servers if not s.is_cloud)

    def edge_index(self, u: int, v: int) -> int:
        """Position of link ``(u, v)`` (either order) in :attr:`edges`."""
        key = (min(u, v), max(u, v))
        if key not in self._edge_index:
            raise ValueError(f"link ({u}, {v}) is not a link of {self.name!r}")
        return self._edge_index[key]

    def neighbors_within(self, h: int) -> list[np.ndarray]:
        """Servers at most ``h`` links away, per server (itself excluded).

        Distance here is the least number of links in the graph, not the hop count of
        the latency-shortest path in :attr:`hops` (which can be longer).

        Args:
            h: hop radius, >= 0 (0 gives empty arrays).

        Returns:
            one sorted read-only int array of server ids per server.
        """
        h = check_int("h", h, 0, it=False)
        if ("within", h) not in self._cache:
            if "min_hops" not in self._cache:
                adj = np.zeros((self.n, self.n))
                adj[self._edge_u, self._edge_v] = 1.0
                d = shortest_path(adj, method="D", directed=False, unweighted=True)
                self._cache["min_hops"] = d
            d = self._cache["min_hops"]
            self._cache[("within", h)] = tuple(
                read_only(np.flatnonzero((d[i] <= h) & (np.arange(self.n) != i)))
                for i in range(self.n)
            )
        return list(self._cache[("within", h)])

    def with_links(
        self,
        bandwidth_scale: np.ndarray | None = None,
        *,
        latency_scale: np.ndarray | None = None,
        failed: Iterable[tuple[int, int]] = (),
    ) -> PathMatrices:
        """Path matrices after links degrade or fail; the topology itself is unchanged.

        A failed link is removed. If that disconnects the graph, unreachable pairs get
        latency ``inf``, bottleneck bandwidth 0 and hops -1 (see :class:`PathMatrices`).

        Args:
            bandwidth_scale: factor per link (> 0), in :attr:`edges` order; None keeps 1.
            latency_scale: factor per link (> 0) on its latency; None keeps 1.
            failed: links ``(u, v)`` (either order) that are down.

        Returns:
            the new :class:`PathMatrices` (routing recomputed on the new latencies).
        """
        m = len(self.edges)
        bw_scale = _check_scale(bandwidth_scale, "bandwidth_scale", m)
        lat = self.edge_latency_ms * _check_scale(latency_scale, "latency_scale", m)
        up = np.ones(m, dtype=bool)
        for e in failed:
            try:
                u, v = e
            except (TypeError, ValueError):
                raise ValueError(f"failed contains {e!r}; must be (u, v) link pairs") from None
            up[self.edge_index(u, v)] = False
        if latency_scale is not None:
            u, v = self._edge_u[up], self._edge_v[up]
            return _route(self.n, u, v, lat[up], (self.edge_bandwidth_gbit_s * bw_scale)[up])
        return self._routes_with(bw_scale, up)

    def _routes_with(self, bandwidth_scale: np.ndarray, link_up: np.ndarray) -> PathMatrices:
        """:meth:`with_links` for arrays already checked (the world's dynamics state; internal):
        ``bandwidth_scale`` float ``[n_edges]`` (> 0) and ``link_up`` bool ``[n_edges]``
        (False: the link is down), both in :attr:`edges` order. Not checked."""
        up = link_up
        u, v = self._edge_u[up], self._edge_v[up]
        lat = self.edge_latency_ms
        # bandwidth does not move latency-shortest paths: route once per set of failures
        key = ("routes", up.tobytes())
        tree = self._cache.get(key)
        if tree is None:
            if len(self._cache) > 256:  # bounded: drop earlier failure sets
                for k in [k for k in self._cache if k[0] == "routes"]:
                    del self._cache[k]
            last = self._cache.get("last_routes")
            if last is None:
                tree = _shortest_paths(self.n, u, v, lat[up])
            else:  # from the last routes: only the sources the changed links can touch
                up0, tree0 = last
                *tree, _ = shortest_paths_after(
                    self.n, u, v, lat[up], self._edge_u[up0], self._edge_v[up0], lat[up0],
                    *tree0,
                )  # fmt: skip
                tree = tuple(tree)
            self._cache[key] = tree
            self._cache["last_routes"] = (up.copy(), tree)
        return _bottleneck(tree, u, v, (self.edge_bandwidth_gbit_s * bandwidth_scale)[up])


def _check_scale(scale: np.ndarray | None, field: str, m: int) -> np.ndarray:
    if scale is None:
        return np.ones(m)
    a = np.asarray(scale, dtype=float)
    if a.shape != (m,):
        raise ValueError(f"{field} has shape {a.shape}; must be ({m},), one factor per link")
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise ValueError(
            f"{field} has values {a[~(np.isfinite(a) & (a > 0))][:5]!r}; every factor must be "
            "finite and > 0 (remove a link with failed=)"
        )
    return a


def _check_users(users: object, n: int) -> np.ndarray:
    a = np.asarray(users)
    if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"users has shape {a.shape}, dtype {a.dtype}; must be a 1-D int array")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"users holds server ids outside [0, {n - 1}]")
    return a.astype(np.int64)


# ---------------------------------------------------------------------------------------
# geometry and graph assembly


def haversine_km(
    lat1: np.ndarray | float,
    lon1: np.ndarray | float,
    lat2: np.ndarray | float,
    lon2: np.ndarray | float,
) -> np.ndarray:
    """Great-circle distance [km] between points given in degrees (broadcasts)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _pairwise_haversine(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    d = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    return np.maximum(d, d.T)  # exact symmetry


def _connect_components(dist_km: np.ndarray, edges: set[tuple[int, int]]) -> int:
    """Join components by their nearest pair of nodes until connected; returns links added.

    Each round links the component holding node 0 to the nearest node outside it
    (Prim's rule on components), so the result is deterministic.
    """
    n = dist_km.shape[0]
    added = 0
    while True:
        adj = np.zeros((n, n))
        for u, v in edges:
            adj[u, v] = adj[v, u] = 1.0
        k, labels = connected_components(adj, directed=False)
        if k <= 1:
            return added
        inside = np.flatnonzero(labels == labels[0])
        outside = np.flatnonzero(labels != labels[0])
        sub = dist_km[np.ix_(inside, outside)]
        a, b = np.unravel_index(int(np.argmin(sub)), sub.shape)
        u, v = int(inside[a]), int(outside[b])
        edges.add((min(u, v), max(u, v)))
        added += 1


def _assemble(
    *,
    servers: list[Server],
    edges: Sequence[tuple[int, int]],
    latency_ms: np.ndarray,
    bandwidth_gbit_s: np.ndarray,
    meta: Mapping[str, object],
    name: str,
    node_attrs: Sequence[Mapping[str, object]] | None = None,
    users: np.ndarray | None = None,
) -> Topology:
    g = nx.Graph()
    g.graph.update(meta)
    for i, s in enumerate(servers):
        g.add_node(i, server=s, **(dict(node_attrs[i]) if node_attrs else {}))
    for (u, v), lat, bw in zip(edges, latency_ms, bandwidth_gbit_s, strict=True):
        g.add_edge(u, v, latency_ms=float(lat), bandwidth_gbit_s=float(bw))
    return Topology(g, users=users, name=name)


def _planar(
    draw: Callable[[int], nx.Graph],
    n: int,
    *,
    area_km: float,
    device_mix: Mapping[str, float],
    rng: np.random.Generator,
    link_bandwidth_gbit_s: tuple[float, float],
    switch_latency_ms: float,
    name: str,
    meta: dict[str, object],
) -> Topology:
    """A synthetic topology of ``n`` servers from ``draw(seed)``: a networkx graph on the
    unit square (node attribute ``pos``), its seed drawn from ``rng``.

    Checks the arguments the generators share (after their own); ``meta`` gains
    ``area_km`` and ``repaired_links``.
    """
    area_km = check_number("area_km", area_km, strict=True, it=False)
    switch_latency_ms = check_number("switch_latency_ms", switch_latency_ms, it=False)
    lo, hi = _check_bandwidth_range(link_bandwidth_gbit_s)
    _check_device_mix(device_mix)
    rng = check_rng(rng, it=False)
    g = draw(_seed(rng))
    pos_unit = np.array([g.nodes[i]["pos"] for i in range(n)], dtype=float).reshape(n, 2)
    pos_km = pos_unit * area_km
    diff = pos_km[:, None, :] - pos_km[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    links = {(min(u, v), max(u, v)) for u, v in g.edges if u != v}
    meta["area_km"] = area_km
    meta["repaired_links"] = _connect_components(dist, links)
    ordered = sorted(links)
    bw = rng.uniform(lo, hi, size=len(ordered))
    lat = np.array([dist[u, v] for u, v in ordered]) * PROPAGATION_MS_PER_KM + switch_latency_ms
    gpus = _draw_devices(device_mix, n, rng)
    servers = [Server(id=i, name=f"s{i}", gpu=gpus[i]) for i in range(n)]
    attrs = [{"pos_km": (float(x), float(y))} for x, y in pos_km]
    return _assemble(
        servers=servers, edges=ordered, latency_ms=lat, bandwidth_gbit_s=bw,
        meta=meta, name=name, node_attrs=attrs,
    )  # fmt: skip


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**32))


# ---------------------------------------------------------------------------------------
# generators


def random_geometric(
    n: int,
    *,
    radius: float | None = None,
    area_km: float = AREA_KM,
    device_mix: Mapping[str, float],
    rng: np.random.Generator,
    link_bandwidth_gbit_s: tuple[float, float] = LINK_BANDWIDTH_GBIT_S,
    switch_latency_ms: float = SWITCH_LATENCY_MS,
    name: str = "random-geometric",
) -> Topology:
    """Servers at uniform points of a square, linked when closer than ``radius``.

    ``networkx.random_geometric_graph`` on the unit square, positions scaled to
    ``area_km``. A disconnected draw is joined by adding links between the nearest
    pairs of nodes of different components (count in ``graph.graph["repaired_links"]``),
    which always terminates, keeps every drawn link, and adds the fewest links needed.

    Args:
        n: number of servers, >= 1.
        radius: link radius as a fraction of the square's side; None means 1.5 times
            the connectivity threshold ``sqrt(ln n / (pi n))`` of random geometric
            graphs (Penrose, 1997), so most draws need no repair.
        area_km: side of the square [km].
        device_mix: GPU profile name -> weight; each server's GPU is drawn from it.
        rng: the only source of randomness.
        link_bandwidth_gbit_s: ``(lo, hi)`` of the uniform per-link bandwidth draw.
        switch_latency_ms: per-link forwarding latency [ms].
        name: the topology's label.

    Returns:
        the topology; node attribute ``pos_km`` holds each server's position.
    """
    n = check_int("n", n, 1, it=False)
    if radius is None:
        radius = 1.5 * math.sqrt(math.log(n) / (math.pi * n)) if n > 1 else 1.0
    radius = check_number("radius", radius, strict=True, it=False)
    return _planar(
        lambda seed: nx.random_geometric_graph(n, radius, seed=seed), n,
        area_km=area_km, device_mix=device_mix, rng=rng,
        link_bandwidth_gbit_s=link_bandwidth_gbit_s, switch_latency_ms=switch_latency_ms,
        name=name, meta={"generator": "random_geometric", "radius": radius},
    )  # fmt: skip


def waxman(
    n: int,
    *,
    alpha: float = 0.4,
    beta: float = 0.4,
    area_km: float = AREA_KM,
    device_mix: Mapping[str, float],
    rng: np.random.Generator,
    link_bandwidth_gbit_s: tuple[float, float] = LINK_BANDWIDTH_GBIT_S,
    switch_latency_ms: float = SWITCH_LATENCY_MS,
    name: str = "waxman",
) -> Topology:
    """Waxman random graph: servers at uniform points, linked with a distance-decaying chance.

    ``networkx.waxman_graph`` on the unit square: a pair at distance ``d`` is linked
    with probability ``beta * exp(-d / (alpha * L))``, ``L`` the largest distance
    (Waxman, IEEE JSAC 1988). Positions are scaled to ``area_km``; a disconnected draw
    is repaired as in :func:`random_geometric`.

    Args:
        n: number of servers, >= 1.
        alpha: distance scale, > 0 (larger: more long links). Default 0.4 (assumed;
            networkx's 0.1 leaves most small graphs disconnected).
        beta: link density, in (0, 1]. Default 0.4 (networkx's default).
        area_km: side of the square [km].
        device_mix: GPU profile name -> weight; each server's GPU is drawn from it.
        rng: the only source of randomness.
        link_bandwidth_gbit_s: ``(lo, hi)`` of the uniform per-link bandwidth draw.
        switch_latency_ms: per-link forwarding latency [ms].
        name: the topology's label.
    """
    n = check_int("n", n, 1, it=False)
    alpha = check_number("alpha", alpha, strict=True, it=False)
    beta = check_number("beta", beta, strict=True, it=False)
    if beta > 1:
        raise ValueError(f"beta={beta!r} is not allowed; must be in (0, 1]")
    # networkx derives L from the node pairs and fails without a pair; any L serves n = 1.
    length = None if n > 1 else 1.0
    return _planar(
        lambda seed: nx.waxman_graph(n, beta=beta, alpha=alpha, L=length, seed=seed), n,
        area_km=area_km, device_mix=device_mix, rng=rng,
        link_bandwidth_gbit_s=link_bandwidth_gbit_s, switch_latency_ms=switch_latency_ms,
        name=name, meta={"generator": "waxman", "alpha": alpha, "beta": beta},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# cloud


def add_cloud(
    topology: Topology,
    *,
    wan_latency_ms: float = WAN_LATENCY_MS,
    wan_bandwidth_gbit_s: float = WAN_BANDWIDTH_GBIT_S,
    cost_per_1k_tokens: float = CLOUD_COST_PER_1K_TOKENS,
    attach_to: Iterable[int] | None = None,
    gpu: str = CLOUD_GPU,
    name: str = "cloud",
) -> Topology:
    """A new topology with one cloud server (id ``n``) joined over WAN links.

    The cloud node has ``gpu`` (an H200 by default: the GPU we measured),
    ``is_cloud=True`` and a price per token. It links to every edge server, or only
    to the gateway servers ``attach_to``, each link with ``wan_latency_ms`` (one way)
    and ``wan_bandwidth_gbit_s``. Existing ids and users are unchanged.

    Args:
        topology: the edge topology.
        wan_latency_ms: one-way latency of each WAN link [ms] (>= 0).
        wan_bandwidth_gbit_s: bandwidth of each WAN link [Gbit/s] (> 0).
        cost_per_1k_tokens: cloud price [USD per 1000 tokens] (>= 0).
        attach_to: gateway server ids; None links every non-cloud server.
        gpu: GPU profile of the cloud node.
        name: the cloud node's name.
    """
    if not isinstance(topology, Topology):
        raise ValueError(f"topology={topology!r} is not allowed; must be a Topology")
    wan_latency_ms = check_number("wan_latency_ms", wan_latency_ms, it=False)
    wan_bandwidth_gbit_s = check_number(
        "wan_bandwidth_gbit_s", wan_bandwidth_gbit_s, strict=True, it=False
    )
    if attach_to is None:
        gateways = list(topology.edge_ids)
    else:
        given = list(attach_to)
        gateways = sorted({check_int("attach_to[]", g, 0, it=False) for g in given})
        bad = [g for g in gateways if g >= topology.n or topology.servers[g].is_cloud]
        if bad or not gateways:
            raise ValueError(
                f"attach_to={given!r} is not allowed; must be a non-empty set of "
                f"edge server ids in [0, {topology.n - 1}] (bad: {bad})"
            )
    c = topology.n
    cloud = Server(id=c, name=name, gpu=gpu, is_cloud=True, cost_per_1k_tokens=cost_per_1k_tokens)
    g = nx.Graph(topology.graph)  # unfrozen copy
    g.add_node(c, server=cloud)
    for s in gateways:
        g.add_edge(s, c, latency_ms=wan_latency_ms, bandwidth_gbit_s=wan_bandwidth_gbit_s)
    return Topology(g, users=topology.users, name=topology.name)


# The file readers moved to coel_env.core.io.topologies; their names stay importable from
# here (its ``__all__``), loaded on first use (the readers import this module).


def __getattr__(name: str) -> object:
    """A reader's name from its :mod:`coel_env.core.io` module (PEP 562)."""
    from coel_env.core.io import topologies

    if name in topologies.__all__:
        return getattr(topologies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
