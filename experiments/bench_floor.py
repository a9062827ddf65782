"""How fast could the world and the envs be if only their compiled kernels took time?

    python experiments/bench_floor.py [--steps N] [--seed S] [--out results/speed_floor.md]

Runs the workloads of the two speed benchmarks: ``World.step()`` under the naive
plan (``experiments/bench_world.py``) and ``CoEL-v0`` with masked random actions
(``experiments/bench_envs.py``, its sampler), on ``default`` and ``large``.
Each is run twice from the same seed: once as is (steps/s), once with every
compiled kernel of the package (the numba functions of
:mod:`coel_env.core.kernels`, wherever a module holds them) wrapped in a timer.

The kernels are where the numbers are computed: the cost model of a plan at a
popularity snapshot (``cost_kernel``, ``table_kernel``, ``placement_kernel``),
the FIFO queues, shortest paths, broadcasts, plan checks and fills. A rewrite
that keeps every output bit for bit must do at least this work, so
``1 / (kernel time per step)`` bounds the steps/s of *any* such rewrite, even
one that made all the Python and numpy around the kernels free. The bound is
generous: random draws, ``exp`` and the other numpy work the outputs depend on
are not counted in it, and the kernels' own call overhead is taken off (the
cost of calling an empty compiled function with as many arguments, measured
here).

Runs on one thread (as the other benchmarks). The process itself is not pinned.
"""

from __future__ import annotations

from experiments import benchutil

benchutil.single_thread()  # before numpy is imported anywhere

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402
from numba.core.registry import CPUDispatcher  # noqa: E402

import coel_env  # noqa: E402, F401  (registers the ids)
from coel_env.core.world import World  # noqa: E402
from experiments.bench_envs import (  # noqa: E402
    AIM_DEFAULT_SPS,
    AIM_LARGE_SPS,
    MaskedSampler,
    _run_coel,
)
from experiments.bench_world import AIM_DEFAULT_EPS, AIM_LARGE_EPS  # noqa: E402

#: Kernels that cost a plan at a popularity snapshot (the cost model).
COST_MODEL = ("cost_kernel", "table_kernel", "activity_kernel", "placement_kernel")
WARMUP = 100
EPISODE = 200  # epochs per reset in bench_world.py


class KernelTimer:
    """Wraps every compiled kernel that a ``coel_env`` module holds in a timer."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.arity: dict[str, int] = {}
        self._undo: list[tuple[object, str, object]] = []

    def _wrap(self, name: str, fn: CPUDispatcher):
        seconds, calls, clock = self.seconds, self.calls, time.perf_counter

        def timed(*args):
            t = clock()
            out = fn(*args)
            seconds[name] += clock() - t
            calls[name] += 1
            self.arity[name] = len(args)
            return out

        return timed

    def __enter__(self) -> KernelTimer:
        wrapped: dict[int, object] = {}
        for mod_name, mod in list(sys.modules.items()):
            if not mod_name.startswith("coel_env") or mod is None:
                continue
            for attr, value in list(vars(mod).items()):
                if isinstance(value, CPUDispatcher):
                    w = wrapped.setdefault(id(value), self._wrap(value.__name__, value))
                    self._undo.append((mod, attr, value))
                    setattr(mod, attr, w)
        return self

    def __exit__(self, *exc) -> None:
        for mod, attr, value in reversed(self._undo):
            setattr(mod, attr, value)
        self._undo.clear()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def dispatch_overhead_s(max_args: int = 24, repeats: int = 20000) -> list[float]:
    """Seconds per call of an empty compiled function of k array arguments, k = 0..max,
    through the same timing wrapper (what a whole-step compiled rewrite would not pay)."""
    a = np.zeros(4)
    out = []
    for k in range(max_args + 1):
        names = ", ".join(f"x{i}" for i in range(k))
        ns: dict = {}
        exec(f"def f({names}):\n    return 0\n", ns)  # noqa: S102
        f = njit(ns["f"])
        args = (a,) * k
        f(*args)
        timer = KernelTimer()
        g = timer._wrap("empty", f)
        best = float("inf")
        for _ in range(3):
            timer.reset()
            for _ in range(repeats):
                g(*args)
            best = min(best, timer.seconds["empty"] / repeats)
        out.append(best)
    return out


def _world_run(scenario: str, steps: int, seed: int, warmup: int):
    """``bench_world.py``'s protocol: ``reset(seed)`` and 200 epochs (an episode), as
    many times as ``steps`` needs, after a warm-up."""
    world = World(scenario)
    world.reset(seed)
    for _ in range(warmup):
        world.step()

    def run() -> None:
        done = 0
        while done < steps:
            world.reset(seed)
            for _ in range(min(EPISODE, steps - done)):
                world.step()
            done += EPISODE

    return run, world.n


def _env_run(scenario: str, steps: int, seed: int, warmup: int):
    """``bench_envs.py``'s protocol: ``reset(seed)``, then ``steps`` masked random steps
    (resetting when an episode ends), after a warm-up."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # CoEL-v0 is an older version
        env = gym.make("CoEL-v0", config={"scenario": scenario})
    sampler = MaskedSampler(env.action_space.nvec, np.random.default_rng(seed))
    if warmup:
        _run_coel(env, sampler, warmup, seed)
    return (lambda: _run_coel(env, sampler, steps, seed)), env.unwrapped.world.n


TARGETS = (
    ("World.step (naive plan)", "default", _world_run, AIM_DEFAULT_EPS),
    ("World.step (naive plan)", "large", _world_run, AIM_LARGE_EPS),
    ("CoEL-v0 (masked random)", "default", _env_run, AIM_DEFAULT_SPS),
    ("CoEL-v0 (masked random)", "large", _env_run, AIM_LARGE_SPS),
)


def measure(what, scenario, make, aim, steps, seed, overhead, warmup=WARMUP) -> dict:
    run, n = make(scenario, steps, seed, warmup)
    t = time.perf_counter()
    run()
    plain_s = (time.perf_counter() - t) / steps
    with KernelTimer() as timer:
        t = time.perf_counter()
        run()
        timed_s = (time.perf_counter() - t) / steps  # the same steps, kernels timed
    kernel_s = cost_s = calls = 0.0
    per_kernel = {}
    for name, sec in timer.seconds.items():
        c = timer.calls[name]
        net = max(sec - c * overhead[min(timer.arity[name], len(overhead) - 1)], 0.0)
        per_kernel[name] = net / steps
        kernel_s += net
        calls += c
        if name in COST_MODEL:
            cost_s += net
    kernel_s /= steps
    return {
        "what": what,
        "scenario": scenario,
        "servers": n,
        "steps": steps,
        "sps": 1.0 / plain_s,
        "ms": plain_s * 1e3,
        "kernel_us": kernel_s * 1e6,
        "cost_us": cost_s / steps * 1e6,
        "calls": calls / steps,
        "share": kernel_s / timed_s,  # of the timed run itself
        "bound_sps": 1.0 / kernel_s if kernel_s > 0 else float("inf"),
        "aim": aim,
        "top": sorted(per_kernel.items(), key=lambda kv: -kv[1])[:4],
    }


def markdown(rows: list[dict], info: dict[str, str], command: str, overhead: list[float]) -> str:
    title = "Speed floor: steps/s if only the compiled kernels took time"
    lines = [
        "Kernel time is the time inside the compiled kernels per step, less their call",
        f"overhead ({overhead[0] * 1e6:.2f}-{overhead[-1] * 1e6:.2f} us per call, by number of",
        "arguments). The bound is 1 / kernel time: no rewrite that keeps every output can",
        "be faster (random draws and numpy math outside the kernels are not even counted).",
        "Kernel share: of the same steps run with the kernels timed.",
        "",
        "| workload | scenario | servers | steps/s now | ms/step | kernel us/step "
        "| of which cost model | kernel calls/step | kernel share | bound steps/s | aim "
        "| aim reachable | largest kernels (us/step) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        top = ", ".join(f"{k} {v * 1e6:.0f}" for k, v in r["top"])
        ok = "yes" if r["bound_sps"] >= r["aim"] else "**no**"
        lines.append(
            f"| {r['what']} | {r['scenario']} | {r['servers']} | {r['sps']:,.0f} | "
            f"{r['ms']:.3f} | {r['kernel_us']:.0f} | {r['cost_us']:.0f} | {r['calls']:.1f} | "
            f"{r['share']:.0%} | {r['bound_sps']:,.0f} | {r['aim']:,.0f} | {ok} | {top} |"
        )
    return benchutil.markdown_report(title, command, lines, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--steps", type=int, default=1000, help="timed steps (world: epochs) per workload"
    )
    p.add_argument("--seed", type=int, default=0, help="episode and sampling seed")
    p.add_argument("--warmup", type=int, default=WARMUP, help="untimed steps first")
    p.add_argument("--out", type=Path, help="write a markdown table here")
    args = p.parse_args(argv)
    benchutil.check_at_least(p, args, 1, "steps")
    benchutil.check_at_least(p, args, 0, "warmup")
    info = benchutil.print_machine()
    overhead = dispatch_overhead_s()
    rows = []
    for what, scenario, make, aim in TARGETS:
        r = measure(what, scenario, make, aim, args.steps, args.seed, overhead, args.warmup)
        rows.append(r)
        print(
            f"{what:<24s} {scenario:<8s} now {r['sps']:8.0f}/s  kernels {r['kernel_us']:6.0f} "
            f"us/step (cost model {r['cost_us']:.0f}, {r['calls']:.1f} calls)  "
            f"bound {r['bound_sps']:8.0f}/s  aim {aim:,.0f}",
            flush=True,
        )
    benchutil.write_report(
        args.out,
        "experiments/bench_floor.py",
        argv,
        lambda command: markdown(rows, info, command, overhead),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
