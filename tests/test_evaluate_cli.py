"""`coel evaluate`: a saved policy through the baselines' harness, row-compatible output."""

import json
import os
from pathlib import Path

import pytest

from agents.train import train
from coel_env.cli import main


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every run folder lands under the test's own ``runs/``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return train(
        "maskable_ppo", "CoEL-IntraDevice-v0", timesteps=128, seed=0, run_dir=root / "run",
        eval_freq=0, checkpoint_freq=0, normalize=True, eval_seeds=[0],
    )  # fmt: skip


def test_evaluate_prints_the_baselines_json_rows(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--seeds", "2", "--epochs", "4", "--json",
                 "--out", str(tmp_path / "e.csv")]) == 0  # fmt: skip
    rl = json.loads(capsys.readouterr().out)
    assert main(["baselines", "--env", "CoEL-IntraDevice-v0", "--policies", "naive",
                 "--seeds", "2", "--epochs", "4", "--json",
                 "--out", str(tmp_path / "b.csv")]) == 0  # fmt: skip
    base = json.loads(capsys.readouterr().out)
    assert set(rl[0]) == set(base[0])
    assert rl[0]["policy"] == "rl:run" and rl[0]["seeds"] == 2


def test_first_seed_evaluates_the_seeds_it_names(run_dir, tmp_path, capsys):
    out = tmp_path / "held.csv"
    assert main(["evaluate", str(run_dir), "--seeds", "2", "--first-seed", "100",
                 "--epochs", "2", "--out", str(out)]) == 0  # fmt: skip
    assert "2 seeds (100-101)" in capsys.readouterr().out
    assert [r.split(",")[2] for r in out.read_text().splitlines()[1:]] == ["100", "101"]


def test_evaluation_is_deterministic(run_dir, tmp_path, capsys):
    outs = []
    for k in range(2):
        main(["evaluate", str(run_dir), "--seeds", "1", "--epochs", "4", "--json",
              "--out", str(tmp_path / f"{k}.csv")])  # fmt: skip
        outs.append(json.loads(capsys.readouterr().out)[0]["return_mean"])
    assert outs[0] == outs[1]


def test_another_trace_of_the_same_shape_works_and_another_shape_fails(run_dir, tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n1,100,20\n3,300,40\n12,50,10\n")
    rc = main(["evaluate", str(run_dir), "--seeds", "1", "--epochs", "3", "--trace", str(trace),
               "--out", str(tmp_path / "t.csv.out")])  # fmt: skip
    assert rc == 0
    rc = main(["evaluate", str(run_dir), "--seeds", "1", "--epochs", "3",
               "--set", "topology.n_servers=3", "--out", str(tmp_path / "x.csv")])  # fmt: skip
    assert rc == 2
    assert "trained on observations of shape" in capsys.readouterr().err


def test_missing_and_corrupt_model_files(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(tmp_path / "a.csv")]) == 2
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    assert main(["evaluate", str(bad), "--out", str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "bad.zip" in err


def test_twice_without_out_makes_two_run_folders(run_dir, tmp_path, capsys):
    folders = []
    for _ in range(2):
        assert main(["evaluate", str(run_dir), "--seeds", "1", "--epochs", "2", "--json"]) == 0
        out, err = capsys.readouterr()
        rows = json.loads(out)  # stdout: the JSON list only; the folder is on stderr
        folder = Path(err.strip().splitlines()[-1].removeprefix("results: "))
        assert folder.parent == Path("runs")
        assert folder.name.startswith("evaluate-CoEL-IntraDevice-v0-intra-")
        assert json.loads((folder / "summary.json").read_text()) == rows
        assert len((folder / "episodes.csv").read_text().splitlines()) == 2
        assert (folder / "args.yml").is_file() and (folder / "command.txt").is_file()
        folders.append(folder)
    assert folders[0] != folders[1]
    assert sorted(os.listdir(tmp_path)) == ["runs"]


def test_an_existing_out_needs_force_and_is_checked_before_loading(run_dir, tmp_path, capsys):
    out = tmp_path / "e.csv"
    out.write_text("precious\n")
    # the model is not even loaded: the missing one is not what the error names
    assert main(["evaluate", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} exists" in err and "--force" in err and "nothing" not in err
    assert out.read_text() == "precious\n"
    argv = ["evaluate", str(run_dir), "--seeds", "1", "--epochs", "2", "--out", str(out)]
    assert main([*argv, "--force"]) == 0
    assert out.read_text().startswith("policy,sees,seed")
    assert capsys.readouterr().out.splitlines()[-1] == f"results: {out}"
    assert sorted(os.listdir(tmp_path)) == ["e.csv"]


def test_ctrl_c_keeps_the_finished_episodes(run_dir, tmp_path, capsys, interrupt_at):
    interrupt_at(2)
    assert main(["evaluate", str(run_dir), "--seeds", "3", "--epochs", "2"]) == 130
    err = capsys.readouterr().err
    (folder,) = Path("runs").iterdir()
    assert len((folder / "episodes.csv").read_text().splitlines()) == 2
    assert (folder / "INCOMPLETE").is_file() and "Traceback" not in err
    assert f"interrupted after 1 of 3 episodes; the finished ones are in {folder}" in err


def test_best_without_a_best_model_says_it_uses_model_zip(run_dir, tmp_path, capsys):
    assert not (run_dir / "best_model.zip").exists()  # trained with eval_freq=0
    argv = ["evaluate", str(run_dir), "--best", "--seeds", "1", "--epochs", "2",
            "--out", str(tmp_path / "b.csv")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"notice: --best: {str(run_dir)!r} has no best_model.zip" in err
    assert f"using {run_dir / 'model.zip'}" in err
    assert main(["evaluate", str(run_dir), "--seeds", "1", "--epochs", "2",
                 "--out", str(tmp_path / "d.csv")]) == 0  # fmt: skip
    assert "notice" not in capsys.readouterr().err  # without --best: nothing to say


def test_a_run_folder_without_config_yml_is_refused(run_dir, tmp_path, capsys):
    """Its custom reward weights would be lost: the env's defaults are not the run's."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "config.yml").unlink()
    assert main(["evaluate", str(copy), "--seeds", "1", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert f"coel evaluate: error: {str(copy / 'config.yml')!r} is missing" in err
    assert "restore it" in err and not Path("runs").exists()


def test_a_model_zip_outside_a_run_folder_uses_the_env_defaults_with_a_notice(
    run_dir, tmp_path, capsys
):
    import shutil

    bare = tmp_path / "elsewhere" / "policy.zip"
    bare.parent.mkdir()
    shutil.copy(run_dir / "model.zip", bare)
    argv = ["evaluate", str(bare), "--seeds", "1", "--epochs", "2",
            "--out", str(tmp_path / "e.csv")]  # fmt: skip
    assert main(argv) == 2
    assert "the env id is unknown; pass --env" in capsys.readouterr().err
    assert main([*argv, "--env", "CoEL-IntraDevice-v0"]) == 0
    err = capsys.readouterr().err
    assert f"notice: {str(bare)!r} is not in a coel train run folder" in err
    assert "evaluating with CoEL-IntraDevice-v0's default config" in err
