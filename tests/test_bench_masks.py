"""experiments/bench_masks.py: a tiny run end to end, in a subprocess (the script pins
thread variables before NumPy is imported, so it runs in its own interpreter)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_bench_masks_tiny(tmp_path):
    out = tmp_path / "mask_benchmark.md"
    argv = ["--seeds", "2", "--max-steps", "25", "--ids", "CoEL-v2", "CoEL-IntraDevice-v0"]
    argv += ["--large-ids", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "experiments/bench_masks.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CoEL-v2" in proc.stdout and "invalid masked" in proc.stdout

    text = out.read_text()
    assert "Command: `python experiments/bench_masks.py --seeds 2 --max-steps 25" in text
    lines = text.splitlines()
    header = _cells(next(line for line in lines if line.startswith("| id |")))
    rows = [
        dict(zip(header, _cells(line), strict=True)) for line in lines if line.startswith("| CoEL")
    ]
    assert [(r["id"], r["scenario"]) for r in rows] == [
        ("CoEL-v2", "default (own)"),
        ("CoEL-IntraDevice-v0", "intra (own)"),
    ]
    v2 = rows[0]
    assert v2["episodes (steps)"] == "2 (50)" and v2["action fields (choices)"] == "36 (118)"
    assert v2["masked at reset"] == "0.0 / 118"  # the masks block nothing at reset here
    invalid = float(v2["invalid, masked"].rstrip("%")) / 100
    assert 0 < invalid < 1
    assert abs(round(invalid * 50) - invalid * 50) < 1e-6  # a whole number of the 50 steps
    assert "GPU memory" in v2["why (masked)"]
    assert "- cpu_count:" in text


def test_bench_masks_refuses_bad_arguments():
    proc = subprocess.run(
        [sys.executable, "experiments/bench_masks.py", "--ids", "CoEL-v9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--ids 'CoEL-v9' is not registered" in proc.stderr
