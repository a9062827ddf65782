"""experiments/equivalence.py: the reference against itself is identical and passes; a
candidate that changes outputs is measured and, past the bounds, fails; random plans are
ones the world accepts; bad candidates are refused naming what is wrong."""

from __future__ import annotations

import re

import numpy as np
import pytest

from coel_env.core import world as world_module
from coel_env.core.world import World
from experiments import equivalence as E

SMALL = ["--plans", "4", "--plan-epochs", "2", "--episode-epochs", "6"]


def test_reference_against_itself_is_identical_and_passes(tmp_path, capsys):
    out = tmp_path / "eq.md"
    assert E.main([*SMALL, "--scenarios", "default", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "identical True" in line and "PASS" in line
    text = out.read_text()
    assert "Candidate: the reference itself." in text
    assert "python experiments/equivalence.py" in text
    table = [r for r in text.splitlines() if r.startswith("|")]
    assert len({r.count("|") for r in table}) == 1  # header, separator and row agree
    row = next(r for r in table if r.startswith("| default"))
    assert "| 0.000% |" in row and row.rstrip().endswith("| yes |")


def test_a_changed_constant_is_measured_and_restored():
    before = world_module.POP_TOLERANCE
    cand = E.Candidate(E.resolve_constants({"world.POP_TOLERANCE": 10.0}))
    row = E.compare("default", cand, plans=6, plan_epochs=3, episode_epochs=12, seed=1)
    assert world_module.POP_TOLERANCE == before  # set only while the candidate steps
    assert not row["identical"]
    assert row["p95_mad"] > 0.0
    assert row["conserved"]  # same arrivals, every request accounted for


def test_other_arrivals_fail_conservation():
    cand = E.Candidate(overrides={"workload.rate_per_s": 0.6})
    row = E.compare("default", cand, plans=2, plan_epochs=2, episode_epochs=4, seed=0)
    assert not row["conserved"] and not E.passes(row)
    assert E.main([*SMALL, "--scenarios", "default",
                   "--candidate-overrides", "workload.rate_per_s=0.6"]) == 1  # fmt: skip


def test_random_plans_are_accepted_by_the_world_and_change_the_plan():
    w = World("default")
    w.reset(3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        plan = E.random_plan(w, rng)
        assert w.check(plan).feasible
        assert plan is not w.plan
        w.step(plan)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--candidate-constants", "nosuch.X=1"], r"coel_env.core.nosuch is not a module"),
        (["--candidate-constants", "world.NOPE=1"], r"coel_env.core.world has no 'NOPE'"),
        (["--candidate-constants", "world.POP_TOLERANCE=abc"], r"must be a number like 0.1"),
        (["--candidate-constants", "world.POP_TOLERANCE=true"], r"=True: must be a number"),
        (["--candidate-constants", "POP_TOLERANCE=1"], r"give MODULE.NAME"),
        (["--candidate-overrides", "novalue"], r"'novalue' is not KEY=VALUE"),
        (["--candidate-class", "coel_env.core.world"], r"is not MODULE:CLASS"),
        (["--candidate-class", "coel_env.core.world:Nope"], r"coel_env.core.world:Nope"),
        (["--scenarios", "missing.graphml"], r"'missing.graphml': no such file"),
    ],
)
def test_bad_candidates_are_refused_naming_them(argv, match, capsys):
    assert E.main([*SMALL, *argv]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_bad_counts_are_refused():
    with pytest.raises(SystemExit):
        E.main(["--plans", "0"])
