"""The deployment MILP (agents/milp/): exact on small instances, consistent with the
world's cost model, feasible plans, policies, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import encoding_agrees, eval_decision, random_homes_place

import agents.milp as M
from agents.base import Observation, Policy, observe
from coel_env.core.evaluation import PREFILL_POINTS, ServingModel
from coel_env.core.plan import KEEP_RATIOS, check_plan
from coel_env.core.scenario import LEGACY_FIDELITY
from coel_env.core.world import World
from coel_env.quality import quantization_loss

# ------------------------------------------------------------------ small instances


def _solve_or_inf(inst, **kw):
    try:
        res = M.solve(inst, gap=1e-9, time_limit_s=30.0, **kw)
    except M.MilpInfeasible as exc:
        assert str(exc).startswith("infeasible because"), str(exc)
        return math.inf, None
    assert res.status == "optimal"
    return res.objective, res


def _check_optimum(inst):
    best, arg = M.brute_force(inst)
    obj, res = _solve_or_inf(inst)
    if math.isinf(best):
        assert math.isinf(obj), f"MILP found {obj} where enumeration finds nothing feasible"
        return False
    assert res is not None, f"MILP says infeasible, enumeration finds {best}"
    assert obj == pytest.approx(best, rel=1e-6, abs=1e-6)
    # the decoded decisions cost what the MILP says, by formula
    assert M.evaluate(inst, res.decisions) == pytest.approx(obj, rel=1e-6, abs=1e-6)
    # and the enumerated optimum, encoded, is feasible in the matrix at the same cost
    model = M.build_milp(inst)
    vec = M.encode(inst, model, [arg])
    act = model.matrix @ vec
    assert (act >= model.row_lo - 1e-6).all() and (act <= model.row_hi + 1e-6).all()
    assert (vec >= model.lb - 1e-9).all() and (vec <= model.ub + 1e-9).all()
    assert float(model.cost @ vec) / M.UNIT == pytest.approx(best, rel=1e-6, abs=1e-6)
    return True


@pytest.mark.slow
def test_milp_matches_brute_force_on_random_instances():
    feasible = infeasible = 0
    for seed in range(40):
        inst = M.random_instance(seed, n_groups=3, tight=0.4 if seed % 3 == 0 else 1.0)
        if _check_optimum(inst):
            feasible += 1
        else:
            infeasible += 1
    assert feasible >= 25 and infeasible >= 3, (feasible, infeasible)


def test_milp_matches_brute_force_four_groups():
    for seed in range(3):
        inst = M.random_instance(100 + seed, n_groups=4, keeps=(1.0,), policies=(0, 1))
        assert _check_optimum(inst)


@pytest.mark.slow
def test_milp_matches_brute_force_three_servers():
    # with three servers a copy kept for one home can be nearer another home than the one
    # it would rather use: the nearest-copy rule binds
    for seed in range(20):
        inst = M.random_instance(300 + seed, n_servers=3, n_groups=2)
        assert _check_optimum(inst)


def test_matrix_and_formula_agree_on_every_decision():
    """For every decision of a small instance: feasible by formula <=> its encoding
    satisfies every row, and then the matrix objective equals the formula's."""
    inst = M.random_instance(7, n_groups=2, tight=0.6)
    mi = inst.models[0]
    model = M.build_milp(inst)
    states = [(0, 1), (1, 0), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2), (2, 2)]
    n_ok = n_bad = 0
    for homes in ([True, False], [False, True], [True, True]):
        for pl in np.ndindex(len(states), len(states)):
            place = np.array([states[pl[0]], states[pl[1]]], np.int8)
            for bits in np.ndindex(mi.B, mi.B):
                for k in range(mi.K):
                    for p in mi.policies:
                        d = M.Decision(np.array(homes), place, np.array(bits), k, p)
                        if encoding_agrees(inst, model, d):
                            n_ok += 1
                        else:
                            n_bad += 1
    assert n_ok > 50 and n_bad > 50


@pytest.mark.slow
def test_greedy_never_beats_the_milp():
    seen = 0
    for seed in range(20):
        inst = M.random_instance(200 + seed, n_groups=3, n_servers=3)
        greedy = M.greedy_solution(inst)
        obj, res = _solve_or_inf(inst)
        if greedy is None:
            continue
        g = M.evaluate(inst, greedy)
        assert math.isfinite(g)
        assert g >= obj - 1e-6 * max(1.0, abs(obj))
        seen += 1
    assert seen >= 10


# --------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def default_world():
    w = World("default")
    w.reset(0)
    return w


def test_linearised_costs_match_the_serving_model():
    """Per-request latency from the MILP's coefficients == ServingModel (the world's cost
    model) for local plans, and an upper bound for remote ones, in the world before the
    fidelity round (eager, offered batching, per-expert traffic, byte pruning, throughput
    scaling: the ServingModel built below; tests/test_milp_fidelity.py checks each key and
    the defaults)."""
    w = World("default", LEGACY_FIDELITY)
    w.reset(0)
    obs = Observation.from_truth(w)
    cfg = M.MilpConfig(remote="always", near=5)
    inst = M.build_instance(w, obs, cfg, demand_per_s=M._true_demand(w))
    e_in, e_out, _, _ = M._token_stats(w)
    alpha = (e_in - PREFILL_POINTS[0]) / (PREFILL_POINTS[1] - PREFILL_POINTS[0])
    sm = ServingModel(w.gpus, w.cpus, w.scenario.serving.mode)
    rng = np.random.default_rng(0)
    exact = bound = 0
    for trial in range(8):
        decs = []
        for mi in inst.models:
            homes, place = random_homes_place(rng, w.n, mi.G)
            if trial < 4:  # every group on every home: no remote copy
                place[:, homes] = np.maximum(place[:, homes], 1)
            for g in range(mi.G):
                if not place[g].any():
                    place[g, rng.integers(w.n)] = 1
            decs.append(M.Decision(homes, place, rng.integers(0, mi.B, mi.G), 1, trial % 2))
        plan = M.to_plan(inst, decs)
        for mi, d in zip(inst.models, decs, strict=True):
            part = eval_decision(inst, mi, d)
            mp = plan.models[mi.name]
            pop = obs.popularity[mi.name]
            for h in np.flatnonzero(d.homes):
                args = (obs.latency_ms, obs.bandwidth_gbit_s, obs.up)
                dec = sm.step(mp, int(h), pop, 1, *args)
                pre = [sm.step(mp, int(h), pop, n, *args, "prefill") for n in PREFILL_POINTS]
                world = e_out * dec.ms + (1 - alpha) * pre[0].ms + alpha * pre[1].ms
                slow = 1.0 / (1.0 - min(obs.background[h], 0.95))
                milp = (part["c"][0, h] - mi.quality_ms * part["q"][0, h]) / slow
                if (d.place[:, h] > 0).all():
                    assert milp == pytest.approx(world, rel=1e-9)
                    exact += 1
                else:
                    assert milp >= world * (1 - 1e-9)
                    bound += 1
    assert exact >= 8 and bound >= 4


def test_quality_coefficients_match_quantization_loss(default_world):
    w = default_world
    obs = Observation.from_truth(w)
    inst = M.build_instance(w, obs, demand_per_s=M._true_demand(w))
    rng = np.random.default_rng(1)
    for mi, m in zip(inst.models, w.specs, strict=True):
        for _ in range(5):
            bits = rng.integers(0, mi.B, mi.G)
            want = quantization_loss(
                np.asarray(mi.bits)[bits][mi.groups],
                obs.popularity[mi.name],
                shared_bits=16 if m.n_shared_experts else None,
                shared_share=m.n_shared_experts / m.top_k,
            )
            assert mi.qbits[np.arange(mi.G), bits].sum() == pytest.approx(want, rel=1e-9)


def test_decoded_plan_is_feasible_and_consistent(default_world):
    w = default_world
    obs = Observation.from_truth(w)
    res = M.solve_world(w, obs, M.MilpConfig(time_limit_s=20), demand_per_s=M._true_demand(w))
    assert res.status in ("optimal", "time_limit") and res.plan is not None
    assert w.check(res.plan).feasible, str(w.check(res.plan))
    rep = check_plan(
        res.plan, w.gpu_capacity_gb, w.host_capacity_gb, up=obs.up, unified=w.unified,
        kv_reserve_gb=w.kv_reserve_gb,
    )  # fmt: skip
    assert rep.feasible
    assert set(res.plan.models) == set(w.models)
    for mp in res.plan.models.values():
        assert mp.location.dtype == np.int8 and mp.location.shape[2] == w.n
        assert mp.keep_ratio in KEEP_RATIOS
    assert res.objective >= res.bound - 1e-6 * abs(res.objective)
    assert M.evaluate(res.instance, res.decisions) == pytest.approx(res.objective, rel=1e-4)


def test_milp_oracle_runs_the_default_world():
    w = World("default")
    w.reset(3)
    pol = M.MilpPolicy(time_limit_s=10.0)
    assert isinstance(pol, Policy) and pol.name == "milp-oracle" and pol.sees == "oracle"
    pol.reset(w, 3)
    deployed = 0
    for _ in range(5):
        plan = pol.act(w, observe(pol, w))
        assert pol.last is not None and pol.last.status in ("optimal", "time_limit")
        rep = w.step(plan)
        assert rep.feasible, rep.infeasibility
        deployed += plan is not None
    assert deployed >= 1
    assert len(pol.history) == 5


@pytest.mark.slow
def test_periodic_and_static_policies():
    w = World("default")
    w.reset(0)
    per = M.MilpPolicy(name="milp-periodic", sees="view", every=3)
    static = M.StaticPolicy()
    assert static.name == "static"
    for p in (per, static):
        p.reset(w, 0)
    solves_per, solves_static = [], []
    for _ in range(8):
        for p, log in ((per, solves_per), (static, solves_static)):
            n0 = len(p.history)
            p.act(w, observe(p, w))
            log.append(len(p.history) > n0)
        w.step(None)
    assert sum(solves_static) == 1 and solves_static[0]
    # the view waits for every server's first broadcast, then solves every 3 epochs
    first = solves_per.index(True)
    assert first >= 1
    assert [i for i, s in enumerate(solves_per) if s] == list(range(first, 8, 3))


# ------------------------------------------------------------------------ bad input


def test_infeasible_instance_says_why(default_world):
    w = World("default", {"serving.kv_reserve_gb": 30.0})
    w.reset(0)
    obs = Observation.from_truth(w)
    with pytest.raises(M.MilpInfeasible, match=r"^infeasible because .*dense part"):
        M.solve_world(w, obs)
    # too little memory in all: every expert at the lowest width does not fit
    inst = M.random_instance(5, tight=0.01)
    with pytest.raises(M.MilpInfeasible) as info:
        M.solve(inst)
    assert str(info.value).startswith("infeasible because")
    # the policy reports it and keeps the plan in force
    pol = M.MilpPolicy()
    pol.reset(w, 0)
    assert pol.act(w, observe(pol, w)) is None
    assert pol.last.status == "infeasible" and pol.last.message.startswith("infeasible because")


def test_tiny_time_limit_returns_an_incumbent_or_a_clear_error(monkeypatch):
    w = World("static", {"topology.n_servers": 8, "models": ["mixtral-8x7b"]})
    w.reset(0)
    obs = Observation.from_truth(w)
    inst = M.build_instance(w, obs, M.MilpConfig(n_groups=8), demand_per_s=M._true_demand(w))
    res = M.solve(inst, time_limit_s=1e-3)
    assert res.status == "time_limit" and res.decisions is not None
    assert w.check(M.to_plan(inst, res.decisions)).feasible
    assert res.objective == pytest.approx(M.evaluate(inst, res.decisions), rel=1e-6)
    # solve() looks the greedy up in its own module
    monkeypatch.setattr(M.solving, "greedy_solution", lambda inst: None)
    with pytest.raises(M.MilpError, match="time limit of .* before any feasible plan"):
        M.solve(inst, time_limit_s=1e-3)


def test_bad_config():
    with pytest.raises(ValueError, match="bits"):
        M.MilpConfig(bits=(16, 5))
    with pytest.raises(ValueError, match="keep_ratios"):
        M.MilpConfig(keep_ratios=(0.3,))
    with pytest.raises(ValueError, match="remote"):
        M.MilpConfig(remote="sometimes")
    with pytest.raises(ValueError, match="every"):
        M.MilpPolicy(every=0)
