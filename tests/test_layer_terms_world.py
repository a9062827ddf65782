"""``serving.layer_terms``: the world and the MILP cost a layer through the cost model's
calibrated terms when asked, and not otherwise (the default leaves every output as it was:
``tests/test_episode_digests.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import eval_decision, random_homes_place

import agents.milp as M
from agents.base import Observation
from coel_env import cost
from coel_env.catalog import get_model
from coel_env.core.evaluation import PREFILL_POINTS, ServingModel
from coel_env.core.scenario import LEGACY_FIDELITY, load_scenario
from coel_env.core.world import World


@pytest.fixture(scope="module")
def calibrated_world():
    """``default`` with calibrated terms in the world before the fidelity round (eager, as
    calibrated terms need; offered batching and byte pruning, as the MILP check below
    costs a request)."""
    w = World("default", {**LEGACY_FIDELITY, "serving.layer_terms": "calibrated"})
    w.reset(0)
    return w


def test_default_is_first_principles() -> None:
    sc = load_scenario("default")
    assert sc.serving.layer_terms == "first-principles"
    w = World("default")
    assert w.serving.layer_terms == "first-principles"


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"serving.layer_terms": "measured"}, "serving.layer_terms='measured' is not allowed"),
        (
            {"serving.layer_terms": "calibrated", "serving.mode": "cudagraph"},
            "serving.mode='cudagraph' is not allowed",
        ),
    ],
)
def test_bad_layer_terms_name_the_key(over: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        load_scenario("default", over)


def test_serving_model_refuses_unknown_terms(calibrated_world) -> None:
    w = calibrated_world
    with pytest.raises(ValueError, match="layer_terms='x'.*first-principles"):
        ServingModel(w.gpus, w.cpus, "eager", layer_terms="x")


def test_home_work_is_the_cost_models_layer(calibrated_world) -> None:
    """Router and shared experts per MoE layer, dispatch per active expert: the cost API."""
    w = calibrated_world
    m = get_model(w.models[0])
    sm = w.serving
    ns = np.array([1.0, 8.0, 128.0])
    home = sm._home_ms(m, 0, ns, ("decode",) * 3, ("t", 1))
    dense = np.array([sm._attention_ms(m, 0, n, "decode") for n in ns])
    kw = dict(mode="eager", terms="calibrated")
    want = m.n_moe_layers * (
        cost.router_ms(m, w.gpus[0], ns, **kw) + cost.shared_ms(m, w.gpus[0], ns, **kw)
    )
    assert home - dense == pytest.approx(want, rel=1e-12)
    row = sm._disp_row(m, 0)
    t = sm._grid[::97]
    assert sm._values[row][::97] == pytest.approx(cost.dispatch_ms(m, w.gpus[0], t, **kw))


@pytest.mark.parametrize("mode", ["eager", "fused"])
def test_first_principles_home_work_is_the_cost_api_bit_for_bit(mode: str) -> None:
    """The default's router and shared experts come from the cost API too (one layer
    formula): the router through the world's vectorised kernel evaluation, the shared
    experts without their combine kernels, as the recorded results have them; in the
    eager runtime and in the fused one (whose home work is costed as in cudagraph)."""
    w = World("default", {"serving.mode": mode})
    w.reset(0)
    sm = w.serving
    assert sm.mode == ("cudagraph" if mode == "fused" else "eager")
    ns = np.array([1.0, 3.0, 8.0, 64.0, 1000.0])
    for name in ("deepseek-v2-lite", "qwen1.5-moe-a2.7b", "mixtral-8x7b"):
        m = get_model(name)
        for home in range(w.n):
            dev = w.gpus[home]
            home_ms = sm._home_ms(m, home, ns, ("decode",) * ns.size, ("fp", name))
            dense = np.array([sm._attention_ms(m, home, n, "decode") for n in ns])
            router = sm.router_ms(m, home, ns)
            shared = cost.shared_ms(m, dev, ns, mode=sm.mode, combine=False)
            assert np.array_equal(home_ms, m.n_moe_layers * router + m.n_moe_layers * shared
                                  + dense)  # fmt: skip
            # the same router as the cost model's own kernel evaluation, to rounding
            assert router == pytest.approx(cost.router_ms(m, dev, ns, mode=sm.mode), rel=1e-14)
            if m.n_shared_experts:  # combine adds kernels
                assert (cost.shared_ms(m, dev, ns, mode=sm.mode) > shared).all()


def test_world_and_milp_hold_no_copy_of_the_layer_formula() -> None:
    """Router launches, dispatch launches and shared-expert shapes appear only in the
    cost model (issue item: one cost API, no second copy of the layer formula)."""
    import inspect

    from agents.milp import from_world
    from coel_env.core import evaluation

    for mod in (evaluation, from_world):
        src = inspect.getsource(mod)
        for needle in ("ROUTER_OPS", "DISPATCH_OPS", "d_ff_shared", "n_experts *"):
            assert needle not in src, f"{mod.__name__} computes {needle} itself"


def test_calibrated_terms_move_the_costs(calibrated_world) -> None:
    """Decode passes within ~10% of first principles on the default's GPUs; a long
    prefill much dearer (the activations moved per MB, scaled to the L4's bandwidth)."""
    w = calibrated_world
    obs = Observation.from_truth(w)
    name = w.models[0]
    mp, pop = w.plan.models[name], obs.popularity[name]
    args = (obs.latency_ms, obs.bandwidth_gbit_s, obs.up)
    fp = ServingModel(w.gpus, w.cpus, "eager")
    for n in (1, 8, 64):
        cal = w.serving.step(mp, mp.home[0], pop, n, *args).ms
        assert cal == pytest.approx(fp.step(mp, mp.home[0], pop, n, *args).ms, rel=0.15)
        assert cal != fp.step(mp, mp.home[0], pop, n, *args).ms
    cal = w.serving.step(mp, mp.home[0], pop, 2048, *args, "prefill").ms
    assert cal > 1.5 * fp.step(mp, mp.home[0], pop, 2048, *args, "prefill").ms


def test_milp_costs_match_the_world_with_calibrated_terms(calibrated_world) -> None:
    """As tests/test_milp.py checks for the default: the MILP's per-request latency equals
    the world's for local plans when the layer terms are calibrated."""
    w = calibrated_world
    obs = Observation.from_truth(w)
    inst = M.build_instance(w, obs, M.MilpConfig(remote="never"), demand_per_s=M._true_demand(w))
    e_in, e_out, _, _ = M._token_stats(w)
    alpha = (e_in - PREFILL_POINTS[0]) / (PREFILL_POINTS[1] - PREFILL_POINTS[0])
    sm = ServingModel(w.gpus, w.cpus, "eager", layer_terms="calibrated")
    fp = ServingModel(w.gpus, w.cpus, "eager")
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(3):
        decs = []
        for mi in inst.models:
            homes, place = random_homes_place(rng, w.n, mi.G)
            place[:, homes] = np.maximum(place[:, homes], 1)
            decs.append(M.Decision(homes, place, rng.integers(0, mi.B, mi.G), 1, trial % 2))
        plan = M.to_plan(inst, decs)
        for mi, d in zip(inst.models, decs, strict=True):
            part = eval_decision(inst, mi, d)
            mp, pop = plan.models[mi.name], obs.popularity[mi.name]
            for h in np.flatnonzero(d.homes):
                args = (obs.latency_ms, obs.bandwidth_gbit_s, obs.up)

                def latency(model, mp=mp, pop=pop, h=h, args=args):
                    dec = model.step(mp, int(h), pop, 1, *args)
                    pre = [model.step(mp, int(h), pop, n, *args, "prefill") for n in PREFILL_POINTS]
                    return e_out * dec.ms + (1 - alpha) * pre[0].ms + alpha * pre[1].ms

                slow = 1.0 / (1.0 - min(obs.background[h], 0.95))
                milp = (part["c"][0, h] - mi.quality_ms * part["q"][0, h]) / slow
                assert milp == pytest.approx(latency(sm), rel=1e-9)
                # not the first-principles cost (a request's total can land near it: the
                # calibrated terms move parts of a pass both ways)
                assert milp != pytest.approx(latency(fp), rel=1e-6)
                checked += 1
    assert checked >= 3


def test_shift_script_tiny(capsys) -> None:
    """experiments/layer_terms_shift.py: both settings, the changes between them."""
    from experiments import layer_terms_shift

    assert layer_terms_shift.main(["--epochs", "4", "--seeds", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    d = doc["per_seed"]["0"]
    assert d["epochs_compared"] >= 1
    assert set(doc["mean_over_seeds"]) >= {"latency_p95_ms_mean_abs", "slo_attainment_mean_abs"}
    assert all(v >= 0 for k, v in doc["mean_over_seeds"].items() if k.endswith("_abs"))
