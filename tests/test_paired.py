"""experiments/paired.py: seed-by-seed differences between policies."""

from __future__ import annotations

import csv

import pytest

from agents.harness import paired
from experiments.paired import main

ROWS = [
    {"policy": p, "seed": str(s), "return": str(v)}
    for p, vals in {"a": [3.0, 5.0, 4.0], "b": [1.0, 6.0, 2.0], "c": [3.0, 5.0, 4.0]}.items()
    for s, v in enumerate(vals)
]


def test_paired_differences_and_wins():
    out = {r["other"]: r for r in paired(ROWS, "a", "return")}
    assert out["b"]["mean"] == pytest.approx((2.0 - 1.0 + 2.0) / 3)
    assert out["b"]["ahead"] == 2 and out["b"]["seeds"] == 3
    assert out["c"]["mean"] == 0.0 and out["c"]["ci95"] == 0.0 and out["c"]["ahead"] == 0


def test_paired_bad_input(tmp_path, capsys):
    with pytest.raises(ValueError, match="no policy 'z'"):
        paired(ROWS, "z", "return")
    with pytest.raises(ValueError, match="no column 'energy'"):
        paired(ROWS, "a", "energy")
    assert main([str(tmp_path / "missing.csv")]) == 2
    f = tmp_path / "episodes.csv"
    with f.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["policy", "seed", "return"])
        w.writeheader()
        w.writerows(ROWS)
    assert main([str(f), "--policy", "a"]) == 0
    assert "| b | +1.000 |" in capsys.readouterr().out
