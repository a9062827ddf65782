"""How much the action masks express: the share of masked random actions that are still invalid.

    python experiments/bench_masks.py [--seeds N] [--ids ...] [--large-ids ...]
                                      [--max-steps N] [--out results/mask_benchmark.md]

Every id in ``--ids`` runs on its own scenario, and every id in ``--large-ids`` also
on ``large``. For each, ``--seeds`` whole episodes (seeds 0..N-1; ``--max-steps``
cuts them short, for tests) are played with masked random actions: per field, uniform
among the choices ``env.unwrapped.action_masks()`` allows (the sampler of
``experiments/bench_envs.py``; a ``Discrete`` space is one field), from a generator
seeded with the episode's seed. The same seeds are played again with unmasked random
actions (``action_space.sample()``) for as many steps as the masked episode took (an
env whose invalid actions do not advance the epoch, ``CoEL-Graph-v0``, would otherwise
never end an unmasked episode).

Per id and scenario the table gives:

* **masked at reset**: choices the mask blocks right after ``reset()`` / all choices
  (mean over seeds);
* **masked share**: the share of all choices blocked, mean over every step;
* **invalid, masked**: the share of steps whose masked random action was invalid
  (``info["invalid_action"]``: the plan does not fit or names no home), mean and the
  range over seeds;
* **invalid, unmasked**: the same for unmasked random actions;
* **why (masked)**: what made the masked actions invalid, as a share of those
  actions (one action can have several reasons), from ``info["infeasibility"]``.

The masks are per field (one flag per choice of each field), so they cannot express
limits that depend on several fields at once: the memory that the models and groups
placed on one server need together, at the bit widths chosen elsewhere in the action;
a set of home flags that is empty. The table measures what that leaves.
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
from gymnasium import spaces  # noqa: E402

import coel_env  # noqa: E402  (registers the ids)
from experiments.bench_envs import MaskedSampler  # noqa: E402

DEFAULT_IDS = tuple(env_id for env_id, _, _ in coel_env.ENV_IDS)
DEFAULT_LARGE_IDS = ("CoEL-v2", "CoEL-v1", "CoEL-Graph-v0")
#: The id's own scenario (no ``scenario`` key in the config).
OWN = "own"
#: Reasons an action is invalid, by a phrase of ``info["infeasibility"]``
#: (:class:`coel_env.core.plan.Violation` details), in the table's order.
REASONS = (
    ("GPU memory", ("GPU memory", "unified memory")),
    ("host memory", ("host memory",)),
    ("no home", ("no server is chosen as a home",)),
    ("absent server", ("is not present",)),
    ("no replica", ("have no replica",)),
)


def reasons(infeasibility: str) -> list[str]:
    """The reasons named in one ``info["infeasibility"]`` text ("other" if none is known)."""
    found = [name for name, phrases in REASONS if any(p in infeasibility for p in phrases)]
    return found or ["other"]


def fields(space: gym.Space) -> np.ndarray:
    """Choices per field: a ``MultiDiscrete``'s ``nvec``, a ``Discrete`` as one field."""
    if isinstance(space, spaces.Discrete):
        return np.array([space.n], np.int64)
    return np.asarray(space.nvec, np.int64).ravel()


def _make(env_id: str, token: str) -> gym.Env:
    config = {} if token == OWN else {"scenario": token}
    return gym.make(env_id, config=config)


def play(env: gym.Env, seed: int, masked: bool, max_steps: int | None) -> dict:
    """One episode from ``reset(seed)`` with random actions (masked or not)."""
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    sampler = MaskedSampler(fields(env.action_space), rng)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    at_reset = int((~base.action_masks()).sum())
    steps = invalid = 0
    blocked = 0.0
    why: dict[str, int] = {}
    done = False
    while not done and (max_steps is None or steps < max_steps):
        mask = base.action_masks()
        blocked += 1.0 - mask.mean()
        if masked:
            action = sampler.sample(mask)
            if isinstance(env.action_space, spaces.Discrete):
                action = int(action[0])
        else:
            action = env.action_space.sample()
        _, _, terminated, truncated, info = env.step(action)
        steps += 1
        if info["invalid_action"]:
            invalid += 1
            for r in reasons(info["infeasibility"]):
                why[r] = why.get(r, 0) + 1
        done = terminated or truncated
    return {
        "steps": steps,
        "invalid": invalid,
        "at_reset": at_reset,
        "blocked": blocked / max(steps, 1),
        "why": why,
    }


def bench(env_id: str, token: str, seeds: int, max_steps: int | None) -> dict:
    """Masked and unmasked random episodes of one (id, scenario), summarised."""
    t = time.perf_counter()
    env = _make(env_id, token)
    masked = [play(env, s, True, max_steps) for s in range(seeds)]
    unmasked = [play(env, s, False, r["steps"]) for s, r in enumerate(masked)]
    n_invalid = sum(r["invalid"] for r in masked)
    why = {}
    for r in masked:
        for k, v in r["why"].items():
            why[k] = why.get(k, 0) + v
    shares = [r["invalid"] / r["steps"] for r in masked]
    row = {
        "id": env_id,
        "token": token,
        "scenario": str(env.unwrapped.config["scenario"]),
        "servers": env.unwrapped.world.n,
        "fields": int(fields(env.action_space).size),
        "choices": int(fields(env.action_space).sum()),
        "seeds": seeds,
        "steps": sum(r["steps"] for r in masked),
        "at_reset": statistics.mean(r["at_reset"] for r in masked),
        "blocked": statistics.mean(r["blocked"] for r in masked),
        "invalid": n_invalid / sum(r["steps"] for r in masked),
        "invalid_min": min(shares),
        "invalid_max": max(shares),
        "invalid_unmasked": sum(r["invalid"] for r in unmasked) / sum(r["steps"] for r in unmasked),
        "why": {k: v / n_invalid for k, v in why.items()} if n_invalid else {},
        "seconds": time.perf_counter() - t,
    }
    env.close()
    return row


def _why_text(why: dict[str, float]) -> str:
    order = [name for name, _ in REASONS] + ["other"]
    parts = [f"{k} {why[k]:.0%}" for k in order if k in why]
    return ", ".join(parts) or "-"


def _scenario_text(r: dict) -> str:
    return r["scenario"] + (" (own)" if r["token"] == OWN else "")


def format_row(r: dict) -> str:
    return (
        f"{r['id']:<20s} {_scenario_text(r):<14s} masked at reset "
        f"{r['at_reset']:.1f}/{r['choices']}  masked share {r['blocked']:.1%}  "
        f"invalid masked {r['invalid']:.1%} ({r['invalid_min']:.1%}-{r['invalid_max']:.1%})  "
        f"unmasked {r['invalid_unmasked']:.1%}  why: {_why_text(r['why'])}"
    )


def markdown(rows: list[dict], info: dict[str, str], command: str) -> str:
    title = "Action masks: how many masked random actions are still invalid"
    lines = [
        "Whole episodes (seeds 0..N-1) of random actions: masked (per field, uniform among",
        "the choices `action_masks()` allows) and, on the same seeds, unmasked",
        "(`action_space.sample()`, as many steps as the masked episode). *Masked at",
        "reset*: choices blocked right after",
        "`reset()` / all choices (mean over seeds). *Masked share*: share of all choices",
        "blocked, mean over steps. *Invalid*: share of steps whose action was invalid",
        "(`info['invalid_action']`), with the range over seeds. *Why*: the reasons named in",
        "`info['infeasibility']`, as a share of the invalid masked actions (an action can",
        "have several). The masks are per field, so they cannot express limits that",
        "depend on several fields at once (memory on one server shared by the models and",
        "groups placed there, at the bit widths chosen in other fields; an empty set of",
        "home flags).",
        "",
        "| id | scenario | servers | action fields (choices) | episodes (steps) "
        "| masked at reset | masked share | invalid, masked | range over seeds "
        "| invalid, unmasked | why (masked) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['id']} | {_scenario_text(r)} | {r['servers']} | "
            f"{r['fields']} ({r['choices']}) | {r['seeds']} ({r['steps']}) | "
            f"{r['at_reset']:.1f} / {r['choices']} | {r['blocked']:.1%} | "
            f"{r['invalid']:.1%} | {r['invalid_min']:.1%}-{r['invalid_max']:.1%} | "
            f"{r['invalid_unmasked']:.1%} | {_why_text(r['why'])} |"
        )
    return benchutil.markdown_report(title, command, lines, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="episodes per id and scenario")
    p.add_argument(
        "--ids", nargs="+", default=list(DEFAULT_IDS), help="ids run on their own scenario"
    )
    p.add_argument(
        "--large-ids",
        nargs="*",
        default=list(DEFAULT_LARGE_IDS),
        help="ids also run on the large scenario (none: no large rows)",
    )
    p.add_argument("--max-steps", type=int, help="cut episodes to this many steps (tests)")
    p.add_argument("--out", type=Path, help="write a markdown table here")
    args = p.parse_args(argv)
    benchutil.check_at_least(p, args, 1, "seeds", "max_steps")
    benchutil.check_registered(p, "--ids", args.ids, DEFAULT_IDS)
    benchutil.check_registered(p, "--large-ids", args.large_ids, DEFAULT_IDS)
    info = benchutil.print_machine(gymnasium=gym.__version__)
    jobs = [(i, OWN) for i in args.ids] + [(i, "large") for i in args.large_ids]
    rows = []
    for env_id, token in jobs:
        r = bench(env_id, token, args.seeds, args.max_steps)
        rows.append(r)
        print(format_row(r), flush=True)
    benchutil.write_report(
        args.out, "experiments/bench_masks.py", argv, lambda command: markdown(rows, info, command)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
