"""The rollout buffer ``coel train`` gives MaskablePPO with GraphPolicy: the same
minibatches as sb3-contrib's, bit for bit, and the same trained weights."""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer

from agents.buffers import TorchMaskableDictRolloutBuffer

SPACE = spaces.Dict({
    "server": spaces.Box(0.0, 1.0, (5, 3), np.float32),
    "server_mask": spaces.MultiBinary(5),
    "links": spaces.Box(0.0, 1.0, (5, 5), np.float32),
})  # fmt: skip
ACTIONS = spaces.Discrete(7)


def _filled(cls, n_steps: int, n_envs: int):
    rng = np.random.default_rng(3)
    buf = cls(n_steps, SPACE, ACTIONS, "cpu", gae_lambda=0.95, gamma=0.99, n_envs=n_envs)
    for _ in range(n_steps):
        obs = {k: rng.random((n_envs, *SPACE[k].shape)).astype(SPACE[k].dtype) for k in SPACE}
        buf.add(
            obs,
            rng.integers(0, 7, (n_envs, 1)),
            rng.random(n_envs).astype(np.float32),
            np.zeros(n_envs, bool),
            th.as_tensor(rng.random(n_envs), dtype=th.float32),
            th.as_tensor(-rng.random(n_envs), dtype=th.float32),
            action_masks=rng.random((n_envs, 7)) < 0.6,
        )
    buf.compute_returns_and_advantage(th.zeros(n_envs), np.zeros(n_envs, bool))
    return buf


def _batches(buf, batch: int, epochs: int, seed: int) -> list:
    np.random.seed(seed)  # noqa: NPY002 - the buffers permute with numpy's global generator
    return [s for _ in range(epochs) for s in buf.get(batch)]


def test_minibatches_equal_sb3_contribs_bit_for_bit():
    ours = _batches(_filled(TorchMaskableDictRolloutBuffer, 6, 4), 8, 3, seed=11)
    theirs = _batches(_filled(MaskableDictRolloutBuffer, 6, 4), 8, 3, seed=11)
    assert len(ours) == len(theirs) == 9
    for a, b in zip(ours, theirs, strict=True):
        for field in ("actions", "old_values", "old_log_prob", "advantages", "returns",
                      "action_masks"):  # fmt: skip
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and x.shape == y.shape and th.equal(x, y), field
        assert a.observations.keys() == b.observations.keys()
        for k in a.observations:
            assert th.equal(a.observations[k], b.observations[k]), k


def test_a_new_rollout_is_not_served_from_the_last_ones_views():
    buf = _filled(TorchMaskableDictRolloutBuffer, 4, 2)
    first = _batches(buf, 8, 1, seed=0)[0].observations["server"].clone()
    buf.reset()
    buf.observations["server"][:] = 0.5  # a new rollout, written in place
    buf.full = True
    again = _batches(buf, 8, 1, seed=0)[0].observations["server"]
    assert not th.equal(first, again)
    assert th.all(again == 0.5)


def test_coel_train_gives_graph_policy_the_buffer_and_the_same_weights():
    """MaskablePPO with GraphPolicy (coel train's kwargs) trains to the weights that
    sb3-contrib's own buffer gives."""
    from agents import train as T

    cls = T.algo_class("maskable_ppo")
    hp = T.resolve_hyperparams("maskable_ppo", "CoEL-Graph-v0", {})
    hp.update(n_envs=2, n_steps=16, batch_size=16, n_epochs=2)
    weights = {}
    for ours in (True, False):
        kw = T._model_kwargs(cls, hp)
        assert kw["rollout_buffer_class"] is TorchMaskableDictRolloutBuffer
        if not ours:
            kw.pop("rollout_buffer_class")
        venv = T._make_vec("CoEL-Graph-v0", {}, 2, "dummy", 0, "maskable_ppo", False)
        try:
            model = cls(env=venv, seed=0, verbose=0, device="cpu", **kw)
            model.learn(64)
        finally:
            venv.close()
        assert isinstance(model.rollout_buffer, TorchMaskableDictRolloutBuffer) == ours
        weights[ours] = th.cat([p.detach().flatten() for p in model.policy.parameters()])
    assert th.equal(weights[True], weights[False])
