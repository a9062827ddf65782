"""The size-invariant GraphPolicy: MaskablePPO trains it on CoEL-Graph-v0 through
``coel train``'s Python API, the saved model loads and runs unchanged on other
topologies (up to the maxima), and bad spaces are refused."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import coel_env  # noqa: F401 - registers the ids
from agents import train as T
from agents.graph_policy import GraphExtractor, GraphPolicy

ENV = "CoEL-Graph-v0"


def _episode(model, config: dict, seed: int = 0) -> tuple[float, int]:
    env = gym.make(ENV, config=config)
    obs, _ = env.reset(seed=seed)
    total, invalid, done = 0.0, 0, False
    while not done:
        a, _ = model.predict(obs, deterministic=True, action_masks=env.unwrapped.action_masks())
        obs, r, _, done, info = env.step(int(a))
        total += r
        invalid += info["invalid_action"]
    return total, invalid


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return T.train(
        "maskable_ppo", ENV, timesteps=256, seed=1,
        run_dir=tmp_path_factory.mktemp("graph") / "run",
        env_config={"max_steps": 8, "max_servers": 16},
        hyperparams={"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2,
                     "policy_kwargs": {"dim": 16, "rounds": 1}},
        eval_freq=0, checkpoint_freq=0,
    )  # fmt: skip


def test_trains_saves_and_reloads_the_same_policy(run):
    model, _, meta = T.load_policy(run)
    assert type(model.policy) is GraphPolicy
    assert meta["num_timesteps"] >= 256
    again, _, _ = T.load_policy(run)
    for a, b in zip(model.policy.parameters(), again.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    config = {"max_steps": 3, "max_servers": 16}
    assert _episode(model, config) == _episode(again, config)


@pytest.mark.parametrize("config", [{"scenario": "static"}, {"scenario": "inter"}])
def test_one_policy_runs_other_topologies_without_invalid_actions(run, config):
    model, _, _ = T.load_policy(run)
    total, invalid = _episode(model, {**config, "max_steps": 3, "max_servers": 16})
    assert invalid == 0 and np.isfinite(total)


def test_a_policy_with_other_maxima_is_refused(run):
    model, _, _ = T.load_policy(run)
    env = gym.make(ENV, config={"max_servers": 32})
    with pytest.raises(ValueError, match="spaces do not match|does not match"):
        T.check_spaces(model, env)


def test_scores_do_not_depend_on_padding():
    """The same world padded to 8 or 12 servers gets the same scores for its edits."""
    torch.manual_seed(0)
    envs = {s: gym.make(ENV, config={"max_servers": s, "max_steps": 2}) for s in (8, 12)}
    obs = {s: e.reset(seed=0)[0] for s, e in envs.items()}
    ext = {s: GraphExtractor(e.observation_space, dim=16) for s, e in envs.items()}
    ext[12].load_state_dict(ext[8].state_dict())
    out = {}
    for s, e in envs.items():
        x = {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in obs[s].items()}
        with torch.no_grad():
            logits = ext[s](x)[0, : ext[s].n_actions].numpy()
        lay, n = e.unwrapped.layout, e.unwrapped.world.n
        out[s] = [logits[lay.index("move", 0, g, t)] for g in range(4) for t in range(n)]
        out[s] += [logits[0], logits[lay.index("bits", 1, 2, 3)]]
    np.testing.assert_allclose(out[8], out[12], rtol=1e-5, atol=1e-6)


def test_bad_spaces_are_refused():
    env = gym.make(ENV, config={"max_servers": 8})
    with pytest.raises(ValueError, match="does not match the observation's maxima"):
        GraphPolicy(env.observation_space, spaces.Discrete(7), lambda _: 1e-3)
    with pytest.raises(ValueError, match="needs CoEL-Graph-v0's Dict observation"):
        GraphPolicy(spaces.Box(0, 1, (3,)), spaces.Discrete(7), lambda _: 1e-3)


@pytest.mark.parametrize(
    "config",
    [{"scenario": "default"}, {"scenario": "inter"}, {"scenario": "default", "home_move": True}],
    ids=["default", "inter", "default-home_move"],
)
def test_unpadded_observation_gets_the_padded_scores(config):
    """The extractor on the world's own servers and models gives the real edits the
    scores (and the value embedding) it gives them on the padded observation."""
    from agents.graph_policy import unpadded

    torch.manual_seed(1)
    env = gym.make(ENV, config={**config, "max_servers": 12, "max_models": 5, "max_steps": 3})
    obs, _ = env.reset(seed=4)
    u = env.unwrapped
    n, m = u.world.n, len(u.world.models)
    assert n < 12 and m < 5  # there is padding to cut
    hm = bool(config.get("home_move"))
    ext = GraphExtractor(env.observation_space, dim=16, rounds=2, home_move=hm)
    assert ext.n_actions == u.layout.n
    for _ in range(3):  # a few edits: the draft's blocks change
        x = {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in obs.items()}
        cut = unpadded(obs, n, m)
        y = {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in cut.items()}
        with torch.no_grad():
            ext.cut_padding = False  # the network on the maxima
            full = ext(x)[0].numpy()
            ext.cut_padding = True
            small = ext(y)[0].numpy()
        sub = u.layout.sub_actions(n, m)
        assert small.shape == (len(sub) + 16,)
        np.testing.assert_allclose(small[: len(sub)], full[sub], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(small[len(sub) :], full[-16:], rtol=1e-5, atol=1e-6)
        mask = u.action_masks()
        assert not np.delete(mask, sub).any()  # every edit left out is padding, masked
        edits = np.flatnonzero(mask[1:]) + 1
        obs, *_ = env.step(int(edits[len(edits) // 2]))


def test_unpadded_refuses_masks_not_padded_at_the_end():
    from agents.graph_policy import unpadded

    env = gym.make(ENV, config={"max_servers": 8})
    obs, _ = env.reset(seed=0)
    n, m = env.unwrapped.world.n, len(env.unwrapped.world.models)
    assert unpadded(obs, n, m)["pair"].shape[:2] == (m, n)
    with pytest.raises(ValueError, match="server_mask flags 5 entries, not exactly the first 4"):
        unpadded(obs, n - 1, m)
    obs["model_mask"] = obs["model_mask"][::-1].copy()
    with pytest.raises(ValueError, match="model_mask flags"):
        unpadded(obs, n, m)


def _batch(configs, max_servers=12, max_models=5):
    """One observation (and action mask) per config, each a few edits into its episode,
    stacked as a batch of the same padded spaces."""
    obs, masks, space = [], [], None
    for i, config in enumerate(configs):
        env = gym.make(ENV, config={**config, "max_servers": max_servers,
                                    "max_models": max_models, "max_steps": 3})  # fmt: skip
        o, _ = env.reset(seed=i)
        for _ in range(i):
            edits = np.flatnonzero(env.unwrapped.action_masks()[1:]) + 1
            o, *_ = env.step(int(edits[len(edits) // 3]))
        obs.append(o)
        masks.append(env.unwrapped.action_masks())
        space = env.observation_space
    x = {k: torch.as_tensor(np.stack([o[k] for o in obs]), dtype=torch.float32) for k in obs[0]}
    return x, np.stack(masks), space


def test_a_batch_cut_to_its_sizes_gets_the_padded_scores():
    """The extractor runs a batch on the servers and models it uses (5 and 9 servers of
    12 here): every edit a row's mask allows gets the score the network on the maxima
    gives it, the value embedding is the same, and the edits cut off get PAD_LOGIT."""
    from agents.graph_policy import PAD_LOGIT

    torch.manual_seed(2)
    x, masks, space = _batch([{"scenario": "default"}, {"scenario": "static"},
                              {"generator": {"n_servers": [9, 9]}}])  # fmt: skip
    assert x["server_mask"].sum(1).tolist() == [5.0, 5.0, 9.0]  # sizes differ; padding
    ext = GraphExtractor(space, dim=16, rounds=2)
    with torch.no_grad():
        cut = ext(x).numpy()
        ext.cut_padding = False
        full = ext(x).numpy()
    n = ext.n_actions
    np.testing.assert_allclose(cut[:, n:], full[:, n:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cut[:, :n][masks], full[:, :n][masks], rtol=1e-5, atol=1e-5)
    sub = ext.layout.sub_actions(9, int(x["model_mask"].sum(1).max()))
    left = np.setdiff1d(np.arange(n), sub)
    assert (cut[:, left] == PAD_LOGIT).all() and not masks[:, left].any()
    assert (cut[:, sub] > PAD_LOGIT).all()


def test_graph_policy_log_probs_and_entropies_are_sb3_contribs():
    """GraphPolicy's one-field fused distribution gives sb3-contrib's masked Categorical's
    log-probabilities and entropies (within 1e-5) on a masked batch."""
    from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution

    torch.manual_seed(3)
    x, masks, space = _batch([{"scenario": "default"}, {"scenario": "inter"}])
    policy = GraphPolicy(space, spaces.Discrete(GraphExtractor(space).n_actions),
                         lambda _: 1e-3, dim=16)  # fmt: skip
    rng = np.random.default_rng(0)
    actions = torch.as_tensor([rng.choice(np.flatnonzero(m)) for m in masks])
    with torch.no_grad():
        _, log_p, ent = policy.evaluate_actions(x, actions, action_masks=masks)
        logits = policy.features_extractor(x)[:, : policy.features_extractor.n_actions]
        stock = MaskableCategoricalDistribution(logits.shape[1]).proba_distribution(logits)
        stock.apply_masking(masks)
        np.testing.assert_allclose(log_p.numpy(), stock.log_prob(actions).numpy(), atol=1e-5)
        np.testing.assert_allclose(ent.numpy(), stock.entropy().numpy(), atol=1e-5)


def test_graph_policy_actions_are_allowed_and_its_mode_is_the_masked_argmax():
    """Actions come back in the full layout: sampled ones are allowed by the row's mask,
    deterministic ones are the masked argmax of the network's scores on the maxima."""
    torch.manual_seed(4)
    x, masks, space = _batch([{"scenario": "default"}, {"generator": {"n_servers": [7, 7]}}])
    policy = GraphPolicy(space, spaces.Discrete(GraphExtractor(space).n_actions),
                         lambda _: 1e-3, dim=16)  # fmt: skip
    with torch.no_grad():
        for _ in range(20):
            a, _, log_p = policy(x, action_masks=masks)
            assert masks[np.arange(len(a)), a.numpy()].all() and (log_p > -50).all()
        best, _, _ = policy(x, deterministic=True, action_masks=masks)
        policy.features_extractor.cut_padding = False
        full = policy.features_extractor(x)[:, : policy.features_extractor.n_actions].numpy()
    expect = np.where(masks, full, -np.inf).argmax(1)
    assert best.numpy().tolist() == expect.tolist()
    pred, _ = policy.predict({k: v.numpy() for k, v in x.items()}, deterministic=True,
                             action_masks=masks)  # fmt: skip
    assert pred.tolist() == expect.tolist()


def test_home_move_policy_trains_saves_and_reloads(tmp_path):
    """With the env's home_move block the policy scores it too (its own head), and the
    saved model reloads with it from the action space alone."""
    run = T.train(
        "maskable_ppo", ENV, timesteps=128, seed=2, run_dir=tmp_path / "run",
        env_config={"max_steps": 4, "max_servers": 8, "home_move": True},
        hyperparams={"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1,
                     "policy_kwargs": {"dim": 8, "rounds": 1}},
        eval_freq=0, checkpoint_freq=0,
    )  # fmt: skip
    model, _, _ = T.load_policy(run)
    ext = model.policy.features_extractor
    assert ext.home_move and hasattr(ext, "home_move_head")
    config = {"max_steps": 3, "max_servers": 8, "home_move": True}
    total, invalid = _episode(model, config)
    assert invalid == 0 and np.isfinite(total)
    env = gym.make(ENV, config={"max_servers": 8})  # no home_move: fewer actions
    with pytest.raises(ValueError, match="spaces do not match|does not match"):
        T.check_spaces(model, env)


def test_explore_floor_mixes_in_the_uniform_distribution_over_allowed_edits():
    """With explore_floor e the policy is (1 - e) * masked softmax + e * uniform over the
    row's allowed edits: its log-probabilities and entropies are the mixture's, masked
    edits keep probability 0, samples stay allowed and the mode is the scores' argmax."""
    torch.manual_seed(5)
    x, masks, space = _batch([{"scenario": "default"}, {"scenario": "inter"}])
    n = GraphExtractor(space).n_actions
    plain = GraphPolicy(space, spaces.Discrete(n), lambda _: 1e-3, dim=16)
    soft = GraphPolicy(space, spaces.Discrete(n), lambda _: 1e-3, dim=16, explore_floor=0.2)
    soft.load_state_dict(plain.state_dict())
    with torch.no_grad():
        p = plain.get_distribution(x, action_masks=masks).dist.probs[:, 0].numpy()
        dist = soft.get_distribution(x, action_masks=masks)
        q = dist.dist.probs[:, 0].numpy()
        sub = dist.sub.numpy() if dist.sub is not None else np.arange(n)
        ok = masks[:, sub]
        want = 0.8 * p + 0.2 * ok / ok.sum(1, keepdims=True)
        np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-7)
        assert (q[~ok] == 0).all()
        actions = torch.as_tensor(sub[np.argmax(np.where(ok, p, -1), 1)])
        _, log_q, ent = soft.evaluate_actions(x, actions, action_masks=masks)
        rows = np.arange(len(q))
        np.testing.assert_allclose(
            log_q.numpy(), np.log(want[rows, np.argmax(np.where(ok, p, -1), 1)]), rtol=1e-5
        )
        safe = np.where(want > 0, want, 1.0)
        np.testing.assert_allclose(ent.numpy(), -(want * np.log(safe)).sum(1), rtol=1e-5)
        for _ in range(20):
            a, _, _ = soft(x, action_masks=masks)
            assert masks[rows, a.numpy()].all()
        best, _, _ = soft(x, deterministic=True, action_masks=masks)
        same, _, _ = plain(x, deterministic=True, action_masks=masks)
    assert best.tolist() == same.tolist()


@pytest.mark.parametrize("floor", [1.0, -0.1, "0.1", True])
def test_bad_explore_floor_is_refused(floor):
    env = gym.make(ENV, config={"max_servers": 8})
    n = env.action_space.n
    with pytest.raises(
        ValueError, match=r"explore_floor=.* is not allowed; must be a number in \[0, 1\)"
    ):
        GraphPolicy(env.observation_space, spaces.Discrete(n), lambda _: 1e-3, explore_floor=floor)


def test_explore_floor_is_saved_with_the_policy(tmp_path):
    run = T.train(
        "maskable_ppo", ENV, timesteps=64, seed=3, run_dir=tmp_path / "run",
        env_config={"max_steps": 2, "max_servers": 8},
        hyperparams={"n_envs": 1, "n_steps": 64, "batch_size": 64, "n_epochs": 1,
                     "policy_kwargs": {"dim": 8, "rounds": 1, "explore_floor": 0.05}},
        eval_freq=0, checkpoint_freq=0,
    )  # fmt: skip
    model, _, _ = T.load_policy(run)
    assert model.policy.explore_floor == 0.05


def test_explore_kinds_put_the_floor_on_those_kinds_only():
    """explore_kinds: the uniform part covers the allowed edits of those kinds only;
    other allowed actions keep (1 - e) of their softmax probability."""
    torch.manual_seed(6)
    x, masks, space = _batch([{"scenario": "default"}, {"scenario": "inter"}])
    n = GraphExtractor(space).n_actions
    plain = GraphPolicy(space, spaces.Discrete(n), lambda _: 1e-3, dim=16)
    kinds = ["home_add", "home_drop"]
    soft = GraphPolicy(space, spaces.Discrete(n), lambda _: 1e-3, dim=16, explore_floor=0.3,
                       explore_kinds=kinds)  # fmt: skip
    soft.load_state_dict(plain.state_dict())
    lay = soft.features_extractor.layout
    flags = np.zeros(n, bool)
    for k in kinds:
        lay.views(flags)[k][...] = True
    with torch.no_grad():
        p = plain.get_distribution(x, action_masks=masks).dist.probs[:, 0].numpy()
        dist = soft.get_distribution(x, action_masks=masks)
        q = dist.dist.probs[:, 0].numpy()
    sub = dist.sub.numpy() if dist.sub is not None else np.arange(n)
    ok = masks[:, sub] & flags[sub]
    assert ok.any(1).all()  # both worlds have home edits allowed
    want = 0.7 * p + 0.3 * ok / ok.sum(1, keepdims=True)
    np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="explore_kinds has 'nope', which is not allowed"):
        GraphPolicy(space, spaces.Discrete(n), lambda _: 1e-3, explore_kinds=["nope"])
