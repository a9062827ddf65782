"""The policy protocol that baselines and RL agents share, and what a policy sees.

A policy is asked once per epoch, before the epoch runs, for the plan to
deploy (``None`` keeps the plan in force). It sees the world either through
the controller's broadcast view (:meth:`Observation.from_view`, the same
information as the RL agent; the default) or through the true state
(:meth:`Observation.from_truth`, an *oracle*, labelled so in results); the
observation itself is the core's (:mod:`coel_env.core.observation`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from coel_env.core.observation import Observation
from coel_env.core.plan import InfeasibilityReport, Plan
from coel_env.core.world import World

__all__ = ["SEES", "Observation", "Policy", "observe"]

SEES = ("view", "oracle")


@runtime_checkable
class Policy(Protocol):
    """A deployment policy.

    Attributes:
        name: the name results are reported under.
        sees: ``"view"`` (broadcast view, the default) or ``"oracle"`` (true state).
    """

    name: str
    sees: str

    def reset(self, world: World, seed: int) -> None:
        """Start an episode on ``world`` (already reset)."""

    def act(self, world: World, obs: Observation) -> Plan | InfeasibilityReport | None:
        """The plan for the coming epoch, or None to keep the plan in force; an
        :class:`InfeasibilityReport` when the decision decodes to no plan at all (an
        invalid action of a learned policy: counted as an invalid epoch, the plan in
        force stays)."""


def observe(policy: Policy, world: World, controller: int = 0) -> Observation:
    """The observation ``policy`` is entitled to."""
    if policy.sees not in SEES:
        raise ValueError(f"policy {policy.name!r}: sees={policy.sees!r}; allowed: {SEES}")
    if policy.sees == "oracle":
        return Observation.from_truth(world)
    return Observation.from_view(world, controller)
