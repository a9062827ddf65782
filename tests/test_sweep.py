"""`coel sweep`: a 2 x 2 grid on a local Ray, the summary, and clear errors for bad input
(unknown keys, an unreachable cluster, Ray absent)."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from agents import sweep as sw
from coel_env.cli import main as cli_main

TINY = {
    "name": "tiny",
    "algorithms": ["ppo", "ma_ppo"],
    "seeds": [0, 1],
    "timesteps": 32,
    "hyperparams": {
        "ppo": {
            "n_steps": 16,
            "batch_size": 16,
            "n_epochs": 1,
            "policy_kwargs": {"net_arch": [16]},
        },
        "ma_ppo": {
            "n_steps": 8,
            "batch_size": 40,
            "n_epochs": 1,
            "policy_kwargs": {"net_arch": [16]},
        },
    },
    "eval_seeds": [0],
    "eval_epochs": 4,
}


@pytest.mark.slow
def test_two_by_two_grid_runs_on_a_local_ray_and_writes_the_summary(tmp_path):
    pytest.importorskip("ray")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    path = sw.sweep(cfg, out=tmp_path / "out", num_cpus=2)
    assert path == (tmp_path / "out" / "tiny").resolve()
    with (path / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert sorted((t["algo"], t["seed"]) for t in trials) == [
        ("ma_ppo", "0"), ("ma_ppo", "1"), ("ppo", "0"), ("ppo", "1"),
    ]  # fmt: skip
    assert all(t["status"] == "ok" for t in trials), trials
    for t in trials:  # each trial's run folder, as the trainers write it, in the sweep folder
        run = Path(t["run_dir"])
        assert run.parent == path / "runs" and (run / "model.zip").is_file()
        assert (run / "args.yml").is_file() and t["node"]
    with (path / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [(r["algo"], r["ok"], r["trials"]) for r in summary] == [
        ("ppo", "2", "2"), ("ma_ppo", "2", "2"),
    ]  # fmt: skip
    md = (path / "summary.md").read_text()
    assert "| ppo | CoEL-v0 |" in md and "| ma_ppo | coel_env.parallel_env |" in md
    with pytest.raises(ValueError, match="exists; sweeps are never overwritten"):
        sw.sweep(cfg, out=tmp_path / "out", num_cpus=2)


def test_grid_expands_algorithms_envs_scenarios_seeds():
    cfg = sw.load_config({**TINY, "envs": ["CoEL-v0", "CoEL-InterDevice-v0"],
                          "scenarios": ["default", None]})  # fmt: skip
    names = [t["name"] for t in sw.trials(cfg)]
    assert len(names) == len(set(names)) == 2 * 2 * 2 + 2 * 2  # ma_ppo: once per env grid
    assert "ppo-CoEL-InterDevice-v0-default-s1" in names and "ma_ppo-parallel-env-s0" in names


@pytest.mark.parametrize(
    "change, message",
    [
        ({"learning_rate": 1}, "unknown key 'learning_rate'; valid keys: name, algorithms"),
        ({"algorithms": ["ppo", "sac"]}, "algorithms has 'sac'; allowed: ppo, a2c"),
        ({"seeds": [0, -1]}, r"seeds\[\]=-1 is not allowed; must be an integer >= 0"),
        ({"seeds": []}, "seeds=.* must be a non-empty list"),
        ({"timesteps": "many"}, "timesteps='many' is not allowed"),
        ({"envs": ["CoEL-v9"]}, "CoEL-v9"),
        ({"hyperparams": {"a2c": {}}}, "hyperparams has 'a2c', which is not among"),
        ({"timesteps": None}, "'timesteps' is required"),
    ],
)
def test_bad_config_is_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        sw.load_config({**TINY, **change})


def test_unknown_key_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "seed": 3}))
    assert cli_main(["sweep", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "coel sweep: error: sweep config: unknown key 'seed'; valid keys: " + ", ".join(sw.DEFAULTS)
    ]
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_unreachable_address_is_a_clear_error(address, tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match=rf"--address '{address}': no Ray cluster reachable "
                                         r"within 0.5 s .*ray start --head"):  # fmt: skip
        sw.sweep(sw.load_config(TINY), out=tmp_path, address=address, connect_timeout_s=0.5)
    assert not (tmp_path / "tiny").exists()


def test_malformed_address_is_a_clear_error(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match="--address 'headnode' is not allowed; expected auto"):
        sw.sweep(TINY, out=tmp_path, address="headnode")


def test_ray_absent_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ValueError, match=r"needs Ray Tune.*pip install 'coel-gym\[ray\]'"):
        sw.sweep(TINY, out=tmp_path)
    assert not (tmp_path / "tiny").exists()


@pytest.mark.slow
def test_package_imports_and_works_without_ray():
    code = textwrap.dedent(
        """
        import sys
        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ImportError("no ray here")
        sys.meta_path.insert(0, NoRay())
        import coel_env, agents.sweep, agents.multiagent, agents.compare_cli
        from coel_env.cli import build_parser, main
        build_parser()
        env = coel_env.parallel_env(config={"max_cycles": 2})
        env.reset(seed=0)
        env.step({})
        assert "ray" not in sys.modules
        sys.exit(main(["sweep", "experiments/sweeps/example.yaml"]))
        """
    )
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=root)  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert "needs Ray Tune" in p.stderr and "pip install" in p.stderr
