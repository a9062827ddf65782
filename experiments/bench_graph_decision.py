"""Per-epoch decision time of a trained ``CoEL-Graph-v0`` policy, warm, and its parts.

    python experiments/bench_graph_decision.py
        [--policy results/policies/maskable_ppo-CoEL-Graph-v0] [--scenario large]
        [--seeds 2] [--epochs 3] [--actions-out edits.json] [--padded]

Runs the policy (:class:`agents.graph_rl.GraphRLPolicy`, loaded as ``coel evaluate``
loads it) through the evaluation harness on seeds ``0 .. --seeds - 1`` for ``--epochs``
epochs each, after one warm-up epoch on seed 99 (numba's cached kernels load and torch
makes its first pass there, which ``coel evaluate``'s first epoch includes). Prints the
harness's ``decision_ms`` per seed (every edit of an epoch: masks, observations, edits
and network passes) and the network's share: passes per epoch and ms per pass (the
observation's conversion to tensors, the forward pass and the masked argmax).
``--actions-out`` writes the edits of every epoch (JSON, per seed), to compare the
actions of two versions of the code. ``--padded`` runs the network on the padded
observation (``GraphRLPolicy(unpadded=False)``, as training does) instead of on the
world's own servers and models. Runs on one thread.
"""

from __future__ import annotations

from experiments.benchutil import single_thread

single_thread()  # before numpy and torch are imported anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--policy", type=Path, default=Path("results/policies/maskable_ppo-CoEL-Graph-v0")
    )
    p.add_argument("--scenario", default="large")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--actions-out", type=Path, default=None)
    p.add_argument("--padded", action="store_true", help="network on the padded observation")
    args = p.parse_args(argv)
    for k in ("seeds", "epochs"):
        if getattr(args, k) < 1:
            p.error(f"--{k} {getattr(args, k)} is not allowed; must be >= 1")

    from agents.evaluate_cli import load_rl_policy
    from agents.harness import run_episode

    policy, _, _ = load_rl_policy(args.policy)
    if not hasattr(policy, "_argmax"):
        p.error(f"--policy {args.policy}: not a CoEL-Graph-v0 policy")
    if args.padded:
        policy = type(policy)(policy.model, policy.config, policy.name, unpadded=False)
    net = {"passes": 0, "s": 0.0}
    argmax = policy._argmax

    def timed(x, mask):
        t0 = time.perf_counter()
        out = argmax(x, mask)
        net["s"] += time.perf_counter() - t0
        net["passes"] += 1
        return out

    policy._argmax = timed
    act = policy.act
    log: list[list[int]] = []

    def logged(world, obs):
        out = act(world, obs)
        log.append(list(policy.edits))
        return out

    policy.act = logged
    run_episode(policy, args.scenario, 99, 1)  # warm-up
    net.update(passes=0, s=0.0)
    per_seed, actions = [], []
    for seed in range(args.seeds):
        log.clear()
        r = run_episode(policy, args.scenario, seed, args.epochs)
        per_seed.append(r.metrics["decision_ms"])
        actions.append([list(e) for e in log])
    n_epochs = args.seeds * args.epochs
    print(f"{args.scenario}: decision ms per epoch per seed "
          f"{', '.join(f'{v:.2f}' for v in per_seed)}; mean {np.mean(per_seed):.2f}")  # fmt: skip
    print(f"network: {net['passes'] / n_epochs:.1f} passes per epoch, "
          f"{1000 * net['s'] / max(net['passes'], 1):.2f} ms per pass, "
          f"{1000 * net['s'] / n_epochs:.2f} ms per epoch")  # fmt: skip
    if args.actions_out is not None:
        args.actions_out.write_text(json.dumps(actions))
        print(f"wrote {args.actions_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
