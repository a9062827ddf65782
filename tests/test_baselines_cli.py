"""`coel baselines`: the table, the JSON list, the CSV, run folders and bad input."""

import json
import os
from pathlib import Path

import pytest

from agents import cli_common
from agents.registry import make_policy, policy_names
from coel_env.cli import main

SMALL = ["baselines", "--policies", "naive", "--seeds", "1", "--epochs", "2"]


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every run folder lands under the test's own ``runs/``."""
    monkeypatch.chdir(tmp_path)


def test_json_list_has_one_object_per_policy_with_the_documented_keys(tmp_path, capsys):
    out = tmp_path / "b.csv"
    argv = ["baselines", "--policies", "naive,greedy", "--seeds", "2", "--epochs", "4",
            "--json", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in rows] == ["naive", "greedy"]
    for r in rows:
        for k in (
            "policy",
            "return_mean",
            "return_ci95",
            "slo_attainment_mean",
            "decision_ms_mean",
        ):
            assert k in r
    lines = out.read_text().splitlines()
    assert lines[0].startswith("policy,sees,seed,epochs,return") and len(lines) == 1 + 2 * 2


def test_same_seeds_same_numbers(tmp_path, capsys):
    args = ["baselines", "--policies", "greedy", "--seeds", "2", "--epochs", "3", "--json"]
    main([*args, "--out", str(tmp_path / "a.csv")])
    a = json.loads(capsys.readouterr().out)
    main([*args, "--out", str(tmp_path / "b.csv")])
    b = json.loads(capsys.readouterr().out)
    for x, y in zip(a, b, strict=True):
        assert x["return_mean"] == y["return_mean"]
        assert x["slo_attainment_mean"] == y["slo_attainment_mean"]


def test_existing_output_is_not_overwritten(tmp_path, capsys, monkeypatch):
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    ran = []
    monkeypatch.setattr("agents.harness.evaluate", lambda *a, **k: ran.append(1))
    rc = main([*SMALL, "--out", str(out)])
    assert rc == 2 and out.read_text() == "precious\n" and not ran  # refused before any episode
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} exists" in err and "--force" in err
    monkeypatch.undo()
    assert main([*SMALL, "--out", str(out), "--force"]) == 0
    assert out.read_text().startswith("policy,sees,seed")
    assert capsys.readouterr().out.splitlines()[-1] == f"results: {out}"
    assert sorted(os.listdir(tmp_path)) == ["keep.csv"]  # --out: no run folder


def test_out_in_a_missing_folder_or_on_a_folder_is_refused(tmp_path, capsys):
    assert main([*SMALL, "--out", str(tmp_path / "no" / "x.csv")]) == 2
    assert "its folder" in capsys.readouterr().err
    assert main([*SMALL, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        main([*SMALL, "--out", "x.csv", "--runs-root", "r"])
    assert "not allowed with argument --out" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


def test_twice_without_out_makes_two_run_folders(tmp_path, capsys):
    folders = []
    for _ in range(2):
        assert main([*SMALL, "--json"]) == 0
        out, err = capsys.readouterr()
        rows = json.loads(out)
        folder = Path(err.strip().splitlines()[-1].removeprefix("results: "))
        assert folder.parent == Path("runs") and folder.is_dir()
        assert folder.name.startswith("baselines-CoEL-v2-default-")  # the current id
        assert json.loads((folder / "summary.json").read_text()) == rows
        lines = (folder / "episodes.csv").read_text().splitlines()
        assert lines[0].startswith("policy,sees,seed") and len(lines) == 2
        assert "policies: naive" in (folder / "args.yml").read_text()
        assert (folder / "command.txt").is_file()
        folders.append(folder)
    assert folders[0] != folders[1]
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert main([*SMALL, "--runs-root", "mine"]) == 0
    folder = Path(capsys.readouterr().out.splitlines()[-1].removeprefix("results: "))
    assert folder.parent == Path("mine") and (folder / "episodes.csv").is_file()


def test_run_folders_are_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_common, "timestamp", lambda: "20261206-153012")  # one second
    made = [cli_common.new_run_folder("baselines", "CoEL-v2", "a/b.yaml", tmp_path / "r")
            for _ in range(3)]  # fmt: skip
    assert [p.name for p in made] == [
        "baselines-CoEL-v2-b-20261206-153012",
        "baselines-CoEL-v2-b-20261206-153012-2",
        "baselines-CoEL-v2-b-20261206-153012-3",
    ]
    assert cli_common.run_folder_name("simulate", None, "my scen", "t") == "simulate-my_scen-t"
    with pytest.raises(RuntimeError), cli_common.output_folder("x", None, None, tmp_path / "q"):
        raise RuntimeError("a run that fails")
    assert os.listdir(tmp_path / "q") == []  # no empty folder left behind


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--policies", "nope"], "unknown policy 'nope'; known policies: fiddler, greedy"),
        (["--env", "CartPole-v9"], "--env 'CartPole-v9' is not a registered id"),
        (["--seeds", "0"], "--seeds 0 is not allowed"),
        (["--first-seed", "-1"], "--first-seed -1 is not allowed; must be an integer >= 0"),
    ],
)
def test_bad_input(tmp_path, capsys, argv, message):
    rc = main(["baselines", *argv, "--out", str(tmp_path / "x.csv")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_registry_names_build_policies_with_those_names():
    for name in policy_names():
        p = make_policy(name)
        assert p.name == name
        oracle = name.endswith("oracle") or name.startswith("static")
        assert p.sees == ("oracle" if oracle else "view")


def test_first_seed_runs_the_held_out_seeds(tmp_path, capsys):
    """``--first-seed 100 --seeds 2`` runs seeds 100 and 101: the same episodes as the
    harness gives for those seeds, and not those of seeds 0 and 1."""
    from agents import harness

    out = tmp_path / "held.csv"
    argv = ["baselines", "--policies", "greedy", "--seeds", "2", "--first-seed", "100",
            "--epochs", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "2 seeds (100-101) x 3 epochs" in capsys.readouterr().out
    rows = out.read_text().splitlines()[1:]
    assert [r.split(",")[2] for r in rows] == ["100", "101"]
    want = harness.run_episode(make_policy("greedy"), "default", 101, 3).metrics["return"]
    assert float(rows[1].split(",")[4]) == pytest.approx(want, rel=0, abs=0)
    first = harness.run_episode(make_policy("greedy"), "default", 0, 3).metrics["return"]
    assert float(rows[0].split(",")[4]) != first
    assert harness.seed_list(3, 7) == [7, 8, 9]


def test_ctrl_c_keeps_the_finished_episodes_in_a_run_folder_marked_incomplete(
    tmp_path, capsys, interrupt_at
):
    interrupt_at(3)
    argv = ["baselines", "--policies", "naive,greedy", "--seeds", "2", "--epochs", "2"]
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    (folder,) = Path("runs").iterdir()
    lines = (folder / "episodes.csv").read_text().splitlines()
    assert lines[0].startswith("policy,sees,seed") and len(lines) == 1 + 2
    assert [r.split(",")[:3] for r in lines[1:]] == [["naive", "view", "0"], ["naive", "view", "1"]]
    assert "interrupted after 2 of 4 episodes" in (folder / "INCOMPLETE").read_text()
    assert (folder / "args.yml").is_file() and not (folder / "summary.json").exists()
    assert f"interrupted after 2 of 4 episodes; the finished ones are in {folder}" in err
    assert str(folder / "INCOMPLETE") in err


def test_ctrl_c_with_out_writes_an_incomplete_file_beside_it(tmp_path, capsys, interrupt_at):
    out = tmp_path / "o.csv"
    out.write_text("precious\n")
    (tmp_path / "o.incomplete.csv").write_text("an earlier one\n")
    interrupt_at(2)
    argv = ["baselines", "--policies", "naive", "--seeds", "3", "--epochs", "2",
            "--out", str(out), "--force"]  # fmt: skip
    assert main(argv) == 130
    kept = tmp_path / "o.incomplete-2.csv"
    assert len(kept.read_text().splitlines()) == 2  # header and the one finished episode
    assert out.read_text() == "precious\n"  # not replaced by partial results
    assert (tmp_path / "o.incomplete.csv").read_text() == "an earlier one\n"
    assert f"interrupted after 1 of 3 episodes; the finished ones are in {kept}" in (
        capsys.readouterr().err
    )
    interrupt_at(1)
    assert main(argv) == 130
    assert "no episode had finished: nothing to keep" in capsys.readouterr().err
