"""The envs' configuration: one merge-and-check for the single-agent and the multi-agent
env (a config is a dict over ``default_config()``; every error names the key, the value
and what is allowed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from coel_env.core.rewards import REWARD_REFS, check_reward_value

#: Integer keys and their least allowed value.
INT_KEYS = {"controller": 0, "n_groups": 1, "max_steps": 1, "max_cycles": 1}


def resolve_config(
    defaults: Mapping[str, Any], *given: tuple[str, Mapping[str, Any] | None]
) -> dict[str, Any]:
    """``defaults`` with each ``(name, mapping)`` of ``given`` laid over it in order.

    Raises:
        TypeError: a mapping is not a dict (``name`` says which argument).
        ValueError: an unknown key (the valid ones are listed).
    """
    cfg = dict(defaults)
    for name, mapping in given:
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"{name} must be a dict of config keys (or None), not "
                f"{type(mapping).__name__} {mapping!r}; e.g. {name}={{'scenario': 'large'}}"
            )
        for key, value in mapping.items():
            if key not in cfg:
                raise ValueError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(cfg))}"
                )
            cfg[key] = value
    return cfg


def check_config(
    cfg: Mapping[str, Any],
    names: Mapping[str, Mapping] | None = None,
    ints: Mapping[str, int] | None = None,
) -> None:
    """Raise ``ValueError`` naming the key, the value and what is allowed, for each kind
    of key ``cfg`` holds: integers (:data:`INT_KEYS` and ``ints``, key -> least value),
    reward weights (``*_reward``) and references, ``overrides``, ``device_profiles``, and
    names chosen from ``names`` (key -> table of allowed names, e.g. the action
    encodings)."""
    for key, least in {**INT_KEYS, **(ints or {})}.items():
        if key not in cfg:
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < least:
            raise ValueError(f"{key}={v!r} is not allowed; must be an integer >= {least}")
    for key, v in cfg.items():
        if key.endswith("_reward") or key in REWARD_REFS:
            check_reward_value(key, v)
    for key, table in (names or {}).items():
        if not isinstance(cfg[key], str) or cfg[key] not in table:
            raise ValueError(
                f"{key}={cfg[key]!r} is not allowed; known encodings: {', '.join(table)}"
            )
    if not isinstance(cfg["overrides"], dict):
        raise ValueError(f"overrides={cfg['overrides']!r} is not allowed; must be a dict")
    if not isinstance(cfg["device_profiles"], list | tuple):
        raise ValueError(
            f"device_profiles={cfg['device_profiles']!r} is not allowed; must be a list of "
            "profile CSV paths"
        )


def check_render_mode(render_mode: str | None, allowed: list[str]) -> None:
    """Raise ``ValueError`` unless ``render_mode`` is None or one of ``allowed``."""
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"render_mode={render_mode!r} is not allowed; allowed: {allowed}")
