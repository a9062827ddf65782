"""Fidelity keys: what each simulator fidelity setting changes against the world before them.

    python experiments/fidelity.py [--scenarios default large] [--policies naive greedy]
                                   [--epochs 40] [--seeds 1] [--out results/fidelity.md]
                                   [--quick]

Each fidelity key (``serving.batching``, ``updating.migration``, ``perception.sampling``,
``serving.activation_traffic``, ``serving.pruning``, ``serving.quant_scaling``,
``serving.mode``, ``perception.timeout_periods``, ``updating.departed``) defaults to its
realistic value; its other value is the world before the fidelity round
(:data:`coel_env.core.scenario.LEGACY_FIDELITY`). This script runs
each scenario under each policy with every key at its old value (``before``), with each
key switched to its default alone, and with all of them at their defaults (``the
defaults``), on the same seeded episodes,
and writes one table per (scenario, policy): requests, drops, end-to-end latency p50/p95
(exact, over every served request), TTFT p50, SLO attainment, migration (seconds per
move: the epoch's migration time under ``one_epoch``, the time from request to landing
under ``durable``, and how many epochs had moves in flight), activation traffic and the
controller's view error, and the epochs whose plan the world refused (``refused``: a plan
on a server that is not present).

Then the check of continuous batching under load: ``greedy`` on ``default`` at 0.24
requests/s per server (the preset's rate; four times its rate before the fidelity round),
in the world before, with continuous batching, with each serving runtime, and with the
defaults (``coel simulate --scenario default --epochs 30 --policy greedy --set
workload.rate_per_s=0.24``). Last, the loads the presets were retuned to: naive and
greedy on ``default``, ``static``, ``inter`` and ``intra`` under the defaults, on the
tuning seeds 100-102 (30 epochs). ``--quick``: 10 epochs, ``default`` only, neither
check.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from coel_env.core.scenario import LEGACY_FIDELITY

#: The fidelity keys and their defaults (their values before: ``LEGACY_FIDELITY``).
KEYS = (
    ("serving.batching", "continuous"),
    ("updating.migration", "durable"),
    ("perception.sampling", "sub_epoch"),
    ("serving.activation_traffic", "per_server"),
    ("serving.pruning", "prompt"),
    ("serving.quant_scaling", "ratio"),
    ("serving.mode", "fused"),
    ("perception.timeout_periods", 5.0),
    ("updating.departed", "strip"),
)


#: The loaded check's rows: the world before, continuous batching alone and with each
#: serving runtime, the defaults.
_CB = {**LEGACY_FIDELITY, "serving.batching": "continuous"}
LOADED = (
    ("before", dict(LEGACY_FIDELITY)),
    ("serving.batching=continuous", _CB),
    ("+ serving.quant_scaling=ratio", {**_CB, "serving.quant_scaling": "ratio"}),
    ("+ serving.mode=cudagraph", {**_CB, "serving.mode": "cudagraph"}),
    ("+ serving.mode=fused", {**_CB, "serving.mode": "fused"}),
    ("the defaults", {}),
)  # fmt: skip
#: The presets whose loads were retuned with the defaults, and the tuning seeds.
RETUNED = ("default", "static", "inter", "intra")
TUNING_SEEDS = (100, 101, 102)


def settings() -> list[tuple[str, dict]]:
    """(label, overrides) of every row: the world before, each key alone, the defaults."""
    rows = [("before", dict(LEGACY_FIDELITY))]
    rows += [(f"{k}={v}", {**LEGACY_FIDELITY, k: v}) for k, v in KEYS]
    rows.append(("the defaults", {}))
    return rows


def run_one(scenario: str, policy: str, overrides: dict, seed: int, epochs: int) -> dict:
    """One episode's totals (see the module docstring)."""
    from agents.base import observe
    from agents.registry import make_policy
    from coel_env.core.world import World

    w = World(scenario, overrides)
    w.reset(seed)
    pol = None if policy == "naive" else make_policy(policy)
    if pol is not None:
        pol.reset(w, seed)
    tot = dict(arrived=0, dropped=0, slo=0, act=0.0, in_flight=0, refused=0)
    lat, ttft, moves, mae = [], [], [], []
    for _ in range(epochs):
        plan = None if pol is None else pol.act(w, observe(pol, w))
        r = w.step(plan)
        tot["arrived"] += r.requests_arrived
        tot["dropped"] += r.requests_dropped
        tot["slo"] += r.slo_met
        tot["act"] += r.activation_bytes
        tot["in_flight"] += r.moves_in_flight > 0
        tot["refused"] += not r.feasible
        lat.append(w.last_latency_ms)
        ttft.append(w.last_ttft_ms)
        mae.append(r.view_mae)
        if w.scenario.updating.migration == "durable":
            moves += w.last_move_s.tolist()
        elif r.migration_bytes + r.migration_pcie_bytes > 0:
            moves.append(r.migration_s)
    tot.update(
        lat=np.concatenate(lat), ttft=np.concatenate(ttft), moves=moves, mae=float(np.mean(mae))
    )
    return tot


def summarise(runs: list[dict]) -> dict:
    """A table row from the episodes of one setting."""
    arrived = sum(r["arrived"] for r in runs)
    lat = np.concatenate([r["lat"] for r in runs])
    ttft = np.concatenate([r["ttft"] for r in runs])
    moves = [m for r in runs for m in r["moves"]]
    p50, p95 = np.percentile(lat, (50, 95)) if lat.size else (0.0, 0.0)
    return {
        "requests": arrived,
        "dropped %": 100.0 * sum(r["dropped"] for r in runs) / max(arrived, 1),
        "p50 s": p50 / 1000,
        "p95 s": p95 / 1000,
        "TTFT p50 s": (np.percentile(ttft, 50) / 1000) if ttft.size else 0.0,
        "SLO %": 100.0 * sum(r["slo"] for r in runs) / max(arrived, 1),
        "moves": len(moves),
        "s per move": float(np.mean(moves)) if moves else 0.0,
        "epochs in flight": sum(r["in_flight"] for r in runs),
        "activation GB": sum(r["act"] for r in runs) / 1e9,
        "view MAE": float(np.mean([r["mae"] for r in runs])),
        "refused": sum(r["refused"] for r in runs),
    }


def table(rows: list[tuple[str, dict]]) -> str:
    cols = list(rows[0][1])
    out = ["| setting | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for label, row in rows:
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:,}" if isinstance(v, int) else f"{v:,.3g}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", nargs="+", default=["default", "large"])
    p.add_argument("--policies", nargs="+", default=["naive", "greedy"])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("results/fidelity.md"))
    p.add_argument("--quick", action="store_true", help="10 epochs, default only")
    a = p.parse_args(argv)
    args = sys.argv[1:] if argv is None else list(argv)
    if a.quick:
        a.scenarios, a.epochs = ["default"], 10
    if a.epochs < 1 or a.seeds < 1:
        p.error(f"--epochs={a.epochs} and --seeds={a.seeds} must be >= 1")
    parts = [
        "# Fidelity keys: what each one changes",
        "",
        "Command: `" + shlex.join(["python", "experiments/fidelity.py", *args]) + "`",
        "",
        f"{a.epochs} epochs x {a.seeds} seed(s) per row; the same seeded episodes in every "
        "row. Latencies are over served requests. `moves`: plan changes completed, `s per "
        "move` their seconds (the epoch's migration time under one_epoch, request to "
        "landing under durable; a durable move still under way at the end is not counted: "
        "see `epochs in flight`). `view MAE`: the controller's view against the truth, "
        "mean over epochs.",
        "",
        "naive and greedy run every expert at its home (no activation traffic) with keep "
        "ratio 1, so `serving.activation_traffic` and `serving.pruning` change nothing "
        "for them; they change the MILP and learned policies, which use remote experts "
        "and pruning. `perception.sampling` changes what a policy sees, so it moves "
        "greedy's plans only where the view's error changes a decision; "
        "`perception.timeout_periods` changes a view only where a server is silent for "
        "longer (one that left, or one a failed link put beyond the broadcast radius). "
        "`refused`: epochs whose plan the world refused (it named a server not present); "
        "`updating.departed` strips a plan of the servers that leave as it is sent "
        "instead of refusing it.",
    ]
    t0 = time.perf_counter()
    for sc in a.scenarios:
        for pol in a.policies:
            rows = []
            for label, over in settings():
                runs = [run_one(sc, pol, over, s, a.epochs) for s in range(a.seeds)]
                rows.append((label, summarise(runs)))
                print(f"{sc} {pol} {label}: " + table(rows[-1:]).splitlines()[-1], flush=True)
            parts += ["", f"## {sc}, {pol}", "", table(rows)]
    if not a.quick:  # the check: greedy on default at 0.24 requests/s per server
        rows = []
        for label, over in LOADED:
            over = {"workload.rate_per_s": 0.24, **over}
            rows.append((label, summarise([run_one("default", "greedy", over, 0, 30)])))
            print(f"loaded {label}: " + table(rows[-1:]).splitlines()[-1], flush=True)
        parts += ["", "## default at 0.24 requests/s per server, greedy, 30 epochs, seed 0", ""]
        parts += [table(rows)]
        rows = []
        for sc in RETUNED:
            for pol in ("naive", "greedy"):
                runs = [run_one(sc, pol, {}, s, 30) for s in TUNING_SEEDS]
                rows.append((f"{sc}, {pol}", summarise(runs)))
                print(f"retuned {sc} {pol}: " + table(rows[-1:]).splitlines()[-1], flush=True)
        parts += [
            "",
            "## The retuned loads under the defaults: tuning seeds 100-102, 30 epochs",
            "",
            table(rows),
        ]
    parts += ["", f"Wall time: {time.perf_counter() - t0:.0f} s.", ""]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(parts))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
