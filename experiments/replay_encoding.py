"""How much of a policy's return an env's action encoding can express.

    python experiments/replay_encoding.py [--policy static-homes]
                                          [--envs CoEL-v1 CoEL-v2]
                                          [--seeds 100 101 102 103 104] [--epochs 50]
                                          [--legacy]

Runs the policy through the harness (its own plans) and, in each env, replays
its plans encoded as that env's actions (``env.unwrapped.encode_plan``, what
``coel train --imitate`` learns from), and prints the mean returns and their
ratio. Env seed ``s`` and harness seed ``s`` are different instances (see the
README), so the ratio compares means over several seeds. ``--legacy``: on the world
before the fidelity round (``LEGACY_FIDELITY`` and ``default``'s load then, 0.06
requests/s per server).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def legacy_overrides() -> dict:
    """``default`` as it was before the fidelity round."""
    from coel_env.core.scenario import LEGACY_FIDELITY

    return {**LEGACY_FIDELITY, "workload.rate_per_s": 0.06}


def replay_return(
    env_id: str, policy: str, seed: int, epochs: int, overrides: dict | None = None
) -> float:
    """Return of ``policy``'s plans replayed as ``env_id``'s actions on env seed ``seed``
    (``overrides``: scenario overrides of the env's scenario)."""
    import gymnasium as gym

    import coel_env  # noqa: F401  (registers the ids)
    from agents.base import observe
    from agents.registry import make_policy

    env = gym.make(env_id, config={"overrides": overrides} if overrides else None)
    u = env.unwrapped
    env.reset(seed=seed)
    pol = make_policy(policy)
    pol.reset(u.world, seed)
    total = 0.0
    for _ in range(epochs):
        plan = pol.act(u.world, observe(pol, u.world, int(u.config["controller"])))
        total += float(env.step(u.encode_plan(plan))[1])
    env.close()
    return total


def own_return(
    policy: str, seed: int, epochs: int, scenario: str = "default", overrides: dict | None = None
) -> float:
    from agents.harness import run_episode
    from agents.registry import make_policy

    ep = run_episode(make_policy(policy), scenario, seed, epochs, overrides=overrides)
    return float(ep.metrics["return"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="static-homes")
    p.add_argument("--envs", nargs="+", default=["CoEL-v1", "CoEL-v2"])
    p.add_argument("--seeds", nargs="+", type=int, default=[100, 101, 102, 103, 104])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--legacy", action="store_true", help="the world before the fidelity round")
    args = p.parse_args(argv)
    if args.epochs < 1:
        print(f"replay_encoding: error: --epochs {args.epochs} must be >= 1", file=sys.stderr)
        return 2
    over = legacy_overrides() if args.legacy else None
    own = float(np.mean([own_return(args.policy, s, args.epochs, overrides=over)
                         for s in args.seeds]))  # fmt: skip
    print(f"{args.policy}: own plans {own:.2f} (mean over seeds {args.seeds})")
    for env_id in args.envs:
        rep = float(np.mean([replay_return(env_id, args.policy, s, args.epochs, over)
                             for s in args.seeds]))  # fmt: skip
        print(f"  replayed as {env_id} actions: {rep:.2f} ({rep / own:.0%} of its own)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
