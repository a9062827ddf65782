"""Reward terms: one function that turns an epoch's report into named terms.

The environments and the evaluation harness (``agents/``) both call
:func:`reward_terms`, so returns of RL agents and baselines are comparable
number for number. ``reward = sum(config[t] * terms[t])``.
"""

from __future__ import annotations

from collections.abc import Mapping
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
