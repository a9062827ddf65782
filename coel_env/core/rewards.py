"""Reward terms: one function that turns an epoch's report into named terms, and the
weights that price them.

The environments, the evaluation harness and the MILP (``agents/``) all use
:func:`reward_terms` and :class:`RewardConfig`, so returns of RL agents and
baselines are comparable number for number. ``reward = sum(config[t] * terms[t])``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Reward terms; each has a config key of the same name holding its weight.
REWARD_TERMS = (
    "slo_reward",
    "latency_reward",
    "quality_reward",
    "dropped_reward",
    "migration_reward",
    "energy_reward",
    "broadcast_reward",
    "invalid_reward",
)
#: References that scale the terms (a term reaches its cap at the reference).
REWARD_REFS = ("latency_ref_ms", "migration_ref_gb", "broadcast_ref_mb")


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the named reward terms and the references that scale them.

    The defaults are the environments' (``CoELEnv.default_config()`` holds the same
    keys); each weight has the name of its term in :data:`REWARD_TERMS`.
    """

    latency_ref_ms: float = 60000.0  # p95 latency that costs a full latency term [ms]
    migration_ref_gb: float = 10.0  # migration that costs a full migration term [GB]
    broadcast_ref_mb: float = 10.0  # broadcast bytes that cost a full term [MB]
    slo_reward: float = 1.0  # weight of the SLO attainment (share of arrived requests)
    latency_reward: float = 0.2  # weight of -p95 latency / latency_ref_ms (capped at 1)
    quality_reward: float = 0.5  # weight of -quality loss / quality floor (capped at 2)
    dropped_reward: float = 0.5  # weight of -dropped share of arrived requests
    migration_reward: float = 0.1  # weight of -migration bytes / migration_ref_gb
    energy_reward: float = 0.05  # weight of -energy / (sum of busy power x epoch)
    broadcast_reward: float = 0.0  # weight of -broadcast bytes / broadcast_ref_mb
    invalid_reward: float = 1.0  # weight of -1 for an invalid action

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_reward_value(f.name, getattr(self, f.name))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> RewardConfig:
        """The reward keys of ``config`` (an env config or a run's ``config.yml``; its
        other keys belong to the env and are not read here), defaults for the rest."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (config or {}).items() if k in names})

    def as_dict(self) -> dict[str, float]:
        """``{key: value}`` of every weight and reference (for :func:`total_reward`)."""
        return dataclasses.asdict(self)


def check_reward_value(key: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``value`` is a finite number (and > 0
    for a reference)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} is not allowed; must be a finite number")
    if key in REWARD_REFS and value <= 0:
        raise ValueError(f"{key}={value!r} is not allowed; must be > 0")


def reward_terms(report, world, config: Mapping, invalid: bool) -> dict[str, float]:
    """Named, unweighted reward terms of one epoch (each in [-1, 1]).

    Args:
        report: the epoch's :class:`~coel_env.core.world.EpochReport`.
        world: the world (for the quality floor, GPU power and epoch length).
        config: holds ``latency_ref_ms``, ``migration_ref_gb``, ``broadcast_ref_mb``.
        invalid: the requested plan was refused.
    """
    r = report
    arrived = max(r.requests_arrived, 1)
    floor = world.scenario.workload.quality_floor
    busy_power = sum(g.power_busy_w for g in world.gpus)
    epoch_s = world.scenario.epoch_s
    return {
        "slo_reward": float(r.slo_attainment),
        "latency_reward": -min(r.latency_p95_ms / config["latency_ref_ms"], 1.0),
        "quality_reward": -min(r.quality_loss / max(floor, 1e-9), 2.0) / 2.0,
        "dropped_reward": -r.requests_dropped / arrived,
        "migration_reward": -min(r.migration_bytes / (config["migration_ref_gb"] * 1e9), 1.0),
        "energy_reward": -min(r.energy_j / (busy_power * epoch_s), 1.0),
        "broadcast_reward": -min(r.broadcast_bytes / (config["broadcast_ref_mb"] * 1e6), 1.0),
        "invalid_reward": -1.0 if invalid else 0.0,
    }


#: Fields of an epoch's report that every env copies into ``info`` (true metrics).
REPORT_INFO = (
    "slo_attainment",
    "latency_p95_ms",
    "quality_loss",
    "requests_arrived",
    "requests_dropped",
    "migration_bytes",
    "energy_j",
    "broadcast_bytes",
)


def report_info(report) -> dict[str, Any]:
    """The :data:`REPORT_INFO` fields of ``report`` (an ``EpochReport``), for ``info``."""
    return {k: getattr(report, k) for k in REPORT_INFO}


def total_reward(terms: Mapping[str, float], config: Mapping) -> float:
    """``sum(config[t] * terms[t])``."""
    return float(sum(config[k] * v for k, v in terms.items()))
