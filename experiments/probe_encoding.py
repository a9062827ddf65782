"""Probe what a CoEL env's action encoding can express: random one-shot redeploys.

    python experiments/probe_encoding.py [--env CoEL-v0] [--redeploys 300] [--seeds 2]
                                         [--epochs 30] [--seed 0] [--scenario default]

Each probe redeploys every model once at the first epoch with a random action
(``update = redeploy``, other fields uniform) and keeps it (``update = keep``)
for ``--epochs`` epochs; its mean return over seeds ``0..--seeds-1`` is
compared with keeping the world's naive plan (every field 0). Also prints the
homes (servers running a model's dense part) of the naive, greedy and
``milp-oracle`` plans after 3 epochs of seed 0, since a ``CoEL-v0`` action names
one home per model (``CoEL-v1``: a set of homes). Random choices are drawn among the
choices ``action_masks()`` allows, with every home flag of ``CoEL-v1`` at 1/2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redeploys", type=int, default=300)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    p.add_argument("--scenario", default="default")
    p.add_argument("--env", default="CoEL-v0", choices=["CoEL-v0", "CoEL-v1"])
    args = p.parse_args(argv)
    for k in ("redeploys", "seeds", "epochs"):
        if getattr(args, k) < 1:
            raise SystemExit(f"--{k} {getattr(args, k)!r} is not allowed; must be >= 1")
    import gymnasium as gym

    import coel_env  # noqa: F401  (registers the ids)
    from agents.base import observe
    from agents.registry import make_policy
    from coel_env.core.world import World

    env = gym.make(args.env, config={"scenario": args.scenario})
    nvec = env.action_space.nvec
    per_model = len(nvec) // len(env.unwrapped.world.models)
    keep = np.zeros(len(nvec), np.int64)
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    choices = np.split(mask, np.cumsum(nvec)[:-1])

    def episode(first: np.ndarray, seed: int) -> float:
        env.reset(seed=seed)
        total = 0.0
        for t in range(args.epochs):
            total += float(env.step(first if t == 0 else keep)[1])
        return total

    seeds = range(args.seeds)
    naive = float(np.mean([episode(keep, s) for s in seeds]))
    rng = np.random.default_rng(args.seed)
    returns = []
    for _ in range(args.redeploys):
        a = np.array([rng.choice(np.flatnonzero(c)) for c in choices])
        a[::per_model] = 2  # redeploy every model
        returns.append(float(np.mean([episode(a, s) for s in seeds])))
    r = np.asarray(returns)
    print(
        f"naive plan kept: mean return {naive:.2f} over seeds 0..{args.seeds - 1}, "
        f"{args.epochs} epochs"
    )
    print(
        f"{args.redeploys} random one-shot redeploys: {np.mean(r > naive):.1%} beat it; "
        f"best {r.max():.2f} ({r.max() / naive - 1:+.0%}), median {np.median(r):.2f}"
    )
    world = World(args.scenario)
    for name in ("naive", "greedy", "milp-oracle"):
        world.reset(0)
        pol = make_policy(name)
        pol.reset(world, 0)
        for _ in range(3):
            world.step(pol.act(world, observe(pol, world, 0)))
        homes = {k: list(mp.home) for k, mp in world.plan.models.items()}
        print(f"homes after 3 epochs of seed 0 under {name}: {homes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
