"""The fused (masked) multi-categorical distribution (``agents.policies``): the numbers of
SB3's and sb3-contrib's per-field distributions, masks, gradients, and the fused
policies in training, saving, loading and on a published policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sb3_contrib.common.maskable.distributions import MaskableMultiCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import MultiCategoricalDistribution

import coel_env  # noqa: F401  (registers the ids)
from agents import policies as P
from agents import train as T

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results" / "policies" / "maskable_ppo-CoEL-v2"
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _no_distribution_checks():
    # As coel train runs; the stock Categoricals give the same numbers either way.
    with T.distribution_checks(False):
        yield


def _case(seed: int, nvec: list[int], batch: int, scale: float, p_allow: float):
    """Logits, masks (>= 1 allowed choice per field) and allowed actions."""
    rng = np.random.default_rng(seed)
    n = int(sum(nvec))
    logits = torch.as_tensor(rng.normal(0.0, scale, (batch, n)), dtype=torch.float32)
    masks = rng.random((batch, n)) < p_allow
    starts = np.concatenate(([0], np.cumsum(nvec)[:-1]))
    for s, k in zip(starts, nvec, strict=True):
        masks[np.arange(batch), s + rng.integers(0, k, batch)] = True
    actions = np.empty((batch, len(nvec)), np.int64)
    for f, (s, k) in enumerate(zip(starts, nvec, strict=True)):
        for b in range(batch):
            actions[b, f] = rng.choice(np.flatnonzero(masks[b, s : s + k]))
    return logits, masks, torch.as_tensor(actions), starts


cases = st.tuples(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 12), min_size=1, max_size=40),
    st.integers(1, 16),
    st.sampled_from([0.01, 1.0, 5.0, 30.0]),
    st.sampled_from([0.0, 0.3, 0.7, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(cases)
def test_log_probs_and_entropies_equal_sb3_contribs_masked_distribution(case):
    logits, masks, actions, _ = _case(*case)
    nvec = case[1]
    ref = MaskableMultiCategoricalDistribution(nvec).proba_distribution(logits)
    ref.apply_masking(masks)
    fused = P.FusedMultiCategoricalDistribution(nvec).proba_distribution(logits)
    fused.apply_masking(masks)
    torch.testing.assert_close(fused.log_prob(actions), ref.log_prob(actions), **TOL)
    torch.testing.assert_close(fused.entropy(), ref.entropy(), **TOL)
    # SB3's rollout buffer hands actions back as floats
    torch.testing.assert_close(fused.log_prob(actions.float()), ref.log_prob(actions), **TOL)
    # masks removed: the unmasked numbers again, as sb3-contrib's and SB3's
    fused.apply_masking(None)
    ref.apply_masking(None)
    plain = MultiCategoricalDistribution(nvec).proba_distribution(logits)
    torch.testing.assert_close(fused.log_prob(actions), ref.log_prob(actions), **TOL)
    torch.testing.assert_close(fused.entropy(), plain.entropy(), **TOL)
    torch.testing.assert_close(fused.log_prob(actions), plain.log_prob(actions), **TOL)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_mode_is_each_fields_masked_argmax_and_samples_are_allowed(case):
    logits, masks, _, starts = _case(*case)
    nvec = case[1]
    fused = P.FusedMultiCategoricalDistribution(nvec)
    fused.proba_distribution(logits)
    fused.apply_masking(masks)
    want = np.stack(
        [
            np.where(masks[:, s : s + k], logits.numpy()[:, s : s + k], -np.inf).argmax(1)
            for s, k in zip(starts, nvec, strict=True)
        ],
        axis=1,
    )
    assert np.array_equal(fused.mode().numpy(), want)
    assert np.array_equal(fused.get_actions(deterministic=True).numpy(), want)
    torch.manual_seed(case[0] % 1000)
    for _ in range(5):
        a = fused.sample().numpy()
        assert a.shape == (logits.shape[0], len(nvec)) and a.dtype == np.int64
        assert masks[np.arange(len(a))[:, None], starts[None, :] + a].all()


def test_samples_follow_the_masked_probabilities():
    nvec = [3, 1, 5, 2]
    logits = torch.tensor([[0.0, 1.0, 2.0, 5.0, -1.0, 0.0, 1.0, 0.5, 3.0, 0.2, 0.1]])
    masks = np.array([[1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1]], bool)
    ref = MaskableMultiCategoricalDistribution(nvec).proba_distribution(logits)
    ref.apply_masking(masks)
    fused = P.FusedMultiCategoricalDistribution(nvec)
    fused.proba_distribution(logits.expand(40_000, -1))
    fused.apply_masking(np.repeat(masks, 40_000, axis=0))
    torch.manual_seed(0)
    draws = fused.sample().numpy()
    for f, (dist, k) in enumerate(zip(ref.distributions, nvec, strict=True)):
        freq = np.bincount(draws[:, f], minlength=k) / len(draws)
        # 40k draws: the standard error of a frequency is <= 0.0025
        np.testing.assert_allclose(freq, dist.probs[0].numpy(), atol=0.012)
    assert (draws[:, 0] != 1).all() and (draws[:, 2] != 2).all()  # masked choices


def test_a_field_with_every_choice_masked_samples_among_its_own_choices():
    # sb3-contrib's gives such a field uniform probabilities; the padding must not win
    nvec = [2, 4]
    fused = P.FusedMultiCategoricalDistribution(nvec)
    fused.proba_distribution(torch.zeros(1000, 6))
    fused.apply_masking(np.array([[0, 0, 1, 1, 1, 1]] * 1000, bool))
    a = fused.sample().numpy()
    assert set(a[:, 0]) == {0, 1} and a[:, 1].max() <= 3
    assert fused.mode()[0, 0] in (0, 1)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_gradients_are_those_of_the_stock_distribution(case):
    logits, masks, actions, starts = _case(*case)
    nvec = case[1]
    grads = []
    for cls in (MaskableMultiCategoricalDistribution, P.FusedMultiCategoricalDistribution):
        x = logits.clone().requires_grad_(True)
        d = cls(nvec).proba_distribution(x)
        d.apply_masking(masks)
        (-(d.log_prob(actions).sum()) - 0.01 * d.entropy().sum()).backward()
        grads.append(x.grad)
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
    assert (grads[1][torch.as_tensor(~masks)] == 0).all()  # masked logits learn nothing


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"action_dims=\[3, 0\] is not allowed; must be"):
        P.FusedMultiCategoricalDistribution([3, 0])
    with pytest.raises(ValueError, match=r"action_dims=\[\] is not allowed"):
        P.FusedMultiCategoricalDistribution([])
    with pytest.raises(RuntimeError, match="before proba_distribution"):
        P.FusedMultiCategoricalDistribution([2]).apply_masking(None)


# ---------------------------------------------------------------------------- policies


def test_coel_train_names_the_fused_policy_and_refuses_it_where_it_does_not_apply():
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import A2C, PPO

    assert P.resolve_policy(MaskablePPO, "FusedMlpPolicy") is P.FusedMaskableActorCriticPolicy
    assert P.resolve_policy(PPO, "FusedMlpPolicy") is P.FusedActorCriticPolicy
    assert P.resolve_policy(A2C, "FusedMlpPolicy") is P.FusedActorCriticPolicy
    hp = T.resolve_hyperparams("maskable_ppo", "CoEL-v2", {"policy": "FusedMlpPolicy"})
    assert hp["policy"] == "FusedMlpPolicy"  # the plain name in hyperparams.yml
    assert T._model_kwargs(MaskablePPO, hp)["policy"] is P.FusedMaskableActorCriticPolicy
    stock = T.resolve_hyperparams("maskable_ppo", "CoEL-v2")
    assert T._model_kwargs(MaskablePPO, stock)["policy"] == "MlpPolicy"  # unchanged default
    with pytest.raises(ValueError, match="policy='FusedMlpPolicy' is not allowed for DQN"):
        T.resolve_hyperparams("dqn", "CoEL-v0", {"policy": "FusedMlpPolicy"})
    with pytest.raises(ValueError, match="policy='Fused' is not allowed; known: .*FusedMlpPolicy"):
        T.resolve_hyperparams("ppo", "CoEL-v0", {"policy": "Fused"})
    with pytest.raises(ValueError, match="known: CnnPolicy, MlpPolicy, MultiInputPolicy$"):
        T.resolve_hyperparams("dqn", "CoEL-v0", {"policy": "Fused"})


@pytest.mark.parametrize("algo", ["maskable_ppo", "ppo"])
def test_the_fused_policy_is_the_stock_network(algo):
    """Same modules, parameter names and initial weights from the same seed."""
    from stable_baselines3.common.utils import set_random_seed

    env = T.make_env("CoEL-v2", {})
    cls = T.algo_class(algo)
    models = []
    for policy in ("MlpPolicy", P.resolve_policy(cls, "FusedMlpPolicy")):
        set_random_seed(5)
        models.append(cls(policy, env, seed=5, device="cpu", policy_kwargs={"net_arch": [32]}))
    stock, fused = (m.policy.state_dict() for m in models)
    assert list(stock) == list(fused)
    assert all(torch.equal(stock[k], fused[k]) for k in stock)
    assert isinstance(models[1].policy.action_dist, P.FusedMultiCategoricalDistribution)
    assert not isinstance(models[0].policy.action_dist, P.FusedMultiCategoricalDistribution)


def test_a_discrete_action_space_keeps_the_stock_distribution():
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.distributions import CategoricalDistribution

    model = PPO(
        P.FusedActorCriticPolicy, gym.make("CartPole-v1"), device="cpu", n_steps=16, batch_size=16
    )
    assert type(model.policy.action_dist) is CategoricalDistribution


def test_fused_maskable_ppo_trains_on_coel_v2_saves_reloads_and_predicts_with_masks(tmp_path):
    hp = {"policy": "FusedMlpPolicy", "n_steps": 64, "batch_size": 64, "n_epochs": 2,
          "policy_kwargs": {"net_arch": [32, 32]}}  # fmt: skip
    from stable_baselines3.common.callbacks import BaseCallback

    start: dict = {}

    class Remember(BaseCallback):  # the weights before learning, to see that it trains
        def _on_training_start(self) -> None:
            start.update({k: v.clone() for k, v in self.model.policy.state_dict().items()})

        def _on_step(self) -> bool:
            return True

    run = T.train("maskable_ppo", "CoEL-v2", timesteps=256, run_dir=tmp_path / "run",
                  hyperparams=hp, eval_freq=0, checkpoint_freq=0, seed=1,
                  callbacks=[Remember()])  # fmt: skip
    model, _, meta = T.load_policy(run)
    assert type(model.policy) is P.FusedMaskableActorCriticPolicy
    end = model.policy.state_dict()
    assert start and not all(torch.equal(start[k], end[k]) for k in start)  # it trained
    assert meta["num_timesteps"] >= 256
    assert T._read_yaml(run / "hyperparams.yml")["policy"] == "FusedMlpPolicy"
    # a fused zip outside its run folder is still read as MaskablePPO's
    assert T._guess_algo(run / "model.zip") == "maskable_ppo"
    assert T._guess_algo(PUBLISHED / "model.zip") == "maskable_ppo"
    env = T.make_env("CoEL-v2", {})
    obs, _ = env.reset(seed=0)
    nvec = env.action_space.nvec
    starts = np.concatenate(([0], np.cumsum(nvec)[:-1]))
    for _ in range(4):
        mask = env.unwrapped.action_masks()
        for det in (True, False):
            a, _ = model.predict(obs, deterministic=det, action_masks=mask)
            assert a.shape == nvec.shape and mask[starts + a].all()
        obs, *_ = env.step(a)
    # the same weights give the same deterministic actions in the stock policy
    stock, _, _ = T.load_policy(run)
    stock.policy.action_dist = MaskableMultiCategoricalDistribution(list(nvec))
    stock.policy.__class__ = MaskableActorCriticPolicy
    obs, _ = env.reset(seed=3)
    mask = env.unwrapped.action_masks()
    a1, _ = model.predict(obs, deterministic=True, action_masks=mask)
    a2, _ = stock.predict(obs, deterministic=True, action_masks=mask)
    assert np.array_equal(a1, a2)


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="no published CoEL-v2 policy")
def test_a_published_policy_loads_fused_with_the_same_weights_and_actions():
    stock, _, _ = T.load_policy(PUBLISHED)
    fused, _, _ = T.load_policy(PUBLISHED, fused=True)
    assert type(fused.policy) is P.FusedMaskableActorCriticPolicy
    assert type(stock.policy) is MaskableActorCriticPolicy
    a, b = stock.policy.state_dict(), fused.policy.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert P.to_fused(fused) is fused  # already fused: unchanged
    env = T.make_env("CoEL-v2", {})
    obs, _ = env.reset(seed=0)
    rows, masks = [], []
    for _ in range(6):
        mask = env.unwrapped.action_masks()
        rows.append(obs)
        masks.append(mask)
        a1, _ = stock.predict(obs, deterministic=True, action_masks=mask)
        a2, _ = fused.predict(obs, deterministic=True, action_masks=mask)
        assert np.array_equal(a1, a2)
        obs, *_ = env.step(a1)
    x = torch.as_tensor(np.array(rows))
    acts = torch.as_tensor(np.array([stock.predict(o, action_masks=m)[0]
                                     for o, m in zip(rows, masks, strict=True)]))  # fmt: skip
    m = torch.as_tensor(np.array(masks))
    with torch.no_grad():
        v1, lp1, e1 = stock.policy.evaluate_actions(x, acts, action_masks=m)
        v2, lp2, e2 = fused.policy.evaluate_actions(x, acts, action_masks=m)
    assert torch.equal(v1, v2)
    torch.testing.assert_close(lp2, lp1, **TOL)
    torch.testing.assert_close(e2, e1, **TOL)


def test_to_fused_refuses_a_policy_without_a_fused_counterpart():
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", "CartPole-v1", device="cpu", buffer_size=10, learning_starts=0)
    with pytest.raises(ValueError, match="the policy DQNPolicy has no fused counterpart"):
        P.to_fused(model)


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="no published CoEL-v2 policy")
def test_the_published_policys_returns_do_not_move_with_the_fused_distribution():
    from experiments.fused_returns import check

    (row,) = check(PUBLISHED, [1], 5)
    assert row["steps"] == 5 and row["fused_differs"] == 0 and row["direct_differs"] == 0
    assert row["evaluate"] == row["stock"] == row["fused"]


def test_float64_logits_give_float64_numbers_of_the_stock_distribution():
    logits, masks, actions, _ = _case(7, [3, 5, 2, 7], 6, 4.0, 0.5)
    logits = logits.double()
    ref = MaskableMultiCategoricalDistribution([3, 5, 2, 7]).proba_distribution(logits)
    ref.apply_masking(masks)
    fused = P.FusedMultiCategoricalDistribution([3, 5, 2, 7])
    fused.proba_distribution(logits.float())  # the layout follows the logits' dtype
    fused.proba_distribution(logits)
    fused.apply_masking(masks)
    assert fused.log_prob(actions).dtype == torch.float64
    torch.testing.assert_close(fused.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(fused.entropy(), ref.entropy())
