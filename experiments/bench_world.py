"""Benchmark ``World.step()`` under the naive plan: epochs per second per scenario.

    python experiments/bench_world.py [--epochs N] [--scenarios default large]
                                      [--repeats R] [--seed S] [--out results/world_benchmark.md]

For each scenario: build the world, ``reset(seed)`` and run ``--warmup`` steps
(fills the cost caches), then ``--repeats`` timed runs of ``reset(seed)`` +
``--epochs`` steps (only the steps are timed). Reports the best and the median
epochs per second over the repeats, and the machine (platform, CPU count,
Python and NumPy versions).

Runs on one core: OMP/MKL/OpenBLAS/NumExpr/Accelerate threads are set to 1
through environment variables below, before NumPy is imported (a variable
already set in the environment is kept, and reported). The process itself is
not pinned unless ``--pin CPU`` is given; the CPUs it may run on are reported.
"""

from __future__ import annotations

from experiments import benchutil

benchutil.single_thread()  # before numpy is imported anywhere

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from coel_env.core.world import World  # noqa: E402

#: The world issue's aims (epochs/s on one core, naive plan).
AIM_DEFAULT_EPS = 15_000.0
AIM_LARGE_EPS = 1_500.0


def bench(scenario: str, epochs: int, repeats: int, warmup: int, seed: int) -> dict:
    """Epochs per second of ``World(scenario).step()`` (naive plan), best and median."""
    t = time.perf_counter()
    world = World(scenario)
    build_s = time.perf_counter() - t
    world.reset(seed)
    for _ in range(warmup):
        world.step()
    rates = []
    for _ in range(repeats):
        world.reset(seed)
        t = time.perf_counter()
        for _ in range(epochs):
            world.step()
        rates.append(epochs / (time.perf_counter() - t))
    return {
        "scenario": scenario,
        "servers": world.n,
        "models": len(world.models),
        "epochs": epochs,
        "repeats": repeats,
        "build_s": build_s,
        "best_eps": max(rates),
        "median_eps": statistics.median(rates),
        "median_ms_per_epoch": 1000.0 / statistics.median(rates),
    }


def markdown(rows: list[dict], info: dict[str, str], command: str) -> str:
    lines = [
        "| scenario | servers | models | epochs x repeats | best epochs/s | median epochs/s "
        "| median ms/epoch | build s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['servers']} | {r['models']} | {r['epochs']} x "
            f"{r['repeats']} | {r['best_eps']:.1f} | {r['median_eps']:.1f} | "
            f"{r['median_ms_per_epoch']:.2f} | {r['build_s']:.2f} |"
        )
    return benchutil.markdown_report("World.step() benchmark (naive plan)", command, lines, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=200, help="timed epochs per repeat")
    p.add_argument("--scenarios", nargs="+", default=["default", "large"], help="presets or YAML")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (best and median)")
    p.add_argument("--warmup", type=int, default=20, help="untimed epochs first")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--out", type=Path, help="write a markdown table here")
    benchutil.add_pin(p)
    args = p.parse_args(argv)
    benchutil.pin(p, args.pin)
    benchutil.check_at_least(p, args, 1, "epochs", "repeats")
    benchutil.check_at_least(p, args, 0, "warmup")
    info = benchutil.print_machine()
    rows = []
    for sc in args.scenarios:
        r = bench(sc, args.epochs, args.repeats, args.warmup, args.seed)
        rows.append(r)
        print(
            f"{sc:<10s} servers {r['servers']:>3d}  best {r['best_eps']:8.1f} epochs/s  "
            f"median {r['median_eps']:8.1f} epochs/s  ({r['median_ms_per_epoch']:.2f} ms/epoch, "
            f"{r['epochs']} epochs x {r['repeats']})",
            flush=True,
        )
    benchutil.write_report(
        args.out, "experiments/bench_world.py", argv, lambda command: markdown(rows, info, command)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
