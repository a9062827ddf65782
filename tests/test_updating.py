"""Updating: migration bytes and time between plans."""

import numpy as np
import pytest

from coel_env.catalog import get_model
from coel_env.core import plan as P
from coel_env.core.updating import migration_cost

N = 3
LAT = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], float)
BW = np.array([[np.inf, 10, 5], [10, np.inf, 10], [5, 10, np.inf]], float)
PCIE = np.array([25.0, 25.0, np.inf])
M = "olmoe-1b-7b"


def _cost(old, new, **kw):
    args = dict(latency_ms=LAT, bottleneck_gbit_s=BW, pcie_gbps=PCIE, store_gbit_s=1.0)
    args.update(kw)
    return migration_cost(old, new, **args)


def _plan(server=0, budget=100.0, bits=16):
    return P.Plan({M: P.single_server_plan(M, server, N, budget, bits=bits)})


def test_same_plan_costs_nothing():
    rep = _cost(_plan(), _plan())
    assert rep.network_bytes == 0 and rep.pcie_bytes == 0 and not rep.changed
    assert (rep.time_s == 0).all()


def test_initial_deployment_comes_from_the_store():
    m = get_model(M)
    rep = _cost(None, _plan())
    total = m.n_moe_layers * m.n_experts * m.expert_bytes(16) + m.non_expert_bytes(16)
    assert rep.network_bytes == pytest.approx(total)
    assert rep.time_s[0] == pytest.approx(total * 8 / 1e9)  # 1 Gbit/s store
    assert rep.time_s[1] == rep.time_s[2] == 0


def test_moving_to_another_server_copies_from_the_nearest_holder():
    m = get_model(M)
    rep = _cost(_plan(server=0), _plan(server=1))
    total = m.n_moe_layers * m.n_experts * m.expert_bytes(16) + m.non_expert_bytes(16)
    assert rep.network_bytes == pytest.approx(total)
    assert rep.time_s[1] == pytest.approx(total * 8 / 10e9)  # 0 -> 1 over a 10 Gbit/s path


def test_changing_tier_on_the_same_server_uses_pcie():
    m = get_model(M)
    old = _plan(budget=100.0)  # all on GPU
    new = _plan(budget=0.0)  # all in host memory
    rep = _cost(old, new)
    n = m.n_moe_layers * m.n_experts
    assert rep.network_bytes == 0
    assert rep.pcie_bytes == pytest.approx(n * m.expert_bytes(16))
    assert rep.time_s[0] == pytest.approx(n * m.expert_bytes(16) / 25e9)


def test_fewer_bits_is_local_more_bits_needs_a_copy():
    down = _cost(_plan(bits=16), _plan(bits=4))
    assert down.network_bytes == 0 and down.pcie_bytes == 0
    up = _cost(_plan(bits=4), _plan(bits=16))
    m = get_model(M)
    assert up.network_bytes == pytest.approx(m.n_moe_layers * m.n_experts * m.expert_bytes(16))


def test_a_server_that_left_is_no_source():
    rep = _cost(_plan(server=0), _plan(server=1), up=np.array([False, True, True]))
    m = get_model(M)
    total = m.n_moe_layers * m.n_experts * m.expert_bytes(16) + m.non_expert_bytes(16)
    assert rep.time_s[1] == pytest.approx(total * 8 / 1e9)  # from the store


def _reference_copies(old_mp, mp, alive, latency_ms, bottleneck, pcie_gbps, store_gbit_s):
    """Expert copies of one model as the vectorised numpy code computed them (the
    compiled loop must agree): (PCIe bytes, network bytes, time per server, copies)."""
    m = get_model(mp.model)
    n = latency_ms.shape[0]
    eb = np.vectorize(m.expert_bytes)(mp.bits).astype(float)
    old_loc = np.zeros_like(mp.location) if old_mp is None else old_mp.location
    old_bits = np.zeros_like(mp.bits) if old_mp is None else old_mp.bits
    held_new = mp.location != P.ABSENT
    local = (old_loc != P.ABSENT) & alive[None, None, :] & (old_bits >= mp.bits)[:, :, None]
    time_s = np.zeros(n)
    retier = held_new & local & (old_loc != mp.location)
    per_server = np.einsum("le,les->s", eb, retier.astype(float))
    time_s += per_server / (pcie_gbps * 1e9)
    need = held_new & ~local
    le, dst = np.nonzero(need.reshape(-1, n))
    holders = local.reshape(-1, n)[le]
    src = np.where(holders, latency_ms.T[dst], np.inf).argmin(axis=1)
    gbit = np.where(holders.any(axis=1), bottleneck[src, dst], store_gbit_s)
    nbytes = eb.reshape(-1)[le]
    time_s += np.bincount(dst, weights=nbytes * 8 / (np.maximum(gbit, 1e-9) * 1e9), minlength=n)
    return float(per_server.sum()), float(nbytes.sum()), time_s, int(retier.sum() + le.size)


@pytest.mark.parametrize("seed", range(5))
def test_compiled_copies_match_the_vectorised_reference(seed):
    rng = np.random.default_rng(seed)
    n, name = 5, "olmoe-1b-7b"
    m = get_model(name)
    shape = (m.n_moe_layers, m.n_experts, n)

    def random_plan(home):
        loc = np.where(rng.random(shape) < 0.3, rng.integers(1, 3, shape), 0).astype(np.int8)
        bits = rng.choice([16, 8, 4, 3, 2], shape[:2]).astype(np.int8)
        return P.ModelPlan(name, loc, bits, (home,), np.zeros(shape[0], np.int8))

    lat = rng.uniform(1, 50, (n, n))
    lat = (lat + lat.T) / 2
    np.fill_diagonal(lat, 0)
    bw = rng.uniform(1, 10, (n, n))
    pcie = np.array([16.0, 32.0, np.inf, 16.0, 8.0])
    alive = rng.random(n) > 0.2
    old = None if seed == 0 else random_plan(1)
    new = random_plan(1)  # the same home: only experts move (but from the store at first)
    rep = migration_cost(
        None if old is None else P.Plan({name: old}), P.Plan({name: new}), latency_ms=lat,
        bottleneck_gbit_s=bw, pcie_gbps=pcie, store_gbit_s=2.0, up=alive,
    )  # fmt: skip
    p_b, n_b, t, k = _reference_copies(old, new, alive, lat, bw, pcie, 2.0)
    dense = float(m.non_expert_bytes(16)) if old is None else 0.0
    assert rep.network_bytes == pytest.approx(n_b + dense, rel=1e-12)
    assert rep.pcie_bytes == pytest.approx(p_b, rel=1e-12)
    assert rep.experts_moved == k
    t[1] += dense * 8 / (2.0 * 1e9)
    np.testing.assert_allclose(rep.time_s, t, rtol=1e-12)
