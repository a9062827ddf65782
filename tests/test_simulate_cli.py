"""``coel simulate``: JSON, conservation, determinism, load, traces, topologies, bad input,
run folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents import simulate_cli
from coel_env.cli import main
from coel_env.core.scenario import parse_set, scenario_overrides, trace_overrides

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REQUIRED = (
    "scenario", "seed", "epochs", "requests_arrived", "requests_served", "requests_dropped",
    "dropped_no_model", "dropped_overload", "slo_attainment", "latency_p50_ms", "latency_p95_ms",
    "ttft_p95_ms", "tpot_mean_ms", "throughput_tok_s", "quality_loss", "energy_j",
    "activation_bytes", "broadcast_bytes", "migration_bytes", "wall_s", "epochs_per_s",
)  # fmt: skip
TIMING = ("wall_s", "epochs_per_s")


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every run folder lands under the test's own ``runs/``."""
    monkeypatch.chdir(tmp_path)


def _sim(capsys, *argv):
    rc = main(["simulate", "--json", *argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)  # the whole of stdout is one JSON object


def _bad(capsys, *argv):
    rc = main(["simulate", *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and not out
    assert err.startswith("coel simulate: error: ") and err.count("\n") == 1
    return err


def _untimed(d):
    return {k: v for k, v in d.items() if k not in TIMING}


def test_json_has_the_metrics_and_conserves_requests(capsys):
    d = _sim(capsys, "--epochs", "8", "--seed", "3")
    for k in REQUIRED:
        assert k in d, k
    assert d["scenario"] == "default" and d["seed"] == 3 and d["epochs"] == 8
    assert d["requests_arrived"] > 0
    assert d["requests_served"] + d["requests_dropped"] == d["requests_arrived"]
    assert d["dropped_no_model"] + d["dropped_overload"] == d["requests_dropped"]
    assert 0.0 <= d["slo_attainment"] <= 1.0
    assert d["latency_p95_ms"] >= d["latency_p50_ms"] > 0
    assert d["epochs_per_s"] > 0


def test_same_seed_same_metrics_and_another_seed_differs(capsys):
    a = _sim(capsys, "--epochs", "6", "--seed", "5")
    b = _sim(capsys, "--epochs", "6", "--seed", "5")
    c = _sim(capsys, "--epochs", "6", "--seed", "6")
    assert _untimed(a) == _untimed(b)
    assert _untimed(a) != _untimed(c)


def test_the_table_output_names_every_metric(capsys):
    assert main(["simulate", "--epochs", "2", "--scenario", "static"]) == 0
    out = capsys.readouterr().out
    rows = dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())
    assert rows["scenario"] == "static" and rows["epochs"] == "2"
    for k in REQUIRED:
        assert k in rows, k


def test_higher_load_does_not_raise_slo_attainment(capsys):
    def slo(rate):
        d = _sim(capsys, "--scenario", "static", "--epochs", "40", "--set",
                 f"workload.rate_per_s={rate}")  # fmt: skip
        assert d["overrides"] == {"workload.rate_per_s": rate}
        return d

    lo, hi = slo(0.02), slo(0.15)
    assert hi["requests_arrived"] > lo["requests_arrived"]
    assert hi["slo_attainment"] <= lo["slo_attainment"]


def test_set_parses_values_as_yaml():
    assert parse_set(["a.b=0.1", "c=true", "d=[1, 2]", "e=text", "f=x=y", "g="]) == {
        "a.b": 0.1,
        "c": True,
        "d": [1, 2],
        "e": "text",
        "f": "x=y",
        "g": None,
    }


def test_replays_a_generic_trace(tmp_path, capsys):
    f = tmp_path / "trace.csv"
    # 20 requests 1 s apart: the replay repeats every 20 s (last arrival + mean gap),
    # so 4 epochs of 10 s see the trace exactly twice.
    rows = "".join(f"{t}.0,64,8\n" for t in range(20))
    f.write_text("arrival_s,input_tokens,output_tokens\n" + rows)
    d = _sim(capsys, "--scenario", "static", "--epochs", "4", "--trace", str(f))
    assert d["overrides"]["workload.kind"] == "generic"
    assert d["requests_arrived"] == 40
    assert d["requests_served"] + d["requests_dropped"] == 40


def test_an_azure_header_selects_the_azure_loader(tmp_path):
    f = tmp_path / "azure.csv"
    f.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,100,10\n2023-11-16 18:17:05.0000000,50,5\n"
    )
    assert trace_overrides(f) == {"workload.kind": "azure", "workload.trace": str(f)}


def test_runs_on_the_abilene_topology(capsys):
    f = DATA / "topologies" / "topology_zoo" / "Abilene.graphml"
    if not f.exists():
        pytest.skip(f"{f} not present")
    d = _sim(capsys, "--epochs", "3", "--topology", str(f))
    assert d["overrides"] == {"topology.kind": "graphml", "topology.path": str(f)}
    assert d["requests_served"] + d["requests_dropped"] == d["requests_arrived"]


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--epochs", "0"], ["--epochs", "0", ">= 1"]),
        (["--epochs", "-3"], ["--epochs", "-3"]),
        (["--set", "workload.rate_per_s"], ["--set", "workload.rate_per_s", "KEY=VALUE"]),
        (["--set", "=1"], ["--set", "'=1'"]),
        (["--set", "a=["], ["--set", "YAML"]),
        (["--set", "workload.nope=1"], ["workload.nope", "rate_per_s"]),
        (["--set", "workload.rate_per_s=-1"], ["workload.rate_per_s=-1"]),
        (["--scenario", "nope"], ["'nope'", "default, large, static"]),
        (["--trace", "{tmp}/missing.csv"], ["--trace", "missing.csv"]),
        (["--topology", "{tmp}/missing.graphml"], ["--topology", "missing.graphml"]),
        (["--topology", "{tmp}/net.gml"], ["--topology", "'.gml'", ".graphml", ".csv"]),
        (
            ["--set", "workload.kind=generic", "--set", "workload.trace={tmp}/gone.csv"],
            ["gone.csv", "does not exist"],
        ),
    ],
)
def test_bad_input_exits_2_naming_the_value(capsys, tmp_path, argv, names):
    err = _bad(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    for n in names:
        assert n in err, (n, err)


def test_run_plugs_in_a_policy():
    from coel_env.core.world import World

    class Keep:
        name = "keep"
        sees = "view"

        def __init__(self):
            self.calls = 0

        def reset(self, world, seed):
            self.calls = 0

        def act(self, world, obs):
            self.calls += 1
            return world.plan  # the plan in force: no migration

    w = World("static")
    pol = Keep()
    seen = []
    d = simulate_cli.run(w, 3, seed=1, policy=pol, progress=False, on_report=seen.append)
    assert pol.calls == 3 and len(seen) == 3 and d["policy"] == "keep"
    assert _untimed(d) == {**_untimed(simulate_cli.run(w, 3, seed=1)), "policy": "keep"}
    with pytest.raises(ValueError, match="--epochs"):
        simulate_cli.run(w, 0)


@pytest.mark.slow
def test_the_installed_console_script_prints_json(tmp_path):
    coel = Path(sys.executable).parent / "coel"
    if not coel.exists():
        pytest.skip(f"{coel} not installed")
    r = subprocess.run(
        [str(coel), "simulate", "--epochs", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (
        d["epochs"] == 3 and d["requests_served"] + d["requests_dropped"] == d["requests_arrived"]
    )


def test_progress_bar_goes_to_stderr_only(capsys):
    from coel_env.core.world import World

    simulate_cli.run(World("static"), 3, progress=True)
    out, err = capsys.readouterr()
    assert not out and "simulate:" in err and "/3 [" in err
    simulate_cli.run(World("static"), 3)  # short runs: no bar
    assert capsys.readouterr() == ("", "")


def test_set_wins_over_trace_and_topology(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n1,64,8\n")
    topo = tmp_path / "net.graphml"
    topo.write_text("<graphml/>")
    over = scenario_overrides(trace, topo, ["workload.kind=azure", "topology.n_servers=3"])
    assert over == {
        "workload.kind": "azure",
        "workload.trace": str(trace),
        "topology.kind": "graphml",
        "topology.path": str(topo),
        "topology.n_servers": 3,
    }
    assert scenario_overrides(trace, sets={"workload.kind": "x"})["workload.kind"] == "x"
    assert scenario_overrides() == {}


def test_each_run_gets_its_own_folder_with_the_metrics(tmp_path, capsys):
    paths = []
    for _ in range(2):
        rc = main(["simulate", "--json", "--epochs", "2", "--scenario", "static"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        d = json.loads(out)  # stdout: the JSON object only; the folder is on stderr
        folder = Path(err.strip().splitlines()[-1].removeprefix("results: "))
        assert folder.is_dir() and folder.parent == Path("runs")
        assert folder.name.startswith("simulate-static-")
        assert json.loads((folder / "metrics.json").read_text()) == d
        assert "epochs: 2" in (folder / "args.yml").read_text()
        assert (folder / "command.txt").read_text().strip()
        paths.append(folder)
    assert paths[0] != paths[1]
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(p.name for p in paths)


def test_the_table_ends_with_the_folder_and_runs_root_is_kept(tmp_path, capsys):
    assert main(["simulate", "--epochs", "2", "--runs-root", "elsewhere/deeper"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    folder = Path(last.removeprefix("results: "))
    assert folder.parent == Path("elsewhere/deeper") and (folder / "metrics.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["elsewhere"]


def test_a_file_as_runs_root_and_a_failed_run_leave_nothing(tmp_path, capsys):
    Path("afile").write_text("x")
    rc = main(["simulate", "--epochs", "2", "--runs-root", "afile/sub"])
    err = capsys.readouterr().err
    assert rc == 2 and "--runs-root 'afile/sub'" in err and "'afile' is a file" in err
    assert main(["simulate", "--epochs", "2", "--set", "workload.nope=1"]) == 2
    capsys.readouterr()
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # bad input: no run folder either
