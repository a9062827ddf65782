"""Soak test: run an environment for many steps and watch the process's memory.

    python experiments/soak.py [--steps N] [--id CoEL-v0] [--scenario default]
                               [--sample-every K] [--warmup-steps W] [--seed S]
                               [--override KEY=VALUE ...] [--out results/soak.md]

Runs ``gymnasium.make(id, config=...)`` for ``--steps`` steps with masked random
actions (uniform among the choices ``action_masks()`` allows, per field, from a
seeded ``numpy`` Generator), resetting when an episode is truncated. Every
``--sample-every`` steps (and at the end of the warm-up and of the run) the
garbage collector runs and the resident set size (RSS) is read from
``/proc/self/statm`` (falling back to ``resource.getrusage`` peak RSS where
there is no ``/proc``). After ``--warmup-steps`` it reports the RSS at the end
of the warm-up, the largest and the final RSS after it, the growth
``(final - warm-up) / warm-up`` and PASS/FAIL against "no growth beyond 5%
after warm-up", plus the steps per second of the whole run (resets, masks and
sampling included). ``default`` as ``--scenario`` is the id's own scenario;
``--override`` sets dotted scenario keys (e.g. ``dynamics.servers=true``).
A progress bar goes to stderr. The exit status is 0 unless ``--strict`` and FAIL.
"""

from __future__ import annotations

import os

from experiments import benchutil

benchutil.single_thread()  # before numpy is imported anywhere

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

import coel_env  # noqa: E402, F401  (registers the ids)
from experiments.bench_envs import OWN, MaskedSampler  # noqa: E402

MAX_GROWTH = 0.05  # allowed RSS growth after warm-up
MB = 1024.0 * 1024.0


def _rss_statm() -> int | None:
    """Current resident set size [bytes] from /proc/self/statm, None if unreadable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _rss_rusage() -> int:
    """Peak resident set size [bytes] from getrusage (kB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_reader() -> tuple[Callable[[], int], str]:
    """The RSS function and a description of its source."""
    if _rss_statm() is not None:
        return _rss_statm, "current RSS, /proc/self/statm"
    return _rss_rusage, "peak RSS, resource.getrusage (no /proc)"


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"override {text!r} must be KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def soak(
    env_id: str,
    scenario: str,
    steps: int,
    sample_every: int,
    warmup_steps: int,
    seed: int,
    overrides: dict | None = None,
    progress: bool = True,
) -> dict:
    """Run the soak; returns the RSS samples and the summary."""
    read_rss, source = rss_reader()
    config: dict = {} if scenario == OWN else {"scenario": scenario}
    if overrides:
        config["overrides"] = dict(overrides)
    env = gym.make(env_id, config=config)
    base = env.unwrapped
    sampler = MaskedSampler(env.action_space.nvec, np.random.default_rng(seed))
    env.reset(seed=seed)
    samples: list[tuple[int, int]] = []

    def sample(step: int) -> int:
        gc.collect()
        rss = read_rss()
        samples.append((step, rss))
        return rss

    sample(0)
    invalid = resets = 0
    bar = tqdm(total=steps, unit="step", file=sys.stderr, disable=not progress, mininterval=0.5)
    t = time.perf_counter()
    for i in range(1, steps + 1):
        _, _, terminated, truncated, info = env.step(sampler.sample(base.action_masks()))
        invalid += bool(info.get("invalid_action", False))
        if terminated or truncated:
            env.reset()
            resets += 1
        if i % sample_every == 0 or i == warmup_steps or i == steps:
            rss = sample(i)
            bar.set_postfix(rss_mb=f"{rss / MB:.1f}", refresh=False)
        if i % 256 == 0 or i == steps:
            bar.update(i - bar.n)
    wall = time.perf_counter() - t
    bar.close()
    dyn = base.world.scenario.dynamics
    dynamics_on = [
        f.name
        for f in dataclasses.fields(dyn)
        if isinstance(getattr(dyn, f.name), bool) and getattr(dyn, f.name)
    ]
    resolved = str(base.config["scenario"])
    env.close()

    at_warmup = next(r for s, r in samples if s == warmup_steps)
    after = [r for s, r in samples if s >= warmup_steps]
    final = samples[-1][1]
    growth = (final - at_warmup) / at_warmup
    steps_after = np.array([s for s, _ in samples if s >= warmup_steps], float)
    slope = (
        float(np.polyfit(steps_after, np.asarray(after, float), 1)[0]) * 1000.0
        if len(after) >= 3
        else float("nan")
    )
    return {
        "id": env_id,
        "scenario": resolved,
        "own": scenario == OWN,
        "overrides": dict(overrides or {}),
        "dynamics_on": dynamics_on,
        "steps": steps,
        "sample_every": sample_every,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "source": source,
        "samples": samples,
        "rss_start": samples[0][1],
        "rss_warmup": at_warmup,
        "rss_max": max(after),
        "rss_final": final,
        "growth": growth,
        "max_growth": (max(after) - at_warmup) / at_warmup,
        "slope_bytes_per_1k": slope,
        "passed": growth <= MAX_GROWTH,
        "wall_s": wall,
        "sps": steps / wall,
        "invalid": invalid / steps,
        "resets": resets,
    }


def summary_lines(r: dict) -> list[str]:
    verdict = "PASS" if r["passed"] else "FAIL"
    scen = r["scenario"] + (" (own)" if r["own"] else "")
    return [
        f"id: {r['id']}  scenario: {scen}  overrides: {r['overrides'] or '-'}",
        f"dynamics on: {', '.join(r['dynamics_on']) or 'none'}",
        f"steps: {r['steps']}  warm-up: {r['warmup_steps']}  sample every: {r['sample_every']}"
        f"  seed: {r['seed']}  episodes reset: {r['resets']}  invalid actions: "
        f"{r['invalid']:.1%}",
        f"RSS source: {r['source']}",
        f"RSS start: {r['rss_start'] / MB:.1f} MB",
        f"RSS at warm-up end: {r['rss_warmup'] / MB:.1f} MB",
        f"RSS max after warm-up: {r['rss_max'] / MB:.1f} MB ({r['max_growth']:+.2%})",
        f"RSS final: {r['rss_final'] / MB:.1f} MB",
        f"growth after warm-up: {r['growth']:+.2%}  (limit {MAX_GROWTH:.0%}): {verdict}",
        f"trend after warm-up: {r['slope_bytes_per_1k'] / 1024:+.1f} kB per 1000 steps",
        f"steps/s: {r['sps']:.1f}  (wall {r['wall_s']:.1f} s; resets, masks, sampling included)",
    ]


def markdown(r: dict, info: dict[str, str], command: str, max_rows: int = 25) -> str:
    verdict = "PASS" if r["passed"] else "FAIL"
    title = "Soak test: process memory over a long run (masked random actions)"
    lines = [
        "| id | scenario | steps | warm-up steps | RSS at warm-up MB | RSS max MB | RSS final MB "
        "| growth | limit | verdict | steps/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        f"| {r['id']} | {r['scenario']}{' (own)' if r['own'] else ''} | {r['steps']} | "
        f"{r['warmup_steps']} | {r['rss_warmup'] / MB:.1f} | {r['rss_max'] / MB:.1f} | "
        f"{r['rss_final'] / MB:.1f} | {r['growth']:+.2%} | {MAX_GROWTH:.0%} | {verdict} | "
        f"{r['sps']:.1f} |",
        "",
        *[f"- {line}" for line in summary_lines(r)],
        "",
        f"RSS samples (at most {max_rows}, evenly spaced; the garbage collector runs before each):",
        "",
        "| step | RSS MB |",
        "|---:|---:|",
    ]
    samples = r["samples"]
    keep = sorted(set(np.linspace(0, len(samples) - 1, min(max_rows, len(samples))).astype(int)))
    w = r["warmup_steps"]
    keep = sorted(set(keep) | {i for i, (s, _) in enumerate(samples) if s == w})
    for i in keep:
        s, rss = samples[i]
        lines.append(f"| {s}{' (warm-up end)' if s == w else ''} | {rss / MB:.1f} |")
    return benchutil.markdown_report(title, command, lines, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1_000_000, help="env steps in all")
    p.add_argument("--id", default="CoEL-v0", help="registered env id")
    p.add_argument(
        "--scenario", default=OWN, help="scenario preset or YAML; 'default': the id's own"
    )
    p.add_argument("--sample-every", type=int, default=1000, help="steps between RSS samples")
    p.add_argument(
        "--warmup-steps", type=int, default=None, help="steps before the baseline (default N/10)"
    )
    p.add_argument("--seed", type=int, default=0, help="episode and sampling seed")
    p.add_argument(
        "--override",
        action="append",
        type=_parse_override,
        default=[],
        metavar="KEY=VALUE",
        help="dotted scenario override (repeatable), e.g. dynamics.servers=true",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit with status 1 on FAIL")
    p.add_argument("--csv", type=Path, help="also write every RSS sample (step,rss_bytes)")
    p.add_argument("--out", type=Path, help="write a markdown report here")
    args = p.parse_args(argv)
    benchutil.check_at_least(p, args, 1, "steps", "sample_every")
    if args.warmup_steps is None:
        args.warmup_steps = max(1, args.steps // 10)
    if not 0 < args.warmup_steps < args.steps:
        p.error(
            f"--warmup-steps {args.warmup_steps} is not allowed; must be in 1..{args.steps - 1}"
        )
    if args.id not in gym.registry:
        p.error(f"--id {args.id!r} is not registered")
    info = benchutil.print_machine(gymnasium=gym.__version__)
    r = soak(
        args.id,
        args.scenario,
        args.steps,
        args.sample_every,
        args.warmup_steps,
        args.seed,
        dict(args.override),
        progress=not args.no_progress,
    )
    for line in summary_lines(r):
        print(line)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text("step,rss_bytes\n" + "".join(f"{s},{b}\n" for s, b in r["samples"]))
        print(f"wrote {args.csv}")
    benchutil.write_report(
        args.out, "experiments/soak.py", argv, lambda command: markdown(r, info, command)
    )
    return 1 if args.strict and not r["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
