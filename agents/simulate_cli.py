"""``coel simulate``: run a world for some epochs and report what happened.

coel simulate [--scenario NAME|FILE] [--trace F] [--topology F] [--epochs N]
              [--seed S] [--policy NAME] [--json] [--set KEY=VALUE ...] [--runs-root DIR]

Builds ``World(scenario, overrides)``, calls ``reset(seed)`` and steps it
``--epochs`` times under the world's built-in naive plan (every model whole at
16 bits on each edge server that can hold it; ``step(None)`` every epoch), or
under ``--policy NAME`` (a baseline from ``agents.registry``), then
prints the run's metrics as a two-column table, or with ``--json`` as exactly
one JSON object on stdout. A progress bar goes to stderr for runs of 200
epochs or more when stderr is a terminal.

Outputs: a new run folder ``<runs-root>/simulate-<scenario>-<YYYYmmdd-HHMMSS>``
(default root ``runs``; never reused) holding ``metrics.json`` (the printed
metrics), ``command.txt`` and ``args.yml``. Its path is printed last (on
stderr under ``--json``, so stdout stays one JSON object).

Inputs:
  --scenario   a preset (default, large, static) or a scenario YAML file.
  --trace F    a request trace replacing the synthetic workload: a CSV whose
               header has TIMESTAMP,ContextTokens,GeneratedTokens is an Azure
               LLM inference trace (workload.kind=azure), any other CSV a
               generic trace (workload.kind=generic: arrival_s, input_tokens,
               output_tokens, optional server/model/task/slo_ms/quality_floor).
               The trace repeats when the run outlasts it.
  --topology F a .graphml file (Topology Zoo; topology.kind=graphml) or a .csv
               of EUA sites (topology.kind=eua).
  --set K=V    a dotted scenario override, repeatable; V is parsed as YAML, so
               numbers, booleans and lists work (--set workload.rate_per_s=0.1,
               --set dynamics.links=false). --set is applied after --trace and
               --topology and wins over them.

Metrics (over the whole run):
  requests_arrived / _served / _dropped (dropped_no_model + dropped_overload),
  slo_met, slo_attainment (slo_met / arrived; 1.0 when nothing arrived),
  latency_p50_ms, latency_p95_ms, ttft_p50_ms, ttft_p95_ms: exact run
      percentiles over every served request (end-to-end latency and time to
      first token).
  tpot_mean_ms, quality_loss: served-weighted means (exact run means);
  quality_violations: served requests above their quality floor;
  throughput_tok_s: output tokens served per second, mean over epochs;
  energy_j, activation_bytes, broadcast_bytes, migration_bytes,
      migration_pcie_bytes, cloud_cost: sums over the run;
  infeasible_epochs: epochs whose requested plan was refused;
  wall_s, epochs_per_s: wall time of the stepping loop (reset excluded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli_common import (
    add_runs_root,
    announce,
    build_overrides,
    check_count,
    check_runs_root,
    output_folder,
    write_args,
    write_json,
)

#: Runs at least this long show a progress bar (on stderr, when it is a terminal).
PROGRESS_MIN_EPOCHS = 200

_SUMS = (
    "requests_arrived",
    "requests_served",
    "requests_dropped",
    "dropped_no_model",
    "dropped_overload",
    "slo_met",
    "quality_violations",
    "energy_j",
    "activation_bytes",
    "broadcast_bytes",
    "migration_bytes",
    "migration_pcie_bytes",
    "cloud_cost",
)
_SERVED_WEIGHTED = (
    "latency_p50_ms",
    "latency_p95_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "tpot_mean_ms",
    "quality_loss",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        default="default",
        metavar="NAME|FILE",
        help="a preset (default, large, static) or a scenario YAML file (default: default)",
    )
    p.add_argument("--trace", type=Path, metavar="F", help="request trace CSV (Azure or generic)")
    p.add_argument(
        "--topology", type=Path, metavar="F", help="topology: .graphml (Topology Zoo) or .csv (EUA)"
    )
    p.add_argument("--epochs", type=int, default=100, help="epochs to run (>= 1; default 100)")
    p.add_argument(
        "--policy",
        default=None,
        metavar="NAME",
        help="a policy from agents.registry (e.g. greedy, milp-oracle); default: the naive plan",
    )
    p.add_argument("--seed", type=int, default=0, help="episode seed for reset() (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted scenario override, repeatable; VALUE parsed as YAML",
    )
    add_runs_root(p)
    p.set_defaults(func=main)


# ------------------------------------------------------------------ input handling


def make_world(scenario: str, overrides: Mapping[str, Any]):
    """``World(scenario, overrides)``, with missing files reported as ``ValueError``."""
    from coel_env.core.world import World

    try:
        return World(scenario, dict(overrides) or None)
    except FileNotFoundError as exc:  # e.g. a path given through --set
        what = f"{exc.filename!s} does not exist" if exc.filename is not None else str(exc)
        raise ValueError(f"{what} (a path given by the scenario or --set)") from None


# ------------------------------------------------------------------ running


def summarize(reports: Sequence[Any]) -> dict[str, Any]:
    """Run metrics from epoch reports (:class:`~coel_env.core.world.EpochReport` or dicts).

    See the module docstring for each metric. From reports alone the latency and
    TTFT percentiles are the served-weighted mean of the per-epoch percentiles
    (an approximation); :func:`run` replaces them with exact run percentiles.
    """
    rows = [r if isinstance(r, Mapping) else r.as_dict() for r in reports]
    sums: dict[str, Any] = {}
    for k in _SUMS:
        total = sum(r[k] for r in rows)
        sums[k] = int(total) if all(isinstance(r[k], int) for r in rows) else float(total)
    arrived, served = sums["requests_arrived"], sums["requests_served"]
    means = {}
    for k in _SERVED_WEIGHTED:
        num = sum(r[k] * r["requests_served"] for r in rows if r["requests_served"])
        means[k] = float(num / served) if served else 0.0
    out: dict[str, Any] = {"epochs": len(rows)}
    out.update({k: sums[k] for k in _SUMS[:6]})  # arrivals, served, drops, slo_met
    out["slo_attainment"] = sums["slo_met"] / arrived if arrived else 1.0
    out.update({k: means[k] for k in _SERVED_WEIGHTED[:5]})  # latency, ttft, tpot
    out["throughput_tok_s"] = (
        float(sum(r["throughput_tok_s"] for r in rows) / len(rows)) if rows else 0.0
    )
    out["quality_loss"] = means["quality_loss"]
    out.update({k: sums[k] for k in _SUMS[6:]})  # violations, energy, bytes, cloud cost
    out["infeasible_epochs"] = sum(1 for r in rows if not r["feasible"])
    return out


def exact_percentiles(latency_parts: Sequence, ttft_parts: Sequence) -> dict[str, float]:
    """Run p50/p95 of latency and TTFT over every served request (0 when none)."""
    out = {}
    for name, parts in (("latency", latency_parts), ("ttft", ttft_parts)):
        x = np.concatenate([np.asarray(p, float) for p in parts]) if parts else np.zeros(0)
        p50, p95 = np.percentile(x, (50, 95)) if x.size else (0.0, 0.0)
        out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = float(p50), float(p95)
    return out


def run(
    world: Any,
    epochs: int,
    seed: int | None = 0,
    policy: Any = None,
    progress: bool | None = None,
    on_report: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Reset ``world`` with ``seed`` and step it ``epochs`` times; return :func:`summarize`'s
    metrics plus ``policy``, ``wall_s`` and ``epochs_per_s``.

    Args:
        world: a :class:`~coel_env.core.world.World`.
        epochs: epochs to run (>= 1).
        seed: the episode seed for ``world.reset``.
        policy: None runs the naive plan (``step(None)``); otherwise an
            ``agents.base.Policy`` (``reset(world, seed)``, ``act(world, obs)``), asked
            before every epoch with the observation it is entitled to.
        progress: True/False forces the tqdm bar (stderr) on/off; None shows it for runs of
            :data:`PROGRESS_MIN_EPOCHS` or more when stderr is a terminal.
        on_report: called with each epoch's report (e.g. to log per-epoch rows).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs {epochs!r} is not allowed; must be an integer >= 1")
    from tqdm import tqdm

    from agents.harness import play

    world.reset(seed)
    if policy is not None:
        policy.reset(world, seed)
    if progress is None:
        disable = None if epochs >= PROGRESS_MIN_EPOCHS else True  # None: off unless a TTY
    else:
        disable = not progress
    reports = []
    lat_parts: list = []
    ttft_parts: list = []
    t0 = time.perf_counter()
    with tqdm(total=epochs, desc="simulate", unit="epoch", disable=disable, leave=False) as bar:
        for rep, _, _ in play(world, epochs, policy):
            reports.append(rep)
            lat_parts.append(world.last_latency_ms)
            ttft_parts.append(world.last_ttft_ms)
            if on_report is not None:
                on_report(rep)
            bar.update(1)
    wall = time.perf_counter() - t0
    out = {"policy": "naive" if policy is None else getattr(policy, "name", type(policy).__name__)}
    out.update(summarize(reports))
    out.update(exact_percentiles(lat_parts, ttft_parts))
    out["wall_s"] = wall
    out["epochs_per_s"] = epochs / max(wall, 1e-9)
    return out


# ------------------------------------------------------------------ output


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0 or (1e-3 <= abs(v) < 1e7):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


def format_table(metrics: Mapping[str, Any]) -> str:
    """A readable two-column table of ``metrics``."""
    w = max(len(k) for k in metrics)
    return "\n".join(f"{k.ljust(w)}  {_fmt(v)}" for k, v in metrics.items())


def main(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs!r} is not allowed; must be an integer >= 1")
    check_count("--seed", args.seed, low=0)
    check_runs_root(args.runs_root)
    overrides = build_overrides(args)
    policy = None
    if args.policy is not None:
        from agents.registry import make_policy

        policy = make_policy(args.policy)
    world = make_world(args.scenario, overrides)
    with output_folder("simulate", None, args.scenario, args.runs_root) as folder:
        metrics = run(world, args.epochs, args.seed, policy=policy)
        out = {"scenario": args.scenario, "seed": args.seed}
        if overrides:
            out["overrides"] = overrides
        out.update(metrics)
        write_json(folder / "metrics.json", out)
        write_args(folder, args)
    if args.json:
        print(json.dumps(out, default=str))
    else:
        shown = dict(out)
        shown.pop("overrides", None)
        print(format_table(shown))
        for k, v in overrides.items():
            print(f"  override {k} = {v!r}")
    sys.stdout.flush()  # the JSON object or the table before the folder's path
    announce(folder, args.json)
    return 0
