"""Deployment plans: validation at the boundary and the infeasibility report."""

import numpy as np
import pytest

from coel_env.catalog import get_model
from coel_env.core import plan as P


def _plan(model="olmoe-1b-7b", n=3, server=0, budget=100.0, bits=16):
    return P.Plan({model: P.single_server_plan(model, server, n, budget, bits=bits)})


def test_single_server_plan_puts_every_expert_somewhere_on_its_server():
    mp = P.single_server_plan("mixtral-8x7b", 1, 3, 20.0)
    m = get_model("mixtral-8x7b")
    assert (mp.location[:, :, 1] != P.ABSENT).all()
    assert (mp.location[:, :, [0, 2]] == P.ABSENT).all()
    n_gpu = int((mp.location == P.GPU).sum())
    assert n_gpu == int(20.0 // (m.expert_bytes(16) / P.GB))
    assert (mp.replicas() == 1).all()


def test_memory_use_counts_experts_at_their_bit_width_and_the_dense_part():
    m = get_model("olmoe-1b-7b")
    for bits in (16, 4):
        gpu, host = P.memory_use_gb(_plan(bits=bits), 3)
        expect = (
            m.n_moe_layers * m.n_experts * m.expert_bytes(bits) + m.non_expert_bytes(16)
        ) / P.GB
        assert gpu[0] == pytest.approx(expect)
        assert host[0] == 0.0 and gpu[1] == gpu[2] == 0.0


def test_feasible_plan_has_empty_report():
    rep = P.check_plan(_plan(), [24, 24, 24], [64, 64, 64])
    assert rep.feasible and str(rep) == "feasible"


def test_report_names_server_memory_and_excess():
    gpu, _ = P.memory_use_gb(_plan(), 3)
    rep = P.check_plan(_plan(), [gpu[0] - 1.5, 24, 24], [64, 64, 64])
    assert not rep.feasible
    (v,) = rep.violations
    assert v.kind == "gpu_memory" and v.server == 0
    assert v.over_gb == pytest.approx(1.5)
    assert "server 0" in str(rep) and "GPU memory" in str(rep) and "1.50 GB" in str(rep)


def test_unified_memory_counts_gpu_and_host_together():
    mp = P.single_server_plan("olmoe-1b-7b", 0, 2, 2.0)  # most experts in host memory
    plan = P.Plan({"olmoe-1b-7b": mp})
    gpu, host = P.memory_use_gb(plan, 2)
    assert P.check_plan(plan, [gpu[0] + 0.1, 8], [host[0] + 1, 8]).feasible
    rep = P.check_plan(plan, [gpu[0] + 0.1, 8], [host[0] + 1, 8], unified=[True, False])
    assert [v.kind for v in rep.violations] == ["gpu_memory"]
    assert "unified memory" in str(rep)


def test_server_that_left_makes_its_experts_missing():
    rep = P.check_plan(_plan(), [24, 24, 24], [64, 64, 64], up=[False, True, True])
    kinds = {v.kind for v in rep.violations}
    assert {"server_down", "no_replica"} <= kinds


def test_replica_on_a_present_server_covers_a_server_that_left():
    mp = P.single_server_plan("olmoe-1b-7b", 0, 3, 100.0)
    loc = mp.location.copy()
    loc[:, :, 1] = P.GPU
    both = P.ModelPlan("olmoe-1b-7b", loc, mp.bits, (1,), mp.host_policy)
    rep = P.check_plan(
        P.Plan({"olmoe-1b-7b": both}), [48, 48, 48], [64, 64, 64], up=[False, True, True]
    )
    assert {v.kind for v in rep.violations} == {"server_down"}


def test_plan_arrays_are_read_only_and_equality_is_by_value():
    a = P.single_server_plan("olmoe-1b-7b", 0, 2, 5.0)
    b = P.single_server_plan("olmoe-1b-7b", 0, 2, 5.0)
    assert a == b
    with pytest.raises(ValueError):
        a.location[0, 0, 0] = P.HOST


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(bits=5), "bits=5 is not allowed; allowed bit widths: 16, 8, 4, 3, 2"),
        (dict(keep_ratio=0.3), "keep_ratio=0.3 is not allowed"),
        (dict(home=(7,)), "home server 7 is not allowed; servers are 0..2"),
        (dict(home=()), "home of olmoe-1b-7b is empty"),
        (dict(location_value=3), "location value 3 is not allowed"),
        (dict(location_shape=(2, 64, 3)), "location of olmoe-1b-7b has shape (2, 64, 3)"),
    ],
)
def test_bad_plans_raise_naming_field_value_and_allowed(change, message):
    m = get_model("olmoe-1b-7b")
    loc = np.zeros((m.n_moe_layers, m.n_experts, 3), np.int8)
    loc[:, :, 0] = P.GPU
    if "location_value" in change:
        loc[0, 0, 0] = change["location_value"]
    if "location_shape" in change:
        loc = np.zeros(change["location_shape"], np.int8)
    bits = np.full((m.n_moe_layers, m.n_experts), change.get("bits", 16), np.int8)
    with pytest.raises(ValueError) as exc:
        P.ModelPlan(
            "olmoe-1b-7b",
            loc,
            bits,
            change.get("home", (0,)),
            np.zeros(m.n_moe_layers, np.int8),
            keep_ratio=change.get("keep_ratio", 1.0),
        )
    assert message in str(exc.value)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="known models: .*mixtral-8x7b"):
        P.single_server_plan("gpt-5", 0, 2, 10.0)
