"""Bad input to the ``coel`` commands: one clear line (no traceback), refused before any work.

The commands run in-process (``coel_env.cli.main``) in a temporary working folder.
"""

import os

import pytest

from coel_env.cli import main


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every run folder lands under the test's own folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_work(monkeypatch):
    """Records any episode, world or env the commands would start (they must not)."""
    started = []

    def record(what):
        def fake(*a, **k):
            started.append(what)
            raise AssertionError(f"{what} started before the destination was checked")

        return fake

    monkeypatch.setattr("agents.harness.run_episode", record("episode"))
    monkeypatch.setattr("agents.simulate_cli.make_world", record("world"))
    monkeypatch.setattr("agents.train.loop._probe_env", record("env"))
    return started


def _error(capsys) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["baselines", "--policies", "naive,greedy", "--seeds", "3", "--epochs", "20",
          "--out", "/nonexistent/dir/o.csv"],
         "--out '/nonexistent/dir/o.csv': its folder '/nonexistent/dir' does not exist"),
        (["evaluate", "some-run", "--out", "/nonexistent/dir/o.csv"],
         "--out '/nonexistent/dir/o.csv': its folder '/nonexistent/dir' does not exist"),
        (["compare", "--policies", "naive", "--seeds", "1", "--out-dir", "afile"],
         "--out-dir 'afile' is a file; must be a folder"),
        (["compare", "--policies", "naive", "--seeds", "1", "--runs-root", "afile"],
         "--runs-root 'afile' is a file; must be a folder"),
        (["baselines", "--policies", "naive", "--seeds", "1", "--runs-root", "afile"],
         "--runs-root 'afile' is a file; must be a folder"),
        (["train", "--algo", "ppo", "--env", "CoEL-IntraDevice-v0", "--timesteps", "64",
          "--runs-root", "afile"], "--runs-root 'afile' is a file; must be a folder"),
        (["train", "--algo", "ppo", "--env", "CoEL-IntraDevice-v0", "--timesteps", "64",
          "--run-dir", "afile/run"], "--run-dir 'afile/run' cannot be made: 'afile' is a file"),
        (["simulate", "--epochs", "2", "--runs-root", "afile"],
         "--runs-root 'afile' is a file; must be a folder"),
        (["simulate", "--epochs", "2", "--runs-root", "afile/sub"],
         "--runs-root 'afile/sub' cannot be made: 'afile' is a file"),
    ],
)  # fmt: skip
def test_a_bad_destination_is_refused_before_any_work(tmp_path, capsys, no_work, argv, message):
    (tmp_path / "afile").write_text("keep\n")
    assert main(argv) == 2
    err = _error(capsys)
    assert f"coel {argv[0]}: error: {message}" in err
    assert not no_work
    assert sorted(os.listdir(tmp_path)) == ["afile"]
    assert (tmp_path / "afile").read_text() == "keep\n"


@pytest.mark.parametrize("command", ["baselines", "evaluate", "compare"])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seeds", "0"], "--seeds 0 is not allowed; must be an integer >= 1"),
        (["--seeds", "-2"], "--seeds -2 is not allowed; must be an integer >= 1"),
        (["--seeds", "100000000"], "--seeds 100000000 is not allowed; must be at most 100,000"),
        (["--epochs", "0"], "--epochs 0 is not allowed; must be an integer >= 1"),
    ],
)
def test_seeds_and_epochs_out_of_range(capsys, no_work, command, flags, message):
    """``coel evaluate RUN --seeds 0`` used to run seeds 0-4, ``--epochs 0`` the env's limit."""
    argv = {"baselines": ["baselines", "--policies", "naive"],
            "evaluate": ["evaluate", "some-run"],
            "compare": ["compare", "--policies", "naive"]}[command]  # fmt: skip
    assert main([*argv, *flags]) == 2
    assert f"coel {command}: error: {message}" in _error(capsys)
    assert not no_work and not os.path.exists("runs")


def test_evaluate_episodes_is_checked_like_seeds(capsys, no_work):
    assert main(["evaluate", "some-run", "--episodes", "0"]) == 2
    assert "--episodes 0 is not allowed; must be an integer >= 1" in _error(capsys)
