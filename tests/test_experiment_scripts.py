"""experiments/bench_envs.py, bench_floor.py, bench_training.py and soak.py: tiny runs end to
end, in subprocesses; fixed_plans.py and transfer_ratio.py in the test process.

The scripts set thread variables before NumPy is imported and are timed, so they
run in their own interpreters here (nothing leaks into the test process).
"""

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NUM = r"[-+]?\d+(?:\.\d+)?"


def _run(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _run_report(tmp_path: Path, script: str, *args: str, timeout: float = 60.0):
    """Run ``experiments/SCRIPT`` with ``args`` and ``--out``; the process (whose stdout
    must list the machine) and the report's text (which must name the command)."""
    out = tmp_path / "report.md"
    proc = _run(f"experiments/{script}", *args, "--out", str(out), timeout=timeout)
    assert "cpu_count:" in proc.stdout
    text = out.read_text()
    command = shlex.join(["python", f"experiments/{script}", *args, "--out", str(out)])
    assert f"Command: `{command}`" in text
    return proc, text


def _table(text: str, first: str) -> list[dict[str, str]]:
    """The rows (column -> cell) of the report's table whose first column is ``first``."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"| {first} |"))
    body = itertools.takewhile(lambda line: line.startswith("| "), lines[i + 2 :])
    return [dict(zip(_cells(lines[i]), _cells(line), strict=True)) for line in body]


def test_bench_envs_tiny(tmp_path):
    proc, text = _run_report(
        tmp_path, "bench_envs.py",
        *("--steps", "50", "--repeats", "1", "--ids", "CoEL-v0", "--scenarios", "default"),
        *("--cartpole-steps", "5000"),
    )  # fmt: skip
    # stdout: machine info, a CartPole line and one CoEL-v0 line with rates and aims
    cart = re.search(rf"CartPole-v1 .*median\s+({NUM}) steps/s", proc.stdout)
    coel = re.search(rf"CoEL-v0 .*median\s+({NUM}) steps/s.*ratio 1/(\d+)", proc.stdout)
    assert cart and coel, proc.stdout
    assert float(cart.group(1)) > 0 and float(coel.group(1)) > 0
    assert "aim >= 12,000" in proc.stdout and "ratio >= 1/13" in proc.stdout

    rows = {r["id"]: r for r in _table(text, "id")}
    assert set(rows) == {"CoEL-v0", "CartPole-v1"}
    row = rows["CoEL-v0"]
    assert row["scenario"] == "default (own)"
    assert row["servers"] == "5" and row["steps x repeats"] == "50 x 1"
    best, median = float(row["best steps/s"]), float(row["median steps/s"])
    assert 0 < median <= best
    assert float(row["median ms/step"]) > 0 and float(row["step-only median steps/s"]) > 0
    ratio = float(re.search(rf"\(({NUM})\)", row["ratio to CartPole"]).group(1))
    cart_median = float(rows["CartPole-v1"]["median steps/s"])
    assert cart_median > 0
    assert abs(ratio - median / cart_median) <= 1e-4 + 1e-3 * ratio
    assert row["meets"] in ("yes", "NO")
    assert "- cpu_count:" in text and "- numpy:" in text


@pytest.mark.slow
def test_soak_tiny(tmp_path):
    csv = tmp_path / "soak.csv"
    proc, text = _run_report(
        tmp_path, "soak.py",
        *("--steps", "300", "--sample-every", "50", "--warmup-steps", "100", "--csv", str(csv)),
    )  # fmt: skip
    s = proc.stdout
    warm = float(re.search(rf"RSS at warm-up end: ({NUM}) MB", s).group(1))
    peak = float(re.search(rf"RSS max after warm-up: ({NUM}) MB", s).group(1))
    final = float(re.search(rf"RSS final: ({NUM}) MB", s).group(1))
    growth = float(re.search(rf"growth after warm-up: ({NUM})%", s).group(1))
    verdict = re.search(r"\(limit 5%\): (PASS|FAIL)", s).group(1)
    sps = float(re.search(rf"steps/s: ({NUM})", s).group(1))
    assert 10 < warm <= peak and final <= peak and sps > 0
    assert abs(growth - 100 * (final - warm) / warm) < 0.2  # printed values are rounded
    assert verdict == ("PASS" if growth <= 5 else "FAIL")
    assert "dynamics on: " in s and "none" not in s.split("dynamics on: ")[1].splitlines()[0]
    assert "%" in proc.stderr  # the progress bar

    # samples: start, every 50 steps (warm-up end 100 among them), end
    steps = [int(line.split(",")[0]) for line in csv.read_text().splitlines()[1:]]
    assert steps == list(range(0, 301, 50))

    (row,) = _table(text, "id")
    assert row["id"] == "CoEL-v0" and (row["steps"], row["warm-up steps"]) == ("300", "100")
    assert float(row["RSS at warm-up MB"]) == warm and float(row["RSS final MB"]) == final
    assert row["verdict"] == verdict
    assert "| 100 (warm-up end) |" in text


@pytest.mark.slow
def test_bench_training_tiny(tmp_path):
    proc, text = _run_report(
        tmp_path, "bench_training.py",
        *("--ids", "CoEL-IntraDevice-v0", "--algos", "ppo", "--timesteps", "64"),
        *("--repeats", "1", "--cartpole-envs", "1"),
        timeout=180.0,
    )  # fmt: skip
    rows = _table(text, "id")
    assert [(r["id"], r["policy"]) for r in rows] == [
        ("CartPole-v1", "stock (SB3 defaults)"),
        ("CoEL-IntraDevice-v0", "stock"),
        ("CoEL-IntraDevice-v0", "fused"),
    ]
    cart, row, fused = rows
    assert cart["n_envs x n_steps"] == "1 x 2048" and float(cart["training steps/s"]) > 0
    # the fused row: its speed-up over the stock row, both as fractions of CartPole's
    f_train, s_train = float(fused["training steps/s"]), float(row["training steps/s"])
    assert abs(float(fused["x stock"]) - f_train / s_train) <= 0.006
    assert fused["learner-only with torch's checks"] == "-" and row["x stock"] == "-"
    for r in (row, fused):
        vs = float(r["vs CartPole"].removeprefix("1/"))
        assert abs(vs - float(cart["training steps/s"]) / float(r["training steps/s"])) <= 0.06
    assert row["id"] == "CoEL-IntraDevice-v0" and row["algo"] == "ppo"
    assert row["n_envs x n_steps"] == "1 x 128"  # the hyperparameter file's default entry
    assert row["timesteps x repeats"] == "64 x 1"
    train, learner = float(row["training steps/s"]), float(row["learner-only steps/s"])
    checked = float(row["learner-only with torch's checks"])
    assert 0 < train and 0 < learner and 0 < checked
    share = float(row["env share"].rstrip("%")) / 100
    assert abs(share - max(0.0, 1 - train / learner)) <= 0.006  # printed rounded
    at_aim = float(row["at the aim steps/s"])
    assert abs(at_aim - 1 / (1 / learner + 1 / 12_000)) <= 0.05 + 1e-3 * at_aim
    assert abs(float(row["gain at the aim"].lstrip("x")) - at_aim / train) <= 0.006
    assert re.search(rf"CoEL-IntraDevice-v0 .*training\s+({NUM}) steps/s", proc.stdout)


def test_masked_sampler_uniform_among_allowed():
    code = (
        "import numpy as np\n"
        "from experiments.bench_envs import MaskedSampler\n"
        "s = MaskedSampler(np.array([3, 1, 4]), np.random.default_rng(0))\n"
        "mask = np.array([1, 0, 1, 1, 0, 1, 0, 0], bool)\n"
        "a = np.array([s.sample(mask) for _ in range(6000)])\n"
        "assert set(a[:, 0]) == {0, 2} and set(a[:, 1]) == {0} and set(a[:, 2]) == {1}\n"
        "share = (a[:, 0] == 0).mean()\n"
        "assert 0.45 < share < 0.55, share\n"
        "print('ok')\n"
    )
    assert _run("-c", code).stdout.strip() == "ok"


@pytest.mark.slow
def test_bench_floor_tiny(tmp_path):
    _, text = _run_report(tmp_path, "bench_floor.py", "--steps", "30", "--warmup", "5", timeout=240)
    rows = _table(text, "workload")
    assert [(r["workload"].split()[0], r["scenario"]) for r in rows] == [
        ("World.step", "default"), ("World.step", "large"),
        ("CoEL-v0", "default"), ("CoEL-v0", "large"),
    ]  # fmt: skip
    for r in rows:
        now = float(r["steps/s now"].replace(",", ""))
        bound = float(r["bound steps/s"].replace(",", ""))
        kernel, cost = float(r["kernel us/step"]), float(r["of which cost model"])
        assert now > 0 and 0 < kernel and 0 <= cost <= kernel
        assert 0 < float(r["kernel share"].rstrip("%")) <= 100  # part of its own run
        aim = float(r["aim"].replace(",", ""))
        assert r["aim reachable"] == ("yes" if bound >= aim else "**no**")


def test_kernel_timer_wraps_and_restores():
    code = (
        "import experiments.bench_floor as bf\n"
        "import coel_env.core.world as w, coel_env.core.kernels.serving as k\n"
        "import coel_env.core.batching as b\n"
        "orig, orig_b = w.serve_kernel, b.batch_kernel\n"
        "with bf.KernelTimer() as t:\n"
        "    assert w.serve_kernel is not orig and b.batch_kernel is not orig_b\n"
        "    world = w.World('default', {'serving.batching': 'offered'})\n"
        "    world.reset(0); world.step(); world.step()\n"
        "assert w.serve_kernel is orig and k.cost_kernel.__class__.__name__ == 'CPUDispatcher'\n"
        "assert b.batch_kernel is orig_b\n"
        "assert t.calls['serve_kernel'] == 2 and t.seconds['serve_kernel'] > 0\n"
        "assert t.calls['cost_kernel'] >= 1 and t.calls['batch_kernel'] == 0\n"
        "with bf.KernelTimer() as t:\n"
        "    world = w.World('default'); world.reset(0); world.step(); world.step()\n"
        "assert b.batch_kernel is orig_b and w.serve_kernel is orig\n"
        "assert t.calls['batch_kernel'] >= 2 and t.seconds['batch_kernel'] > 0\n"
        "assert t.calls['serve_kernel'] == 0\n"
        "print('ok')\n"
    )
    assert _run("-c", code).stdout.strip() == "ok"


@pytest.mark.slow
def test_bench_training_own_policy_on_the_graph_env(tmp_path):
    """``--policies own`` keeps the hyperparameters' GraphPolicy: a Dict observation and a
    Discrete action, on the real env and on the null env."""
    proc, text = _run_report(
        tmp_path, "bench_training.py",
        *("--ids", "CoEL-Graph-v0", "--algos", "maskable_ppo", "--policies", "own"),
        *("--n-envs", "1", "--timesteps", "64", "--repeats", "1", "--cartpole-envs", "0"),
        timeout=300.0,
    )  # fmt: skip
    (row,) = _table(text, "id")
    assert (row["id"], row["policy"]) == ("CoEL-Graph-v0", "own")
    assert row["n_envs x n_steps"] == "1 x 128"  # the shipped n_steps, --n-envs 1
    assert float(row["training steps/s"]) > 0 and float(row["learner-only steps/s"]) > 0
    assert row["learner-only with torch's checks"] == "-" and row["x stock"] == "-"


def test_transfer_ratio_measures_the_way_from_naive_to_the_reference(tmp_path, capsys):
    """(rl - naive) / (reference - naive) of the mean returns, greedy by default, another
    policy with --reference; a reference without rows is an error naming it."""
    sys.path.insert(0, str(ROOT))
    try:
        from experiments import transfer_ratio
    finally:
        sys.path.remove(str(ROOT))
    rows = ["policy,seed,return"]
    for seed, (rl, naive, greedy, milp) in enumerate(
        [(8.0, 0.0, 10.0, 16.0), (10.0, 2.0, 12.0, 18.0)]
    ):
        rows += [f"rl,{seed},{rl}", f"naive,{seed},{naive}", f"greedy,{seed},{greedy}",
                 f"milp-periodic,{seed},{milp}"]  # fmt: skip
    f = tmp_path / "e.csv"
    f.write_text("\n".join(rows) + "\n")
    assert transfer_ratio.main([f"x={f}", "--policy", "rl"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("| 0.80 |")  # 8 / 10
    assert transfer_ratio.main([f"x={f}", "--policy", "rl", "--reference", "milp-periodic"]) == 0
    out = capsys.readouterr().out
    assert "milp-periodic - naive" in out and out.splitlines()[-1].endswith("| 0.50 |")  # 8 / 16
    assert transfer_ratio.main([f"x={f}", "--policy", "rl", "--reference", "static"]) == 2
    assert "no rows of policy 'static'" in capsys.readouterr().err


def test_fixed_plans_hands_one_plan_and_keeps_it(tmp_path):
    """experiments/fixed_plans.py: the plan it sends has the asked homes and bits, every
    later epoch keeps it, its episodes are the harness's, and bad --homes is refused."""
    import csv

    sys.path.insert(0, str(ROOT))
    from agents import harness
    from coel_env.core.world import World
    from experiments.fixed_plans import FixedPlan, main, parse_homes

    homes = parse_homes("0,1,2;3,4")
    assert homes == ((0, 1, 2), (3, 4))
    world = World("default")
    pol = FixedPlan(homes, 4, "fixed:test")
    got = harness.run_episode(pol, "default", 0, 3, world=world)
    plans = list(world.plan.models.values())
    assert [mp.home for mp in plans] == [(0, 1, 2), (3, 4)]
    assert all((mp.bits == 4).all() and set(np.unique(mp.location)) <= {0, 1} for mp in plans)
    assert got.metrics["invalid_epochs"] == 0
    out = tmp_path / "ep.csv"
    assert main(["--seeds", "1", "--epochs", "3", "--homes", "0,1,2;3,4", "--out", str(out)]) == 0
    (row,) = csv.DictReader(out.open())
    assert row["policy"] == "fixed:0,1,2;3,4" and float(row["return"]) == got.metrics["return"]
    assert main(["--seeds", "1", "--epochs", "1", "--homes", "0,9;1"]) == 2  # server 9 of 5
    assert main(["--seeds", "1", "--epochs", "1", "--homes", "0,1"]) == 2  # one model of 2
    with pytest.raises(SystemExit):
        main(["--homes", "a;b"])


def test_final_plan_reports_the_plan_and_edits_of_the_episode(tmp_path, capsys):
    """experiments/final_plan.py: the return is the harness's episode of the policy, the
    homes and bits are those of the world's plan at the end, the edits are counted by
    kind; a missing policy is refused."""
    import csv

    sys.path.insert(0, str(ROOT))
    from agents import harness
    from agents.evaluate_cli import load_rl_policy
    from coel_env.core.world import World
    from experiments.final_plan import main

    run = ROOT / "results" / "policies" / "maskable_ppo-CoEL-Graph-v0-default"
    policy, config, _ = load_rl_policy(run)
    world = World("default")
    got = harness.run_episode(policy, "default", 0, 3, reward_config=config, world=world)
    out = tmp_path / "plans.csv"
    assert main([str(run), "--seeds", "1", "--epochs", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["model"] for r in rows] == list(world.plan.models)
    for r, mp in zip(rows, world.plan.models.values(), strict=True):
        assert float(r["return"]) == got.metrics["return"]
        assert r["homes"] == ",".join(map(str, mp.home))
        assert r["bits"] == f"4:{mp.bits.size}"  # the policy sets every group to 4 bits
        assert r["edits"] == "bits:8"  # ... with 8 edits in these 3 epochs
    assert "homes 0,1,2,3,4" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nothing"), "--seeds", "1"])


def test_fixed_plans_all_home_sets_lists_every_assignment():
    """--all-home-sets: every server runs a non-empty set of the models and every model
    has a home (7 of 9 assignments on 2 servers and 2 models), no duplicates; a count
    above the cap is refused."""
    sys.path.insert(0, str(ROOT))
    from experiments.fixed_plans import all_home_sets, parse_homes

    two = all_home_sets(2, 2)
    assert len(two) == len(set(two)) == 7
    assert "0;1" in two and "0,1;0,1" in two and "0,1;" not in two
    for text in all_home_sets(5, 2):
        homes = parse_homes(text)
        assert all(homes) and set().union(*map(set, homes)) == set(range(5))
    assert len(all_home_sets(5, 2)) == 241
    with pytest.raises(ValueError, match="above 1000; give --homes instead"):
        all_home_sets(7, 3)


def test_home_potential_prices_every_one_edit_home_change(tmp_path, capsys):
    """experiments/home_potential.py: one row per home move and drop of the all-homes
    plan, each priced by the shaping's potential."""
    import csv

    from coel_env.core.world import World
    from experiments.home_potential import fixed_plan, main, one_edit_drafts

    w = World("default")
    w.reset(0)
    plan = fixed_plan(w, 4)
    assert all(mp.home == tuple(range(w.n)) for mp in plan.models.values())
    assert all((mp.bits == 4).all() for mp in plan.models.values())
    labels = [label for label, _ in one_edit_drafts(plan)]
    assert len(labels) == len(set(labels)) == 2 * len(plan.models) * w.n
    out = tmp_path / "pot.csv"
    assert main(["--seeds", "1", "--at", "2", "--epochs", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["edit"] for r in rows) == sorted(labels)
    values = [float(r["potential"]) for r in rows]
    assert all(np.isfinite(values)) and any(v != 0.0 for v in values)
    assert "home_move[qwen1.5-moe-a2.7b, s2]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--at", "0"])
