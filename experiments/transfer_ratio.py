"""How far a policy gets from ``naive`` to ``greedy``, per evaluation, from episode rows.

    python experiments/transfer_ratio.py NAME=EPISODES.csv[,MORE.csv] ... [--policy rl:run]
                                         [--reference greedy]

Each argument names one evaluation (a scenario or topology) and the ``episodes.csv``
files of ``coel evaluate`` / ``coel baselines`` (``--out``) that hold its rows: the
policy's, ``naive``'s and ``greedy``'s on the same seeds. Prints a markdown table: mean
return of each, the paired difference ``policy - naive`` (95% interval over seeds) and
the ratio ``(policy - naive) / (greedy - naive)`` of the mean returns (1: as good as
greedy; the issue's transfer target is >= 0.9). ``--reference milp-periodic`` measures
the way to another policy instead of greedy (its rows must be in the files).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from agents.harness import mean_ci95, paired


def _rows(files: str) -> list[dict]:
    out: list[dict] = []
    for f in files.split(","):
        with Path(f).open(newline="", encoding="utf-8") as fh:
            out += list(csv.DictReader(fh))
    return out


def _mean(rows: list[dict], policy: str) -> float:
    vals = [float(r["return"]) for r in rows if r["policy"] == policy]
    if not vals:
        raise ValueError(f"no rows of policy {policy!r}")
    return mean_ci95(vals)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("evals", nargs="+", metavar="NAME=EPISODES.csv[,MORE.csv]")
    p.add_argument("--policy", default="rl:run", help="the policy (default rl:run)")
    p.add_argument("--reference", default="greedy", help="the far end (default greedy)")
    args = p.parse_args(argv)
    ref = args.reference
    lines = [
        f"| evaluation | {args.policy} | naive | {ref} | {args.policy} - naive (95% CI) "
        f"| (rl - naive) / ({ref} - naive) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    try:
        for item in args.evals:
            name, sep, files = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not NAME=EPISODES.csv")
            rows = _rows(files)
            rl, naive, far = (_mean(rows, q) for q in (args.policy, "naive", ref))
            d = next(r for r in paired(rows, args.policy) if r["other"] == "naive")
            ratio = (rl - naive) / (far - naive) if far != naive else float("nan")
            lines.append(
                f"| {name} | {rl:.3f} | {naive:.3f} | {far:.3f} | {d['mean']:+.3f} "
                f"± {d['ci95']:.3f} ({d['ahead']}/{d['seeds']} ahead) | {ratio:.2f} |"
            )
    except (ValueError, OSError) as e:
        print(f"transfer_ratio: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
