"""The study scripts (ablation, sensitivity) via ``coel study``: tiny runs, bad input."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.base import Observation
from coel_env.core.world import World
from experiments import ablation, studies

ROOT = Path(__file__).resolve().parents[1]


def _coel(*argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coel_env.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ablation_tiny_through_the_cli(tmp_path):
    out = tmp_path / "abl"
    proc = _coel(
        "study", "ablation", "--seeds", "1", "--epochs", "2", "--every", "1", "--out-dir", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("table.md", "table.csv", "episodes.csv", "bars.png", "config.yaml", "command.txt"):
        assert (out / name).is_file(), name
    rows = {r["policy"]: r for r in _rows(out / "table.csv")}
    assert list(rows) == [v.label for v in ablation.variants(1)]
    assert float(rows[ablation.FULL_LABEL]["score"]) == pytest.approx(1.0)
    assert rows["perfect perception"]["sees"] == "oracle"
    assert rows["no compression"]["quality_loss_mean"] == "0.0"  # 16 bits, keep 1: no loss
    assert len(_rows(out / "episodes.csv")) == len(rows)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["study"] == "ablation" and cfg["seeds"] == 1 and cfg["epochs"] == 2
    assert (out / "command.txt").read_text().startswith("coel study ablation")
    assert "| coel (full) |" in proc.stdout


def test_sensitivity_tiny_rows_per_point(tmp_path):
    out = tmp_path / "sens"
    proc = _coel(
        "study",
        "sensitivity",
        "--policies",
        "naive,greedy-oracle",
        "--loads",
        "0.5",
        "4",
        "--periods",
        "3",
        "--seeds",
        "1",
        "--epochs",
        "3",
        "--out-dir",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out / "table.csv")
    # 2 loads x 2 policies, and the period sweep only for the view-based policy (naive)
    assert [r["policy"] for r in rows] == [
        "naive @ load x0.5",
        "greedy-oracle @ load x0.5",
        "naive @ load x4",
        "greedy-oracle @ load x4",
        "naive @ period 3s",
    ]
    assert [r["group"] for r in rows][-1] == "period 3 s"
    assert (out / "sensitivity.png").is_file()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["loads"] == [0.5, 4.0] and cfg["periods"] == [3.0]


def test_sensitivity_load_reaches_the_world():
    """The load factor changes the world's request rate (the override is applied)."""
    seen = {}

    class Count:
        name, sees = "count", "oracle"

        def reset(self, world, seed):
            seen.setdefault(world.scenario.workload.rate_per_s, 0)

        def act(self, world, obs):
            return None

    vs = [studies.Variant(f"x{f}", Count, {"workload.rate_per_s": 0.06 * f}) for f in (1, 4)]
    res = studies.run_variants(vs, "default", [0], 2, progress=False)
    assert sorted(seen) == pytest.approx([0.06, 0.24])
    assert [r.policy for r in res] == ["x1", "x4"]


def test_local_only_sees_only_the_controller():
    world = World("default")
    world.reset(0)
    for _ in range(2):
        world.step()
    got = {}

    class Spy:
        name, sees = "spy", "view"

        def reset(self, world, seed):
            pass

        def act(self, world, obs):
            got["obs"] = obs
            return None

    pol = ablation.LocalOnly(Spy(), "local")
    obs = Observation.from_view(world, ablation.CONTROLLER)
    assert obs.up.sum() > 1  # the view has heard from neighbours
    pol.act(world, obs)
    seen = got["obs"]
    others = np.arange(world.n) != ablation.CONTROLLER
    assert not seen.up[others].any() and np.isinf(seen.age_s[others]).all()
    assert (seen.demand_per_s[others] == 0).all()
    assert seen.up[ablation.CONTROLLER] == obs.up[ablation.CONTROLLER]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["ablation", "--seeds", "0"], "--seeds 0 is not allowed"),
        (["sensitivity", "--seeds", "100001"], "--seeds 100001 is not allowed; must be at most"),
        (["ablation", "--every", "0"], "--every 0 is not allowed"),
        (["sensitivity", "--policies", "nope"], "unknown policy 'nope'"),
        (["sensitivity", "--loads", "-1"], "--loads -1.0 is not allowed"),
    ],
)
def test_study_bad_input(argv, needle, tmp_path):
    proc = _coel("study", *argv, "--out-dir", str(tmp_path / "o"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr


@pytest.mark.slow
def test_study_refuses_a_non_empty_out_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = _coel(
        "study", "ablation", "--seeds", "1", "--epochs", "1", "--out-dir", str(tmp_path), timeout=60
    )
    assert proc.returncode == 2 and "not overwritten" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_probe_encoding_tiny():
    proc = subprocess.run(
        [sys.executable, "experiments/probe_encoding.py", "--redeploys", "3", "--seeds", "1",
         "--epochs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 random one-shot redeploys:" in proc.stdout
    homes = [line for line in proc.stdout.splitlines() if line.startswith("homes after")]
    assert [h.split(" under ")[1].split(":")[0] for h in homes] == [
        "naive", "greedy", "milp-oracle"
    ]  # fmt: skip
