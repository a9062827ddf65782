"""Potential-based shaping of ``CoEL-Graph-v0``'s rewards from a paired lookahead of
the world (config ``shaping_epochs`` > 0; off by default).

A change of a model's homes pays off over many epochs, by a small amount per epoch
(on ``default``, the best one-edit home move gains about 3% of an epoch's reward),
while the epoch's reward varies with the arrivals by more than that. PPO then learns
little about home edits from its rollouts. The potential gives such an edit its
expected worth at once, measured by the world itself:

``phi(H) = L(draft) - L(draft with the homes the episode started with)``

where ``L(plan)`` is the reward summed over ``shaping_epochs`` epochs of a copy of the
world in which ``plan`` is committed and then kept. The two copies start from the same
state with the same random generators, so they see the same arrivals, link and server
events (common random numbers): ``phi`` is the difference the homes make, without the
arrivals' noise. ``phi`` is 0 for the episode's starting homes, is computed the first
time a set of homes is reached with a given main bit width of each model (the width
most of its experts have) in an episode, from the world and draft at that step, and
kept for the rest of the episode; it is 0 when the reference plan is one the world
refuses. (Keyed by the main bit widths too: a home move is worth one thing while the
experts are at 16 bits and another at 4. Keying by every expert's width would run new
lookaheads after every bit-width edit, several times slower in training.)

The env adds ``gamma * phi(s') - phi(s)`` to every step's reward. Over an episode the
shaping terms telescope to ``gamma^T phi(s_T) - phi(s_0)``: ``phi(s_0)`` is a constant of
the start, and the env never terminates, only truncates, so the last state keeps its
potential, which a learner that bootstraps a truncated episode's value (SB3 does) carries
on as the value of the states after it. Every policy's discounted return thus changes by
the same amount and the best policy is unchanged (Ng, Harada and Russell, ICML 1999,
"Policy invariance under reward transformations"). That holds for the discount
``shaping_gamma``, which must equal the learner's ``gamma``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from coel_env.core.plan import Plan
from coel_env.core.rewards import reward_terms, total_reward
from coel_env.core.world import World

__all__ = ["HomeLookahead", "homes_of", "lookahead_return", "world_copy"]

HomeSet = tuple[tuple[str, tuple[int, ...]], ...]


def homes_of(plan: Plan) -> HomeSet:
    """The plan's homes as a hashable key: ``((model, sorted homes), ...)``."""
    return tuple((name, tuple(sorted(mp.home))) for name, mp in plan.models.items())


def _key(plan: Plan) -> tuple:
    """What the potential is kept by: the homes and each model's main bit width (the one
    most of its experts have; the widest of a tie)."""
    main = []
    for mp in plan.models.values():
        counts = np.bincount(mp.bits.ravel().astype(np.int64), minlength=17)
        main.append(int(16 - np.argmax(counts[::-1])))
    return homes_of(plan), tuple(main)


def world_copy(world: World) -> World:
    """A deep copy of ``world`` that steps exactly as ``world`` would, without copying
    the serving model's activity cache (keyed by the identity of the original's arrays,
    so a copy's entries could never be found; the copy refills its own)."""
    return copy.deepcopy(world, {id(world.serving._act): OrderedDict()})


def lookahead_return(world: World, plan: Plan | None, epochs: int, config: Mapping) -> float:
    """Reward summed over ``epochs`` epochs of a copy of ``world`` in which ``plan`` is
    committed (None: the plan in force) and then kept; ``world`` is not changed."""
    c = world_copy(world)
    total = 0.0
    for i in range(epochs):
        report = c.step(plan if i == 0 else None)
        total += total_reward(reward_terms(report, c, config, False), config)
    return total


class HomeLookahead:
    """The potential ``phi`` of the module docstring, for one env.

    Args:
        epochs: epochs of each lookahead.
        config: the env config (the reward weights and references).
    """

    def __init__(self, epochs: int, config: Mapping[str, Any]) -> None:
        self.epochs = int(epochs)
        self.config = config
        self.start: HomeSet = ()
        self._memo: dict[tuple, float] = {}
        #: lookaheads run in this episode (two per new set of homes)
        self.lookaheads = 0

    def reset(self, plan: Plan) -> None:
        """A new episode whose starting plan is ``plan``."""
        self.start = homes_of(plan)
        self._memo = {}
        self.lookaheads = 0

    def __call__(self, world: World, draft: Plan) -> float:
        """``phi`` of the state whose draft is ``draft``."""
        key = _key(draft)
        if key[0] == self.start:
            return 0.0
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        ref = self._reference(draft)
        value = 0.0
        if ref is not None and world.check(ref).feasible and world.check(draft).feasible:
            self.lookaheads += 2
            value = lookahead_return(world, draft, self.epochs, self.config) - lookahead_return(
                world, ref, self.epochs, self.config
            )
        self._memo[key] = value
        return value

    def _reference(self, draft: Plan) -> Plan | None:
        """``draft`` with the episode's starting homes (None: a model of one is missing
        from the other)."""
        start = dict(self.start)
        if set(start) != set(draft.models):
            return None
        return Plan({
            name: dataclasses.replace(mp, home=start[name]) for name, mp in draft.models.items()
        })  # fmt: skip
