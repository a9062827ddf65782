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
