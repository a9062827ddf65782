"""Gymnasium environments over the CoEL world (registered by ``import coel_env``).

Every id is :class:`CoELEnv` with the config defaults of its row in
``coel_env.ENV_IDS``; :func:`env_config` gives an id's whole default config.
"""

from __future__ import annotations

from typing import Any

from coel_env.envs.coel import ACTION_TYPES, OBSERVATION_TYPES, CoELEnv

__all__ = ["ACTION_TYPES", "OBSERVATION_TYPES", "CoELEnv", "env_config", "episode_steps"]


def _row(env_id: str) -> tuple:
    import coel_env

    bare = env_id.removeprefix(f"{coel_env.NAMESPACE}/")
    for row in coel_env.ENV_IDS:
        if row[0] == bare:
            return row
    known = ", ".join(r[0] for r in coel_env.ENV_IDS)
    raise ValueError(f"env id {env_id!r} is not registered; known: {known}")


def env_config(env_id: str) -> dict[str, Any]:
    """Every config key of ``env_id`` with its default (its class's ``default_config()``,
    ``CoELEnv``'s for most ids, with the id's scenario, encodings and episode length)."""
    import importlib

    import coel_env

    name, defaults, steps = _row(env_id)
    cls = CoELEnv
    if name in coel_env.ENTRY_POINTS:
        module, attr = coel_env.ENTRY_POINTS[name].split(":")
        cls = getattr(importlib.import_module(module), attr)
    return {**cls.default_config(), **defaults, "max_steps": steps}


def episode_steps(env_id: str) -> int:
    """``max_episode_steps`` of ``env_id`` [epochs]."""
    return _row(env_id)[2]
