"""Helpers shared by the test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def eval_decision(inst, mi, d):
    """Score one model's MILP decision alone with the formula's own evaluator.

    Args:
        inst: The MILP instance (``agents.milp`` instance of a world).
        mi: The model's entry in ``inst.models``.
        d: Its ``agents.milp.Decision``.

    Returns:
        What ``agents.milp._eval_model`` returns for that one decision.
    """
    import agents.milp as M

    return M._eval_model(
        inst, mi, d.homes[None], d.place[None], d.bits[None], np.array([d.keep]),
        np.array([d.policy]),
    )  # fmt: skip


def random_homes_place(rng, n, groups):
    """Draw a random MILP decision's homes (two servers) and expert placement.

    Args:
        rng: The numpy generator (drawn from in a fixed order: homes, then placement).
        n: How many servers.
        groups: How many expert groups the model has.

    Returns:
        ``(homes, place)``: a bool mask of length ``n`` and an int8 ``(groups, n)`` array of
        copies per server in 0..2.
    """
    homes = np.zeros(n, bool)
    homes[rng.choice(n, 2, replace=False)] = True
    place = rng.integers(0, 3, (groups, n)).astype(np.int8)
    return homes, place


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""The data sets kept beside the checkout (routing traces, topologies, device specs)."""
