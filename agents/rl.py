"""RL agents as policies of the evaluation harness.

:class:`RLPolicy` wraps a trained SB3 model so it runs through the same loop as
the baselines (:mod:`agents.harness`): before each epoch it encodes the world
exactly as the environment would (the controller's broadcast view, popularity
estimates and the plan in force), normalises the observation with the saved
``VecNormalize`` statistics when there are any, asks the model for a
deterministic action (with the action masks for MaskablePPO) and decodes it
into a plan with the environment's own action encoding. Its returns are
therefore the environment's returns for the same seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import Observation
from coel_env.core.plan import InfeasibilityReport, Plan
from coel_env.core.world import World


class RLPolicy:
    """A trained model as a harness policy (sees the broadcast view, like in training).

    Args:
        model: an SB3 / sb3-contrib model.
        env_id: the registered id it was trained on (its action and observation
            encodings are reused).
        config: the environment config used in training (controller, n_groups, max_steps;
            over the id's defaults, :func:`coel_env.envs.env_config`).
        vecnormalize: the ``VecNormalize`` wrapper with the training statistics, or None.
        name: the name results are reported under.
    """

    sees = "view"

    def __init__(
        self,
        model: Any,
        env_id: str,
        config: dict,
        vecnormalize: Any = None,
        name: str = "rl",
    ) -> None:
        self.model = model
        from coel_env.envs import env_config

        self.env_id = env_id
        self.config = {**env_config(env_id), **config}
        self.vecnormalize = vecnormalize
        self.name = name
        self._masked = type(model).__name__.startswith("Maskable")

    def reset(self, world: World, seed: int) -> None:
        c = self.config
        from coel_env.envs import ACTION_TYPES, OBSERVATION_TYPES

        self.obs_type = OBSERVATION_TYPES[c["observation"]](
            world, c["controller"], c["n_groups"], c["max_steps"]
        )
        self.action_type = ACTION_TYPES[c["action"]](world, c["n_groups"], c["controller"])
        space = self.model.observation_space
        if space.shape != self.obs_type.space().shape:
            raise ValueError(
                f"policy {self.name!r} was trained on observations of shape {space.shape}; "
                f"this world gives {self.obs_type.space().shape} (another number of servers "
                "or models)"
            )
        need = self.action_type.space_nvec()
        n = getattr(self.model.action_space, "n", None)  # DQN: MultiDiscrete flattened
        self._flat = n is not None
        nvec = np.asarray(getattr(self.model.action_space, "nvec", [int(n or 0)]))
        ok = int(n) == int(np.prod(need)) if self._flat else np.array_equal(nvec, need)
        if not ok:
            raise ValueError(
                f"policy {self.name!r} was trained on actions {nvec.tolist()}; this world "
                f"needs {need.tolist()}"
            )
        self._argmax = self._make_argmax()

    def _make_argmax(self):
        """The deterministic action of an actor-critic policy over a ``MultiDiscrete``
        space, computed directly: the masked argmax of each field's logits (the mode
        of SB3's / sb3-contrib's (masked) multi-categorical distribution, which
        ``predict`` reaches through one torch ``Categorical`` per field, ~70 ms per
        decision on ``large``'s 184 fields). None where that does not apply."""
        import torch

        policy = getattr(self.model, "policy", None)
        nvec = getattr(self.model.action_space, "nvec", None)
        if nvec is None or not hasattr(policy, "action_net") or self._flat:
            return None
        nvec = np.asarray(nvec, np.int64).ravel()
        cols = np.arange(int(nvec.max()))
        pad = cols[None, :] >= nvec[:, None]  # [fields, max choices]: not a choice
        starts = np.r_[0, np.cumsum(nvec)[:-1]]
        index = np.where(pad, 0, starts[:, None] + cols[None, :])

        def argmax(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
            with torch.no_grad():
                obs, _ = policy.obs_to_tensor(x)
                feats = policy.extract_features(obs)
                if isinstance(feats, tuple):  # separate actor and critic extractors
                    feats = feats[0]
                latent = policy.mlp_extractor.forward_actor(feats)
                logits = policy.action_net(latent).cpu().numpy()[0]
            table = np.where(pad, -np.inf, logits[index])
            if mask is not None:
                table = np.where(np.asarray(mask, bool)[index] & ~pad, table, -np.inf)
            return table.argmax(axis=1).astype(np.int64)

        return argmax

    def act(self, world: World, obs: Observation) -> Plan | InfeasibilityReport | None:
        pop = self.obs_type.popularity()
        x = self.obs_type.observe(pop)
        if self.vecnormalize is not None:
            x = self.vecnormalize.normalize_obs(x[None])[0]
        mask = self.action_type.mask() if self._masked else None
        if self._argmax is not None:
            a = self._argmax(x, mask)
        elif mask is not None:
            action, _ = self.model.predict(x, deterministic=True, action_masks=mask)
            a = np.asarray(action, dtype=np.int64)
        else:
            action, _ = self.model.predict(x, deterministic=True)
            a = np.asarray(action, dtype=np.int64)
        if self._flat:  # undo agents.train.FlattenMultiDiscrete
            a = np.array(np.unravel_index(int(a), self.action_type.space_nvec()), dtype=np.int64)
        return self.action_type.decode(a, world.plan, pop)
