"""The speed paths give exactly the results of the code they replace."""

from __future__ import annotations

import numpy as np
import pytest

from coel_env.core.kernels.dynamics import ou_step
from coel_env.core.kernels.paths import (
    mirrored_paths,
    path_bottlenecks,
    shortest_paths,
    shortest_paths_after,
)
from coel_env.core.kernels.placement import fill_tiers, holds_all, place_homes, same_local
from coel_env.core.kernels.routing import popularity_moved
from coel_env.core.kernels.serving import (
    activity_kernel,
    cost_kernel,
    route_table,
    table_kernel,
    token_share_uncapped,
)
from coel_env.core.kernels.summaries import p50_p95, unit_float32
from coel_env.core.kernels.workload import cumulative_rows, inverse_cdf, sort_into_window
from coel_env.core.world import World


@pytest.mark.parametrize("remote", [False, True])
@pytest.mark.parametrize(
    "ns", [(1.0, 128.0, 2048.0), (2048.0, 3.0, 1.0, 100.5, 128.0), (4.0,), (2.0, 70000.0)]
)
def test_cost_kernel_equals_activity_then_table(ns, remote):
    """The fused kernel and the two-pass one agree bit for bit, with experts on other
    servers (``remote``), inactive experts and token counts beyond the grid."""
    world = World("default")
    world.reset(0)
    world.step()
    sm = world.serving
    rng = np.random.default_rng(len(ns))
    for name, mp in world.plan.models.items():
        home = mp.home[0]
        paths = world.paths
        placed = sm._placement(mp, home, paths.latency_ms, world.dyn.server_up)
        q = sm.token_share(mp.spec, world._pop[name][home])
        server = placed.server
        if remote:
            server = np.where(rng.random(q.size) < 0.3, rng.integers(0, world.n, q.size), server)
            q = np.where(rng.random(q.size) < 0.1, 0.0, q)
        k = np.asarray(ns)
        home_ms = np.linspace(1.0, 2.0, k.size)
        common = (
            mp.spec.n_moe_layers, sm._values, sm._slopes, placed.row, placed.fetch_ms,
            server, home, world.n, 0.5 * mp.spec.d_model,
            paths.bottleneck_gbit_s[home] + 1.0, paths.latency_ms[home] + 0.5,
        )  # fmt: skip
        pa, ta, disp = activity_kernel(q, k, sm._values, sm._slopes, placed.disp_row)
        two_pass = (pa, ta, disp, *table_kernel(pa, ta, *common, disp, home_ms))
        fused = cost_kernel(
            q, k, sm._values, sm._slopes, placed.disp_row, *common[:1], *common[3:], home_ms
        )
        for a, b in zip(two_pass, fused, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert (fused[5].max() > 0) == remote  # activation bytes: remote experts costed


def _p50_p95_python(x: np.ndarray) -> tuple[float, float]:
    """The percentiles as the world computed them in Python (numpy's formula)."""
    n = x.size
    s = np.sort(x).tolist()
    out = []
    for q in (0.5, 0.95):
        v = q * (n - 1)
        i = int(v)
        g = v - i
        a, b = s[i], s[min(i + 1, n - 1)]
        d = b - a
        out.append(b - d * (1 - g) if g >= 0.5 else a + d * g)
    return out[0], out[1]


def test_compiled_percentiles_equal_the_python_ones():
    rng = np.random.default_rng(0)
    for n in [*range(1, 40), 100, 1001]:
        x = rng.lognormal(5.0, 2.0, n)
        got = p50_p95(x)
        assert got == _p50_p95_python(x)
        assert got == tuple(np.percentile(x, (50, 95)).tolist())


def test_unit_float32_equals_cast_nan_to_num_and_clip():
    rng = np.random.default_rng(1)
    special = [-0.0, 0.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 1.0, 1.0000001, 3.5e38, 5e-46]
    for _ in range(50):
        x = np.concatenate([rng.normal(0.5, 1.0, 200), rng.choice(special, 40)])
        rng.shuffle(x)
        with np.errstate(over="ignore"):
            ref = x.astype(np.float32)
        np.nan_to_num(ref, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(ref, 0.0, 1.0, out=ref)
        got = unit_float32(x)
        assert got.dtype == np.float32 and got.tobytes() == ref.tobytes()


def test_route_table_equals_the_numpy_nearest_home():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        lat = rng.choice([0.0, 1.0, 2.0, 5.0, np.inf], size=(n, n))  # ties and unreachable
        up = rng.random(n) < 0.8
        model_homes = [
            list(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False)) for _ in range(3)
        ]
        ref = np.full((3, n), -1, np.int64)
        for mi, homes in enumerate(model_homes):
            homes = [h for h in homes if up[h]]
            if homes:
                hl = lat[:, homes]
                choice = np.asarray(homes)[hl.argmin(axis=1)]
                ref[mi] = np.where(np.isfinite(hl.min(axis=1)), choice, -1)
        flat = np.array([h for hs in model_homes for h in hs], np.int64)
        ptr = np.cumsum([0] + [len(hs) for hs in model_homes]).astype(np.int64)
        assert np.array_equal(route_table(lat, flat, ptr, up), ref)


def test_inverse_cdf_equals_the_broadcast_count():
    rng = np.random.default_rng(3)
    for k in (1, 2, 3, 7):
        mix = rng.dirichlet(np.ones(k), size=6)
        cum = np.cumsum(mix, axis=1)
        cum[:, -1] = 1.0
        row = rng.integers(0, 6, 500)
        u = np.concatenate([rng.random(490), cum[row[:10], 0]])  # some exactly on a bound
        ref = np.minimum((u[:, None] >= cum[row]).sum(axis=1), k - 1).astype(np.int16)
        got = inverse_cdf(u, cum, row)
        assert got.dtype == np.int16 and np.array_equal(got, ref)


def test_sort_into_window_equals_stable_argsort_and_clip():
    rng = np.random.default_rng(4)
    for n in (1, 2, 10, 300):
        t = np.round(rng.uniform(-1.0, 11.0, n), 1)  # ties and values outside the window
        owner = rng.integers(0, 5, n)
        order = np.argsort(t, kind="stable")
        hi = np.nextafter(10.0, -np.inf)
        got_t, got_o = sort_into_window(t, owner, 0.0, hi)
        assert np.clip(t[order], 0.0, hi).tobytes() == got_t.tobytes()
        assert np.array_equal(owner[order], got_o) and got_o.dtype == owner.dtype


def test_uncapped_token_share_equals_expected_counts():
    from coel_env.core.routing import expected_counts

    rng = np.random.default_rng(5)
    for top_k, alpha in ((2, 1.0), (8, 1.0), (2, 0.05), (6, 0.1)):
        p = rng.dirichlet(np.full(64, alpha), size=16)
        ref = np.clip(expected_counts(p, 1.0, top_k), 0.0, 1.0).ravel()
        got = token_share_uncapped(p, float(top_k))
        if (top_k * p > 1.0 + 1e-12).any():
            assert got is None
        else:
            assert got.tobytes() == ref.tobytes()


def test_popularity_moved_decides_as_numpy_or_defers():
    rng = np.random.default_rng(6)
    for scale in (0.0005, 0.001, 0.002, 0.01):
        old = rng.dirichlet(np.ones(64), size=(8, 16))
        new = np.abs(old + rng.normal(0.0, scale, old.shape))
        ref = np.abs(new - old).sum(axis=2).mean(axis=1) > 0.1
        got = popularity_moved(new, old, 0.1)
        assert got is not None and np.array_equal(got, ref)
    d = np.abs(new - old).sum(axis=2).mean(axis=1)
    assert popularity_moved(new, old, float(d[3])) is None  # on the threshold: numpy decides


def test_ou_step_equals_the_numpy_expression_and_clip():
    rng = np.random.default_rng(7)
    x = rng.normal(0.2, 0.3, 40)
    noise = rng.standard_normal(40)
    a, c = np.exp(-0.03), 0.25 * np.sqrt(1 - np.exp(-0.03) ** 2)
    ref = np.clip(0.2 + (x - 0.2) * a + c * noise, 0.0, 0.8)
    assert ou_step(x, 0.2, a, c, noise, 0.0, 0.8).tobytes() == ref.tobytes()
    free = 0.0 + (x - 0.0) * a + c * noise
    assert ou_step(x, 0.0, a, c, noise, -np.inf, np.inf).tobytes() == free.tobytes()


def test_holds_all_equals_the_numpy_check():
    rng = np.random.default_rng(8)
    loc = (rng.random((4, 8, 3)) < 0.97).astype(np.int8)
    for s in range(3):
        assert holds_all(loc, s) == bool((loc[:, :, s] != 0).all())
    loc[:, :, 1] = 2
    assert holds_all(loc, 1)


def test_same_local_equals_the_numpy_check():
    rng = np.random.default_rng(9)
    old = rng.integers(1, 3, (4, 8, 5)).astype(np.int8)
    new = old.copy()
    old[0, 0, 1] = 0  # server 1 misses an expert in the old plan
    new[2, 3, 2] = 3 - new[2, 3, 2]  # server 2 has one expert in the other tier
    new[1, 1, 3] = 0  # server 3 misses one in the new plan
    up = np.array([True, True, True, True, False])
    homes = np.arange(5, dtype=np.int64)
    want = [
        bool(up[h] and (old[:, :, h] != 0).all() and (old[:, :, h] == new[:, :, h]).all())
        for h in homes
    ]
    assert same_local(old, new, homes, up).tolist() == want == [True, False, False, False, False]
    assert same_local(old, new, homes[[4, 0]], up).tolist() == [False, True]


def _forget_all_changed(world, old, new):
    """The cost-cache rules before costs were kept across plan changes: a model whose
    plan object changed loses every cost entry; a change of paths drops each entry
    whose home lacks an expert (scanned over the whole cache)."""
    for name in world.models:
        if old.models.get(name) is not new.models.get(name):
            for key in [k for k in world._cache if k[0] == name]:
                del world._cache[key]
    world.serving.keep_only(new.models.values())


def _drop_scanned(world):
    from coel_env.core.world import _all_local

    for name, home in list(world._cache):
        mp = world.plan.models.get(name)
        if mp is None or not _all_local(mp, home):
            del world._cache[(name, home)]
    sm = world.serving
    for k, (_, out) in list(sm._placements.items()):
        if out is None or out.remote:
            del sm._placements[k]


def _moved_plan(world, name, server, tier):
    """The plan in force with ``name``'s experts on ``server`` moved to ``tier``."""
    from coel_env.core.plan import ModelPlan, Plan

    mp = world.plan.models[name]
    loc = mp.location.copy()
    loc[:, :, server] = np.where(loc[:, :, server] != 0, tier, 0)
    new = ModelPlan(name, loc, mp.bits, mp.home, mp.host_policy, mp.keep_ratio)
    return Plan({**world.plan.models, name: new})


@pytest.mark.parametrize("scenario", ["default", "large"])
def test_costs_kept_across_plan_changes_equal_recomputed_ones(scenario, monkeypatch):
    """Costs kept at homes a plan change leaves alone (and the remote entries noted
    for path changes) give the reports of recomputing every cost of a changed plan."""
    from coel_env.core.world import World as W

    def run(reference: bool):
        world = W(scenario)
        if reference:
            forget = lambda o, n: _forget_all_changed(world, o, n)  # noqa: E731
            monkeypatch.setattr(world, "_forget_changed", forget)
            monkeypatch.setattr(world, "_drop_path_dependent_costs", lambda: _drop_scanned(world))
        world.reset(4)
        name = world.models[0]
        out, kept = [], 0
        for t in range(160):
            plan = None
            if t % 7 == 3:  # a plan change that leaves most homes alone
                home = world.plan.models[name].home[t % len(world.plan.models[name].home)]
                plan = _moved_plan(world, name, home, 2 if t % 2 else 1)
            before = {k for k, v in world._cache.items() if v}
            rep = world.step(plan)
            kept += len(before & {k for k, v in world._cache.items() if v})
            out.append(rep.as_dict())
        return out, kept

    want, _ = run(reference=True)
    got, kept = run(reference=False)
    assert kept > 0
    assert got == want


def test_cumulative_rows_equals_the_numpy_cumsum():
    from coel_env.core.workload import _cumulative

    rng = np.random.default_rng(9)
    for k in (1, 2, 5, 9, 17):
        mix = rng.dirichlet(np.ones(k), size=7)
        assert cumulative_rows(mix).tobytes() == _cumulative(mix).tobytes()


def _dense_dijkstra(n, u, v, lat):
    """The dense scan the compiled Dijkstra replaced (nearest first, lowest id on ties)."""
    adj = np.full((n, n), np.inf)
    for a, b, w in zip(u, v, lat, strict=True):
        if w < adj[a, b]:
            adj[a, b] = adj[b, a] = w
    dist = np.full((n, n), np.inf)
    pred = np.full((n, n), -9999, np.int64)
    hops = np.full((n, n), -1, np.int64)
    for src in range(n):
        d, done = dist[src], np.zeros(n, bool)
        d[src], hops[src, src] = 0.0, 0
        for _ in range(n):
            best, x = np.inf, -1
            for j in range(n):
                if not done[j] and d[j] < best:
                    best, x = d[j], j
            if x < 0:
                break
            done[x] = True
            for j in range(n):
                if adj[x, j] < np.inf and not done[j] and best + adj[x, j] < d[j]:
                    d[j], pred[src, j], hops[src, j] = best + adj[x, j], x, hops[src, x] + 1
    return dist, pred, hops


def _random_links(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to 3n random links (ends u, v) between n servers, no self-loops (parallel
    links allowed)."""
    m = int(rng.integers(0, 3 * n))
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    return u[u != v], v[u != v]


def test_shortest_paths_equal_the_dense_scan_with_ties():
    rng = np.random.default_rng(10)
    for trial in range(60):
        n = int(rng.integers(1, 14))
        u, v = _random_links(rng, n)
        lat = rng.choice([0.5, 1.0, 2.0], size=u.size) if trial % 2 else rng.uniform(0.1, 5, u.size)
        for a, b in zip(shortest_paths(n, u, v, lat), _dense_dijkstra(n, u, v, lat), strict=True):
            assert a.tobytes() == b.tobytes()


def test_place_homes_equals_the_numpy_indexing_per_home():
    rng = np.random.default_rng(11)
    for _ in range(40):
        n_l, n_e, n, g = int(rng.integers(1, 5)), int(rng.integers(1, 9)), 6, 3
        groups = rng.integers(0, g, (n_l, n_e))
        near = np.array([rng.permutation(n)[:4] for _ in range(n)], np.int64)
        place = rng.integers(0, 4, g)
        homes = np.flatnonzero(rng.random(n) < 0.4)
        spread, replicate = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        ref = np.zeros((n_l, n_e, n), np.int8)
        for home in homes:  # the numpy code the kernel replaced
            target = near[home][place] if spread else np.full(g, home)
            layers, experts = np.indices(groups.shape, sparse=True)
            ref[layers, experts, target[groups]] = 1
            if replicate:
                ref[:, :, home] = 1
        got = np.zeros_like(ref)
        place_homes(got, groups, near, place, homes, spread, replicate)
        assert np.array_equal(got, ref)


def _fill_tiers_per_server(location, bits, layers, experts, gb_by_bits, free_gb, unified):
    """The one-pass-per-server loop the compiled fill replaced."""
    for s in range(location.shape[2]):
        budget, cum, used = max(free_gb[s], 0.0) + 1e-9, 0.0, 0.0
        for layer, e in zip(layers, experts, strict=True):
            if location[layer, e, s] == 0:
                continue
            w = gb_by_bits[bits[layer, e]]
            cum += w
            if unified[s] or cum <= budget:
                location[layer, e, s], used = 1, used + w
            else:
                location[layer, e, s] = 2
        free_gb[s] -= used


def test_fill_tiers_equals_one_pass_per_server():
    """The one pass over the holders of any expert equals a pass per server."""
    rng = np.random.default_rng(12)
    gb = np.zeros(17)
    gb[[2, 3, 4, 8, 16]] = [0.01, 0.015, 0.02, 0.04, 0.08]
    for _ in range(40):
        n_l, n_e, n = int(rng.integers(1, 6)), int(rng.integers(1, 12)), int(rng.integers(1, 40))
        loc = (rng.random((n_l, n_e, n)) < 0.5).astype(np.int8)
        loc[:, :, rng.random(n) < 0.6] = 0  # servers that hold nothing (skipped)
        bits = rng.choice([2, 3, 4, 8, 16], (n_l, n_e)).astype(np.int8)
        order = rng.permutation(n_l * n_e)
        layers, experts = np.divmod(order, n_e)
        free = rng.uniform(-0.1, 0.6, n)
        unified = rng.random(n) < 0.2
        ref_loc, ref_free = loc.copy(), free.copy()
        _fill_tiers_per_server(ref_loc, bits, layers, experts, gb, ref_free, unified)
        fill_tiers(loc, bits, layers, experts, gb, free, unified)
        assert np.array_equal(loc, ref_loc) and free.tobytes() == ref_free.tobytes()


def test_shortest_paths_after_a_change_of_links_equal_a_full_run():
    """Rows kept from the last routes (ties, zero latencies, disconnected graphs)."""
    rng = np.random.default_rng(13)
    redone = kept = 0
    for trial in range(300):
        n = int(rng.integers(2, 11))
        pairs = np.array([(a, b) for a in range(n) for b in range(a + 1, n)], np.int64)
        u, v, m = pairs[:, 0], pairs[:, 1], len(pairs)
        if trial % 3 == 0:
            lat = rng.choice([0.0, 0.5, 1.0, 2.0], m)
        else:
            lat = rng.choice([1.0, 2.0], m) if trial % 3 == 1 else rng.uniform(0.0, 3.0, m)
        up0 = rng.random(m) < rng.uniform(0.2, 0.9)
        tree0 = shortest_paths(n, u[up0], v[up0], lat[up0])
        for _ in range(5):
            up1 = up0 ^ (rng.random(m) < 0.15)  # links fail and recover
            full = shortest_paths(n, u[up1], v[up1], lat[up1])
            *got, n_redo = shortest_paths_after(
                n, u[up1], v[up1], lat[up1], u[up0], v[up0], lat[up0], *tree0
            )
            for a, b in zip(got, full, strict=True):
                assert a.tobytes() == b.tobytes()
            redone, kept = redone + n_redo, kept + n - n_redo
            up0, tree0 = up1, tuple(got)
    assert redone > 0 and kept > 0  # both paths of the update were taken


def test_mirrored_paths_equal_the_numpy_mirror():
    rng = np.random.default_rng(14)
    for _ in range(30):
        n = int(rng.integers(1, 12))
        u, v = _random_links(rng, n)
        lat, bw = rng.uniform(0.1, 5, u.size), rng.uniform(1, 100, u.size)
        dist, pred, hops = shortest_paths(n, u, v, lat)
        bott = path_bottlenecks(dist, pred, hops, u, v, bw)
        upper = np.arange(n)[:, None] <= np.arange(n)[None, :]
        ref = [np.where(upper, x, x.T) for x in (dist, hops, bott)] + [pred]
        for a, b in zip(mirrored_paths(dist, pred, hops, u, v, bw), ref, strict=True):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_routes_with_link_state_equal_with_links():
    from coel_env.core.topology import _route

    world = World("large")
    topo = world.topology
    rng = np.random.default_rng(15)
    m = len(topo.edges)
    for _ in range(20):
        up = rng.random(m) > 0.1
        scale = rng.uniform(0.5, 1.5, m)
        failed = [topo.edges[i] for i in np.flatnonzero(~up)]
        a = topo._routes_with(scale, up)  # from the routes of the last failure set
        b = topo.with_links(scale, failed=failed)
        bw = topo.edge_bandwidth_gbit_s * scale
        c = _route(topo.n, topo._edge_u[up], topo._edge_v[up], topo.edge_latency_ms[up], bw[up])
        for f in ("latency_ms", "hops", "bottleneck_gbit_s", "predecessors"):
            assert getattr(a, f).tobytes() == getattr(b, f).tobytes()
            assert getattr(a, f).tobytes() == getattr(c, f).tobytes()  # routed from scratch


def test_plan_scan_kept_per_plan_equals_a_scan_per_present_set(monkeypatch):
    """A scan that finds no absent holder answers for present sets whose absent
    servers hold nothing; others are scanned again: each equal to a direct scan."""
    import coel_env.core.plan as plan_mod
    from coel_env.catalog import get_model
    from coel_env.core.kernels.placement import plan_scan
    from coel_env.core.plan import ModelPlan, _scan, expert_gb_table

    scans = []
    monkeypatch.setattr(plan_mod, "plan_scan", lambda *a: scans.append(1) or plan_scan(*a))
    m = get_model("olmoe-1b-7b")
    rng = np.random.default_rng(11)
    n = 6
    calls = 0
    for trial in range(40):
        loc = np.zeros((m.n_moe_layers, m.n_experts, n), np.int8)
        holders = rng.choice(n, size=rng.integers(1, 4), replace=False)
        for s in holders:
            loc[:, :, s] = rng.choice([0, 1, 2], size=loc.shape[:2], p=[0.3, 0.4, 0.3])
        if trial % 4 == 0:
            loc[0, 1, :] = 0  # an expert without any copy
        bits = rng.choice([16, 8, 4], size=loc.shape[:2]).astype(np.int8)
        pol = np.zeros(m.n_moe_layers, np.int8)
        mp = ModelPlan(m.name, loc, bits, (int(holders[0]),), pol)
        for _ in range(5):
            up = rng.random(n) < 0.7
            want = plan_scan(mp.location, expert_gb_table(m.name)[mp.bits], up)
            got = _scan(mp, up)
            calls += 1
            for a, b in zip(want, got, strict=True):
                assert np.array_equal(a, b)
    assert 40 <= len(scans) < calls  # every plan scanned, not every present set


def test_plan_scan_over_its_holders_equals_the_scan_of_every_server():
    """Plans on 16 or more servers are scanned over the servers that hold their
    experts only: same answers (absent holders, experts without a present copy,
    memory sums) as looking at every server."""
    from coel_env.core.kernels.placement import SPARSE_MIN_SERVERS, plan_scan, plan_scan_over

    rng = np.random.default_rng(12)
    sparse = 0
    for trial in range(200):
        n = int(rng.integers(1, 40))
        shape = (int(rng.integers(1, 27)), int(rng.integers(1, 65)), n)
        loc = np.zeros(shape, np.int8)
        holders = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
        for s in holders:
            loc[:, :, s] = rng.choice([0, 1, 2], size=shape[:2], p=[0.4, 0.3, 0.3])
        w = rng.random(shape[:2]) + 0.01
        up = rng.random(n) < 0.75
        every = np.arange(n)
        want = plan_scan_over(loc, w, up, every)
        got = plan_scan(loc, w, up)
        sparse += n >= SPARSE_MIN_SERVERS and (loc != 0).any(axis=(0, 1)).sum() < n
        for a, b in zip(want, got, strict=True):
            assert np.array_equal(a, b), trial
        strided = loc[:, :, ::-1]  # not contiguous: scanned as a copy
        for a, b in zip(
            plan_scan_over(strided, w, up, every), plan_scan(strided, w, up), strict=True
        ):
            assert np.array_equal(a, b), trial
    assert sparse > 20


def test_placements_of_retired_plans_leave_no_remote_keys():
    """The keys of remote placements are noted for path changes; retiring a plan
    forgets them too (a world without link changes would collect them forever)."""
    from coel_env.core.plan import ModelPlan

    world = World("default")
    world.reset(0)
    world.step()
    sm = world.serving
    name, mp = next(iter(world.plan.models.items()))
    home = mp.home[0]
    other = next(s for s in range(world.n) if s != home and world.dyn.server_up[s])
    loc = np.zeros_like(mp.location)
    loc[:, :, other] = 1  # every expert on another server
    remote = ModelPlan(name, loc, mp.bits, (home,), mp.host_policy, mp.keep_ratio)
    placed = sm._placement(remote, home, world.paths.latency_ms, world.dyn.server_up)
    assert placed is None or placed.remote
    assert (id(remote), home) in sm._remote
    sm.keep_only([])
    assert not sm._placements and not sm._remote
