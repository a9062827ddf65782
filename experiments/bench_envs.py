"""Benchmark the registered environments: env steps per second against CartPole-v1.

    python experiments/bench_envs.py [--steps N] [--repeats R] [--ids ...]
                                     [--scenarios default large] [--seed S]
                                     [--out results/env_benchmark.md]

For every id in ``--ids`` and every entry of ``--scenarios`` (``default`` means
the id's own scenario: ``intra`` for CoEL-IntraDevice-v0, ``inter`` for
CoEL-InterDevice-v0, ``default`` for CoEL-v0; any other name is passed as
``config={"scenario": name}``), the env is made with ``gymnasium.make`` (its
usual wrappers), reset and run for ``--warmup`` untimed steps, then
``--repeats`` timed runs of ``reset(seed)`` + ``--steps`` steps. Actions are
random but masked: per field, uniform among the choices ``action_masks()``
allows, from a ``numpy`` Generator seeded with ``--seed``. An episode that is
truncated (``max_episode_steps``) is reset; resets are not timed.

Two rates are reported per repeat:

* **loop** steps/s: ``action_masks()`` + sampling + ``env.step`` (what an
  agent's rollout loop pays; the figure compared with the aims);
* **step** steps/s: ``env.step`` alone (mask and sampling excluded).

CartPole-v1 runs in the same process with the same protocol (random actions
from ``action_space.sample()``, sampling included) and ``ratio`` is CoEL loop
steps/s over CartPole steps/s (medians). Best and median over the repeats.

Runs on one core: OMP/MKL/OpenBLAS/NumExpr/Accelerate threads are set to 1
through environment variables below, before NumPy is imported (a variable
already set in the environment is kept, and reported).
"""

from __future__ import annotations

from experiments import benchutil

benchutil.single_thread()  # before numpy is imported anywhere

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import coel_env  # noqa: E402  (registers the ids)

#: The ids of ``CoELEnv`` (MultiDiscrete actions; the graph env has its own benchmark,
#: ``experiments/bench_graph_masks.py``).
DEFAULT_IDS = tuple(e for e, _, _ in coel_env.ENV_IDS if e not in coel_env.ENTRY_POINTS)
#: The id's own scenario (no ``scenario`` key in the config).
OWN = "default"

#: Aims (loop steps/s, and loop steps/s over CartPole's), per (id, scenario token).
#: ``None`` where there is no aim.
AIM_DEFAULT_SPS = 12_000.0  # CoEL-v0, its default scenario
AIM_RATIO = 1.0 / 13.0  # CoEL-v0, its default scenario, over CartPole-v1
AIM_LARGE_SPS = 1_000.0  # every id with scenario "large"
CARTPOLE_WARMUP = 1000  # untimed CartPole steps first (none with --warmup 0)


def aims(env_id: str, token: str) -> tuple[float | None, float | None]:
    """(steps/s aim, ratio aim) for this id and scenario token."""
    if token == "large":
        return AIM_LARGE_SPS, None
    if env_id.split("/")[-1] == "CoEL-v0" and token == OWN:
        return AIM_DEFAULT_SPS, AIM_RATIO
    return None, None


class MaskedSampler:
    """Uniform random choice per field among the choices a flat mask allows.

    ``nvec`` is the ``MultiDiscrete`` sizes; the mask is their concatenation
    (sb3-contrib layout). Each allowed choice gets an independent uniform key
    and the largest key of its field wins, which is uniform among the allowed
    ones. A field with nothing allowed (should not happen) falls back to 0.
    """

    def __init__(self, nvec: np.ndarray, rng: np.random.Generator) -> None:
        nvec = np.asarray(nvec, np.int64).ravel()
        self.rng = rng
        self.total = int(nvec.sum())
        width = int(nvec.max())
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        j = np.arange(width)[None, :]
        # positions past a field's end point at a padding slot (index total, always False)
        self.index = np.where(j < nvec[:, None], offsets[:, None] + j, self.total)
        self._ext = np.zeros(self.total + 1, bool)

    def sample(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, bool)
        if mask.shape != (self.total,):
            raise ValueError(f"mask has shape {mask.shape}; expected ({self.total},)")
        self._ext[: self.total] = mask
        allowed = self._ext[self.index]
        keys = self.rng.random(allowed.shape)
        keys[~allowed] = -1.0
        return keys.argmax(axis=1).astype(np.int64)


def _resolve(env_id: str, token: str) -> tuple[gym.Env, str]:
    """Make the env for a scenario token; returns it with the preset actually used."""
    config = {} if token == OWN else {"scenario": token}
    env = gym.make(env_id, config=config)
    return env, str(env.unwrapped.config["scenario"])


def _run_coel(env: gym.Env, sampler: MaskedSampler, steps: int, seed: int) -> dict:
    """One timed run of ``steps`` masked random steps after ``reset(seed)``."""
    base = env.unwrapped
    env.reset(seed=seed)
    sampler.rng = np.random.default_rng(seed)
    loop_s = step_s = 0.0
    invalid = resets = 0
    clock = time.perf_counter
    for _ in range(steps):
        t0 = clock()
        action = sampler.sample(base.action_masks())
        t1 = clock()
        _, _, terminated, truncated, info = env.step(action)
        t2 = clock()
        loop_s += t2 - t0
        step_s += t2 - t1
        invalid += bool(info.get("invalid_action", False))
        if terminated or truncated:
            env.reset()
            resets += 1
    return {
        "loop_sps": steps / loop_s,
        "step_sps": steps / step_s,
        "invalid": invalid / steps,
        "resets": resets,
    }


def bench_coel(env_id: str, token: str, steps: int, repeats: int, warmup: int, seed: int) -> dict:
    """Loop and step-only steps/s of one (id, scenario), best and median over repeats."""
    t = time.perf_counter()
    env, scenario = _resolve(env_id, token)
    build_s = time.perf_counter() - t
    sampler = MaskedSampler(env.action_space.nvec, np.random.default_rng(seed))
    if warmup:
        _run_coel(env, sampler, warmup, seed)
    runs = [_run_coel(env, sampler, steps, seed) for _ in range(repeats)]
    loop = [r["loop_sps"] for r in runs]
    step = [r["step_sps"] for r in runs]
    row = {
        "id": env_id,
        "token": token,
        "scenario": scenario,
        "servers": env.unwrapped.world.n,
        "models": len(env.unwrapped.world.models),
        "fields": int(env.action_space.nvec.size),
        "choices": int(env.action_space.nvec.sum()),
        "steps": steps,
        "repeats": repeats,
        "build_s": build_s,
        "best_sps": max(loop),
        "median_sps": statistics.median(loop),
        "median_ms": 1000.0 / statistics.median(loop),
        "best_step_sps": max(step),
        "median_step_sps": statistics.median(step),
        "invalid": statistics.mean(r["invalid"] for r in runs),
    }
    env.close()
    return row


def bench_cartpole(steps: int, repeats: int, warmup: int, seed: int) -> dict:
    """CartPole-v1 steps/s with random actions (sampling included), best and median."""
    env = gym.make("CartPole-v1")
    env.action_space.seed(seed)

    def run(n: int) -> float:
        env.reset(seed=seed)
        elapsed = 0.0
        clock = time.perf_counter
        sample, step = env.action_space.sample, env.step
        for _ in range(n):
            t0 = clock()
            _, _, terminated, truncated, _ = step(sample())
            elapsed += clock() - t0
            if terminated or truncated:
                env.reset()
        return n / elapsed

    if warmup:
        run(warmup)
    rates = [run(steps) for _ in range(repeats)]
    env.close()
    return {
        "steps": steps,
        "repeats": repeats,
        "best_sps": max(rates),
        "median_sps": statistics.median(rates),
    }


def _verdict(value: float, aim: float | None) -> str:
    if aim is None:
        return "-"
    return "yes" if value >= aim else "NO"


def _aim_text(env_id: str, token: str) -> tuple[str, str]:
    sps_aim, ratio_aim = aims(env_id, token)
    sps = f">= {sps_aim:,.0f}" if sps_aim is not None else "-"
    ratio = f">= 1/{1 / ratio_aim:.0f}" if ratio_aim is not None else "-"
    return sps, ratio


def format_row(r: dict, cartpole: dict) -> str:
    ratio = r["median_sps"] / cartpole["median_sps"]
    sps_aim, ratio_aim = aims(r["id"], r["token"])
    sps_text, ratio_text = _aim_text(r["id"], r["token"])
    scenario = r["scenario"] + (" (own)" if r["token"] == OWN else "")
    return (
        f"{r['id']:<20s} {scenario:<14s} servers {r['servers']:>3d}  "
        f"best {r['best_sps']:9.1f}  median {r['median_sps']:9.1f} steps/s "
        f"({r['median_ms']:.2f} ms/step; step only {r['median_step_sps']:.1f})  "
        f"ratio 1/{1 / ratio:.0f}  invalid {r['invalid']:.0%}  "
        f"aim {sps_text} [{_verdict(r['median_sps'], sps_aim)}], "
        f"ratio {ratio_text} [{_verdict(ratio, ratio_aim)}]"
    )


def markdown(rows: list[dict], cartpole: dict, info: dict[str, str], command: str) -> str:
    title = "Environment benchmark: env steps per second (masked random actions)"
    lines = [
        "Loop steps/s time `action_masks()` + masked sampling + `env.step` (resets excluded);",
        "step only excludes the mask and the sampling. Ratio: median loop steps/s over",
        "CartPole-v1's median (random actions, sampling included, same process).",
        "",
        "| id | scenario | servers | models | action fields (choices) | steps x repeats "
        "| best steps/s | median steps/s | median ms/step | step-only median steps/s "
        "| ratio to CartPole | invalid actions | aim steps/s | meets | aim ratio | meets "
        "| build s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|",
    ]
    for r in rows:
        ratio = r["median_sps"] / cartpole["median_sps"]
        sps_aim, ratio_aim = aims(r["id"], r["token"])
        sps_text, ratio_text = _aim_text(r["id"], r["token"])
        scenario = r["scenario"] + (" (own)" if r["token"] == OWN else "")
        lines.append(
            f"| {r['id']} | {scenario} | {r['servers']} | {r['models']} | "
            f"{r['fields']} ({r['choices']}) | {r['steps']} x {r['repeats']} | "
            f"{r['best_sps']:.1f} | {r['median_sps']:.1f} | {r['median_ms']:.2f} | "
            f"{r['median_step_sps']:.1f} | 1/{1 / ratio:.0f} ({ratio:.5f}) | "
            f"{r['invalid']:.1%} | {sps_text} | {_verdict(r['median_sps'], sps_aim)} | "
            f"{ratio_text} | {_verdict(ratio, ratio_aim)} | {r['build_s']:.2f} |"
        )
    lines.append(
        f"| CartPole-v1 | - | - | - | 1 (2) | {cartpole['steps']} x {cartpole['repeats']} | "
        f"{cartpole['best_sps']:.1f} | {cartpole['median_sps']:.1f} | "
        f"{1000.0 / cartpole['median_sps']:.4f} | - | 1 | - | - | - | - | - | - |"
    )
    return benchutil.markdown_report(title, command, lines, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="timed env steps per repeat")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (best and median)")
    p.add_argument("--warmup", type=int, default=100, help="untimed steps first")
    p.add_argument("--ids", nargs="+", default=list(DEFAULT_IDS), help="registered env ids")
    p.add_argument(
        "--scenarios",
        nargs="+",
        default=[OWN, "large"],
        help="scenario presets or YAML; 'default' means each id's own scenario",
    )
    p.add_argument(
        "--cartpole-steps", type=int, default=100_000, help="timed CartPole steps per repeat"
    )
    p.add_argument("--seed", type=int, default=0, help="episode and sampling seed")
    p.add_argument("--out", type=Path, help="write a markdown table here")
    benchutil.add_pin(p)
    args = p.parse_args(argv)
    benchutil.pin(p, args.pin)
    benchutil.check_at_least(p, args, 1, "steps", "repeats", "cartpole_steps")
    benchutil.check_at_least(p, args, 0, "warmup")
    benchutil.check_registered(p, "--ids", args.ids, DEFAULT_IDS)
    info = benchutil.print_machine(gymnasium=gym.__version__)
    cartpole = bench_cartpole(
        args.cartpole_steps, args.repeats, CARTPOLE_WARMUP if args.warmup else 0, args.seed
    )
    print(
        f"{'CartPole-v1':<20s} {'-':<14s}              best {cartpole['best_sps']:9.1f}  "
        f"median {cartpole['median_sps']:9.1f} steps/s "
        f"({cartpole['steps']} steps x {cartpole['repeats']})",
        flush=True,
    )
    rows = []
    for env_id in args.ids:
        for token in args.scenarios:
            r = bench_coel(env_id, token, args.steps, args.repeats, args.warmup, args.seed)
            rows.append(r)
            print(format_row(r, cartpole), flush=True)
    benchutil.write_report(
        args.out,
        "experiments/bench_envs.py",
        argv,
        lambda command: markdown(rows, cartpole, info, command),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
