"""Benchmark the deployment MILP (``agents/milp.py``): solve time and gap against size.

    python experiments/bench_milp.py [--servers 2 4 8 16 32 64] [--models mixtral-8x7b
        olmoe-1b-7b] [--groups 4 8] [--time-limit 10] [--gap 1e-4] [--seed 0]
        [--scenarios default large] [--returns 3 50] [--out FILE]

Instances: the ``static`` scenario (random geometric edge network, the default device
mix) with ``--servers`` servers and ONE model (every layer, every expert placed; the
MILP decides per popularity group, ``--groups`` groups per model: 8 groups on
Mixtral-8x7B is one group per expert rank, i.e. the full placement), plus the
``--scenarios`` presets as they are (several models). Demand is the true expected rate,
the plan in force is the world's naive plan. For each instance: coefficient building
time, the greedy's time and objective, HiGHS's status, objective, bound, gap and time
under ``--time-limit``.

``--returns SEEDS EPOCHS`` also runs ``World("default")`` for SEEDS seeds x EPOCHS epochs
under the naive plan and under ``milp-oracle`` and reports the mean return (the
environment's reward weights) and SLO attainment of each.

``--out`` writes the tables as markdown (the lead copies them into ``results/``).
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from agents.base import Observation, observe
from agents.milp import (
    MilpConfig,
    MilpError,
    MilpPolicy,
    _true_demand,
    build_instance,
    evaluate,
    greedy_solution,
    solve,
)
from coel_env.core.world import World


def _instance(scenario: str, overrides: dict, seed: int, cfg: MilpConfig):
    w = World(scenario, overrides)
    w.reset(seed)
    obs = Observation.from_truth(w)
    t0 = time.perf_counter()
    inst = build_instance(w, obs, cfg, demand_per_s=_true_demand(w))
    return w, inst, time.perf_counter() - t0


def bench_one(label: str, scenario: str, overrides: dict, args, groups: int) -> dict:
    cfg = MilpConfig(n_groups=groups, time_limit_s=args.time_limit, gap=args.gap)
    w, inst, build_s = _instance(scenario, overrides, args.seed, cfg)
    t0 = time.perf_counter()
    greedy = greedy_solution(inst)
    greedy_s = time.perf_counter() - t0
    g_obj = evaluate(inst, greedy) if greedy is not None else math.inf
    row = {
        "instance": label,
        "servers": w.n,
        "models": len(w.models),
        "layers x experts": " + ".join(f"{m.n_moe_layers}x{m.n_experts}" for m in w.specs),
        "groups": groups,
        "build s": build_s,
        "greedy s": greedy_s,
        "greedy obj": g_obj,
    }
    try:
        res = solve(inst, time_limit_s=args.time_limit, gap=args.gap)
    except MilpError as exc:
        row.update(status=f"error: {exc}"[:60], binaries=0, rows=0)
        return row
    row.update(
        {"status": res.status, "binaries": res.n_binaries, "rows": res.n_rows,
         "milp s": res.solve_time_s, "matrix s": res.build_time_s,
         "objective": res.objective, "bound": res.bound, "gap": res.gap}
    )  # fmt: skip
    row["greedy / milp"] = g_obj / res.objective if res.objective > 0 else math.nan
    return row


def returns(seeds: int, epochs: int, time_limit: float) -> list[dict]:
    from coel_env.core.rewards import reward_terms, total_reward
    from coel_env.envs.coel import CoELEnv

    cfg = CoELEnv.default_config()
    out = []
    for name in ("naive", "milp-oracle"):
        rets, slo, solve_s, statuses = [], [], [], {}
        for seed in range(seeds):
            w = World("default")
            w.reset(seed)
            pol = None
            if name != "naive":
                pol = MilpPolicy(time_limit_s=time_limit, gap=1e-3)
                pol.reset(w, seed)
            total = met = arrived = 0.0
            for _ in range(epochs):
                plan = None
                if pol is not None:
                    obs = observe(pol, w)
                    n0 = len(pol.history)
                    t0 = time.perf_counter()
                    plan = pol.act(w, obs)
                    if len(pol.history) > n0:
                        solve_s.append(time.perf_counter() - t0)
                        statuses[pol.last.status] = statuses.get(pol.last.status, 0) + 1
                rep = w.step(plan)
                terms = reward_terms(rep, w, cfg, invalid=not rep.feasible)
                total += total_reward(terms, cfg)
                met += rep.slo_met
                arrived += rep.requests_arrived
            rets.append(total)
            slo.append(met / max(arrived, 1.0))
        out.append(
            {
                "policy": name,
                "seeds x epochs": f"{seeds} x {epochs}",
                "mean return": float(np.mean(rets)),
                "return std": float(np.std(rets)),
                "SLO attainment": float(np.mean(slo)),
                "act s (mean / max)": (
                    f"{np.mean(solve_s):.3f} / {np.max(solve_s):.3f}" if solve_s else "-"
                ),
                "solves": ", ".join(f"{k} {v}" for k, v in statuses.items()) or "-",
            }
        )
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, nargs="*", default=[2, 4, 8, 16, 32, 64])
    p.add_argument("--models", nargs="*", default=["mixtral-8x7b", "olmoe-1b-7b"])
    p.add_argument("--groups", type=int, nargs="*", default=[4, 8])
    p.add_argument("--scenarios", nargs="*", default=["default", "large"])
    p.add_argument("--time-limit", type=float, default=10.0)
    p.add_argument("--gap", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--returns", type=int, nargs=2, metavar=("SEEDS", "EPOCHS"))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    # (label, scenario, overrides, groups): the static sizes, then the scenarios
    jobs = [
        (f"{model}, {n} servers", "static", {"topology.n_servers": n, "models": [model]}, groups)
        for model in args.models
        for groups in args.groups
        for n in args.servers
    ] + [(f"scenario {sc}", sc, {}, MilpConfig().n_groups) for sc in args.scenarios]
    rows = []
    for label, scenario, overrides, groups in jobs:
        row = bench_one(label, scenario, overrides, args, groups)
        rows.append(row)
        print(
            f"{row['instance']:28s} G={row['groups']:<3d} {row['status']:10s} "
            f"milp {row.get('milp s', math.nan):7.2f} s  gap {row.get('gap', math.nan):.2e}"
            f"  greedy {row['greedy s']:.3f} s (x{row.get('greedy / milp', math.nan):.3f})"
            f"  binaries {row['binaries']}",
            flush=True,
        )
    ret_rows = []
    if args.returns:
        ret_rows = returns(args.returns[0], args.returns[1], args.time_limit)
        for r in ret_rows:
            print(
                f"{r['policy']:12s} return {r['mean return']:.2f} +- {r['return std']:.2f}  "
                f"SLO {r['SLO attainment']:.3f}  act {r['act s (mean / max)']}  {r['solves']}"
            )
    if args.out:
        cmd = "python experiments/bench_milp.py " + shlex.join(argv or sys.argv[1:])
        text = [
            "# MILP benchmark",
            "",
            f"Command: `{cmd.strip()}`",
            "",
            f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}",
            "",
            "Objective: expected request-milliseconds of the epoch (latency, waiting, and "
            "quality, drops and migration priced in ms; see `agents/milp.py`). `gap` is "
            "HiGHS's relative gap at the end; `greedy / milp` the greedy's objective over "
            "the MILP's.",
            "",
            table(rows),
            "",
        ]
        if ret_rows:
            text += ["## Returns on World('default')", "", table(ret_rows), ""]
        args.out.write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
