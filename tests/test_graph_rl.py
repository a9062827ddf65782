"""A trained CoEL-Graph-v0 policy in the evaluation harness (agents.graph_rl): the same
returns as the env for the same world seed, ``coel evaluate`` of a graph run on other
scenarios and topologies, and clear errors above the maxima or with other maxima."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding

import coel_env  # noqa: F401 - registers the ids
from agents import harness
from agents import train as T
from agents.graph_rl import GraphRLPolicy
from coel_env.core.world import World

ENV = "CoEL-Graph-v0"
CFG = {"max_steps": 4, "max_servers": 16, "max_edits": 3}
# the public data sets, read through COEL_DATA as the package reads them (conftest sets it)
ZOO = Path(os.environ.get("COEL_DATA", "/nonexistent")) / "topologies" / "topology_zoo"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return T.train(
        "maskable_ppo", ENV, timesteps=64, seed=2,
        run_dir=tmp_path_factory.mktemp("graph-rl") / "run",
        env_config=dict(CFG),
        hyperparams={"n_envs": 1, "n_steps": 64, "batch_size": 64, "n_epochs": 1,
                     "policy_kwargs": {"dim": 16, "rounds": 1}},
        eval_freq=0, checkpoint_freq=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(run):
    return T.load_policy(run)[0]


def _env_return(model, config: dict, seed: int) -> tuple[float, int, int]:
    """(undiscounted return, epochs, edits) of the model's deterministic masked episode."""
    env = gym.make(ENV, config=config)
    obs, _ = env.reset(seed=seed)
    total, epochs, edits, done = 0.0, 0, 0, False
    while not done:
        a, _ = model.predict(obs, deterministic=True, action_masks=env.unwrapped.action_masks())
        obs, r, _, done, info = env.step(int(a))
        assert not info["invalid_action"]
        total += r
        epochs += info["committed"]
        edits += not info["committed"]
    return total, epochs, edits


@pytest.mark.parametrize("seed", [3, 11])
def test_harness_returns_equal_the_env_return(model, seed):
    total, epochs, edits = _env_return(model, CFG, seed)
    world_seed = int(seeding.np_random(seed)[0].integers(2**63 - 1))  # what reset(seed) draws
    policy = GraphRLPolicy(model, CFG)
    res = harness.run_episode(policy, "default", world_seed, epochs, reward_config=CFG)
    assert epochs == CFG["max_steps"]
    assert res.metrics["return"] == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert res.metrics["invalid_epochs"] == 0
    # a different seed gives a different episode: the equality is not vacuous
    other = harness.run_episode(policy, "default", world_seed + 1, epochs, reward_config=CFG)
    assert other.metrics["return"] != res.metrics["return"]
    assert edits > 0  # the edit loop runs, not only commit


def test_runs_on_other_sizes_and_refuses_above_the_maxima(model):
    policy = GraphRLPolicy(model, CFG)
    small = World("default", {"topology.n_servers": 3})
    res = harness.run_episode(policy, "default", 0, 2, world=small, reward_config=CFG)
    assert res.epochs == 2 and res.metrics["invalid_epochs"] == 0
    with pytest.raises(ValueError, match=r"33 servers .* max_servers=16"):
        harness.run_episode(policy, "large", 0, 1, reward_config=CFG)


def test_refuses_a_config_with_other_maxima(model):
    with pytest.raises(ValueError, match=r"saved with max_servers=16.*asks for max_servers=64"):
        GraphRLPolicy(model, {**CFG, "max_servers": 64})


def _evaluate(args: list[str], capsys) -> list[dict]:
    from coel_env.cli import main

    rc = main(["evaluate", *args, "--json"])
    out = capsys.readouterr()
    if rc == 2:  # bad input: one clear line on stderr
        raise ValueError(out.err)
    assert rc == 0, out.err
    return json.loads(out.out)


def test_coel_evaluate_a_graph_run(run, tmp_path, capsys):
    rows = _evaluate([str(run), "--seeds", "2", "--epochs", "3",
                      "--out", str(tmp_path / "a.csv")], capsys)  # fmt: skip
    assert rows[0]["seeds"] == 2 and rows[0]["epochs"] == 3
    assert rows[0]["invalid_epochs_mean"] == 0
    with pytest.raises(ValueError, match=r"33 servers .* max_servers=16"):
        _evaluate([str(run), "--scenario", "large", "--seeds", "1", "--epochs", "1",
                   "--out", str(tmp_path / "b.csv")], capsys)  # fmt: skip
    # a zip outside its run folder is read with the env's defaults (max_servers=64)
    (tmp_path / "loose").mkdir()
    loose = tmp_path / "loose" / "model.zip"
    loose.write_bytes((run / "model.zip").read_bytes())
    with pytest.raises(ValueError, match=r"saved with max_servers=16"):
        _evaluate([str(loose), "--env", ENV, "--seeds", "1", "--epochs", "1",
                   "--out", str(tmp_path / "c.csv")], capsys)  # fmt: skip


@pytest.mark.skipif(not (ZOO / "Abilene.graphml").is_file(), reason="../shared data absent")
def test_coel_evaluate_a_graph_run_on_a_topology_zoo_graph(run, tmp_path, capsys):
    rows = _evaluate([str(run), "--topology", str(ZOO / "Abilene.graphml"), "--seeds", "1",
                      "--epochs", "2", "--out", str(tmp_path / "z.csv")], capsys)  # fmt: skip
    assert rows[0]["epochs"] == 2 and rows[0]["invalid_epochs_mean"] == 0


PUBLISHED = (
    Path(__file__).resolve().parents[1] / "results" / "policies" / "maskable_ppo-CoEL-Graph-v0"
)


def _actions(policy: GraphRLPolicy, scenario: str, seed: int, epochs: int, **kw):
    """(every action the network picked, the episode's metrics)."""
    picked: list[int] = []
    argmax = policy._argmax

    def logged(x, mask):
        picked.append(argmax(x, mask))
        return picked[-1]

    policy._argmax = logged
    res = harness.run_episode(policy, scenario, seed, epochs, **kw)
    return picked, res.metrics


@pytest.fixture(scope="module")
def published():
    """The published policy (results/policies/maskable_ppo-CoEL-Graph-v0) as ``coel evaluate``
    loads it, run
    on one torch thread (two threads on a loaded 2-core machine make a pass ~50x
    slower)."""
    import torch

    from agents.evaluate_cli import load_rl_policy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_rl_policy(PUBLISHED)[0]
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("scenario", "topology", "epochs"),
    [("default", None, 6), ("large", None, 2), ("default", "Abilene", 2)],
)
def test_unpadded_network_picks_the_padded_actions(published, scenario, topology, epochs):
    """The published policy on the world's own servers and models picks every action it
    picks on the padded observation, and the returns are equal to the last bit."""
    from coel_env.core.scenario import scenario_overrides

    if topology is not None and not (ZOO / f"{topology}.graphml").is_file():
        pytest.skip("../shared data absent")
    over = scenario_overrides(topology=ZOO / f"{topology}.graphml") if topology else None
    base = published
    assert base.unpadded and base.maxima["max_servers"] == 64
    runs = {}
    for flag in (False, True):
        policy = GraphRLPolicy(base.model, base.config, unpadded=flag)
        runs[flag] = _actions(policy, scenario, 1, epochs, overrides=over)
    (a, ma), (b, mb) = runs[False], runs[True]
    assert len(a) >= 4 * epochs and len(set(a)) > 2  # edits were chosen, not only commit
    assert a == b
    assert ma["return"] == mb["return"] and ma["invalid_epochs"] == mb["invalid_epochs"]


def test_unpadded_network_picks_the_padded_actions_of_a_small_model(model):
    """The same with the small trained model on a 3-server world (max_servers=16)."""
    runs = {}
    for flag in (False, True):
        policy = GraphRLPolicy(model, CFG, unpadded=flag)
        world = World("default", {"topology.n_servers": 3})
        runs[flag] = _actions(policy, "default", 5, 4, world=world, reward_config=CFG)
    assert runs[False][0] == runs[True][0] and len(runs[False][0]) > 0
    assert runs[False][1]["return"] == runs[True][1]["return"]


def test_checkpoint_selection_scores_every_checkpoint_against_naive_and_greedy(run, tmp_path):
    """experiments/select_checkpoint.py plays each checkpoint and the final model on the
    validation episodes, with naive and greedy on the same ones, and names the best."""
    import csv
    import shutil
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        from experiments import select_checkpoint as sel
    finally:
        sys.path.remove(str(root))
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints").mkdir(exist_ok=True)
    shutil.copy(copy / "model.zip", copy / "checkpoints" / "model_32_steps.zip")
    out = tmp_path / "sel.csv"
    assert sel.main([str(copy), "--evals", "default", "--seeds", "2", "--epochs", "2",
                     "--out", str(out)]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    steps = sorted({int(r["checkpoint_steps"]) for r in rows})
    assert steps == [-1, 32, 64]  # the baselines, the added checkpoint, the last one
    assert {r["policy"] for r in rows if r["checkpoint_steps"] == "-1"} == {"naive", "greedy"}
    assert all(r["epochs"] == "2" and r["evaluation"] == "default" for r in rows)
    assert len(rows) == 8  # two baselines and two models (model.zip is the 64-step one), two seeds
    with pytest.raises(ValueError, match="neither a preset"):
        sel.evaluation("NoSuchGraph")


def test_a_stochastic_policy_is_reproducible_per_seed_and_samples(model):
    """``stochastic=True`` draws each edit from the masked policy with a generator seeded
    by the episode seed: the same seed gives the same episode, another seed another one,
    and the draws differ from the mode."""

    def episode(seed):
        pol = GraphRLPolicy(model, CFG, stochastic=True)
        res = harness.run_episode(pol, "default", seed, 3, reward_config=CFG)
        return res.metrics["return"], pol.edits

    assert episode(5) == episode(5)
    seen = set()
    for seed in range(6):
        pol = GraphRLPolicy(model, CFG, stochastic=True)
        world = World("default")
        world.reset(seed)
        pol.reset(world, seed)
        picks = [pol._pick(np.zeros(50)) for _ in range(20)]  # uniform scores: any of 50
        seen.add(tuple(picks))
        assert all(0 <= p < 50 for p in picks)
    assert len(seen) == 6  # every seed its own draws
    masked = np.full(50, -np.inf)
    masked[[3, 7]] = 0.0
    assert {pol._pick(masked) for _ in range(50)} == {3, 7}  # never a masked action
    det = GraphRLPolicy(model, CFG)
    assert det._pick(np.arange(50.0)) == 49


def test_evaluate_refuses_stochastic_for_other_envs(tmp_path):
    from agents.evaluate_cli import load_rl_policy

    run = T.train(
        "ppo", "CoEL-v2", timesteps=32, seed=0, run_dir=tmp_path / "run",
        hyperparams={"n_envs": 1, "n_steps": 32, "batch_size": 32, "n_epochs": 1},
        eval_freq=0, checkpoint_freq=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="--stochastic is for CoEL-Graph-v0 policies"):
        load_rl_policy(run, stochastic=True)


def test_the_long_trained_policy_reproduces_its_committed_episode():
    """results/policies/maskable_ppo-CoEL-Graph-v0-long, sampled as ``coel evaluate
    --stochastic`` plays it, gives the committed return of seed 100 on ``default`` (200
    epochs) to the last bit; its mode gives another (lower) one."""
    import csv

    import torch

    from agents.evaluate_cli import load_rl_policy

    root = Path(__file__).resolve().parents[1]
    run = root / "results" / "policies" / "maskable_ppo-CoEL-Graph-v0-long"
    rows = root / "results" / "graph-v0" / "fidelity-defaults" / "long" / "default_rl.csv"
    want = next(float(r["return"]) for r in csv.DictReader(rows.open()) if r["seed"] == "100")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, config, _ = load_rl_policy(run, stochastic=True)
        got = harness.run_episode(policy, "default", 100, 200, reward_config=config)
        mode = load_rl_policy(run)[0]
        low = harness.run_episode(mode, "default", 100, 200, reward_config=config)
    finally:
        torch.set_num_threads(threads)
    assert got.metrics["return"] == want
    assert low.metrics["return"] < want - 50


def test_the_default_trained_policy_reproduces_its_committed_episode():
    """results/policies/maskable_ppo-CoEL-Graph-v0-default, played by its mode as ``coel
    evaluate`` plays it, gives the committed return of seed 100 on ``default`` (200
    epochs) to the last bit, and ends with every expert group at 4 bits and every server a
    home of both models (the plan results/graph-v0/fidelity-defaults/default-trained
    describes)."""
    import csv

    import torch

    from agents.evaluate_cli import load_rl_policy

    root = Path(__file__).resolve().parents[1]
    run = root / "results" / "policies" / "maskable_ppo-CoEL-Graph-v0-default"
    rows = root / "results" / "graph-v0" / "fidelity-defaults" / "default-trained"
    want = next(
        float(r["return"])
        for r in csv.DictReader((rows / "default_rl.csv").open())
        if r["seed"] == "100"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, config, _ = load_rl_policy(run)
        world = World("default")
        got = harness.run_episode(policy, "default", 100, 200, reward_config=config, world=world)
    finally:
        torch.set_num_threads(threads)
    assert got.metrics["return"] == want
    assert all((mp.bits == 4).all() for mp in world.plan.models.values())
    assert all(mp.home == tuple(range(world.n)) for mp in world.plan.models.values())
