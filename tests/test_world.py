"""The CoEL world: conservation, determinism, load, staleness, updates, real data, bad input."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coel_env.core import plan as P
from coel_env.core.world import World

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAST = {"epoch_s": 10.0}


def _run(world, seed, epochs, plans=None):
    world.reset(seed)
    out = []
    for k in range(epochs):
        out.append(world.step(None if plans is None else plans[k]).as_dict())
    return out


def test_every_arrived_request_is_served_or_dropped_in_every_epoch():
    w = World("large", {"dynamics.server_leave_prob": 0.05})
    w.reset(1)
    total = 0
    for _ in range(30):
        r = w.step()
        assert r.requests_served + r.requests_dropped == r.requests_arrived
        assert r.dropped_no_model + r.dropped_overload == r.requests_dropped
        assert 0.0 <= r.slo_attainment <= 1.0
        total += r.requests_arrived
    assert total > 0


def test_same_seed_same_reports_and_another_seed_differs():
    a = _run(World("default"), 7, 25)
    b = _run(World("default"), 7, 25)
    c = _run(World("default"), 8, 25)
    assert a == b
    assert a != c


def test_a_pickled_world_continues_identically():
    w = World("default")
    w.reset(3)
    for _ in range(5):
        w.step()
    clone = pickle.loads(pickle.dumps(w))
    assert [w.step().as_dict() for _ in range(10)] == [clone.step().as_dict() for _ in range(10)]


def test_same_seed_same_reports_across_processes():
    code = (
        "import json; from coel_env.core.world import World; w = World('default'); w.reset(11);"
        "print(json.dumps([w.step().slo_attainment for _ in range(15)]))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip()


def test_latency_rises_with_load():
    def stats(rate):
        reps = _run(World("static", {"workload.rate_per_s": rate}), 0, 60)
        served = sum(r["requests_served"] for r in reps)
        p95 = np.mean([r["latency_p95_ms"] for r in reps if r["requests_served"]])
        slo = sum(r["slo_met"] for r in reps) / max(1, sum(r["requests_arrived"] for r in reps))
        return served, p95, slo

    lo, hi = stats(0.02), stats(0.12)
    assert hi[0] > lo[0]  # more load served
    assert hi[1] > lo[1]  # but slower
    assert hi[2] < lo[2]  # and fewer within their SLO


def test_broadcast_views_are_at_most_one_period_plus_path_latency_old():
    w = World("static", {"perception.loss_prob": 0.0, "perception.hops": 8})
    w.reset(0)
    period = w.scenario.perception.period_s
    for _ in range(10):
        w.step()
        ages = w.perception.age_s(w.t_s)
        lat_s = w.paths.latency_ms / 1000
        assert np.isfinite(ages).all()
        assert (ages <= period + lat_s + 1e-9).all()


def test_a_server_that_left_holds_no_experts_in_any_evaluated_plan():
    w = World("default", {"dynamics.servers": True, "dynamics.server_leave_prob": 0.2})
    w.reset(2)
    left = 0
    for _ in range(40):
        w.step()
        down = ~w.dyn.server_up
        left += int(down.sum())
        for mp in w.plan.models.values():
            assert (mp.location[:, :, down] == P.ABSENT).all()
            assert not any(down[h] for h in mp.home)
    assert left > 0


def _leaving(departed: str) -> tuple[list, list]:
    """Re-send the plan in force (a new Plan object) every epoch while servers leave:
    (reports of the epochs in which a server left, of the others)."""
    over = {"dynamics.servers": True, "dynamics.server_leave_prob": 0.2,
            "dynamics.server_join_prob": 0.0, "updating.departed": departed}  # fmt: skip
    w = World("default", over)
    w.reset(2)
    left, other = [], []
    for _ in range(30):
        before = w.dyn.server_up.copy()
        r = w.step(P.Plan(dict(w.plan.models)))
        gone = before & ~w.dyn.server_up
        (left if gone.any() else other).append(r)
        down = ~w.dyn.server_up
        for mp in w.plan.models.values():
            assert (mp.location[:, :, down] == P.ABSENT).all()
    return left, other


def test_a_plan_sent_as_a_server_leaves_is_deployed_without_it_or_refused_as_before():
    """``updating.departed: strip`` (the default) deploys a plan that names a server
    leaving in the epoch it is sent without that server's part; ``refuse`` (the world
    before) refuses it whole. A plan on servers present throughout is taken either way."""
    left, other = _leaving("strip")
    assert left and all(r.feasible for r in left + other)
    left_r, other_r = _leaving("refuse")
    assert len(left_r) == len(left)  # the same leaves: the key changes only the plan check
    assert all(not r.feasible and "not present" in r.infeasibility for r in left_r)
    assert all(r.feasible for r in other_r)
    with pytest.raises(ValueError, match=r"updating.departed='drop' is not allowed"):
        World("default", {"updating.departed": "drop"})


def test_a_plan_on_a_server_already_absent_is_refused():
    w = World("default", {"dynamics.servers": True, "dynamics.server_leave_prob": 0.3,
                          "dynamics.server_join_prob": 0.0})  # fmt: skip
    w.reset(2)
    stale = w.plan  # decided while every server was present
    while w.dyn.server_up.all():
        w.step()
    assert w.plan is not stale  # the plan in force lost the absent servers' parts
    r = w.step(stale)
    gone = ~w.dyn.server_up
    named = any((mp.location[:, :, gone] != P.ABSENT).any() for mp in stale.models.values())
    assert named and not r.feasible and "not present" in r.infeasibility


def test_infeasible_plan_is_reported_and_the_previous_plan_kept():
    w = World("static")
    w.reset(0)
    before = w.plan
    name = w.models[0]
    m = w.specs[0]
    loc = np.zeros((m.n_moe_layers, m.n_experts, w.n), np.int8)
    loc[:, :, 0] = P.GPU  # everything on server 0's GPU ...
    bad = P.Plan(
        {
            name: P.ModelPlan(
                name, loc, np.full(loc.shape[:2], 16, np.int8), (0,),
                np.zeros(m.n_moe_layers, np.int8),
            )
        }
    )  # fmt: skip
    big = P.Plan({**bad.models})
    w.gpu_capacity_gb = w.gpu_capacity_gb.copy()
    w.gpu_capacity_gb[0] = 1.0  # ... which is too small
    r = w.step(big)
    assert not r.feasible
    assert "server 0" in r.infeasibility and "GPU memory" in r.infeasibility
    assert w.plan is before
    assert r.migration_bytes == 0


def _static_with_first_model_at(bits: int) -> tuple[World, P.Plan, P.Plan]:
    """A ``static`` world after ``reset(0)``, its plan, and the plan with the first model's
    experts all at ``bits``."""
    w = World("static")
    w.reset(0)
    mp = w.plan.models[w.models[0]]
    low = P.ModelPlan(mp.model, mp.location, np.full_like(mp.bits, bits), mp.home, mp.host_policy)
    return w, w.plan, P.Plan({**w.plan.models, mp.model: low})


def test_a_feasible_new_plan_pays_migration():
    w, old, new = _static_with_first_model_at(4)
    r = w.step(new)
    assert r.feasible and w.plan is new
    # fewer bits re-quantize in place: no network bytes; going back up costs a copy
    assert r.migration_bytes == 0
    assert w.step(old).migration_bytes > 0


def test_quantization_shows_in_quality_loss():
    w, _, low = _static_with_first_model_at(2)
    reps = [w.step(low) for _ in range(5)]
    assert max(r.quality_loss for r in reps) > 0.05
    assert sum(r.quality_violations for r in reps) > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"foo": 1}, "unknown scenario key 'foo'; valid keys: name, instance_seed"),
        ({"workload.rat": 1}, "unknown scenario key 'workload.rat'; valid keys of workload"),
        ({"models": ["gpt-9"]}, "unknown model 'gpt-9'; known models:"),
        ({"topology.device_mix": {"tpu-v9": 1.0}}, "tpu-v9"),
        ({"epoch_s": -1}, "epoch_s=-1 is not allowed"),
    ],
)
def test_bad_scenarios_name_the_key_value_and_the_allowed(overrides, message):
    with pytest.raises(ValueError) as exc:
        World("default", overrides)
    assert message in str(exc.value)


def test_unknown_preset_or_missing_file():
    with pytest.raises(ValueError, match="neither a preset"):
        World("no-such-scenario")


def test_step_before_reset_raises():
    w = World("default")
    assert not w.started
    with pytest.raises(RuntimeError, match="reset"):
        w.step()
    w.reset(0)
    assert w.started


@pytest.mark.parametrize("plan", ["plan", 3, {"olmoe-1b-7b": None}])
def test_step_with_something_that_is_not_a_plan_is_a_type_error(plan):
    w = World("default")
    w.reset(0)
    with pytest.raises(TypeError) as exc:
        w.step(plan)
    msg = str(exc.value)
    assert msg.startswith("plan must be a Plan or None (None keeps the plan in force), not ")
    assert type(plan).__name__ in msg and repr(plan)[:20] in msg


def test_view_of_a_server_out_of_range_names_the_range():
    w = World("default")
    w.reset(0)
    for server in (99, 5, -1):
        with pytest.raises(ValueError, match=f"server={server} is not allowed; servers are 0..4"):
            w.view(server)
    with pytest.raises(TypeError, match="server must be an integer 0..4, not float 1.0"):
        w.view(1.0)
    status, age = w.view(np.int64(4))
    assert status.shape[0] == 5 and age.shape == (5,)


def test_core_imports_no_gymnasium():
    """No module of the core (or the foundation it uses) imports gymnasium, torch or the
    envs: the core can serve other RL APIs. ``import coel_env`` registers the envs, so
    the check reads each module's own import statements."""
    import ast

    pkg = Path(__file__).resolve().parents[1] / "coel_env"
    files = sorted((pkg / "core").glob("*.py"))
    files += [pkg / f for f in ("catalog.py", "profiles.py", "cost.py", "quality.py", "utils.py")]
    banned = {"gymnasium", "gym", "torch", "stable_baselines3", "sb3_contrib"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in banned, f"{f.name} imports {name}"
                assert not name.startswith("coel_env.envs"), f"{f.name} imports {name}"


# ------------------------------------------------------------------ real data


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.parametrize("name", ["Abilene", "Aarnet", "Cernet", "Uninett2010"])
def test_runs_on_topology_zoo(name):
    f = _need(DATA / "topologies" / "topology_zoo" / f"{name}.graphml")
    w = World("default", {"topology.kind": "graphml", "topology.path": str(f)})
    w.reset(0)
    reps = [w.step() for _ in range(3)]
    assert w.n >= 10 and all(
        r.requests_served + r.requests_dropped == r.requests_arrived for r in reps
    )


def test_runs_on_eua():
    f = _need(DATA / "topologies" / "eua" / "site-optus-melbCBD.csv")
    users = DATA / "topologies" / "eua" / "users-melbcbd-generated.csv"
    w = World(
        "default",
        {"topology.kind": "eua", "topology.path": str(f), "topology.users_path": str(users),
         "topology.n_servers": 8},
    )  # fmt: skip
    w.reset(0)
    assert w.n == 8 and w.step().requests_arrived >= 0


@pytest.mark.parametrize(
    "trace", ["AzureLLMInferenceTrace_code.csv", "AzureLLMInferenceTrace_conv.csv"]
)
def test_replays_azure_traces(trace):
    f = _need(DATA / "traces" / "azure_llm_2023" / trace)
    w = World(
        "static", {"workload.kind": "azure", "workload.trace": str(f), "workload.time_scale": 20.0}
    )
    w.reset(0)
    reps = [w.step() for _ in range(3)]
    assert sum(r.requests_arrived for r in reps) > 0


def test_replays_a_generic_trace(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("arrival_s,input_tokens,output_tokens\n0.5,100,20\n1.5,200,30\n12.0,50,10\n")
    w = World("static", {"workload.kind": "generic", "workload.trace": str(f)})
    w.reset(0)
    # the trace loops with period = last arrival + mean gap = 12 + 5.75 s
    assert [w.step().requests_arrived for _ in range(2)] == [2, 1 + 1 + 1]


def test_uses_real_routing_data():
    esft = _need(DATA / "routing" / "deepseek_v2_lite_esft")
    fid = _need(DATA / "routing" / "mixtral_fiddler")
    w = World(
        "large",
        {"routing.esft_dir": str(esft), "routing.fiddler_dir": str(fid), "topology.n_servers": 8},
    )
    w.reset(0)
    r = w.step()
    assert r.requests_served + r.requests_dropped == r.requests_arrived


def _queues_reference(home, arr_ms, work, up, avail, b0, limit_ms, epoch_ms, backlog, util):
    """The per-home FIFO queues as the world walked them in numpy before the compiled loop."""

    def lindley(backlog0, arrive, w):
        if not arrive.size:
            return arrive
        u = backlog0 + np.concatenate([[0.0], np.cumsum(w[:-1])]) - arrive
        return u - np.minimum(0.0, np.minimum.accumulate(u))

    served = np.zeros(home.size, bool)
    wait = np.zeros(home.size)
    dropped_at = np.zeros(up.size)
    for h in np.unique(home[home >= 0]):
        idx = np.flatnonzero(home == h)
        if not up[h] or avail[h] <= 0:
            dropped_at[h] += idx.size
            continue
        a_h = avail[h]
        keep = np.ones(idx.size, bool)
        for _ in range(2):
            w = lindley(b0[h], arr_ms[idx[keep]] * a_h, work[idx[keep]])
            ok = w <= limit_ms
            if ok.all():
                break
            kk = np.flatnonzero(keep)
            keep[kk[~ok]] = False
        w = lindley(b0[h], arr_ms[idx[keep]] * a_h, work[idx[keep]])
        k_idx = idx[keep]
        dropped_at[h] += float(idx.size - k_idx.size)
        served[k_idx] = True
        wait[k_idx] = w / a_h
        total = b0[h] + float(work[k_idx].sum())
        if k_idx.size:
            end = w[-1] + work[k_idx[-1]] - (epoch_ms - arr_ms[k_idx[-1]]) * a_h
        else:
            end = b0[h] - epoch_ms * a_h
        backlog[h] = max(0.0, end)
        util[h] = min(1.0, (total - backlog[h]) / epoch_ms)
    return served, wait, dropped_at


@pytest.mark.parametrize("seed", range(6))
def test_compiled_queues_match_the_vectorised_lindley_queues(seed):
    from coel_env.core.kernels.serving import queue_kernel

    rng = np.random.default_rng(seed)
    n, n_req, epoch_ms = 6, int(rng.integers(0, 400)), 10_000.0
    home = rng.integers(-1, n, n_req)
    arr_ms = np.sort(rng.uniform(0, epoch_ms, n_req))
    work = rng.exponential(rng.choice([20.0, 300.0]), n_req)  # light and overloaded
    up = rng.random(n) > 0.15
    avail = rng.uniform(-0.1, 1.0, n)
    b0 = rng.exponential(2000.0, n)
    limit = float(rng.choice([500.0, 5000.0]))
    want_b, want_u = rng.random(n), rng.random(n)
    got_b, got_u = want_b.copy(), want_u.copy()
    want = _queues_reference(home, arr_ms, work, up, avail, b0, limit, epoch_ms, want_b, want_u)
    got = queue_kernel(home, arr_ms, work, up, avail, b0, limit, epoch_ms, got_b, got_u)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_allclose(got_b, want_b, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got_u, want_u, rtol=1e-12, atol=1e-12)
