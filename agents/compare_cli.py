"""``coel compare``: trained policies and baselines on the same instances, table and figures.

  coel compare [--env ID] [--runs RUN_DIR ...] [--policies naive,greedy,...]
               [--seeds N] [--first-seed K] [--epochs N] [--scenario NAME|FILE] [--set K=V ...]
               [--runs-root DIR | --out-dir DIR [--force]]

``--env`` (default ``CoEL-v2``, the current id) gives the scenario (unless
``--scenario``) and the reward weights. Every policy (each ``--runs`` folder as an
RL policy, a ``coel train-ma`` folder as the multi-agent policy, and each baseline)
runs one episode per seed (0..N-1, or K..K+N-1 with ``--first-seed K``) on the same
fresh world through ``agents.harness``. Written to a new run folder
``<runs-root>/compare-<env>-<scenario>-<YYYYmmdd-HHMMSS>`` (default root ``runs``;
never reused; its path printed last), or to ``--out-dir`` (a folder that holds
anything is refused without ``--force``, which replaces it once the episodes have
run; checked before any episode runs):

* ``table.md`` and ``table.csv``: mean and 95% confidence half-width of every
  metric per policy, and the score (mean return relative to ``milp-oracle``
  when it is among the policies), decision time per epoch;
* ``episodes.csv``: one row per policy and seed;
* ``paired.md`` (with ``--runs`` and something to compare them with): per trained
  policy, its return minus every other policy's, seed by seed (mean, 95% interval,
  seeds ahead): the policies run on the same instances, so these intervals are
  much narrower than the per-policy ones;
* ``bars.png``: return, SLO attainment, p95 latency and decision time per policy;
* ``learning_curves.png``: each run's evaluation return over training steps;
* ``deployment.png``: the deployment map at the end of seed 0 under the best
  policy by return;
* ``command.txt`` and ``args.yml``: the command that produced them, and its arguments.

A ``--runs`` folder without ``model.zip`` or ``best_model.zip`` (a training run that
failed before saving one, or another command's run folder matched by ``--runs runs/*``)
is skipped with a line on stderr. Ctrl-C keeps the finished episodes: ``episodes.csv``
in the run folder, marked by an ``INCOMPLETE`` file, or
``episodes.incomplete.csv`` in ``--out-dir`` (its other contents left as they were);
the command exits with status 130.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

from agents import harness
from agents.baselines_cli import (
    COLUMNS,
    DEFAULT_ENV,
    add_first_seed,
    env_defaults,
    format_table,
)
from agents.cli_common import (
    add_runs_root,
    announce,
    build_overrides,
    check_count,
    check_out_dir,
    check_runs_root,
    keep_interrupted,
    output_folder,
    write_args,
)
from agents.registry import make_policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=DEFAULT_ENV,
                   help=f"env id (scenario and reward weights; default {DEFAULT_ENV})")  # fmt: skip
    p.add_argument("--runs", nargs="*", type=Path, default=[], help="run folders to evaluate")
    p.add_argument("--policies", default="naive,greedy,fiddler,milp-oracle",
                   help="comma-separated baselines (see coel baselines)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    add_first_seed(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs per episode")
    p.add_argument("--scenario", default=None, help="preset or YAML (default: the env's)")
    p.add_argument("--trace", type=Path, default=None, help="request trace CSV")
    p.add_argument("--topology", type=Path, default=None, help=".graphml or EUA .csv")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    where = p.add_mutually_exclusive_group()
    add_runs_root(where)
    where.add_argument("--out-dir", type=Path, default=None,
                       help="results folder instead of a new run folder")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing --out-dir")
    p.add_argument("--best", action="store_true", help="use each run's best_model.zip")


def compare(
    env_id: str,
    runs: list[Path],
    baselines: list[str],
    seeds: int,
    epochs: int | None,
    out_dir: Path,
    *,
    scenario: str | None = None,
    overrides: dict | None = None,
    force: bool = False,
    best: bool = False,
    argv: list[str] | None = None,
    first_seed: int = 0,
    replace: bool = False,
) -> list[dict]:
    """Run everything, write the table and figures into ``out_dir``, return the summary rows.

    ``force`` writes into an ``out_dir`` that holds something; ``replace`` (with
    ``force``) empties it first, once the episodes have run (a comparison that fails
    leaves it as it was).
    """
    from agents.evaluate_cli import load_rl_policy

    env_cfg, steps = env_defaults(env_id)
    scenario = scenario or env_cfg["scenario"]
    epochs = steps if epochs is None else check_count("--epochs", epochs)
    seed_list = harness.seed_list(seeds, first_seed)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"--out-dir {str(out_dir)!r} exists; not overwritten (use --force)")
    from agents.multiagent import is_multiagent_run, load_ma_policy

    given = len(runs)
    runs = runs_with_a_model(runs)
    policies = [load_ma_policy(r) if is_multiagent_run(r) else load_rl_policy(r, env_id, best)[0]
                for r in runs]  # fmt: skip
    policies += [make_policy(n) for n in baselines]
    if not policies:
        if given:
            raise ValueError("nothing to compare: no --runs folder holds a model, and "
                             "--policies is empty")  # fmt: skip
        raise ValueError("nothing to compare: give --runs and/or --policies")
    cfg = env_cfg
    results = harness.evaluate(
        policies, scenario, seed_list, epochs,
        overrides=overrides or None, reward_config=cfg,
    )  # fmt: skip
    rows = harness.summarize(results)
    if replace and force and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "table.csv", rows)
    episodes = harness.episode_rows(results)
    _write_csv(out_dir / "episodes.csv", episodes)
    (out_dir / "table.md").write_text(
        _markdown(rows, env_id, scenario, harness.seeds_label(seeds, first_seed), epochs)
    )
    trained = [p.name for p in policies[: len(runs)]]
    if trained and len(policies) > 1:  # seed-by-seed differences of each trained policy
        (out_dir / "paired.md").write_text("\n".join(
            harness.paired_markdown(episodes, name) for name in trained))  # fmt: skip
    cmd = list(argv or sys.argv)
    cmd[0] = Path(cmd[0]).name  # no machine-specific paths
    (out_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    _bars(rows, out_dir / "bars.png")
    _curves(runs, out_dir / "learning_curves.png")
    top = max(rows, key=lambda r: r["return_mean"])["policy"]
    pol = next(p for p in policies if p.name == top)
    _deployment(pol, scenario, overrides, epochs, out_dir / "deployment.png")
    return rows


#: The model files of a ``coel train`` / ``coel train-ma`` run folder.
MODEL_FILES = ("model.zip", "best_model.zip")


def runs_with_a_model(runs: list[Path]) -> list[Path]:
    """The ``--runs`` entries that can be evaluated: folders without a model file (a
    training run that failed to start, another command's run folder, as ``--runs
    runs/*`` brings in) are skipped with a line on stderr saying why. Other paths
    are kept (a missing path or a model zip is for the loader to judge)."""
    keep = []
    for r in runs:
        r = Path(r)
        if r.is_dir() and not any((r / n).is_file() for n in MODEL_FILES):
            why = "no model.zip or best_model.zip"
            if (r / "INCOMPLETE").is_file():
                why += " (an interrupted run)"
            elif not (r / "args.yml").is_file():
                why += " (not a run folder)"
            elif not (r / "hyperparams.yml").is_file():
                why += " (not a training run)"
            else:
                why += " (a training run that saved no model)"
            print(f"coel compare: skipping {r}: {why}", file=sys.stderr)
            continue
        keep.append(r)
    return keep


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _markdown(rows, env_id, scenario, seeds: str, epochs) -> str:
    head = ["policy", "sees"] + list(COLUMNS) + ["score"]
    out = [f"{env_id} on `{scenario}`: {seeds} x {epochs} epochs "
           "(mean ± 95% CI half-width)", "", "| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]  # fmt: skip
    for r in rows:
        cells = [r["policy"], r["sees"]]
        cells += [f"{r[m + '_mean']:.4g} ± {r[m + '_ci95']:.2g}" for m in COLUMNS]
        cells.append("" if r["score"] is None else f"{r['score']:.3f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(rows, path: Path) -> None:
    plt = _plt()
    metrics = [
        ("return", "return"),
        ("slo_attainment", "SLO attainment"),
        ("latency_p95_ms", "p95 latency [ms]"),
        ("decision_ms", "decision [ms]"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), dpi=80)
    names = [r["policy"] for r in rows]
    for ax, (m, label) in zip(axes, metrics, strict=True):
        ax.bar(names, [r[m + "_mean"] for r in rows], yerr=[r[m + "_ci95"] for r in rows])
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=45)
        if m == "decision_ms":
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _curves(runs: list[Path], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    drawn = 0
    for r in runs:
        f = Path(r) / "evaluations.npz"
        if Path(r).is_dir() and f.is_file():
            d = np.load(f)
            ax.plot(d["timesteps"], d["results"].mean(axis=1), marker="o", label=Path(r).name)
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no training runs", ha="center", va="center")
    ax.set_xlabel("timesteps")
    ax.set_ylabel("evaluation return")
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _deployment(policy, scenario, overrides, epochs, path: Path) -> None:
    from coel_env.core.world import World
    from coel_env.envs.render import render_rgb

    world = World(scenario, dict(overrides) if overrides else None)
    harness.run_episode(policy, scenario, 0, min(epochs, 20), world=world)
    plt = _plt()
    plt.imsave(path, render_rgb(world, None))


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    harness.seed_list(args.seeds, args.first_seed)
    if args.epochs is not None:
        check_count("--epochs", args.epochs)
    scen = args.scenario or env_defaults(args.env)[0]["scenario"]
    if args.out_dir is not None:
        check_out_dir(args.out_dir, args.force)
    else:
        check_runs_root(args.runs_root)
    overrides = build_overrides(args) or None
    with output_folder("compare", args.env, scen, args.runs_root, args.out_dir) as folder:
        out = args.out_dir if folder is None else folder
        try:
            rows = compare(
                args.env, list(args.runs), names, args.seeds, args.epochs, out,
                scenario=args.scenario, overrides=overrides, force=args.force,
                best=args.best, first_seed=args.first_seed, replace=folder is None,
            )  # fmt: skip
        except harness.EvaluationInterrupted as stop:
            if folder is not None:
                write_args(folder, args)
            rows = harness.episode_rows(stop.results)
            return keep_interrupted(rows, stop.planned, folder, args.out_dir, given_is_dir=True)
        write_args(out, args, command=False)  # compare() wrote command.txt
    print(format_table(rows))
    sys.stdout.flush()
    announce(out, False)
    return 0
