"""`coel compare`: table, figures and the end-to-end train -> evaluate -> compare path."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coel_env.cli import main

SMALL = ["compare", "--env", "CoEL-v2", "--policies", "naive", "--seeds", "1", "--epochs", "2"]


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every run folder lands under the test's own ``runs/``."""
    monkeypatch.chdir(tmp_path)


def test_end_to_end_train_evaluate_compare_through_the_cli(tmp_path):
    """Train a few hundred steps, save, reload, evaluate and compare with two baselines."""
    coel = [sys.executable, "-m", "coel_env.cli"]
    run = tmp_path / "run"
    subprocess.run(
        [*coel, "train", "--algo", "maskable_ppo", "--env", "CoEL-IntraDevice-v0",
         "--timesteps", "256", "--run-dir", str(run), "--eval-freq", "128",
         "--normalize", "--no-progress"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert (run / "model.zip").is_file() and (run / "vecnormalize.pkl").is_file()
    ev = subprocess.run(
        [*coel, "evaluate", str(run), "--seeds", "2", "--epochs", "4", "--json",
         "--out", str(tmp_path / "ev.csv")],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert '"return_mean"' in ev.stdout
    out = tmp_path / "cmp"
    subprocess.run(
        [*coel, "compare", "--env", "CoEL-IntraDevice-v0", "--runs", str(run),
         "--policies", "naive,greedy", "--seeds", "2", "--epochs", "4", "--out-dir", str(out)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    for f in ("table.md", "table.csv", "episodes.csv", "bars.png", "learning_curves.png",
              "deployment.png", "command.txt"):  # fmt: skip
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["policy"] for r in rows] == ["rl:run", "naive", "greedy"]
    assert all(float(r["return_ci95"]) >= 0 for r in rows)
    paired = (out / "paired.md").read_text()
    assert "| rl:run - other |" in paired and "| naive |" in paired and "| greedy |" in paired


def test_existing_results_folder_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "res"
    out.mkdir()
    (out / "table.md").write_text("old")
    (out / "stale.txt").write_text("old")
    ran = []
    monkeypatch.setattr("agents.harness.evaluate", lambda *a, **k: ran.append(1))
    rc = main([*SMALL, "--out-dir", str(out)])
    assert rc == 2 and (out / "table.md").read_text() == "old" and not ran
    err = capsys.readouterr().err
    assert f"--out-dir {str(out)!r} exists" in err and "--force" in err
    monkeypatch.undo()
    # --force with bad input: refused before the old results are touched
    assert main([*SMALL, "--out-dir", str(out), "--force", "--policies", "nope"]) == 2
    assert (out / "stale.txt").is_file()
    capsys.readouterr()
    assert main([*SMALL, "--out-dir", str(out), "--force"]) == 0
    assert "naive" in (out / "table.md").read_text() and not (out / "stale.txt").exists()
    assert (out / "args.yml").is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"results: {out}"
    assert sorted(os.listdir(tmp_path)) == ["res"]


def test_twice_without_out_dir_makes_two_run_folders(tmp_path, capsys):
    folders = []
    for _ in range(2):
        assert main(SMALL) == 0
        out = capsys.readouterr().out
        folder = Path(out.splitlines()[-1].removeprefix("results: "))
        assert folder.parent == Path("runs")
        assert folder.name.startswith("compare-CoEL-v2-default-")
        for f in ("table.md", "table.csv", "episodes.csv", "bars.png", "deployment.png",
                  "command.txt", "args.yml"):  # fmt: skip
            assert (folder / f).is_file(), f
        folders.append(folder)
    assert folders[0] != folders[1]
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    with pytest.raises(SystemExit):  # a run folder or --out-dir, not both
        main([*SMALL, "--out-dir", "o", "--runs-root", "r"])


@pytest.mark.parametrize(
    "argv", [["--policies", "", "--runs"], ["--seeds", "0"], ["--first-seed", "-3"]]
)
def test_bad_input(tmp_path, capsys, argv):
    rc = main(["compare", *argv, "--out-dir", str(Path(tmp_path) / "o")])
    assert rc == 2 and capsys.readouterr().err


def test_first_seed_is_in_the_table_and_the_episodes(tmp_path):
    out = tmp_path / "held"
    assert main(["compare", "--env", "CoEL-v2", "--policies", "naive", "--seeds", "2",
                 "--first-seed", "100", "--epochs", "2", "--out-dir", str(out)]) == 0  # fmt: skip
    assert "2 seeds (100-101) x 2 epochs" in (out / "table.md").read_text()
    seeds = [r.split(",")[2] for r in (out / "episodes.csv").read_text().splitlines()[1:]]
    assert seeds == ["100", "101"]


def test_ctrl_c_keeps_the_finished_episodes(tmp_path, capsys, interrupt_at):
    interrupt_at(3)
    argv = ["compare", "--env", "CoEL-v2", "--policies", "naive,greedy", "--seeds", "2",
            "--epochs", "2"]  # fmt: skip
    assert main(argv) == 130
    err = capsys.readouterr().err
    (folder,) = Path("runs").iterdir()
    assert len((folder / "episodes.csv").read_text().splitlines()) == 3
    assert (folder / "INCOMPLETE").is_file() and not (folder / "table.md").exists()
    assert f"interrupted after 2 of 4 episodes; the finished ones are in {folder}" in err
    out = tmp_path / "res"
    out.mkdir()
    (out / "table.md").write_text("old")
    interrupt_at(3)
    assert main([*argv, "--out-dir", str(out), "--force"]) == 130
    assert (out / "table.md").read_text() == "old"  # the old results are left as they were
    assert len((out / "episodes.incomplete.csv").read_text().splitlines()) == 3
    assert f"the finished ones are in {out / 'episodes.incomplete.csv'}" in capsys.readouterr().err


def test_run_folders_without_a_model_are_skipped_with_a_reason(tmp_path, capsys):
    """``--runs runs/*`` meets other commands' folders and runs that never saved a model."""
    failed = tmp_path / "runs" / "ppo-failed"
    failed.mkdir(parents=True)
    for name in ("args.yml", "config.yml", "hyperparams.yml"):
        (failed / name).write_text("{}\n")
    assert main(["baselines", "--policies", "naive", "--seeds", "1", "--epochs", "2"]) == 0
    capsys.readouterr()
    runs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert main([*SMALL, "--runs", *runs, "--out-dir", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert (
        f"coel compare: skipping {failed}: no model.zip or best_model.zip (a training run "
        "that saved no model)" in err
    )
    assert "baselines-CoEL" in err and "(not a training run)" in err
    rows = list(csv.DictReader((tmp_path / "o" / "table.csv").open()))
    assert [r["policy"] for r in rows] == ["naive"]
    assert main(["compare", "--env", "CoEL-v2", "--policies", "", "--runs", str(failed),
                 "--out-dir", str(tmp_path / "p")]) == 2  # fmt: skip
    assert "nothing to compare: no --runs folder holds a model" in capsys.readouterr().err
