"""`coel bench` and the suite's scoring (agents.bench): bad input, skipped policies, the
normalised score, the aggregates and the headroom ratios."""

import math
from pathlib import Path

import numpy as np
import pytest

from agents import bench
from coel_env.cli import main
from coel_env.core.scenario import data_root

POLICIES = Path(__file__).resolve().parents[1] / "results" / "policies"
needs_data = pytest.mark.skipif(
    not (data_root() / "topologies" / "eua").is_dir(), reason="../shared/data is absent"
)


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every run folder lands under the test's own ``runs/``."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "--seeds 0 is not allowed; must be an integer >= 1"),
        (["--scenarios", "churn,nowhere"],
         "--scenarios 'nowhere' is not a suite scenario; allowed: mobility, churn, diurnal, "
         "tight-memory"),
        (["--scenarios", ","], "--scenarios is empty"),
        (["--policies", "naive,bogus"], "--policies 'bogus' is not a known policy or run"),
        (["--policies", "run:no/such/run"], "'no/such/run' does not exist"),
        (["--policies", "naive,naive"], "--policies names 'naive' twice"),
        (["--milp-node-limit", "0"], "--milp-node-limit 0 is not allowed"),
        (["--milp-time-limit", "0"], "--milp-time-limit 0.0 is not allowed"),
        (["--jobs", "0"], "--jobs 0 is not allowed"),
        (["--epochs", "0"], "--epochs 0 is not allowed"),
        (["--reuse", "no/such/folder"], "--reuse 'no/such/folder' is not a folder"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error_before_any_work(tmp_path, capsys, argv, message):
    assert main(["bench", "--runs-root", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coel bench: error: ") and message in err, err
    assert not (tmp_path / "runs").exists()  # nothing was run or written


def test_missing_data_names_coel_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COEL_DATA", str(tmp_path / "empty"))
    assert main(["bench", "--scenarios", "mobility", "--seeds", "1", "--epochs", "1",
                 "--policies", "naive", "--runs-root", str(tmp_path / "runs")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "scenario 'mobility' reads public data sets that are not there" in err
    assert "set COEL_DATA" in err


def test_a_policy_whose_shape_does_not_fit_is_skipped_not_a_crash(tmp_path, monkeypatch):
    """The table names the policy, the scenario and the policy's own reason."""

    class Misfit:
        name = "rl:misfit"

        def reset(self, world, seed):
            raise ValueError("policy 'rl:misfit' was trained on observations of shape (3,)")

    monkeypatch.setattr(bench, "_rl_policy", lambda spec: Misfit())
    run = tmp_path / "misfit"
    run.mkdir()
    out = tmp_path / "suite"
    rc = main(["bench", "--scenarios", "churn", "--seeds", "1", "--epochs", "1",
               "--policies", f"naive,run:{run}", "--out-dir", str(out)])  # fmt: skip
    assert rc == 0
    table = (out / "table.md").read_text()
    assert (
        "| `churn` | rl:misfit | policy 'rl:misfit' was trained on observations of shape "
        "(3,) |" in table
    )


@pytest.mark.slow
def test_a_policy_that_does_not_fit_is_skipped_with_its_reason(tmp_path, capsys):
    """The `large` agent (33 servers) cannot run on `churn` (5): a row in the table's
    Skipped section says why, and the baselines still run and are scored."""
    out = tmp_path / "suite"
    large = POLICIES / "maskable_ppo-CoEL-v1-large"
    rc = main(["bench", "--scenarios", "churn", "--seeds", "2", "--epochs", "2",
               "--policies", f"naive,run:{large}", "--out-dir", str(out)])  # fmt: skip
    assert rc == 0
    table = (out / "table.md").read_text()
    assert "## Skipped" in table
    row = next(line for line in table.splitlines() if "rl:maskable_ppo-CoEL-v1-large" in line)
    assert "`churn`" in row and "trained on observations of shape (667,)" in row
    for name in ("scores.csv", "episodes.csv", "timing.csv", "command.txt", "args.yml"):
        assert (out / name).is_file(), name
    # the anchor and the reference ran although not asked for
    assert "| greedy-oracle |" in table and "| naive |" in table


def test_a_reference_not_asked_for_runs_only_on_its_own_scenario():
    """tight-memory's reference (milp-periodic) is not run on churn when not asked for."""
    tasks = bench.suite_tasks(["churn", "tight-memory"])
    ref = {t.scenario: t.reference for t in tasks}
    tight, churn = ref["tight-memory"], ref["churn"]
    assert tight == "milp-periodic" and churn == "greedy-oracle"
    run = bench.run_suite(bench.parse_policies("naive"), tasks, [0], epochs=1, progress=False)
    ran = {(r["scenario"], r["policy"]) for r in run.episodes}
    assert ("tight-memory", tight) in ran and ("churn", tight) not in ran
    assert ("churn", churn) in ran and ("tight-memory", churn) not in ran
    assert ("churn", "naive") in ran and ("tight-memory", "naive") in ran
    why = {(s, p): w for s, p, w in run.skipped}
    assert why[("churn", tight)] == "not asked for: runs only as the reference of tight-memory"


@pytest.mark.slow
def test_tables_are_reproduced_byte_for_byte_and_do_not_depend_on_jobs(tmp_path):
    """Two runs (one with two worker processes) write the same table, scores and plots
    data: the MILP stops at a node limit, not at the clock."""
    argv = ["bench", "--scenarios", "churn", "--seeds", "3", "--epochs", "4",
            "--policies", "naive,greedy,static,milp-periodic"]  # fmt: skip
    assert main([*argv, "--out-dir", str(tmp_path / "a")]) == 0
    assert main([*argv, "--jobs", "2", "--out-dir", str(tmp_path / "b")]) == 0
    for name in ("scores.csv", "episodes.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    ta = (tmp_path / "a" / "table.md").read_text().splitlines()
    tb = (tmp_path / "b" / "table.md").read_text().splitlines()
    assert ta[3:] == tb[3:]  # all but the command line
    for name in ("performance_profile.png", "aggregates.png", "improvement.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0


def test_reuse_gives_the_tables_of_one_run_and_only_reuses_the_same_episodes(tmp_path, capsys):
    """A run, then a second one that adds a policy and reuses the first's episodes, writes
    what one run of everything writes; episodes of other MILP limits are run again."""
    base = ["bench", "--scenarios", "churn", "--seeds", "2", "--epochs", "3"]
    assert main([*base, "--policies", "naive,greedy", "--out-dir", str(tmp_path / "a")]) == 0
    assert main([*base, "--policies", "naive,greedy,static", "--reuse", str(tmp_path / "a"),
                 "--out-dir", str(tmp_path / "b")]) == 0  # fmt: skip
    assert "reused 6 of 8 episodes" in capsys.readouterr().err
    assert main([*base, "--policies", "naive,greedy,static", "--out-dir", str(tmp_path / "c")]) == 0
    for name in ("scores.csv", "episodes.csv", bench.FINGERPRINTS):
        assert (tmp_path / "b" / name).read_text() == (tmp_path / "c" / name).read_text()
    tb = (tmp_path / "b" / "table.md").read_text().splitlines()
    tc = (tmp_path / "c" / "table.md").read_text().splitlines()
    assert tb[3:] == tc[3:]  # all but the command line
    # other MILP limits: static's episodes are not taken from b
    d = ["--reuse", str(tmp_path / "b"), "--out-dir", str(tmp_path / "d")]
    assert main([*base, "--policies", "naive,static", "--milp-node-limit", "7", *d]) == 0
    assert "reused 4 of 6 episodes" in capsys.readouterr().err
    # a folder that is no finished suite run
    (tmp_path / "e").mkdir()
    assert main([*base, "--policies", "naive", "--reuse", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--reuse" in err and "episodes.csv is missing" in err


def _rows(scenario, table):
    return [{"scenario": scenario, "policy": p, "seed": s, "return": r, "epochs": 5}
            for p, rs in table.items() for s, r in enumerate(rs)]  # fmt: skip


def test_normalised_score_is_zero_at_naive_and_one_at_the_reference():
    task = bench.SuiteTask("churn", 5, "greedy-oracle", "")
    rows = _rows("churn", {"naive": [1.0, 3.0], "greedy-oracle": [5.0, 7.0], "x": [4.0, 8.0]})
    scores, undefined = bench.normalised_scores(rows, [task])
    assert undefined == {}
    s = scores["churn"]
    assert np.mean(list(s["naive"].values())) == 0.0
    assert np.mean(list(s["greedy-oracle"].values())) == 1.0
    assert s["x"] == {0: 0.5, 1: 1.5}  # (4 - 2) / (6 - 2), (8 - 2) / 4


def test_a_reference_below_naive_leaves_the_scenario_unscored():
    task = bench.SuiteTask("churn", 5, "greedy-oracle", "")
    rows = _rows("churn", {"naive": [3.0], "greedy-oracle": [1.0]})
    scores, undefined = bench.normalised_scores(rows, [task])
    assert "is not above 'naive'" in undefined["churn"]
    assert math.isnan(scores["churn"]["naive"][0])


def test_aggregates_are_rliable_statistics_with_seeded_intervals():
    rng = np.random.default_rng(1)
    m = {"a": rng.normal(1.0, 0.2, (20, 4)), "b": rng.normal(0.5, 0.2, (20, 4))}
    agg = bench.aggregates(m, reps=200)
    again = bench.aggregates(m, reps=200)
    assert agg == again  # a fixed bootstrap seed
    from scipy import stats

    assert agg["a"]["iqm"][0] == pytest.approx(stats.trim_mean(m["a"].ravel(), 0.25))
    assert agg["a"]["mean"][0] == pytest.approx(m["a"].mean())
    lo, hi = agg["a"]["iqm"][1:]
    assert lo < agg["a"]["iqm"][0] < hi
    prob = bench.improvement(m, [("a", "b")], reps=200)
    assert prob[("a", "b")][0] > 0.9


def test_headroom_ratios_on_returns_and_on_the_random_floor():
    rows = _rows("churn", {"best": [10.0], "static": [8.0], "naive": [5.0], "greedy": [9.0]})
    h = bench.headroom(rows, "churn")
    assert h.best == "best" and h.basis == "return"
    assert h.ratios == {"static": 0.8, "naive": 0.5, "greedy": 0.9}
    assert h.met == {"static": True, "naive": True, "greedy": True}
    rows = _rows("churn", {"best": [10.0], "static": [8.0], "naive": [-5.0], "greedy": [9.8],
                           "random": [-10.0]})  # fmt: skip
    h = bench.headroom(rows, "churn")
    assert h.basis == "random"
    assert h.ratios["naive"] == pytest.approx(0.25)  # (-5 + 10) / (10 + 10)
    assert h.met["greedy"] is False  # 0.99 of the best: the best is not 5% above greedy
    with pytest.raises(ValueError, match="the ratios need 'random' as their floor"):
        bench.headroom([r for r in rows if r["policy"] != "random"], "churn")


def test_suite_tasks_keep_the_suite_order():
    assert [t.scenario for t in bench.suite_tasks(["tight-memory", "churn"])] == [
        "churn", "tight-memory"]  # fmt: skip


@needs_data
def test_every_suite_scenario_builds():
    from coel_env.core.world import World

    for t in bench.SUITE:
        w = World(t.scenario)
        w.reset(0)
        w.step(None)


def test_milp_node_limit_is_a_config_option():
    from agents.milp import MilpConfig

    with pytest.raises(ValueError, match="node_limit=0 is not allowed"):
        MilpConfig(node_limit=0)
    assert MilpConfig(node_limit=7).solver_options()["mip_max_nodes"] == 7
    assert "mip_max_nodes" not in MilpConfig().solver_options()
    both = MilpConfig(node_limit=7, highs_options={"mip_max_nodes": 3})
    assert both.solver_options()["mip_max_nodes"] == 3  # an explicit HiGHS option wins
    kw = bench.MilpLimits(node_limit=50, time_limit_s=30.0).kwargs()
    assert kw["config"].node_limit == 50 and kw["time_limit_s"] == 30.0
    assert "config" not in bench.MilpLimits(node_limit=None).kwargs()


def test_sample_runs_a_graph_policy_drawing_its_edits_seeded_per_episode():
    """``sample:PATH`` is the published graph policy as ``coel evaluate --stochastic``
    plays it: its own row name and fingerprint, the same episode as
    ``GraphRLPolicy(stochastic=True)`` on the same seed, and not its mode's episode."""
    from agents import harness
    from agents.evaluate_cli import load_rl_policy

    path = POLICIES / "maskable_ppo-CoEL-Graph-v0-long"
    mode, drawn = bench.parse_policies(f"run:{path},sample:{path}")
    assert drawn.name == "rl:maskable_ppo-CoEL-Graph-v0-long:sampled" and drawn.kind == "rl"
    task = bench.suite_tasks(["churn"])[0]
    limits = bench.MilpLimits()
    assert bench.fingerprint(task, mode, limits, 3) != bench.fingerprint(task, drawn, limits, 3)
    run = bench.run_suite([mode, drawn], [task], [7], epochs=3, progress=False)
    ret = {r["policy"]: r["return"] for r in run.episodes}
    ref, _, _ = load_rl_policy(path, stochastic=True)
    want = harness.run_episode(ref, "churn", 7, 3).metrics["return"]
    assert ret[drawn.name] == want
    assert ret[drawn.name] != ret[mode.name]


def test_sample_of_a_policy_that_is_not_a_graph_policy_is_refused():
    spec = bench.parse_policies(f"sample:{POLICIES / 'maskable_ppo-CoEL-v2'}")[0]
    with pytest.raises(ValueError, match="--stochastic is for CoEL-Graph-v0 policies"):
        bench._rl_policy(spec)
