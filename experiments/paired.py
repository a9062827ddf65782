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
from collections import defaultdict
from pathlib import Path


def paired(rows: list[dict], policy: str, metric: str) -> list[dict]:
    """One row per other policy: ``mean``, ``ci95``, ``ahead``, ``seeds`` of ``policy - other``."""
    from agents.harness import mean_ci95

    by = defaultdict(dict)
    for r in rows:
        if metric not in r:
            raise ValueError(f"no column {metric!r}; columns: {', '.join(r)}")
        by[r["policy"]][int(r["seed"])] = float(r[metric])
    if policy not in by:
        raise ValueError(f"no policy {policy!r} in the file; policies: {', '.join(by)}")
    mine = by[policy]
    out = []
    for other, vals in by.items():
        if other == policy:
            continue
        seeds = sorted(set(mine) & set(vals))
        if not seeds:
            continue
        diff = [mine[s] - vals[s] for s in seeds]
        mean, ci = mean_ci95(diff)
        out.append({"other": other, "mean": mean, "ci95": ci,
                    "ahead": sum(d > 0 for d in diff), "seeds": len(seeds)})  # fmt: skip
    return out


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
        table = paired(rows, args.policy, args.metric)
    except ValueError as e:
        print(f"paired: error: {e}", file=sys.stderr)
        return 2
    print(f"| {args.policy} - other | mean {args.metric} difference | 95% CI | seeds ahead |")
    print("|---|---:|---:|---:|")
    for r in table:
        print(f"| {r['other']} | {r['mean']:+.3f} | ±{r['ci95']:.3f} | {r['ahead']}/{r['seeds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
