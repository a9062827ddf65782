"""Sensitivity: how the policies fare as load and the broadcast period change.

    python experiments/sensitivity.py [--quick] [--scenario default]
                                      [--loads 0.5 1 2 4] [--periods 0.5 2 10 60]
                                      [--policies naive,greedy,milp-periodic]
                                      [--runs RUN_DIR ...] [--seeds N] [--epochs N]
                                      [--out-dir DIR]
    coel study sensitivity [same options]

Two one-factor sweeps around the scenario, each on the same seeded instances:

* **load**: the request rate per edge server (``workload.rate_per_s``) times
  each ``--loads`` factor, broadcast period as in the scenario;
* **broadcast period**: ``perception.period_s`` set to each ``--periods``
  value [s], load as in the scenario (only policies that decide from the
  broadcast view are affected; oracle policies are left out of this sweep).

Every baseline of ``--policies`` and every trained run of ``--runs`` (an
``coel train`` folder, loaded like ``coel evaluate`` does) is evaluated at every
point. Writes ``table.md`` / ``table.csv`` (a row per point and policy, with the
swept value in ``group``), ``episodes.csv``, ``sensitivity.png`` (return and SLO
attainment against each factor), ``config.yaml`` and ``command.txt`` into a new
``runs/sensitivity-<time>`` folder (or ``--out-dir``). ``--quick``: 2 seeds x
10 epochs, loads 0.5 1 2 and periods 2 30.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUICK = dict(seeds=2, epochs=10, loads=[0.5, 1.0, 2.0], periods=[2.0, 30.0])
FULL = dict(seeds=5, epochs=50, loads=[0.5, 1.0, 2.0, 4.0], periods=[0.5, 2.0, 10.0, 60.0])
POLICIES = "naive,greedy,milp-periodic"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="minutes-long version")
    p.add_argument("--scenario", default="default", help="preset or YAML file")
    p.add_argument(
        "--loads", type=float, nargs="+", default=None, help="factors on workload.rate_per_s"
    )
    p.add_argument(
        "--periods", type=float, nargs="+", default=None, help="perception.period_s values [s]"
    )
    p.add_argument("--policies", default=POLICIES, help="comma-separated baselines")
    p.add_argument("--runs", nargs="*", type=Path, default=[], help="trained run folders")
    p.add_argument("--env", default="CoEL-v0", help="env id of the --runs")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1")
    p.add_argument("--epochs", type=int, default=None, help="epochs per episode")
    p.add_argument("--out-dir", type=Path, default=None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv), argv)


def _factories(names: list[str], runs: list[Path], env_id: str) -> list[tuple[str, object, str]]:
    """(label, factory, sees) per policy; a bad name or run fails here, before any work."""
    from agents.evaluate_cli import load_rl_policy
    from agents.registry import make_policy

    out = []
    for n in names:
        pol = make_policy(n)  # raises on unknown names, listing the known ones
        out.append((pol.name, (lambda n=n: make_policy(n)), pol.sees))
    for r in runs:
        pol = load_rl_policy(r, env_id, False)[0]
        out.append((pol.name, (lambda pol=pol: pol), pol.sees))
    return out


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from coel_env.core.scenario import load_scenario
    from experiments import studies

    budget = studies.resolve_budget(args, QUICK, FULL)
    for k in ("loads", "periods"):
        bad = [v for v in budget[k] if not v > 0]
        if bad:
            raise ValueError(f"--{k} {bad[0]!r} is not allowed; values must be > 0")
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    pols = _factories(names, list(args.runs), args.env)
    if not pols:
        raise ValueError("nothing to evaluate: give --policies and/or --runs")
    base_rate = load_scenario(args.scenario).workload.rate_per_s
    vs = []
    for f in budget["loads"]:
        for label, make, _ in pols:
            vs.append(
                studies.Variant(
                    f"{label} @ load x{f:g}",
                    make,
                    {"workload.rate_per_s": base_rate * f},
                    f"load x{f:g}",
                )
            )
    for period in budget["periods"]:
        for label, make, sees in pols:
            if sees == "view":
                vs.append(
                    studies.Variant(
                        f"{label} @ period {period:g}s",
                        make,
                        {"perception.period_s": float(period)},
                        f"period {period:g} s",
                    )
                )
    out = studies.new_out_dir("sensitivity", args.out_dir)
    seeds = list(range(budget["seeds"]))
    results = studies.run_variants(vs, args.scenario, seeds, budget["epochs"])
    rows = studies.summary_rows(results, vs, reference="")
    title = (
        f"Sensitivity on `{args.scenario}` (base rate {base_rate:g}/s per server): "
        f"{budget['seeds']} seeds x {budget['epochs']} epochs (mean ± 95% CI half-width)"
    )
    config = {
        "study": "sensitivity",
        "scenario": args.scenario,
        **budget,
        "base_rate_per_s": base_rate,
        "policies": [p[0] for p in pols],
        "runs": [str(r) for r in args.runs],
    }
    studies.write_outputs(out, rows, results, title, config, argv)
    figure(rows, [p[0] for p in pols], budget, out / "sensitivity.png")
    print(studies.markdown(rows, title))
    print(f"results: {out}", file=sys.stderr)
    return 0


def figure(rows: list[dict], policies: list[str], budget: dict, path: Path) -> None:
    """Return and SLO attainment against load factor and broadcast period, a line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["policy"]: r for r in rows}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    sweeps = [
        ("load", budget["loads"], "load x{:g}", "load factor"),
        ("period", budget["periods"], "period {:g}s", "broadcast period [s]"),
    ]
    for col, (_, xs, fmt, xlabel) in enumerate(sweeps):
        for row, metric in enumerate(("return", "slo_attainment")):
            ax = axes[row, col]
            for pol in policies:
                pts = [
                    (x, by[f"{pol} @ {fmt.format(x)}"])
                    for x in xs
                    if f"{pol} @ {fmt.format(x)}" in by
                ]
                if pts:
                    ax.errorbar(
                        [x for x, _ in pts],
                        [r[metric + "_mean"] for _, r in pts],
                        yerr=[r[metric + "_ci95"] for _, r in pts],
                        marker="o",
                        capsize=3,
                        label=pol,
                    )
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
