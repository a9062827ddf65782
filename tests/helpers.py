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


def encoding_agrees(inst, model, d) -> bool:
    """Whether decision ``d`` is feasible by the formula; then assert that its encoding
    satisfies every row of ``model`` and that the matrix objective equals the formula's
    (else that it has no encoding).

    Args:
        inst: The MILP instance.
        model: ``agents.milp.build_milp(inst)``.
        d: An ``agents.milp.Decision`` of its one model.
    """
    import math

    import pytest

    import agents.milp as M

    obj = M.evaluate(inst, [d])
    vec = M.encode(inst, model, [d])
    if not math.isfinite(obj):
        assert vec is None
        return False
    act = model.matrix @ vec
    assert (act >= model.row_lo - 1e-6).all(), d
    assert (act <= model.row_hi + 1e-6).all(), d
    assert model.cost @ vec / M.UNIT == pytest.approx(obj, rel=1e-9)
    return True


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
