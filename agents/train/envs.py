"""The environments ``coel train`` builds: ids, the DQN action wrapper, vector envs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from agents.train.runs import _plain

#: DQN flattens a MultiDiscrete space into Discrete only up to this many joint actions.
DQN_MAX_ACTIONS = 4096


def canonical_env_id(env_id: str) -> str:
    """``env_id`` without the ``coel_env/`` or ``coel_env:`` prefix; raises if unknown."""
    import coel_env

    ids = [e[0] for e in coel_env.ENV_IDS]
    name = str(env_id)
    for prefix in (f"{coel_env.NAMESPACE}/", f"{coel_env.NAMESPACE}:"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if name not in ids:
        raise ValueError(f"--env {env_id!r} is not a CoEL environment; known: {', '.join(ids)}")
    return name


class FlattenMultiDiscrete(gym.ActionWrapper):
    """``MultiDiscrete(nvec)`` as ``Discrete(prod(nvec))`` (C order), for DQN."""

    def __init__(self, env: gym.Env, max_actions: int = DQN_MAX_ACTIONS) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError(f"FlattenMultiDiscrete needs a MultiDiscrete space, not {space}")
        self.nvec = np.asarray(space.nvec, dtype=np.int64).ravel()
        n = int(np.prod(self.nvec))
        if n > max_actions:
            raise ValueError(
                f"{space} has {n} joint actions, above the cap of {max_actions} for flattening"
            )
        self.action_space = gym.spaces.Discrete(n)

    def action(self, action) -> np.ndarray:
        return np.asarray(np.unravel_index(int(action), self.nvec), dtype=np.int64)


def _dqn_wrapper_needed(algo: str, space: gym.Space, env_id: str) -> bool:
    if algo != "dqn" or isinstance(space, gym.spaces.Discrete):
        return False
    if isinstance(space, gym.spaces.MultiDiscrete):
        n = int(np.prod(np.asarray(space.nvec, dtype=np.int64)))
        if n <= DQN_MAX_ACTIONS:
            return True
        raise ValueError(
            f"--algo dqn needs a Discrete action space; {env_id} has {space} "
            f"({n} joint actions), above the cap of {DQN_MAX_ACTIONS} (DQN_MAX_ACTIONS) for "
            "flattening it into Discrete; use maskable_ppo, ppo or a2c, or shrink the space "
            "(fewer popularity groups, e.g. --env-config n_groups=2 on CoEL-IntraDevice-v0)"
        )
    raise ValueError(f"--algo dqn needs a Discrete action space; {env_id} has {space}")


def make_env(
    env_id: str, config: Mapping[str, Any] | None = None, algo: str | None = None, **kwargs
) -> gym.Env:
    """``gym.make`` of a CoEL id with ``config``, wrapped as training wraps it for ``algo``
    (DQN: :class:`FlattenMultiDiscrete`). ``config`` may be a run's ``config.yml``
    mapping (its ``id`` key is dropped)."""
    env_id = canonical_env_id(env_id)
    cfg = {k: v for k, v in (config or {}).items() if k != "id"}
    env = gym.make(f"coel_env:{env_id}", config=cfg, **kwargs)
    if algo is not None and _dqn_wrapper_needed(algo, env.action_space, env_id):
        env = FlattenMultiDiscrete(env)
    return env


def _probe_env(env_id: str, config: Mapping[str, Any]) -> tuple[dict[str, Any], gym.Space]:
    """Build one env: its resolved config and action space (bad config raises here)."""
    try:
        env = gym.make(f"coel_env:{env_id}", config=dict(config))
    except FileNotFoundError as exc:
        what = f"{exc.filename!s} does not exist" if exc.filename is not None else str(exc)
        raise ValueError(f"{what} (a path given by --scenario, --set or --env-config)") from None
    try:
        resolved = _plain(dict(env.unwrapped.config))
        return resolved, env.action_space
    finally:
        env.close()


def _make_vec(
    env_id: str,
    config: Mapping[str, Any],
    n_envs: int,
    vec: str,
    seed: int | None,
    algo: str,
    dqn_wrap: bool,
):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    kw: dict[str, Any] = {}
    if vec == "subproc":
        kw = {"vec_env_cls": SubprocVecEnv, "vec_env_kwargs": {"start_method": "spawn"}}
    else:
        kw = {"vec_env_cls": DummyVecEnv}
    return make_vec_env(
        f"coel_env:{env_id}",
        n_envs=n_envs,
        seed=seed,
        env_kwargs={"config": {k: v for k, v in config.items() if k != "id"}},
        wrapper_class=FlattenMultiDiscrete if dqn_wrap else None,
        **kw,
    )
