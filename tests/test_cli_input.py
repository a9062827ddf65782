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


def test_evaluate_torch_threads_is_checked(capsys, no_work):
    assert main(["evaluate", "some-run", "--torch-threads", "-1"]) == 2
    assert "--torch-threads -1 is not allowed; must be an integer >= 0" in _error(capsys)


# ------------------------------------------------------------------ advice that can be followed


def _advice_works(capsys, argv, problem, setting, warning, bad, refusal):
    """``argv`` is refused with ``problem`` and the advice ``--set setting``; with that
    setting it runs (warning ``warning``); the setting ``bad`` is refused with ``refusal``."""
    assert main(argv) == 2
    err = _error(capsys)
    assert problem in err
    assert f"--set {setting}" in err
    with pytest.warns(UserWarning, match=warning):
        assert main([*argv, "--set", setting]) == 0  # the advice works
    assert main([*argv, "--set", bad]) == 2
    assert refusal in _error(capsys)


def test_an_unsorted_trace_names_a_setting_that_sorts_it(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n2,100,20\n1,300,40\n12,50,10\n")
    _advice_works(
        capsys, ["simulate", "--trace", str(trace), "--epochs", "2", "--json"],
        "row 2 (line 3), column 'arrival_s': '1' is earlier than row 1", "workload.sort=true",
        "row\\(s\\) out of timestamp order",
        "workload.sort=maybe", "workload.sort='maybe' is not allowed; must be true or false",
    )  # fmt: skip


def test_a_graphml_without_coordinates_names_a_setting_for_its_latency(tmp_path, capsys):
    gml = tmp_path / "nocoords.graphml"
    gml.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n'
        '<key attr.name="label" attr.type="string" for="node" id="d0"/>\n'
        '<graph edgedefault="undirected">\n'
        + "".join(f'<node id="{c}"><data key="d0">{c}</data></node>\n' for c in "ABC")
        + '<edge source="A" target="B"/>\n<edge source="B" target="C"/>\n'
        "</graph>\n</graphml>\n",
        encoding="utf-8",
    )
    _advice_works(
        capsys, ["simulate", "--topology", str(gml), "--epochs", "2", "--json"],
        "no node has Latitude/Longitude", "topology.default_latency_ms=5",
        "3 of 3 nodes have no Latitude/Longitude",
        "topology.default_latency_ms=-1",
        "topology.default_latency_ms=-1 is not allowed; must be a number > 0",
    )  # fmt: skip


def test_a_negative_seed_names_the_flag(capsys, no_work):
    assert main(["simulate", "--seed", "-1", "--epochs", "2"]) == 2
    assert "coel simulate: error: --seed -1 is not allowed; must be an integer >= 0" in _error(
        capsys
    )
    assert not no_work


def test_a_negative_world_seed_is_a_clear_error():
    from coel_env.core.world import World

    with pytest.raises(ValueError, match=r"seed=-1 is not allowed; must be None or an integer >= "):
        World("default").reset(-1)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--imitate", "greedy", "--imitate-demos", "nope.npz"],
         "--imitate-demos nope.npz: no such demonstrations file"),
        (["--imitate", "greedy", "--imitate-demos", "afile"],
         "--imitate-demos afile: no such demonstrations file"),
        (["--imitate", "greedy", "--imitate-demos", "junk.npz"],
         "--imitate-demos junk.npz: not a demonstrations file"),
        (["--imitate-demos", "junk.npz"], "--imitate-demos goes with --imitate POLICY"),
        (["--imitate-rounds", "2"], "--imitate-rounds goes with --imitate POLICY"),
        (["--imitate", "nope"], "--imitate 'nope' is not a known policy"),
    ],
)  # fmt: skip
def test_imitation_errors_name_the_flag_that_was_given(tmp_path, capsys, flags, message):
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    argv = ["train", "--algo", "maskable_ppo", "--env", "CoEL-v2", "--timesteps", "64",
            "--no-progress", *flags]  # fmt: skip
    assert main(argv) == 2
    assert f"coel train: error: {message}" in _error(capsys)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ defaults and help


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _every_command() -> list[tuple[str, ...]]:
    from coel_env.cli import subcommands
    from experiments.study_cli import STUDIES

    cmds = [(name,) for name, _, _ in subcommands()]
    return cmds + [("study", s) for s in STUDIES]


@pytest.mark.parametrize("argv", _every_command(), ids=" ".join)
def test_help_pages_are_plain_text(capsys, argv):
    """The descriptions come from the modules' docstrings (reStructuredText)."""
    text = _help(capsys, *argv)
    assert text.startswith("usage: coel")
    for markup in ("``", ":class:", ":func:", ":mod:", ":meth:", ":data:", ":attr:", "`"):
        assert markup not in text, f"{markup!r} in coel {' '.join(argv)} --help"


def test_plain_text_renders_roles_and_literals():
    from coel_env.cli import plain_text

    doc = (
        "Uses :class:`~coel_env.core.world.World`, :func:`agents.harness.evaluate`, "
        ":py:meth:`step <World.step>` and ``--seeds N``; see `this`."
    )
    assert plain_text(doc) == ("Uses World, agents.harness.evaluate, step and --seeds N; see this.")
    assert plain_text(None) is None


def test_train_help_names_the_current_env_and_every_imitation_option(capsys):
    text = _help(capsys, "train")
    assert "CoEL-v2 (the current one)" in text and "version-1 envs" not in text
    for flag in ("--imitate-rounds", "--imitate-demos FILE.npz", "--imitate POLICY|FILE.npz"):
        assert flag in text


@pytest.mark.parametrize("command", ["baselines", "compare"])
def test_baselines_and_compare_default_to_the_current_env(command, capsys):
    from coel_env.cli import build_parser

    assert "default CoEL-v2" in _help(capsys, command)
    args = build_parser().parse_args([command])
    assert args.env == "CoEL-v2"


def test_rows_with_other_keys_keep_every_column(tmp_path):
    """An interrupted `coel bench` keeps MILP episodes (with solver counts) beside others:
    the CSV has every key of any row, empty where a row lacks it."""
    import csv

    from agents.cli_common import write_csv

    rows = [{"policy": "naive", "return": 1.0},
            {"policy": "static", "return": 2.0, "solves_optimal": 1}]  # fmt: skip
    write_csv(tmp_path / "e.csv", rows)
    with (tmp_path / "e.csv").open(newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["solves_optimal"] for r in back] == ["", "1"]
    assert [r["return"] for r in back] == ["1.0", "2.0"]
