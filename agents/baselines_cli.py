"""``coel baselines``: run policies on the same seeded scenario instances and compare them.

  coel baselines [--env ID] --policies greedy,milp-oracle --seeds 5 [--first-seed K]
                 [--scenario NAME|FILE] [--trace F] [--topology F] [--set K=V ...]
                 [--epochs N] [--json] [--runs-root DIR | --out FILE.csv [--force]]

``--seeds N`` means seeds 0 to N-1 (``--first-seed K``: K to K+N-1; seeds from 100 on
are behind no committed result, for choosing settings apart from them). Each
policy runs one episode per seed on a fresh world (same instances, same traces
for every policy) through ``agents.harness``; the table has the mean and 95%
confidence half-width of the return, SLO attainment, p50/p95 latency, quality loss, dropped share,
migration, energy and decision time per epoch, and the score (mean return
relative to ``milp-oracle`` when it is among the policies). ``--env`` picks
the environment whose scenario and reward weights are used (its default
scenario unless ``--scenario`` is given; default ``CoEL-v2``, the current id).
``--json`` prints a JSON list, one object per policy (``policy``, ``return_mean``, ``return_ci95``,
``slo_attainment_mean``, ``decision_ms_mean`` and the other metrics).

Outputs: a new run folder ``<runs-root>/baselines-<env>-<scenario>-<YYYYmmdd-HHMMSS>``
(default root ``runs``; never reused) holding ``episodes.csv`` (one row per
policy and seed), ``summary.json`` (the JSON list), ``command.txt`` and
``args.yml``; its path is printed last (on stderr under ``--json``). ``--out
FILE.csv`` writes only the per-episode rows, there; an existing file is never
overwritten without ``--force``, and its folder must exist. Both are checked
before any episode runs.

Ctrl-C keeps the finished episodes: ``episodes.csv`` in the run folder, marked by an
``INCOMPLETE`` file (no summary), or ``FILE.incomplete.csv`` beside ``--out``; the
command exits with status 130.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import gymnasium as gym

from agents import harness
from agents.cli_common import (
    add_runs_root,
    announce,
    build_overrides,
    check_count,
    check_destination,
    keep_interrupted,
    output_folder,
    write_args,
    write_json,
)
from agents.registry import make_policy, policy_names

#: The env id of ``--env`` when none is given: the current one.
DEFAULT_ENV = "CoEL-v2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=DEFAULT_ENV,
                   help=f"env id (scenario and rewards; default {DEFAULT_ENV})")  # fmt: skip
    p.add_argument(
        "--policies", default="naive,greedy,milp-oracle",
        help=f"comma-separated; known: {', '.join(policy_names())}",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    add_first_seed(p)
    p.add_argument("--epochs", type=int, default=50, help="epochs per episode")
    p.add_argument("--scenario", default=None, help="preset or YAML (default: the env's)")
    p.add_argument("--trace", type=Path, default=None, help="request trace CSV")
    p.add_argument("--topology", type=Path, default=None, help=".graphml or EUA .csv")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    add_out_arguments(p)


def add_out_arguments(p: argparse.ArgumentParser) -> None:
    """``--runs-root DIR`` or ``--out FILE.csv`` (with ``--force``), shared by the harness CLIs."""
    where = p.add_mutually_exclusive_group()
    add_runs_root(where)
    where.add_argument("--out", type=Path, default=None, metavar="FILE.csv",
                       help="write the per-episode rows here instead of a run folder")  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def add_first_seed(p: argparse.ArgumentParser) -> None:
    """``--first-seed K`` (seeds K..K+N-1 instead of 0..N-1), shared by the harness CLIs."""
    p.add_argument("--first-seed", type=int, default=0,
                   help="first seed: seeds K..K+N-1 (e.g. 100: seeds no result uses)")  # fmt: skip


def env_defaults(env_id: str) -> tuple[dict, int]:
    """(every config key of ``env_id`` with its default, its episode length [epochs]);
    an unknown id raises ``ValueError`` naming ``--env`` and the known ids."""
    import coel_env  # noqa: F401 - registers the ids
    from coel_env.envs import env_config, episode_steps

    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if "CoEL" in k and "/" not in k)
        raise ValueError(f"--env {env_id!r} is not a registered id; known: {', '.join(known)}")
    return env_config(env_id), episode_steps(env_id)


COLUMNS = ("return", "slo_attainment", "latency_p95_ms", "quality_loss", "dropped_share",
           "migration_gb", "energy_kj", "decision_ms")  # fmt: skip


def format_table(rows: list[dict]) -> str:
    head = ["policy", "sees"] + list(COLUMNS) + ["score"]
    lines = []
    cells = []
    for r in rows:
        c = [r["policy"], r["sees"]]
        for m in COLUMNS:
            c.append(f"{r[m + '_mean']:.4g} ± {r[m + '_ci95']:.2g}")
        c.append("" if r["score"] is None else f"{r['score']:.3f}")
        cells.append(c)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for c in cells:
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    env_cfg, _ = env_defaults(args.env)
    scenario = args.scenario or env_cfg["scenario"]
    seeds = harness.seed_list(args.seeds, args.first_seed)
    check_count("--epochs", args.epochs)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    if not names:
        raise ValueError("--policies is empty; name at least one policy")
    policies = [make_policy(n) for n in names]
    check_destination(args)
    overrides = build_overrides(args)
    label = harness.seeds_label(args.seeds, args.first_seed)
    title = f"{args.env} on {scenario}: {label} x {args.epochs} epochs"
    return evaluate_and_save(
        "baselines", args.env, args, title, policies, scenario, seeds, args.epochs,
        overrides=overrides, reward_config=env_cfg,
    )  # fmt: skip


def evaluate_and_save(
    command: str,
    env_id: str,
    args: argparse.Namespace,
    title: str,
    policies: list,
    scenario: str,
    seeds: list[int],
    epochs: int,
    *,
    overrides: dict,
    reward_config: dict,
) -> int:
    """Play ``policies`` on the seeds (:func:`agents.harness.evaluate`) into a new run folder
    of ``command`` (or to ``--out``) and save the report; 130 after Ctrl-C, with the
    finished episodes kept, else 0."""
    with output_folder(command, env_id, scenario, args.runs_root, args.out) as folder:
        try:
            results = harness.evaluate(
                policies, scenario, seeds, epochs,
                overrides=overrides or None, reward_config=reward_config,
            )  # fmt: skip
        except harness.EvaluationInterrupted as stop:
            return save_interrupted(stop, args, folder)
        save_report(results, args, folder, title)
    return 0


def save_interrupted(
    stop: harness.EvaluationInterrupted, args: argparse.Namespace, folder: Path | None
) -> int:
    """Ctrl-C: keep the finished episodes (:func:`agents.cli_common.keep_interrupted`;
    with the arguments in a run folder) and return 130."""
    if folder is not None:
        write_args(folder, args)
    rows = harness.episode_rows(stop.results)
    return keep_interrupted(rows, stop.planned, folder, args.out)


def save_report(results, args: argparse.Namespace, folder: Path | None, title: str) -> None:
    """Write the episodes (into ``folder`` with the summary and the arguments, or to
    ``--out``), print the summary, then where it all went."""
    out = args.out if folder is None else folder / "episodes.csv"
    rows = report(results, out, args.json, title)
    if folder is not None:
        write_json(folder / "summary.json", rows)
        write_args(folder, args)
    sys.stdout.flush()  # the summary before the path
    announce(out if folder is None else folder, args.json)


def report(results, out: Path, as_json: bool, title: str) -> list[dict]:
    """Write per-episode rows to ``out`` (CSV) and print the summary (table or JSON list)."""
    rows = harness.summarize(results)
    episodes = harness.episode_rows(results)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(episodes[0]))
        w.writeheader()
        w.writerows(episodes)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print(title)
        print(format_table(rows))
    return rows
