"""How far the calibrated layer terms would move the world's outputs.

    python experiments/layer_terms_shift.py [--scenario default] [--policy greedy]
                                            [--epochs 200] [--seeds 0 1 2] [--json]

Runs the same episodes (scenario, policy, seeds) twice: with
``serving.layer_terms=first-principles`` (the default) and with
``serving.layer_terms=calibrated`` (router and dispatch costed with the terms
fitted to whole measured H200 layers, :func:`coel_env.cost.layer_fit`), both
with ``serving.mode=eager``: the calibrated terms exist only for the eager
runtime, the default ``fused`` mode refuses them; every other key is the
scenario's. It prints, per seed and over all, the mean absolute change of the
per-epoch p95 latency [ms and %], TTFT p95, mean TPOT and SLO attainment (epochs
with arrivals), and the run-level SLO attainment and p95 latency of each. The
figure a change that flips the default must rerun the committed results for.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from agents.harness import play
from agents.registry import make_policy
from coel_env.core.world import World

TERMS = ("first-principles", "calibrated")
#: What both sides run with: calibrated terms exist only for the eager runtime.
OVERRIDES = {"serving.mode": "eager"}


def run(scenario: str, policy: str, seed: int, epochs: int, terms: str) -> dict:
    """One episode's per-epoch figures and run totals with ``serving.layer_terms=terms``
    (and ``serving.mode=eager``, where calibrated terms exist)."""
    world = World(scenario, {**OVERRIDES, "serving.layer_terms": terms})
    pol = make_policy(policy)
    world.reset(seed)
    pol.reset(world, seed)
    cols = ("requests_arrived", "slo_met", "slo_attainment", "latency_p95_ms", "ttft_p95_ms")
    cols += ("tpot_mean_ms",)
    rows = {c: [] for c in cols}
    lat = []
    for rep, _invalid, _ms in play(world, epochs, pol):
        for c in cols:
            rows[c].append(getattr(rep, c))
        lat.append(np.asarray(world.last_latency_ms, float))
    out = {c: np.asarray(v, float) for c, v in rows.items()}
    all_lat = np.concatenate(lat) if lat else np.zeros(0)
    out["run_slo"] = out["slo_met"].sum() / max(out["requests_arrived"].sum(), 1)
    out["run_p95_ms"] = float(np.percentile(all_lat, 95)) if all_lat.size else 0.0
    return out


def compare(a: dict, b: dict) -> dict:
    """Mean absolute per-epoch changes from ``a`` to ``b`` (epochs with arrivals)."""
    sel = (a["requests_arrived"] > 0) & (b["requests_arrived"] > 0)
    served = sel & (a["latency_p95_ms"] > 0) & (b["latency_p95_ms"] > 0)
    d = {}
    for c in ("latency_p95_ms", "ttft_p95_ms", "tpot_mean_ms"):
        x, y = a[c][served], b[c][served]
        d[f"{c}_mean_abs"] = float(np.abs(y - x).mean())
        d[f"{c}_mean_abs_pct"] = float((np.abs(y - x) / x).mean() * 100)
        d[f"{c}_mean_change_pct"] = float(((y - x) / x).mean() * 100)
    x, y = a["slo_attainment"][sel], b["slo_attainment"][sel]
    d["slo_attainment_mean_abs"] = float(np.abs(y - x).mean())
    d["slo_attainment_mean_change"] = float((y - x).mean())
    d["epochs_compared"] = int(sel.sum())
    d["run_slo"] = (float(a["run_slo"]), float(b["run_slo"]))
    d["run_p95_ms"] = (a["run_p95_ms"], b["run_p95_ms"])
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="default")
    p.add_argument("--policy", default="greedy")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    per_seed = {}
    for seed in args.seeds:
        a, b = (run(args.scenario, args.policy, seed, args.epochs, t) for t in TERMS)
        per_seed[seed] = compare(a, b)
    keys = [k for k in next(iter(per_seed.values())) if not k.startswith("run_")]
    keys.remove("epochs_compared")
    overall = {k: float(np.mean([d[k] for d in per_seed.values()])) for k in keys}
    doc = {"scenario": args.scenario, "policy": args.policy, "epochs": args.epochs,
           "overrides": OVERRIDES, "seeds": args.seeds, "per_seed": per_seed,
           "mean_over_seeds": overall}  # fmt: skip
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(
        f"{args.scenario}, {args.policy}, {args.epochs} epochs, serving.mode eager (both "
        "sides; calibrated terms exist only for eager): first-principles -> calibrated"
    )
    for seed, d in per_seed.items():
        print(f"seed {seed}: run SLO {d['run_slo'][0]:.4f} -> {d['run_slo'][1]:.4f}, run p95 "
              f"{d['run_p95_ms'][0]:.0f} -> {d['run_p95_ms'][1]:.0f} ms "
              f"({d['epochs_compared']} epochs compared)")  # fmt: skip
    for k, v in overall.items():
        print(f"  {k:<32s}{v:>12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
