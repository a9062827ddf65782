"""The headline comparison: train an agent, then compare it with the baselines.

    python experiments/headline.py [--quick] [--env CoEL-v2] [--algo maskable_ppo]
                                   [--scenario NAME] [--imitate POLICY|FILE.npz|none]
                                   [--demo-episodes N] [--demo-epochs N]
                                   [--demo-rounds N] [--timesteps N] [--seeds N]
                                   [--epochs N] [--policies ...] [--out-dir DIR]

Trains ``--algo`` on ``--env`` (its default scenario, or ``--scenario``) into
``<out-dir>/run``, starting from a clone of ``--imitate``'s plans (``coel train
--imitate``; ``none``: from scratch; the version-0 envs cannot imitate),
then runs ``coel compare`` on the same seeded instances for the trained policy
and the baselines, writing the table and figures into ``<out-dir>``
(default: a new ``runs/headline-<env>-<time>`` folder; never overwritten).
``--quick`` is the minutes-long version the README's first command runs
(clone ``static-homes`` from 3 short episodes, a short RL run, 3 seeds x 20
epochs); without it the budget is the one behind ``results/`` (clone
``static-homes`` from 16 whole training episodes of 200 epochs plus one DAgger
round of 16 more, then 240k RL steps; 5 seeds x 50 epochs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

QUICK = dict(timesteps=2048, seeds=3, epochs=20, imitate="static-homes", demo_episodes=3,
             demo_epochs=20, demo_rounds=0)  # fmt: skip
FULL = dict(timesteps=240_000, seeds=5, epochs=50, imitate="static-homes", demo_episodes=16,
            demo_epochs=200, demo_rounds=1)  # fmt: skip
BASELINES = "naive,greedy,fiddler,lru,static,static-homes,milp-periodic,milp-oracle"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="minutes-long version")
    p.add_argument("--env", default="CoEL-v2")
    p.add_argument("--scenario", default=None, help="scenario (default: the env's)")
    p.add_argument("--imitate", default=None, metavar="POLICY|FILE.npz|none",
                   help="policy (or demonstrations file) cloned before RL")  # fmt: skip
    p.add_argument("--demo-episodes", type=int, default=None, help="demonstration episodes")
    p.add_argument("--demo-epochs", type=int, default=None, help="epochs per demonstration")
    p.add_argument("--demo-rounds", type=int, default=None, help="DAgger rounds after them")
    p.add_argument("--algo", default="maskable_ppo")
    p.add_argument("--timesteps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--policies", default=BASELINES, help="baselines to compare with")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0, help="training seed")


def run(args: argparse.Namespace) -> int:
    budget = dict(QUICK if args.quick else FULL)
    for k in budget:
        if getattr(args, k) is not None:
            budget[k] = getattr(args, k)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out_dir or Path("runs") / f"headline-{args.env}-{stamp}"
    if out.exists():
        print(f"headline: error: {out} exists; not overwritten", file=sys.stderr)
        return 2
    from agents.baselines_cli import format_table
    from agents.compare_cli import compare
    from agents.train import train

    print(
        f"training {args.algo} on {args.env} for {budget['timesteps']} steps ...", file=sys.stderr
    )
    imitate = None if str(budget["imitate"]).lower() == "none" else budget["imitate"]
    if (imitate is None or str(imitate).endswith(".npz")) and args.demo_rounds is None:
        budget["demo_rounds"] = 0  # no expert to label DAgger states
    run = train(
        args.algo, args.env, timesteps=budget["timesteps"], seed=args.seed,
        run_dir=out / "run", scenario=args.scenario,
        eval_freq=max(budget["timesteps"] // 4, 256),
        checkpoint_freq=max(budget["timesteps"] // 2, 256), progress=sys.stderr.isatty(),
        argv=sys.argv, imitate=imitate, imitate_episodes=budget["demo_episodes"],
        imitate_epochs=budget["demo_epochs"], imitate_rounds=budget["demo_rounds"],
        imitate_passes=100,
    )  # fmt: skip
    names = [n for n in args.policies.split(",") if n]
    print(f"comparing with {', '.join(names)} ...", file=sys.stderr)
    rows = compare(
        args.env, [run], names, budget["seeds"], budget["epochs"], out, force=True,
        argv=sys.argv, scenario=args.scenario,
    )  # fmt: skip
    print(format_table(rows))
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
