"""``coel bench``: policies over the whole benchmark suite, scored as RL research scores
benchmarks (:mod:`agents.bench`).

  coel bench [--policies naive,greedy,run:RUN_DIR,...] [--scenarios mobility,churn,...]
             [--seeds N] [--first-seed K] [--milp-node-limit N | --milp-wall-clock]
             [--milp-time-limit S] [--jobs N] [--reuse RUN_DIR ...]
             [--runs-root DIR | --out-dir DIR [--force]]

Every policy (baselines by name, saved RL runs as ``run:PATH`` or a run folder,
``CoEL-Graph-v0`` runs drawing their edits as ``sample:PATH`` (``coel evaluate
--stochastic``; seeded by each episode's seed), multi-agent runs as ``ma:PATH``) runs
one whole episode per seed (0..N-1, or K..K+N-1 with ``--first-seed K``; seeds from
100 on are behind no committed result)
on every suite scenario; the naive plan and each scenario's reference policy always
run (the scores need them). A policy whose shape does not fit a scenario is skipped
there, with the reason in the table. Written to a new run folder
``<runs-root>/bench-suite-<YYYYmmdd-HHMMSS>`` (default root ``runs``; never reused; its
path printed last) or to ``--out-dir`` (a folder that holds anything is refused
without ``--force``):

* ``table.md``: returns and normalised scores per scenario, IQM and mean across the
  suite with stratified bootstrap 95% intervals, the probability of improvement of the
  top policy over each other one, skipped policies, the MILP's solve statuses;
* ``scores.csv``: one row per scenario, policy and seed (return, normalised score);
* ``episodes.csv``: every metric of every episode; ``timing.csv``: decision times (kept
  out of the table, which a rerun reproduces byte for byte);
* ``performance_profile.png``, ``aggregates.png``, ``improvement.png`` (``rliable``);
* ``fingerprints.yml``: per scenario and policy, what its episodes depend on besides
  the seed and the code (:func:`agents.bench.fingerprint`);
* ``command.txt`` and ``args.yml``.

``--reuse RUN_DIR`` (repeatable) takes the episodes an earlier run folder holds of the
same scenario, policy, seed, episode length and MILP limits (the same fingerprint)
instead of running them again, e.g. to add a policy to a finished suite run; the
tables are the same as from one run of everything with the same code.

The MILP policies stop each solve after ``--milp-node-limit`` branch-and-bound nodes
(default 100), so their rows do not depend on machine load (they can on the kind of
CPU: see docs/benchmark.md, "Reproducibility"); ``--milp-time-limit`` is the
wall-clock backstop (default 120 s), and ``--milp-wall-clock`` gives the policies'
own wall-clock limit alone (not reproducible). Ctrl-C keeps the finished episodes
(``episodes.csv`` beside an ``INCOMPLETE`` file; exit status 130).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from agents import bench, harness
from agents.baselines_cli import add_first_seed
from agents.cli_common import (
    add_runs_root,
    announce,
    check_count,
    check_out_dir,
    check_runs_root,
    command_line,
    keep_interrupted,
    output_folder,
    write_args,
    write_csv,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policies", default=",".join(bench.DEFAULT_POLICIES),
                   help="comma-separated baselines, run:RUN_DIR (saved RL runs), "
                        "sample:RUN_DIR (a CoEL-Graph-v0 run drawing its edits) and "
                        "ma:RUN_DIR (default: every baseline)")  # fmt: skip
    names = ",".join(t.scenario for t in bench.SUITE)
    p.add_argument("--scenarios", default=names, help=f"comma-separated (default: {names})")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    add_first_seed(p)
    p.add_argument("--milp-node-limit", type=int, default=bench.MilpLimits.node_limit,
                   help="branch-and-bound nodes per MILP solve (deterministic on one kind "
                        f"of CPU; default {bench.MilpLimits.node_limit})")  # fmt: skip
    p.add_argument(
        "--milp-wall-clock",
        action="store_true",
        help="no node limit: the wall-clock limit alone (not reproducible)",
    )
    backstop = bench.MilpLimits.time_limit_s
    p.add_argument("--milp-time-limit", type=float, default=None,
                   help=f"wall-clock limit per MILP solve [s] (default {backstop:g} under a "
                        "node limit, 5 alone)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None,
                   help="episode length for a quick check instead of the suite's (its "
                        "scores are not the suite's)")  # fmt: skip
    p.add_argument("--reuse", type=Path, action="append", default=[], metavar="RUN_DIR",
                   help="take the episodes an earlier coel bench run folder holds of the same "
                        "scenario, policy, seed, episode length and MILP limits instead of "
                        "running them again (repeatable)")  # fmt: skip
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes (the rows do not depend on it; default 1)",
    )
    where = p.add_mutually_exclusive_group()
    add_runs_root(where)
    where.add_argument("--out-dir", type=Path, default=None,
                       help="results folder instead of a new run folder")  # fmt: skip
    p.add_argument("--force", action="store_true", help="write into a non-empty --out-dir")


def limits_from(args: argparse.Namespace) -> bench.MilpLimits:
    """The MILP limits of the command line (checked)."""
    if args.milp_wall_clock:
        t = 5.0 if args.milp_time_limit is None else args.milp_time_limit
        node = None
    else:
        node = check_count("--milp-node-limit", args.milp_node_limit)
        t = bench.MilpLimits.time_limit_s if args.milp_time_limit is None else args.milp_time_limit
    if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0 or t == float("inf"):
        raise ValueError(f"--milp-time-limit {t!r} is not allowed; must be a number > 0 [s]")
    return bench.MilpLimits(node_limit=node, time_limit_s=float(t))


def main(args: argparse.Namespace) -> int:
    seeds = harness.seed_list(args.seeds, args.first_seed)
    tasks = bench.suite_tasks([s.strip() for s in args.scenarios.split(",") if s.strip()])
    specs = bench.parse_policies(args.policies)
    limits = limits_from(args)
    if args.epochs is not None:
        check_count("--epochs", args.epochs)
    check_count("--jobs", args.jobs, high=64)
    for d in args.reuse:
        if not d.is_dir():
            raise ValueError(f"--reuse {str(d)!r} is not a folder (a coel bench run folder)")
    if args.out_dir is not None:
        check_out_dir(args.out_dir, args.force)
    else:
        check_runs_root(args.runs_root)
    with output_folder("bench", None, "suite", args.runs_root, args.out_dir) as folder:
        out = args.out_dir if folder is None else folder
        try:
            run = bench.run_suite(
                specs,
                tasks,
                seeds,
                limits=limits,
                epochs=args.epochs,
                jobs=args.jobs,
                reuse=args.reuse,
            )
        except harness.EvaluationInterrupted as stop:
            if folder is not None:
                write_args(folder, args)
            return keep_interrupted(stop.results, stop.planned, folder, args.out_dir,
                                    given_is_dir=True)  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(run, out, command_line())
        write_args(out, args)
    print((out / "table.md").read_text())
    if args.reuse:
        done = len(run.episodes)
        print(f"reused {done - run.ran} of {done} episodes from {len(args.reuse)} folder(s)",
              file=sys.stderr)  # fmt: skip
    sys.stdout.flush()
    announce(out, False)
    return 0


def write_outputs(run: bench.SuiteRun, out: Path, command: str) -> None:
    """``table.md``, ``scores.csv``, ``episodes.csv``, ``timing.csv`` and the plots."""
    scores, undefined = bench.normalised_scores(run.episodes, run.tasks)
    scored = [t for t in run.tasks if t.scenario not in undefined]
    matrices = bench.score_matrices(scores, scored) if scored else {}
    agg = bench.aggregates(matrices) if matrices else {}
    prob = bench.improvement(matrices, bench.improvement_pairs(agg)) if agg else {}
    (out / "table.md").write_text(
        bench.table_markdown(run, scores, matrices, agg, prob, command, undefined), encoding="utf-8"
    )
    write_csv(out / "scores.csv", bench.score_rows(run, scores))
    (out / bench.FINGERPRINTS).write_text(
        yaml.safe_dump(run.fingerprints, sort_keys=False), encoding="utf-8"
    )
    keep = [k for k in run.episodes[0] if k != "decision_ms"]
    cols = list(dict.fromkeys(k for r in run.episodes for k in r if k != "decision_ms"))
    keep = cols or keep
    write_csv(out / "episodes.csv", [{k: r.get(k, "") for k in keep} for r in run.episodes])
    write_csv(out / "timing.csv", [{"scenario": r["scenario"], "policy": r["policy"],
                                    "seed": r["seed"], "decision_ms": r["decision_ms"]}
                                   for r in run.episodes])  # fmt: skip
    if agg:
        bench.plots(matrices, agg, prob, out)
