"""Serving costs: the compiled, grid-based table against the kernel fits evaluated exactly.

The exact evaluation below is the eager runtime's kernel fits with per-expert activation
traffic, byte pruning and throughput-scaled quantized kernels, so the worlds it checks run
the fidelity keys as before the fidelity round (:data:`coel_env.core.scenario.LEGACY_FIDELITY`)."""

import numpy as np
import pytest

from coel_env import cost
from coel_env.catalog import get_model
from coel_env.core.evaluation import ACT_BYTES, _kernel_ms
from coel_env.core.kernels.serving import grid_position, grid_tokens, grid_value
from coel_env.core.plan import ABSENT, FETCH, GPU, HOST, ModelPlan
from coel_env.core.routing import expected_counts
from coel_env.core.scenario import LEGACY_FIDELITY
from coel_env.core.world import World


def exact_table(sm, mp, home, pop, ns, latency_ms, bw, up):
    """The expert part of ServingModel.table, every kernel fit evaluated exactly (numpy)."""
    m = mp.spec
    placed = sm._placement(mp, home, latency_ms, up)
    ns = np.maximum(np.asarray(ns, float), 1.0)
    q = np.clip(expected_counts(pop, 1.0, m.top_k), 0.0, 1.0)[None]
    nn = ns[:, None, None]
    pa = 1.0 - (1.0 - q) ** nn
    ta = np.where(pa > 0, nn * q / np.maximum(pa, 1e-12), 0.0)
    server = placed.server.reshape(pa.shape[1:])
    inv = {v: k for k, v in sm._row_index.items()}
    ms = np.zeros(ta.shape)
    for r in np.unique(placed.row):
        name, dev_name, bits = inv[int(r)]
        dev = next(d for d in sm.gpus + sm.cpus if d.name == dev_name)
        sel = (placed.row == r).reshape(pa.shape[1:])
        w = get_model(name).expert_bytes(bits)
        ms[:, sel] = sm._fit_ms(
            dev, bits, np.full(ta[:, sel].shape, w), 2.0 * m.expert_params * ta[:, sel],
            5.0 if m.gated else 3.0,
        )  # fmt: skip
    g16 = sm._fit_params(sm.gpus[home], 16)
    moved = (3.0 * ACT_BYTES * m.d_model / 1e6) * ta
    disp = _kernel_ms(g16, moved, np.ones_like(moved), float(cost.DISPATCH_OPS))
    busy = np.zeros((ns.size, sm.n))
    for s in range(sm.n):
        busy[:, s] = (ms * pa * (server == s)).sum(axis=(1, 2))
    busy[:, home] += (pa * disp).sum(axis=(1, 2))
    fetch = placed.fetch_ms.reshape(pa.shape[1:])
    layer = (pa * (ms + fetch + disp)).sum(axis=2)
    remote = server != home
    one_way = ta * (m.d_model * ACT_BYTES * mp.keep_ratio)
    xfer = np.where(remote, 2 * one_way * 8 / (np.maximum(bw[home][server], 1e-9) * 1e6), 0.0)
    layer += (pa * xfer).sum(axis=2)
    net = (pa * remote * 2 * one_way).sum(axis=(1, 2))
    for s in np.unique(server[remote]):
        layer += np.minimum(1.0, (pa * (server == s)).sum(axis=2)) * 2 * latency_ms[home, s]
    return layer.sum(axis=1), busy, net


def mixed_plan(world, name, home, rng):
    """A plan of ``name`` homed at ``home`` with experts on its GPU, host (run or
    fetched), and on other servers, at mixed bit widths."""
    m = world.specs[world.models.index(name)]
    L, E = m.n_moe_layers, m.n_experts
    loc = np.zeros((L, E, world.n), np.int8)  # ABSENT
    where = rng.integers(0, world.n, size=(L, E))
    tier = rng.choice([GPU, HOST], size=(L, E))
    loc[np.arange(L)[:, None], np.arange(E)[None, :], where] = tier
    assert ABSENT == 0
    bits = rng.choice([16, 8, 4, 3], size=(L, E)).astype(np.int8)
    policy = rng.choice([0, FETCH], size=L).astype(np.int8)
    return ModelPlan(name, loc, bits, (home,), policy, 0.75)


@pytest.mark.parametrize("scenario", ["default", "large"])
def test_compiled_table_matches_the_exact_kernel_fits(scenario):
    world = World(scenario, LEGACY_FIDELITY)
    world.reset(seed=0)
    world.step()
    rng = np.random.default_rng(1)
    sm = world.serving
    ns = (1, 2, 4, 8, 16, 3, 128, 2048, 70000)  # powers of two, others, beyond the grid
    for name in world.models:
        for home in rng.choice(np.flatnonzero(~world.is_cloud), size=2, replace=False):
            mp = mixed_plan(world, name, int(home), rng)
            pop = world._pop[name][home]
            args = (world.paths.latency_ms, world.paths.bottleneck_gbit_s, world.dyn.server_up)
            tab = sm.table(mp, int(home), pop, ns, ("decode",) * len(ns), *args)
            assert tab.servable
            total, busy, net = exact_table(sm, mp, int(home), pop, ns, *args)
            assert net.min() > 0  # remote experts were costed
            router = tab.ms - total  # the table adds the router, shared experts, attention
            assert np.all(router > 0)
            got = sm.table(mp, int(home), pop, ns, ("decode",) * len(ns), *args)
            np.testing.assert_allclose(got.ms - router, total, rtol=1e-9)
            np.testing.assert_allclose(got.net_bytes, net, rtol=1e-9)
            extra = busy.copy()
            extra[:, home] = 0
            got_b = got.busy_ms.copy()
            got_b[:, home] = 0
            np.testing.assert_allclose(got_b, extra, rtol=1e-9, atol=1e-12)


def _between_nodes() -> np.ndarray:
    """Token counts between the grid's nodes: the segments' midpoints and random points."""
    grid = grid_tokens()
    mid = np.sqrt(grid[:-1] * grid[1:])
    return np.concatenate([mid, 2.0 ** np.random.default_rng(0).uniform(0, 16, 5000)])


def _grid_row(sm, r: int, tokens: np.ndarray) -> np.ndarray:
    """The compiled grid's values of row ``r`` at ``tokens``."""
    buf = np.zeros(1)
    as_int = buf.view(np.int64)
    got = np.empty(tokens.size)
    for i, t in enumerate(tokens):
        buf[0] = t
        got[i] = grid_value(sm._values, sm._slopes, r, *grid_position(t, as_int))
    return got


def test_kernel_grid_matches_the_fit():
    """Between its nodes the grid is within 1e-10 of every (eager) fit of the catalog's
    devices."""
    world = World("large", LEGACY_FIDELITY)
    world.reset(seed=0)
    world.step()
    sm = world.serving
    mid = _between_nodes()
    for key, r in sm._row_index.items():
        got = _grid_row(sm, r, mid)
        if key[2] == "dispatch":
            d_model = key[0]
            dev = next(d for d in sm.gpus if d.name == key[1])
            want = sm._fit_ms(dev, 16, 3.0 * ACT_BYTES * d_model * mid, np.ones(mid.size), 5)
        else:
            name, dev_name, bits = key
            m = get_model(name)
            dev = next(d for d in sm.gpus + sm.cpus if d.name == dev_name)
            want = sm._fit_ms(
                dev, bits, np.full(mid.size, m.expert_bytes(bits)), 2.0 * m.expert_params * mid,
                5.0 if m.gated else 3.0,
            )  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=str(key))


def test_kernel_grid_matches_its_functions_at_the_defaults():
    """At the default fidelity (fused runtime, ratio-scaled quantized kernels) the grid is
    within 1e-10 of the exact function of every row between its nodes (the expert and
    dispatch functions the MILP's coefficients use too)."""
    world = World("large")
    world.reset(seed=0)
    world.step()
    sm = world.serving
    assert sm.runtime == "fused" and sm.quant_scaling == "ratio"
    mid = _between_nodes()
    kinds = set()
    for key, r in sm._row_index.items():
        got = _grid_row(sm, r, mid)
        if key[2] == "dispatch":
            assert key[3:] == ("fused",)
            m = next(m for m in world.specs if m.d_model == key[0])
            home = next(i for i, d in enumerate(sm.gpus) if d.name == key[1])
            want = sm.dispatch_fn(m, home)(mid)
            kinds.add("dispatch")
        else:
            name, dev_name, bits = key
            dev = next(d for d in sm.gpus + sm.cpus if d.name == dev_name)
            want = sm.expert_fn(get_model(name), dev, bits)(mid)
            kinds.add(dev.kind)
        np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=str(key))
    assert kinds == {"dispatch", "gpu", "cpu"}
