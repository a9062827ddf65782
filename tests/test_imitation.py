"""Imitation warm start (``coel train --imitate``): demonstrations, cloning, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import coel_env  # noqa: F401  (registers the ids)
from agents import imitation
from agents import train as T
from agents.harness import run_episode
from agents.registry import make_policy
from agents.rl import RLPolicy
from coel_env.envs import CoELEnv, env_config

ENV = "CoEL-v1"
STATIC = {"scenario": "static"}
FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "n_envs": 1}


@pytest.fixture(scope="module")
def greedy_demos():
    return imitation.collect(ENV, STATIC, "greedy", episodes=3, epochs=12, gamma=0.95)


def test_demonstrations_are_the_experts_encoded_plans_within_the_masks(greedy_demos):
    d = greedy_demos
    assert d.obs.shape == (36, 107) and d.actions.shape == (36, 36)
    assert d.masks.shape == (36, int(np.sum(CoELEnv(defaults=env_config(ENV)).action_space.nvec)))
    cuts = np.cumsum(CoELEnv(defaults=env_config(ENV)).action_space.nvec)[:-1]
    for m, a in zip(d.masks, d.actions, strict=True):
        assert all(part[x] for part, x in zip(np.split(m, cuts), a, strict=True))
    assert d.repaired == 0
    # greedy redeploys at the first epoch of each episode (update field 2)
    assert (d.actions[::12, 0] == 2).all()
    # returns-to-go: the last epoch's is its reward, earlier ones discount the rest
    assert len(d.episode_returns) == 3 and np.isfinite(d.returns).all()


@pytest.mark.slow
def test_cloning_reproduces_the_expert(tmp_path, greedy_demos):
    from sb3_contrib import MaskablePPO

    env = T.make_env(ENV, STATIC)
    model = MaskablePPO("MlpPolicy", env, seed=0, device="cpu")
    stats = imitation.clone(model, greedy_demos, passes=60, seed=0)
    assert stats["nll_last_pass"] < stats["nll_first_pass"] / 4
    assert stats["field_accuracy"] > 0.97
    rl = RLPolicy(model, ENV, dict(STATIC), name="clone")
    ret = run_episode(rl, "static", seed=0, epochs=12).metrics["return"]
    ref = run_episode(make_policy("greedy"), "static", seed=0, epochs=12).metrics["return"]
    naive = run_episode(make_policy("naive"), "static", seed=0, epochs=12).metrics["return"]
    assert ret > naive + 0.8 * (ref - naive)  # most of greedy's gain over the naive plan


def test_train_with_imitate_writes_its_record_and_evaluates_the_clone(tmp_path, greedy_demos):
    greedy_demos.save(tmp_path / "demos.npz")
    run = T.train("maskable_ppo", ENV, timesteps=64, run_dir=tmp_path / "run", scenario="static",
                  hyperparams=FAST, eval_freq=64, eval_seeds=[0],
                  imitate=str(tmp_path / "demos.npz"), imitate_passes=3)  # fmt: skip
    rec = yaml.safe_load((run / "imitation.yml").read_text())
    assert rec["samples"] == 36 and rec["passes"] == 3
    assert (run / "demonstrations.npz").is_file()
    assert yaml.safe_load((run / "args.yml").read_text())["imitate"]["passes"] == 3
    with np.load(run / "evaluations.npz") as e:
        assert list(e["timesteps"])[0] == 0  # the clone itself was evaluated


def test_bad_imitation_input(tmp_path, greedy_demos):
    kw = dict(timesteps=64, hyperparams=FAST, eval_freq=0, scenario="static")
    with pytest.raises(ValueError, match="not a known policy; known: .*greedy"):
        T.train("maskable_ppo", ENV, run_dir=tmp_path / "a", imitate="gredy", **kw)
    with pytest.raises(ValueError, match="CoEL-v0 cannot"):
        T.train("maskable_ppo", "CoEL-v0", run_dir=tmp_path / "b", imitate="greedy", **kw)
    with pytest.raises(ValueError, match="dqn"):
        T.train("dqn", ENV, run_dir=tmp_path / "c", imitate="greedy", **kw)
    with pytest.raises(ValueError, match="--imitate-episodes"):
        T.train("maskable_ppo", ENV, run_dir=tmp_path / "d", imitate="greedy",
                imitate_episodes=0, **kw)  # fmt: skip
    with pytest.raises(ValueError, match="no such demonstrations file"):
        T.train("maskable_ppo", ENV, run_dir=tmp_path / "e", imitate=str(tmp_path / "x.npz"),
                **kw)  # fmt: skip
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a demonstrations file"):
        T.train("maskable_ppo", ENV, run_dir=tmp_path / "f", imitate=str(tmp_path / "junk.npz"),
                **kw)  # fmt: skip
    greedy_demos.save(tmp_path / "demos.npz")
    with pytest.raises(ValueError, match="do not fit this env"):
        T.train("maskable_ppo", "CoEL-InterDevice-v1", run_dir=tmp_path / "g",
                imitate=str(tmp_path / "demos.npz"), **{**kw, "scenario": None})  # fmt: skip
    assert not any((tmp_path / d).exists() for d in "abcdefg")  # no run folder made


@pytest.mark.slow
def test_headline_script_clones_then_compares(tmp_path):
    """The README's main job, at a tiny budget: clone static-homes on CoEL-v2 (with one
    DAgger round), train, compare."""
    import subprocess
    import sys

    out = tmp_path / "headline"
    cmd = [sys.executable, "experiments/headline.py", "--quick", "--timesteps", "64",
           "--seeds", "1", "--epochs", "3", "--demo-episodes", "1", "--demo-epochs", "4",
           "--demo-rounds", "1", "--policies", "naive,greedy", "--out-dir", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rec = yaml.safe_load((out / "run" / "imitation.yml").read_text())
    assert rec["expert"] == "static-homes" and rec["rounds"] == 1
    assert rec["samples"] == 8  # 1 episode x 4 epochs, and as many from the DAgger round
    assert yaml.safe_load((out / "run" / "args.yml").read_text())["env"] == "CoEL-v2"
    table = (out / "table.csv").read_text()
    assert "rl:run" in table and "greedy" in table


@pytest.mark.parametrize("algo", ["maskable_ppo", "ppo"])
def test_fast_deterministic_action_equals_predict(algo):
    """RLPolicy's direct masked argmax is the model's own deterministic prediction."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    from coel_env.core.world import World

    env = T.make_env(ENV, {"scenario": "large"})
    cls = MaskablePPO if algo == "maskable_ppo" else PPO
    model = cls("MlpPolicy", env, seed=1, device="cpu")
    rl = RLPolicy(model, ENV, {"scenario": "large"}, name="x")
    world = World("large")
    world.reset(0)
    rl.reset(world, 0)
    assert rl._argmax is not None
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.random(env.observation_space.shape).astype(np.float32)
        mask = rng.random(int(np.sum(env.action_space.nvec))) < 0.7
        cuts = np.cumsum(env.action_space.nvec)[:-1]
        for part in np.split(mask, cuts):
            part[rng.integers(len(part))] = True  # something allowed in every field
        if algo == "maskable_ppo":
            want = model.predict(x, deterministic=True, action_masks=mask)[0]
            got = rl._argmax(x, mask)
        else:
            want = model.predict(x, deterministic=True)[0]
            got = rl._argmax(x, None)
        np.testing.assert_array_equal(got, want)


def test_dagger_rounds_label_the_clones_states(tmp_path, greedy_demos):
    greedy_demos.save(tmp_path / "demos.npz")
    run = T.train("maskable_ppo", ENV, timesteps=64, run_dir=tmp_path / "run", scenario="static",
                  hyperparams=FAST, eval_freq=0, imitate="greedy", imitate_episodes=2,
                  imitate_epochs=5, imitate_passes=2, imitate_rounds=1,
                  imitate_demos=tmp_path / "demos.npz")  # fmt: skip
    rec = yaml.safe_load((run / "imitation.yml").read_text())
    assert rec["samples"] == 36 + 2 * 5  # the file's, then one round of 2 x 5 states
    assert len(rec["dagger_clone_return_mean"]) == 1
    kw = dict(timesteps=64, hyperparams=FAST, eval_freq=0, scenario="static")
    with pytest.raises(ValueError, match="needs an expert policy"):
        T.train("maskable_ppo", ENV, run_dir=tmp_path / "a", imitate=str(tmp_path / "demos.npz"),
                imitate_rounds=1, **kw)  # fmt: skip
    with pytest.raises(ValueError, match="goes with an expert policy"):
        T.train("maskable_ppo", ENV, run_dir=tmp_path / "b", imitate=str(tmp_path / "demos.npz"),
                imitate_demos=tmp_path / "demos.npz", **kw)  # fmt: skip
