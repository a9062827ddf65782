"""Tests for coel_env.core.topology: generators, loaders, routing matrices, cloud, bad input."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from helpers import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from coel_env.core import topology as T
from coel_env.core.io import TopologyDataWarning, load_eua, load_graphml
from coel_env.core.topology import (
    PROPAGATION_MS_PER_KM,
    SWITCH_LATENCY_MS,
    Server,
    Topology,
    add_cloud,
    haversine_km,
    random_geometric,
    waxman,
)

DATA = SHARED_DATA / "topologies"
ZOO = DATA / "topology_zoo"
EUA = DATA / "eua"

MIX = {"l4": 0.5, "jetson-agx-orin-64gb": 0.3, "a100-80gb": 0.2}
GENERATORS: dict[str, Callable[..., Topology]] = {
    "random_geometric": random_geometric,
    "waxman": waxman,
}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def _assert_routing_consistent(top: Topology) -> None:
    """Every matrix entry agrees with the path it claims, and latency is a metric."""
    lat, hops, bott = top.latency_ms, top.hops, top.bottleneck_gbit_s
    n = top.n
    assert np.isfinite(lat).all(), "topology must be connected"
    np.testing.assert_array_equal(lat, lat.T)
    np.testing.assert_array_equal(hops, hops.T)
    np.testing.assert_array_equal(bott, bott.T)
    assert (np.diag(lat) == 0).all() and (np.diag(hops) == 0).all()
    assert np.isinf(np.diag(bott)).all()
    # Triangle inequality (shortest paths are a metric).
    assert (lat[:, None, :] <= lat[:, :, None] + lat[None, :, :] + 1e-9).all()
    for i in range(n):
        for j in range(n):
            path = top.paths.path(i, j)
            assert path[0] == i and path[-1] == j
            assert hops[i, j] == len(path) - 1
            if i == j:
                continue
            ks = [top.edge_index(a, b) for a, b in zip(path, path[1:], strict=False)]
            assert lat[i, j] == pytest.approx(top.edge_latency_ms[ks].sum(), rel=1e-12)
            assert bott[i, j] == top.edge_bandwidth_gbit_s[ks].min()
    # The routed path is never shorter in links than the least-hop path.
    within1 = top.neighbors_within(1)
    for i in range(n):
        assert set(within1[i].tolist()) == set(top.graph.neighbors(i))
        assert (hops[i, within1[i]] >= 1).all()


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("gen", GENERATORS)
def test_generator_same_seed_gives_identical_topology(gen: str) -> None:
    a = GENERATORS[gen](25, device_mix=MIX, rng=_rng(7))
    b = GENERATORS[gen](25, device_mix=MIX, rng=_rng(7))
    c = GENERATORS[gen](25, device_mix=MIX, rng=_rng(8))
    assert a.edges == b.edges
    assert a.servers == b.servers
    for attr in ("edge_bandwidth_gbit_s", "edge_latency_ms", "latency_ms", "hops"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    np.testing.assert_array_equal(a.bottleneck_gbit_s, b.bottleneck_gbit_s)
    assert a.edges != c.edges or not np.array_equal(a.latency_ms, c.latency_ms)


@pytest.mark.parametrize("gen", GENERATORS)
@pytest.mark.parametrize("n", [1, 2, 6, 30])
def test_generator_is_connected_and_routing_consistent(gen: str, n: int) -> None:
    top = GENERATORS[gen](n, device_mix=MIX, rng=_rng(n))
    assert top.n == n and len(top.servers) == n
    assert nx.is_connected(top.graph)
    _assert_routing_consistent(top)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 25),
    gen=st.sampled_from(sorted(GENERATORS)),
)
@settings(max_examples=25, deadline=None)
def test_generator_property_connected_metric(seed: int, n: int, gen: str) -> None:
    top = GENERATORS[gen](n, device_mix=MIX, rng=_rng(seed))
    lat = top.latency_ms
    assert np.isfinite(lat).all()
    np.testing.assert_array_equal(lat, lat.T)
    assert (lat[:, None, :] <= lat[:, :, None] + lat[None, :, :] + 1e-9).all()
    off = ~np.eye(n, dtype=bool)
    assert (top.hops[off] >= 1).all()
    # Each link: forwarding latency plus propagation over at most the square's diagonal.
    assert (top.edge_latency_ms >= SWITCH_LATENCY_MS).all()
    assert (top.edge_latency_ms <= SWITCH_LATENCY_MS + T.AREA_KM * 2**0.5 * 0.005 + 1e-9).all()
    lo, hi = T.LINK_BANDWIDTH_GBIT_S
    assert ((top.edge_bandwidth_gbit_s >= lo) & (top.edge_bandwidth_gbit_s <= hi)).all()


def test_latency_is_distance_at_fibre_speed_plus_switching() -> None:
    top = random_geometric(12, area_km=100.0, device_mix={"l4": 1.0}, rng=_rng(3))
    for k, (u, v) in enumerate(top.edges):
        pu = np.array(top.graph.nodes[u]["pos_km"])
        pv = np.array(top.graph.nodes[v]["pos_km"])
        expect = np.linalg.norm(pu - pv) * PROPAGATION_MS_PER_KM + SWITCH_LATENCY_MS
        assert top.edge_latency_ms[k] == pytest.approx(expect)


def test_device_mix_single_device_gives_all_servers_that_device() -> None:
    top = random_geometric(20, device_mix={"l4": 1.0}, rng=_rng(1))
    assert {s.gpu for s in top.servers} == {"l4"}
    top = waxman(20, device_mix={"l4": 0.0, "rtx-4090": 2.0}, rng=_rng(1))
    assert {s.gpu for s in top.servers} == {"rtx-4090"}


def test_device_mix_frequencies_follow_weights() -> None:
    top = random_geometric(400, device_mix={"l4": 3.0, "jetson-orin-nano-8gb": 1.0}, rng=_rng(2))
    share = np.mean([s.gpu == "l4" for s in top.servers])
    assert 0.68 < share < 0.82


def test_server_defaults_come_from_profiles() -> None:
    s = Server(id=0, name="a", gpu="l4")
    assert (s.host_cpu, s.gpu_memory_gb, s.host_memory_gb) == ("edge-x86-8c", 24.0, 64.0)
    a100 = Server(id=1, name="b", gpu="a100-80gb")
    assert (a100.host_cpu, a100.gpu_memory_gb, a100.host_memory_gb) == ("edge-x86-16c", 80.0, 128.0)
    jet = Server(id=2, name="c", gpu="jetson-agx-orin-64gb")
    assert (jet.host_cpu, jet.gpu_memory_gb, jet.host_memory_gb) == ("agx-orin-cpu", 64.0, 0.0)
    assert not s.is_cloud and s.lat is None and s.cost_per_1k_tokens == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gpu": "b200"}, r"gpu='b200' is not a known device.*l4"),
        ({"gpu": "edge-x86-8c"}, r"gpu='edge-x86-8c' is a cpu profile"),
        ({"host_cpu": "h200"}, r"host_cpu='h200' is a gpu profile"),
        ({"gpu_memory_gb": -1.0}, r"gpu_memory_gb=-1.0"),
        ({"gpu": "jetson-orin-nano-8gb", "host_memory_gb": 8.0}, r"unified memory"),
        ({"lat": 10.0}, r"both coordinates"),
        ({"lat": 91.0, "lon": 0.0}, r"lat=91.0.*\[-90, 90\]"),
        ({"id": -1}, r"id=-1"),
        ({"name": ""}, r"name=''"),
    ],
)
def test_server_rejects_bad_fields(kwargs: dict, match: str) -> None:
    args = {"id": 0, "name": "s", "gpu": "l4", **kwargs}
    with pytest.raises(ValueError, match=match):
        Server(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device_mix": {"b200": 1.0}}, r"b200.*not a known device.*h200"),
        ({"device_mix": {"l4": -1.0}}, r"device_mix\['l4'\]=-1.0"),
        ({"device_mix": {"l4": 0.0}}, r"weights sum to 0"),
        ({"device_mix": {}}, r"device_mix=\{\}"),
        ({"device_mix": {"epyc-2c": 1.0}}, r"epyc-2c.*cpu profile"),
        ({"n": 0}, r"n=0 .*>= 1"),
        ({"rng": 42}, r"rng=42.*Generator"),
        ({"link_bandwidth_gbit_s": (5.0, 1.0)}, r"link_bandwidth_gbit_s"),
        ({"area_km": 0.0}, r"area_km=0.0"),
    ],
)
@pytest.mark.parametrize("gen", GENERATORS)
def test_generators_reject_bad_input(gen: str, kwargs: dict, match: str) -> None:
    args = {"n": 5, "device_mix": {"l4": 1.0}, "rng": _rng(), **kwargs}
    n = args.pop("n")
    with pytest.raises(ValueError, match=match):
        GENERATORS[gen](n, **args)


# --------------------------------------------------------------------------- routing


def _servers(n: int) -> list[Server]:
    return [Server(id=i, name=f"s{i}", gpu="l4") for i in range(n)]


def _square_with_shortcut() -> Topology:
    """0-1-2-3 is fast (1 ms a link) but thin at 1-2; the direct 0-3 link is slow (10 ms)."""
    links = [(0, 1, 10.0, 1.0), (1, 2, 2.0, 1.0), (2, 3, 10.0, 1.0), (0, 3, 40.0, 10.0)]
    return Topology.from_links(_servers(4), links, name="square")


def test_routing_follows_least_latency_not_least_hops() -> None:
    top = _square_with_shortcut()
    assert top.latency_ms[0, 3] == 3.0
    assert top.hops[0, 3] == 3 and top.hops[3, 0] == 3
    assert top.bottleneck_gbit_s[0, 3] == 2.0
    assert top.paths.path(0, 3) == [0, 1, 2, 3] and top.paths.path(3, 0) == [3, 2, 1, 0]
    # In the graph, 3 is one link from 0.
    assert 3 in top.neighbors_within(1)[0].tolist()


def test_neighbors_within() -> None:
    top = Topology.from_links(_servers(4), [(0, 1, 1.0, 1.0), (1, 2, 1.0, 1.0), (2, 3, 1.0, 1.0)])
    assert all(a.size == 0 for a in top.neighbors_within(0))
    assert [a.tolist() for a in top.neighbors_within(1)] == [[1], [0, 2], [1, 3], [2]]
    assert [a.tolist() for a in top.neighbors_within(3)] == [
        [1, 2, 3],
        [0, 2, 3],
        [0, 1, 3],
        [0, 1, 2],
    ]
    with pytest.raises(ValueError, match=r"h=-1"):
        top.neighbors_within(-1)


def test_with_links_failure_reroutes_and_disconnection_gives_inf() -> None:
    top = _square_with_shortcut()
    rerouted = top.with_links(failed=[(2, 1)])
    assert rerouted.latency_ms[0, 3] == 10.0 and rerouted.hops[0, 3] == 1
    assert rerouted.latency_ms[0, 2] == 11.0 and rerouted.bottleneck_gbit_s[0, 2] == 10.0
    assert rerouted.connected
    cut = top.with_links(failed=[(1, 2), (3, 0)])
    assert not cut.connected
    assert np.isinf(cut.latency_ms[0, 3]) and cut.bottleneck_gbit_s[0, 3] == 0.0
    assert cut.hops[0, 3] == -1 and cut.path(0, 3) == []
    assert cut.latency_ms[0, 1] == 1.0 and cut.latency_ms[2, 3] == 1.0
    # The topology itself is untouched.
    assert top.latency_ms[0, 3] == 3.0


def test_with_links_scales_bandwidth_and_latency() -> None:
    top = _square_with_shortcut()
    m = len(top.edges)
    half = top.with_links(np.full(m, 0.5))
    np.testing.assert_allclose(half.bottleneck_gbit_s, top.bottleneck_gbit_s * 0.5)
    np.testing.assert_array_equal(half.latency_ms, top.latency_ms)
    slow = np.ones(m)
    slow[top.edge_index(1, 2)] = 20.0  # 20 ms: the shortcut now wins
    moved = top.with_links(latency_scale=slow)
    assert moved.latency_ms[0, 3] == 10.0 and moved.bottleneck_gbit_s[0, 3] == 40.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failed": [(0, 2)]}, r"link \(0, 2\) is not a link"),
        ({"failed": [3]}, r"failed contains 3"),
        ({"bandwidth_scale": np.ones(3)}, r"bandwidth_scale has shape \(3,\); must be \(4,\)"),
        ({"bandwidth_scale": np.array([1.0, 0.0, 1.0, 1.0])}, r"finite and > 0"),
        ({"latency_scale": np.array([1.0, np.nan, 1.0, 1.0])}, r"latency_scale"),
    ],
)
def test_with_links_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _square_with_shortcut().with_links(**kwargs)


def test_with_links_on_generated_topology_never_shortens_paths() -> None:
    top = waxman(20, device_mix=MIX, rng=_rng(4))
    failed = top.edges[::5]
    pm = top.with_links(failed=failed)
    assert (pm.latency_ms >= top.latency_ms - 1e-12).all()


def test_with_links_routes_once_per_failure_set_and_matches_routing_from_scratch() -> None:
    """Bandwidth changes reuse the routes of the same failures; paths equal a fresh route."""
    top = waxman(25, device_mix=MIX, rng=_rng(6))
    rng = _rng(7)
    m = len(top.edges)
    for _ in range(6):
        scale = rng.uniform(0.2, 2.0, m)
        failed = [top.edges[i] for i in np.flatnonzero(rng.random(m) < 0.2)]
        got = top.with_links(scale, failed=failed)
        up = np.ones(m, bool)
        for e in failed:
            up[top.edge_index(*e)] = False
        bw, lat = top.edge_bandwidth_gbit_s * scale, top.edge_latency_ms
        u, v = np.asarray(top.edges).T
        want = T._route(top.n, u[up], v[up], lat[up], bw[up])
        again = top.with_links(scale, failed=failed)  # cached routes
        for pm in (got, again):
            np.testing.assert_array_equal(pm.latency_ms, want.latency_ms)
            np.testing.assert_array_equal(pm.hops, want.hops)
            np.testing.assert_array_equal(pm.bottleneck_gbit_s, want.bottleneck_gbit_s)
            np.testing.assert_array_equal(pm.predecessors, want.predecessors)


def test_topology_is_immutable_and_pickles() -> None:
    top = random_geometric(10, device_mix=MIX, rng=_rng(5))
    with pytest.raises(AttributeError, match="immutable"):
        top.n = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        top.latency_ms[0, 1] = 0.0
    with pytest.raises(nx.NetworkXError):
        top.graph.add_node(99)
    back = pickle.loads(pickle.dumps(top))
    np.testing.assert_array_equal(back.latency_ms, top.latency_ms)
    assert back.servers == top.servers and back.edges == top.edges


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Topology(nx.DiGraph()), r"undirected, simple"),
        (lambda: Topology(nx.Graph()), r"0 nodes"),
        (
            lambda: Topology.from_links(_servers(4), [(0, 1, 1.0, 1.0), (2, 3, 1.0, 1.0)]),
            r"disconnected: 2 components of sizes \[2, 2\]",
        ),
        (lambda: Topology.from_links(_servers(2), [(0, 1, 0.0, 1.0)]), r"bandwidth_gbit_s=0.0"),
        (lambda: Topology.from_links(_servers(2), [(0, 1, 1.0, -1.0)]), r"latency_ms=-1.0"),
        (lambda: Topology.from_links(_servers(2), [(0, 5, 1.0, 1.0)]), r"not in servers"),
        (
            lambda: Topology.from_links(_servers(2), [(0, 1, 1.0, 1.0)], users=np.array([0, 2])),
            r"users holds server ids outside \[0, 1\]",
        ),
    ],
)
def test_topology_rejects_bad_graphs(build: Callable[[], Topology], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


# --------------------------------------------------------------------------- cloud


def test_add_cloud_reaches_every_server_at_least_wan_latency() -> None:
    edge = random_geometric(15, device_mix=MIX, rng=_rng(6))
    top = add_cloud(edge, wan_latency_ms=25.0, wan_bandwidth_gbit_s=5.0)
    assert top.n == edge.n + 1 and top.cloud_ids == (edge.n,)
    cloud = top.servers[-1]
    assert cloud.is_cloud and cloud.gpu == "h200" and cloud.cost_per_1k_tokens > 0
    row = top.latency_ms[edge.n, : edge.n]
    assert np.isfinite(row).all() and (row >= 25.0).all()
    np.testing.assert_array_equal(top.hops[edge.n, : edge.n], 1)
    np.testing.assert_array_equal(top.bottleneck_gbit_s[edge.n, : edge.n], np.minimum(5.0, 5.0))
    # Edge-to-edge routes do not detour through the cloud when the edge path is shorter.
    np.testing.assert_array_equal(top.latency_ms[: edge.n, : edge.n], edge.latency_ms)
    assert top.edge_ids == tuple(range(edge.n))


def test_add_cloud_through_gateways() -> None:
    edge = Topology.from_links(_servers(3), [(0, 1, 10.0, 1.0), (1, 2, 10.0, 1.0)])
    top = add_cloud(edge, attach_to=[0], wan_latency_ms=30.0)
    assert top.latency_ms[3, 0] == 30.0 and top.latency_ms[3, 2] == 32.0
    assert top.hops[3, 2] == 3
    with pytest.raises(ValueError, match=r"attach_to=\[7\]"):
        add_cloud(edge, attach_to=[7])
    with pytest.raises(ValueError, match=r"attach_to=\[3\]"):
        add_cloud(top, attach_to=[3])  # 3 is the cloud
    with pytest.raises(ValueError, match=r"wan_bandwidth_gbit_s=0"):
        add_cloud(edge, wan_bandwidth_gbit_s=0)


# --------------------------------------------------------------------------- Topology Zoo

# (file, nodes, links after collapsing parallels, links that used the default bandwidth,
#  nodes without coordinates)
ZOO_FILES = [
    ("Abilene", 11, 14, 14, 0),
    ("Aarnet", 19, 24, 24, 0),
    ("Cernet", 41, 58, 6, 4),
    ("Uninett2010", 74, 101, 3, 0),
]


@pytest.mark.parametrize(("stem", "n", "m", "default_bw", "unlocated"), ZOO_FILES)
def test_topology_zoo_files_load_connected(
    stem: str, n: int, m: int, default_bw: int, unlocated: int
) -> None:
    path = _need(ZOO / f"{stem}.graphml")
    with pytest.warns(TopologyDataWarning) as record:
        top = load_graphml(path, device_mix=MIX, rng=_rng())
    assert any("LinkSpeedRaw" in str(w.message) for w in record)
    assert any("Latitude" in str(w.message) for w in record) == bool(unlocated)
    assert (top.n, len(top.edges)) == (n, m)
    meta = top.graph.graph
    assert meta["links_default_bandwidth"] == default_bw
    assert meta["nodes_without_coordinates"] == unlocated
    assert meta["nodes_dropped"] == 0
    _assert_routing_consistent(top)
    assert all(s.lat is not None for s in top.servers) or unlocated


def test_abilene_coast_to_coast_latency_is_propagation_scale() -> None:
    path = _need(ZOO / "Abilene.graphml")
    with pytest.warns(TopologyDataWarning):
        top = load_graphml(path, device_mix=MIX, rng=_rng())
    names = [s.name for s in top.servers]
    ny, la = top.servers[names.index("New York")], top.servers[names.index("Los Angeles")]
    great_circle_km = float(haversine_km(ny.lat, ny.lon, la.lat, la.lon))
    assert 3850 < great_circle_km < 4000  # NY-LA is ~3940 km
    floor_ms = great_circle_km * PROPAGATION_MS_PER_KM  # ~19.7 ms
    one_way = top.latency_ms[ny.id, la.id]
    assert floor_ms < one_way < 1.5 * floor_ms
    assert 15.0 < one_way < 40.0


def test_cernet_foreign_peers_and_parallel_link() -> None:
    path = _need(ZOO / "Cernet.graphml")
    with pytest.warns(TopologyDataWarning) as record:
        top = load_graphml(path, device_mix=MIX, rng=_rng())
    messages = " | ".join(str(w.message) for w in record)
    assert "4 of 41 nodes have no Latitude/Longitude" in messages
    assert "6 of 58 links have no LinkSpeedRaw" in messages
    assert top.graph.graph["parallel_links_collapsed"] == 1
    names = [s.name for s in top.servers]
    k = top.edge_index(names.index("Beijing"), names.index("Xi'an"))
    assert top.edge_bandwidth_gbit_s[k] == pytest.approx(0.155)
    with pytest.warns(TopologyDataWarning) as record:
        fixed = load_graphml(path, device_mix=MIX, rng=_rng(), default_latency_ms=50.0)
    assert any("latency 50 ms (default_latency_ms)" in str(w.message) for w in record)
    japan = names.index("Japan")
    assert fixed.latency_ms[japan].max() >= 50.0


def test_graphml_device_draw_is_deterministic() -> None:
    path = _need(ZOO / "Uninett2010.graphml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TopologyDataWarning)
        a = load_graphml(path, device_mix=MIX, rng=_rng(11))
        b = load_graphml(path, device_mix=MIX, rng=_rng(11))
    assert a.servers == b.servers
    np.testing.assert_array_equal(a.latency_ms, b.latency_ms)


# --------------------------------------------------------------------------- GraphML bad input


def _graphml(
    path: Path,
    nodes: list[tuple[str, float | str | None, float | str | None]],
    edges: list[tuple[str, str, float | None]],
) -> Path:
    """A minimal Topology Zoo-style GraphML file; None leaves an attribute out."""
    lat_type = "string" if any(isinstance(x[1], str) for x in nodes) else "double"
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">',
        '<key attr.name="label" attr.type="string" for="node" id="d0"/>',
        f'<key attr.name="Latitude" attr.type="{lat_type}" for="node" id="d1"/>',
        '<key attr.name="Longitude" attr.type="double" for="node" id="d2"/>',
        '<key attr.name="LinkSpeedRaw" attr.type="double" for="edge" id="d3"/>',
        '<graph edgedefault="undirected">',
    ]
    for name, lat, lon in nodes:
        data = f'<data key="d0">{name}</data>'
        data += "" if lat is None else f'<data key="d1">{lat}</data>'
        data += "" if lon is None else f'<data key="d2">{lon}</data>'
        out.append(f'<node id="{name}">{data}</node>')
    for u, v, speed in edges:
        data = "" if speed is None else f'<data key="d3">{speed}</data>'
        out.append(f'<edge source="{u}" target="{v}">{data}</edge>')
    out += ["</graph>", "</graphml>"]
    path.write_text("\n".join(out), encoding="utf-8")
    return path


TRIANGLE = [("A", 0.0, 0.0), ("B", 0.0, 1.0), ("C", 1.0, 0.0)]


def test_graphml_without_coordinates_needs_default_latency(tmp_path: Path) -> None:
    nodes = [("A", None, None), ("B", None, None)]
    path = _graphml(tmp_path / "nocoords.graphml", nodes, [("A", "B", 1e9)])
    with pytest.raises(ValueError, match=r"no node has Latitude/Longitude.*default_latency_ms"):
        load_graphml(path, device_mix=MIX, rng=_rng())
    with pytest.warns(TopologyDataWarning, match=r"2 of 2 nodes have no Latitude"):
        top = load_graphml(path, device_mix=MIX, rng=_rng(), default_latency_ms=2.0)
    assert top.latency_ms[0, 1] == 2.0 and top.bottleneck_gbit_s[0, 1] == 1.0


def test_graphml_disconnected_names_component_sizes(tmp_path: Path) -> None:
    nodes = [*TRIANGLE, ("D", 5.0, 5.0), ("E", 5.0, 6.0)]
    edges = [("A", "B", 1e9), ("B", "C", 1e9), ("D", "E", 1e9)]
    path = _graphml(tmp_path / "split.graphml", nodes, edges)
    with pytest.raises(ValueError, match=r"disconnected: 2 components of sizes \[3, 2\]"):
        load_graphml(path, device_mix=MIX, rng=_rng())
    with pytest.warns(TopologyDataWarning, match=r"kept the largest \(3 of 5 nodes\)"):
        top = load_graphml(path, device_mix=MIX, rng=_rng(), largest_component=True)
    assert [s.name for s in top.servers] == ["A", "B", "C"]
    assert top.graph.graph["nodes_dropped"] == 2


def test_graphml_missing_speed_on_some_links_warns_and_uses_default(tmp_path: Path) -> None:
    edges = [("A", "B", 10e9), ("B", "C", None), ("A", "C", 2.5e9)]
    path = _graphml(tmp_path / "speeds.graphml", TRIANGLE, edges)
    with pytest.warns(TopologyDataWarning, match=r"1 of 3 links have no LinkSpeedRaw"):
        top = load_graphml(path, device_mix=MIX, rng=_rng(), default_bandwidth_gbit_s=0.5)
    assert top.edge_bandwidth_gbit_s.tolist() == [10.0, 2.5, 0.5]
    # 1 degree of latitude/longitude at the equator is ~111.2 km.
    assert top.edge_latency_ms[0] == pytest.approx(111.19 * 0.005 + SWITCH_LATENCY_MS, rel=1e-3)


def test_graphml_complete_file_emits_no_warning(tmp_path: Path) -> None:
    path = _graphml(tmp_path / "ok.graphml", TRIANGLE, [("A", "B", 1e9), ("B", "C", 1e9)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top = load_graphml(path, device_mix={"l4": 1.0}, rng=_rng())
    assert top.n == 3 and top.name == "ok"


def test_graphml_parallel_links_keep_max_bandwidth(tmp_path: Path) -> None:
    edges = [("A", "B", 1e9), ("B", "A", 4e9), ("B", "C", 1e9)]
    path = _graphml(tmp_path / "multi.graphml", TRIANGLE, edges)
    top = load_graphml(path, device_mix=MIX, rng=_rng())
    assert top.edges == ((0, 1), (1, 2))
    assert top.edge_bandwidth_gbit_s.tolist() == [4.0, 1.0]
    assert top.graph.graph["parallel_links_collapsed"] == 1


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("<graphml><graph>", r"not readable as GraphML"),
        ("", r"not readable as GraphML"),
        ("not xml at all", r"not readable as GraphML"),
    ],
)
def test_graphml_malformed_file_names_path(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.graphml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as err:
        load_graphml(path, device_mix=MIX, rng=_rng())
    assert str(path) in str(err.value)


def test_graphml_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"path=.*nope\.graphml.*no such file"):
        load_graphml(tmp_path / "nope.graphml", device_mix=MIX, rng=_rng())


def test_graphml_non_numeric_latitude(tmp_path: Path) -> None:
    nodes = [("A", "north", 0.0), ("B", 1.0, 1.0)]
    path = _graphml(tmp_path / "nan.graphml", nodes, [("A", "B", 1e9)])
    with pytest.raises(ValueError, match=r"node 'A' Latitude='north'"):
        load_graphml(path, device_mix=MIX, rng=_rng())


def test_graphml_rejects_unknown_device(tmp_path: Path) -> None:
    path = _graphml(tmp_path / "ok.graphml", TRIANGLE, [("A", "B", 1e9), ("B", "C", 1e9)])
    with pytest.raises(ValueError, match=r"'tpu-v5'.*not a known device"):
        load_graphml(path, device_mix={"tpu-v5": 1.0}, rng=_rng())


# --------------------------------------------------------------------------- EUA


def test_eua_loads_ten_servers_with_users() -> None:
    sites = _need(EUA / "site-optus-melbCBD.csv")
    users = _need(EUA / "users-melbcbd-generated.csv")
    top = load_eua(sites, n_servers=10, device_mix=MIX, rng=_rng(), users_csv=users)
    assert top.n == 10 and nx.is_connected(top.graph)
    assert top.graph.graph["sites"] == 125
    _assert_routing_consistent(top)
    assert all(s.lat is not None and -38 < s.lat < -37.5 for s in top.servers)
    assert top.latency_ms.max() < 2.0  # a CBD a few km across
    # Every server links at least to its 3 nearest.
    assert min(dict(top.graph.degree).values()) >= 3
    # Users: all 816, each on its nearest server.
    assert top.users is not None and top.users.shape == (816,)
    ulat = np.loadtxt(users, delimiter=",", skiprows=1)
    slat = np.array([s.lat for s in top.servers])
    slon = np.array([s.lon for s in top.servers])
    d = haversine_km(ulat[:, :1], ulat[:, 1:], slat[None, :], slon[None, :])
    np.testing.assert_array_equal(top.users, d.argmin(axis=1))
    again = load_eua(sites, n_servers=10, device_mix=MIX, rng=_rng(), users_csv=users)
    assert again.servers == top.servers and again.edges == top.edges


def test_eua_select_first_and_far_users_dropped() -> None:
    sites = _need(EUA / "site-optus-melbCBD.csv")
    users = _need(EUA / "users-aus.csv")
    with pytest.warns(TopologyDataWarning, match=r"dropped \d+ of 4748 users"):
        top = load_eua(
            sites, n_servers=5, k_nearest=1, select="first", device_mix={"l4": 1.0},
            rng=_rng(), users_csv=users, max_user_distance_km=10.0,
        )  # fmt: skip
    assert top.servers[0].name.startswith("Spring and Flinders")
    assert top.graph.graph["site_rows"] == [0, 1, 2, 3, 4]
    assert nx.is_connected(top.graph)  # k=1 graphs are repaired
    assert top.users is not None and 0 < len(top.users) < 4748


def _sites_csv(
    path: Path, rows: list[str], header: str = "SITE_ID,LATITUDE,LONGITUDE,NAME"
) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


SITE_ROWS = ["1,-37.81,144.96,a", "2,-37.82,144.97,b", "3,-37.80,144.95,c"]


def test_eua_missing_column_is_named(tmp_path: Path) -> None:
    path = _sites_csv(tmp_path / "s.csv", ["1,-37.81,a"], header="SITE_ID,LATITUDE,NAME")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['LONGITUDE'\]"):
        load_eua(path, n_servers=1, device_mix=MIX, rng=_rng())


def test_eua_non_numeric_latitude_is_named(tmp_path: Path) -> None:
    path = _sites_csv(tmp_path / "s.csv", [SITE_ROWS[0], "2,south,144.97,b"])
    with pytest.raises(ValueError, match=r"column 'LATITUDE' line 3: value 'south'"):
        load_eua(path, n_servers=1, device_mix=MIX, rng=_rng())


def test_eua_users_missing_column(tmp_path: Path) -> None:
    sites = _sites_csv(tmp_path / "s.csv", SITE_ROWS)
    users = tmp_path / "u.csv"
    users.write_text("Lat,Longitude\n-37.81,144.96\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"users_csv=.*missing column\(s\) \['Latitude'\]"):
        load_eua(sites, n_servers=2, device_mix=MIX, rng=_rng(), users_csv=users)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_servers": 4}, r"n_servers=4 .*3 sites"),
        ({"n_servers": 0}, r"n_servers=0"),
        ({"k_nearest": 0}, r"k_nearest=0"),
        ({"select": "best"}, r"select='best'.*'random', 'first'"),
        ({"max_user_distance_km": -1.0}, r"max_user_distance_km=-1.0"),
    ],
)
def test_eua_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    sites = _sites_csv(tmp_path / "s.csv", SITE_ROWS)
    args = {"n_servers": 2, "device_mix": MIX, "rng": _rng(), **kwargs}
    with pytest.raises(ValueError, match=match):
        load_eua(sites, **args)


def test_eua_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sites_csv=.*missing\.csv.*no such file"):
        load_eua(tmp_path / "missing.csv", n_servers=1, device_mix=MIX, rng=_rng())
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"not readable as CSV"):
        load_eua(empty, n_servers=1, device_mix=MIX, rng=_rng())
    header_only = _sites_csv(tmp_path / "h.csv", [])
    with pytest.raises(ValueError, match=r"no data rows"):
        load_eua(header_only, n_servers=1, device_mix=MIX, rng=_rng())
