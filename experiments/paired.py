"""Paired differences between one policy and the others, seed by seed.

    python experiments/paired.py results/headline-v2/episodes.csv [--policy rl:run]
                                 [--metric return]

``coel compare`` runs every policy on the same seeded instances, so the seeds
pair up: the difference ``policy - other`` on each seed removes what the seeds
have in common (how loaded that instance is), which is most of the spread of
the per-policy intervals. Prints, per other policy, the mean difference, the
half-width of its 95% confidence interval (Student t over seeds) and on how many
seeds ``policy`` is ahead.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from agents.harness import paired_markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("episodes", type=Path, help="an episodes.csv written by coel compare")
    p.add_argument("--policy", default="rl:run", help="the policy to compare (default rl:run)")
    p.add_argument("--metric", default="return")
    args = p.parse_args(argv)
    if not args.episodes.is_file():
        print(f"paired: error: {args.episodes}: no such file", file=sys.stderr)
        return 2
    with args.episodes.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    try:
        print(paired_markdown(rows, args.policy, args.metric), end="")
    except ValueError as e:
        print(f"paired: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
