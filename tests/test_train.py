"""``coel train``: run folders, loading, resume after Ctrl-C, determinism, bad input.

Budgets are tiny (a few hundred env steps per run) so the module stays fast.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from agents import train as T
from coel_env import cli

INTRA = "CoEL-IntraDevice-v0"
FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


class InterruptAt(BaseCallback):
    """Raises KeyboardInterrupt (like Ctrl-C) once ``steps`` timesteps are done."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self.steps:
            raise KeyboardInterrupt
        return True


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """MaskablePPO trained through the ``coel`` command in a subprocess."""
    run = tmp_path_factory.mktemp("cli") / "run"
    cmd = [
        sys.executable, "-m", "coel_env.cli", "train",
        "--algo", "maskable_ppo", "--env", INTRA, "--timesteps", "128", "--seed", "3",
        "--normalize", "--hyperparams", "n_steps=64", "n_epochs=2",
        "--eval-freq", "128", "--eval-seeds", "0", "--checkpoint-freq", "64",
        "--run-dir", str(run), "--no-progress",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(run)
    return run


@pytest.mark.slow
def test_cli_run_folder_holds_everything(cli_run):
    for name in ("model.zip", "best_model.zip", "evaluations.npz", "vecnormalize.pkl",
                 "vecnormalize_best.pkl", "config.yml", "args.yml", "command.txt",
                 "versions.yml", "hyperparams.yml", "seed"):  # fmt: skip
        assert (cli_run / name).is_file(), name
    assert [s for s, _ in T.checkpoints(cli_run)] == [64, 128]
    assert (cli_run / "checkpoints" / "model_vecnormalize_128_steps.pkl").is_file()
    assert any(p.is_file() for p in (cli_run / "tb").rglob("events.out.tfevents*"))
    args = yaml.safe_load((cli_run / "args.yml").read_text())
    assert args["algo"] == "maskable_ppo" and args["timesteps"] == 128 and args["seed"] == 3
    assert (cli_run / "seed").read_text().strip() == "3"
    cfg = yaml.safe_load((cli_run / "config.yml").read_text())
    assert cfg["id"] == INTRA and cfg["scenario"] == "intra" and cfg["overrides"] == {}
    hp = yaml.safe_load((cli_run / "hyperparams.yml").read_text())
    assert hp["n_steps"] == 64 and hp["normalize"] is True
    assert hp["policy_kwargs"]["activation_fn"] == "tanh"  # saved by name, not as a class
    assert "--run-dir" in (cli_run / "command.txt").read_text()
    versions = yaml.safe_load((cli_run / "versions.yml").read_text())
    assert {"python", "numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib",
            "coel-gym", "git_commit", "git_dirty"} <= set(versions)  # fmt: skip


def test_tensorboard_has_the_coel_metrics(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder,) = (cli_run / "tb").iterdir()
    ea = EventAccumulator(str(folder))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for key in ("slo_attainment", "latency_p95_ms", "quality_loss", "migration_bytes",
                "energy_j", "invalid_actions"):  # fmt: skip
        assert f"coel/{key}" in tags
    assert "eval/mean_reward" in tags


def test_loaded_policy_acts_within_the_masks(cli_run):
    env = T.make_env(INTRA)
    model, vn, meta = T.load_policy(cli_run, env)
    assert vn is not None and vn.training is False and vn.norm_reward is False
    assert meta["algo"] == "maskable_ppo" and meta["env_id"] == INTRA
    assert meta["model_path"].name == "model.zip" and meta["num_timesteps"] == 128
    obs, _ = env.reset(seed=0)
    nvec = env.action_space.nvec
    for _ in range(5):
        mask = env.unwrapped.action_masks()
        a1, _ = model.predict(vn.normalize_obs(obs), deterministic=True, action_masks=mask)
        a2, _ = model.predict(vn.normalize_obs(obs), deterministic=True, action_masks=mask)
        np.testing.assert_array_equal(a1, a2)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        assert mask[offsets + a1].all()  # every field's choice is allowed
        obs, _, _, _, info = env.step(a1)
        assert info["invalid_action"] is False
    best, _, meta_best = T.load_policy(cli_run, best=True)
    assert meta_best["model_path"].name == "best_model.zip"
    assert meta_best["vecnormalize_path"].name == "vecnormalize_best.pkl"


def test_policy_of_another_env_is_refused(cli_run):
    import gymnasium as gym

    model, _, _ = T.load_policy(cli_run)
    with pytest.raises(ValueError, match="space"):
        T.check_spaces(model, gym.make("CoEL-v0"))
    with pytest.raises(ValueError, match="space"):
        T.load_policy(cli_run, gym.make("CoEL-v0"))


def test_corrupt_or_missing_model_file(tmp_path, cli_run):
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"\x00garbage, not a zip\xff" * 10)
    with pytest.raises(ValueError, match="model.zip"):
        T.load_policy(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model.zip or best_model.zip"):
        T.load_policy(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        T.load_policy(tmp_path / "missing.zip")
    # a run whose final model is damaged: resume from a damaged checkpoint fails clearly
    run = tmp_path / "copy"
    shutil.copytree(cli_run, run)
    (run / "checkpoints" / "model_128_steps.zip").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model_128_steps.zip"):
        T.resume(run, timesteps=256)


def test_unreadable_normaliser_and_zip_data_name_the_file(tmp_path):
    import json
    import pickle
    import zipfile

    garbage, a_dict = tmp_path / "garbage", tmp_path / "dict.pkl"
    garbage.write_bytes(b"\x00not a pickle, not a zip")
    a_dict.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"normaliser file .*garbage could not be loaded \(Unp"):
        T._load_vecnormalize(garbage)
    with pytest.raises(ValueError, match=r"dict.pkl does not hold VecNormalize statistics$"):
        T._load_vecnormalize(a_dict)
    with pytest.raises(ValueError, match=r"garbage is not a model zip saved by SB3 \(BadZip"):
        T._zip_data(garbage)
    with zipfile.ZipFile(tmp_path / "list.zip", "w") as z:
        z.writestr("data", json.dumps([1]))
    with pytest.raises(ValueError, match=r"list.zip is not a model zip saved by SB3$"):
        T._zip_data(tmp_path / "list.zip")


def test_interrupt_saves_and_resume_continues(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(T.TrainingInterrupted) as exc:
        T.train("ppo", INTRA, timesteps=256, seed=1, run_dir=run, hyperparams=FAST,
                normalize=True, eval_freq=0, checkpoint_freq=64,
                callbacks=[InterruptAt(96)])  # fmt: skip
    assert exc.value.run_dir == run and exc.value.steps == 96
    assert "--resume" in capsys.readouterr().err
    assert (run / "model.zip").is_file() and (run / "vecnormalize.pkl").is_file()
    assert [s for s, _ in T.checkpoints(run)] == [64, 96]
    assert (run / "checkpoints" / "model_vecnormalize_96_steps.pkl").is_file()

    assert cli.main(["train", "--resume", str(run), "--no-progress"]) == 0
    model, vn, meta = T.load_policy(run)
    assert model.num_timesteps >= 256 and vn is not None
    steps = [s for s, _ in T.checkpoints(run)]
    assert steps[:2] == [64, 96] and 128 in steps and steps[-1] >= 256  # continued, aligned
    assert len(list((run / "tb").iterdir())) == 1  # the same TensorBoard run, appended
    assert len((run / "command.txt").read_text().splitlines()) == 2

    # finished: resuming again does nothing; a folder without checkpoints is refused
    assert T.resume(run) == run
    with pytest.raises(ValueError, match="not a run folder"):
        T.resume(tmp_path)
    for _, p in T.checkpoints(run):
        p.unlink()
    with pytest.raises(ValueError, match="no checkpoint"):
        T.resume(run)


def test_cli_returns_130_on_ctrl_c(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise T.TrainingInterrupted(tmp_path, 7)

    monkeypatch.setattr("agents.train.cli.train", interrupted)  # the name main() calls
    assert cli.main(["train", "--algo", "ppo", "--env", INTRA, "--no-progress"]) == 130


def test_same_seed_same_parameters(tmp_path):
    """PPO on one DummyVecEnv on CPU is deterministic given the seed."""
    kw = dict(timesteps=64, seed=5, hyperparams={**FAST, "n_steps": 32, "batch_size": 32},
              eval_freq=0, checkpoint_freq=0)  # fmt: skip
    params = []
    for name in ("a", "b"):
        run = T.train("ppo", INTRA, run_dir=tmp_path / name, **kw)
        model, _, _ = T.load_policy(run)
        params.append(model.policy.state_dict())
    assert params[0].keys() == params[1].keys()
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key
    other = T.train("ppo", INTRA, run_dir=tmp_path / "c", **{**kw, "seed": 6})
    model, _, _ = T.load_policy(other)
    assert any(not torch.equal(v, params[0][k]) for k, v in model.policy.state_dict().items())


def test_dqn_on_a_small_flattened_space(tmp_path):
    hp = {"learning_starts": 16, "buffer_size": 1000}
    run = T.train("dqn", INTRA, timesteps=64, run_dir=tmp_path / "dqn", hyperparams=hp,
                  env_config={"n_groups": 2}, eval_freq=64, eval_seeds=[0],
                  checkpoint_freq=0)  # fmt: skip
    env = T.make_env(INTRA, yaml.safe_load((run / "config.yml").read_text()), algo="dqn")
    assert env.action_space.n == 9 * 5 * 5 * 2
    model, vn, meta = T.load_policy(run, env)
    assert vn is None and meta["algo"] == "dqn"
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    env.step(action)


# ------------------------------------------------------------------ bad input


def test_unknown_algorithm_and_env(tmp_path):
    with pytest.raises(ValueError, match="'sac'.*ppo, a2c, maskable_ppo, dqn"):
        T.train("sac", INTRA, timesteps=10, run_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="'CartPole-v1'.*CoEL-IntraDevice-v0"):
        T.train("ppo", "CartPole-v1", timesteps=10, run_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert T.canonical_env_id("coel_env/CoEL-v0") == "CoEL-v0"


def test_unknown_hyperparameter_lists_valid_keys(tmp_path):
    with pytest.raises(ValueError, match="'n_stepz'.*valid:.*n_steps"):
        T.train("ppo", INTRA, timesteps=10, run_dir=tmp_path / "x", hyperparams={"n_stepz": 8})
    with pytest.raises(ValueError, match="activation_fn='os.system'.*tanh"):
        T.resolve_hyperparams("ppo", INTRA, {"policy_kwargs": {"activation_fn": "os.system"}})
    with pytest.raises(ValueError, match="unknown policy_kwargs key 'nett_arch'"):
        T.resolve_hyperparams("ppo", INTRA, {"policy_kwargs": {"nett_arch": [8]}})
    with pytest.raises(ValueError, match="normalize"):
        T.resolve_hyperparams("ppo", INTRA, {"normalize": {"norm_obz": True}})
    assert not (tmp_path / "x").exists()
    # CLI values are YAML, never evaluated
    hp = T.parse_hyperparams(["n_steps=64", "policy_kwargs={net_arch: [32], activation_fn: relu}",
                              "learning_rate=lin_1e-3"])  # fmt: skip
    assert hp == {"n_steps": 64, "policy_kwargs": {"net_arch": [32], "activation_fn": "relu"},
                  "learning_rate": "lin_1e-3"}  # fmt: skip
    kw = T._model_kwargs(T.algo_class("ppo"), T.resolve_hyperparams("ppo", INTRA, hp))
    assert kw["policy_kwargs"]["activation_fn"] is torch.nn.ReLU
    assert kw["learning_rate"](0.5) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        T.parse_hyperparams(["n_steps"])


def test_existing_run_dir_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    rc = cli.main(["train", "--algo", "ppo", "--env", INTRA, "--timesteps", "10",
                   "--run-dir", str(run), "--no-progress"])  # fmt: skip
    assert rc == 2
    assert str(run) in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before
    assert (run / "keep.txt").read_text() == "precious"


def test_dqn_on_a_large_multidiscrete_space_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dqn needs a Discrete action space.*MultiDiscrete"):
        T.train("dqn", INTRA, timesteps=10, run_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_default_run_folders_are_new_each_time(tmp_path):
    a = T._new_run_dir(None, tmp_path, "ppo-X-20250101-000000-s0")
    b = T._new_run_dir(None, tmp_path, "ppo-X-20250101-000000-s0")
    assert a != b and a.is_dir() and b.is_dir()


def test_every_train_flag_reaches_train():
    """The flags ``coel train`` hands to train() by name are all its flags but those it reads
    itself, and train() takes each."""
    import inspect

    from agents.train.cli import PASSED, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    read = {"help", "algo", "env", "timesteps", "overrides", "env_config", "hyperparams", "resume"}
    assert {a.dest for a in p._actions} - read == set(PASSED)
    assert set(PASSED) <= set(inspect.signature(T.train).parameters)


def test_eval_seed_options():
    assert T._eval_seeds(None, None) == [0, 1, 2, 3, 4]
    assert T._eval_seeds(3, None) == [0, 1, 2]
    assert T._eval_seeds(None, [7, 9]) == [7, 9]
    with pytest.raises(ValueError, match="--eval-episodes"):
        T._eval_seeds(3, [7, 9])


def test_exponent_floats_without_a_dot_are_numbers():
    """YAML 1.1 reads ``1e-4`` as a string; --hyperparams takes it as the number."""
    hp = T.parse_hyperparams(["learning_rate=1e-4", "ent_coef=0", "policy=MlpPolicy"])
    assert hp == {"learning_rate": 1e-4, "ent_coef": 0, "policy": "MlpPolicy"}


def test_distribution_checks_switches_checks_and_restores_them():
    from torch.distributions import Categorical, Distribution

    nan = torch.tensor([float("nan"), 0.0])
    before = Distribution._validate_args
    Distribution.set_default_validate_args(True)
    try:
        with pytest.raises(ValueError, match="logits"):
            Categorical(logits=nan)  # checked: invalid parameters raise
        with T.distribution_checks(False):
            assert Distribution._validate_args is False
            unchecked = Categorical(logits=nan)  # not checked
            with pytest.raises(RuntimeError, match="nan"):
                unchecked.sample()  # but sampling from non-finite logits still fails
        assert Distribution._validate_args is True
        with pytest.raises(RuntimeError, match="boom"), T.distribution_checks(False):
            raise RuntimeError("boom")
        assert Distribution._validate_args is True  # restored after an error too
        Distribution.set_default_validate_args(False)
        with T.distribution_checks(True):  # on, even where they were off
            with pytest.raises(ValueError, match="logits"):
                Categorical(logits=nan)
        assert Distribution._validate_args is False
    finally:
        Distribution.set_default_validate_args(before)


def test_training_without_distribution_checks_gives_the_same_weights():
    """The checks only check: MaskablePPO (one masked Categorical per action field)
    trained with and without them from the same seed ends with identical weights."""
    from sb3_contrib import MaskablePPO
    from torch.distributions import Distribution

    def weights(checked: bool) -> dict:
        venv = T._make_vec(INTRA, {}, 1, "dummy", 3, "maskable_ppo", False)
        model = MaskablePPO("MlpPolicy", venv, seed=3, device="cpu", **FAST)
        start.update({k: v.clone() for k, v in model.policy.state_dict().items()})
        before = Distribution._validate_args
        Distribution.set_default_validate_args(True)
        try:
            if checked:
                model.learn(128)
            else:
                with T.distribution_checks(False):
                    model.learn(128)
        finally:
            Distribution.set_default_validate_args(before)
            venv.close()
        return {k: v.clone() for k, v in model.policy.state_dict().items()}

    start: dict = {}
    a, b = weights(True), weights(False)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], start[k]) for k in a)  # it did train


class SeeChecks(BaseCallback):
    """Records whether torch's distribution checks are on while the model learns."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set = set()

    def _on_step(self) -> bool:
        from torch.distributions import Distribution

        self.seen.add(Distribution._validate_args)
        return True


@pytest.mark.parametrize("checks", [False, True])
def test_coel_train_runs_without_distribution_checks_unless_asked(tmp_path, checks):
    from torch.distributions import Distribution

    before = Distribution._validate_args
    Distribution.set_default_validate_args(True)
    try:
        see = SeeChecks()
        run = T.train("maskable_ppo", INTRA, timesteps=64, run_dir=tmp_path / "r",
                      hyperparams=FAST, eval_freq=0, checkpoint_freq=0,
                      distribution_checks=checks, callbacks=[see])  # fmt: skip
        assert see.seen == {checks}
        assert Distribution._validate_args is True  # restored
        assert yaml.safe_load((run / "args.yml").read_text())["distribution_checks"] is checks
    finally:
        Distribution.set_default_validate_args(before)


def test_distribution_checks_flag_on_the_command_line():
    p = argparse.ArgumentParser()
    T.add_arguments(p)
    assert p.parse_args(["--algo", "ppo"]).distribution_checks is False
    assert p.parse_args(["--distribution-checks"]).distribution_checks is True


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    """A run that fails before saving any model removes its folder and says so (such
    folders only broke ``coel compare --runs runs/*`` later)."""

    def fail(*a, **k):
        raise ValueError("the model could not be built")

    monkeypatch.setattr("agents.train.loop._train_loop", fail)
    argv = ["train", "--algo", "ppo", "--env", INTRA, "--timesteps", "64", "--runs-root",
            str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "coel train: error: the model could not be built" in err
    assert "the run failed before saving a model; removed" in err
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize(
    "algo, item, allowed",
    [
        ("ppo", "gamma=2", "must be a number in (0, 1]"),
        ("ppo", "gamma=0", "must be a number in (0, 1]"),
        ("ppo", "gae_lambda=-0.1", "must be a number in [0, 1]"),
        ("ppo", "learning_rate=-1", "must be a number > 0 (or lin_<number > 0>)"),
        ("ppo", "learning_rate=lin_0", "must be a number > 0 (or lin_<number > 0>)"),
        ("ppo", "n_steps=0", "must be an integer >= 1"),
        ("ppo", "n_steps=1.5", "must be an integer >= 1"),
        ("ppo", "batch_size=0", "must be an integer >= 1"),
        ("ppo", "batch_size=1", "must be an integer >= 2 (ppo normalises the advantages"),
        ("ppo", "n_epochs=0", "must be an integer >= 1"),
        ("ppo", "clip_range=0", "must be a number > 0"),
        ("ppo", "ent_coef=-0.01", "must be a number >= 0"),
        ("ppo", "vf_coef=-1", "must be a number >= 0"),
        ("ppo", "max_grad_norm=0", "must be a number > 0"),
        ("ppo", "target_kl=0", "must be null or a number > 0"),
        ("a2c", "n_steps=0", "must be an integer >= 1"),
        ("a2c", "rms_prop_eps=0", "must be a number > 0"),
        ("dqn", "buffer_size=0", "must be an integer >= 1"),
        ("dqn", "tau=1.5", "must be a number in (0, 1]"),
        ("dqn", "exploration_final_eps=2", "must be a number in [0, 1]"),
        ("dqn", "train_freq=0", "must be an integer >= 1, or [N, step] / [N, episode]"),
    ],
)
def test_hyperparameters_out_of_range_are_refused_before_the_run_folder(
    tmp_path, capsys, algo, item, allowed
):
    argv = ["train", "--algo", algo, "--env", INTRA, "--timesteps", "64", "--runs-root",
            str(tmp_path / "runs"), "--hyperparams", item, "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    key, _, raw = item.partition("=")
    value = yaml.safe_load(raw)
    err = capsys.readouterr().err
    assert f"coel train: error: --hyperparams {key}={value!r} is not allowed; {allowed}" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_one_step_rollouts_are_refused_by_name(tmp_path, capsys):
    argv = ["train", "--algo", "ppo", "--env", INTRA, "--timesteps", "64", "--runs-root",
            str(tmp_path / "runs"), "--hyperparams", "n_steps=1", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--hyperparams n_steps=1 with --n-envs 1 is not allowed" in err
    assert "n_steps x n_envs" in err and not (tmp_path / "runs").exists()


def test_eval_episodes_have_an_upper_bound():
    with pytest.raises(ValueError, match="--eval-episodes 100000000 is not allowed; must be at"):
        T._eval_seeds(100_000_000, None)
    assert T._eval_seeds(3, None) == [0, 1, 2]


def test_shaping_with_another_discount_than_the_learners_is_refused(tmp_path, capsys):
    argv = ["train", "--algo", "maskable_ppo", "--env", "CoEL-Graph-v0", "--timesteps", "64",
            "--runs-root", str(tmp_path / "runs"), "--env-config", "shaping_epochs=2",
            "--hyperparams", "gamma=0.95", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "shaping_gamma=0.99 differs from the learner's gamma=0.95" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
