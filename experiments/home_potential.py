"""What the graph env's lookahead shaping pays each one-edit home change of a fixed plan.

    python experiments/home_potential.py [--scenario default] [--bits 4] [--epochs 10]
        [--seeds 3] [--first-seed 0] [--at 40 100 160] [--out potential.csv]

The world deploys the plan with every model homed on every server and every expert at
``--bits``, and keeps it. At each epoch of ``--at`` the potential of
``CoEL-Graph-v0``'s ``shaping_epochs`` (:class:`coel_env.envs.shaping.HomeLookahead`,
with ``--epochs`` epochs) is computed for every draft one edit away that changes the
homes: ``home_move[m, s]`` (``s`` becomes the model's only home) and
``home_drop[m, s]``. That is the shaping term a policy at that plan is paid for the
edit (times ``shaping_gamma``). Printed: the mean over seeds and epochs of each edit's
potential with its range, best first; ``--out`` writes every value.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.cli_common import write_csv  # noqa: E402
from coel_env.catalog import BITS  # noqa: E402
from coel_env.core.plan import Plan  # noqa: E402
from coel_env.core.world import World  # noqa: E402
from coel_env.envs import env_config  # noqa: E402
from coel_env.envs.shaping import HomeLookahead  # noqa: E402
from experiments.fixed_plans import FixedPlan  # noqa: E402


def fixed_plan(world: World, bits: int) -> Plan:
    """Every model homed on every server, every expert at ``bits``, placed as now
    (``fixed_plans.py``'s plan of those homes)."""
    every = tuple(range(world.n))
    policy = FixedPlan((every,) * len(world.models), bits, "every-home")
    policy.reset(world, 0)
    return policy.act(world, None)


def one_edit_drafts(plan: Plan) -> list[tuple[str, Plan]]:
    """``(label, draft)`` of every home move and home drop of ``plan``."""
    out = []
    for name, mp in plan.models.items():
        for s in range(mp.n_servers):
            for kind, homes in (("home_move", (s,)),
                                ("home_drop", tuple(h for h in mp.home if h != s))):  # fmt: skip
                if not homes or homes == mp.home:
                    continue
                models = dict(plan.models)
                models[name] = dataclasses.replace(mp, home=homes)
                out.append((f"{kind}[{name}, s{s}]", Plan(models)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="default")
    p.add_argument("--bits", type=int, default=4, choices=BITS)
    p.add_argument("--epochs", type=int, default=10, help="epochs of each lookahead")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--at", type=int, nargs="+", default=[40, 100, 160], metavar="EPOCH")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    for flag, v in (("--epochs", args.epochs), ("--seeds", args.seeds)):
        if v < 1:
            p.error(f"{flag} {v} is not allowed; must be >= 1")
    if min(args.at) < 1:
        p.error(f"--at {min(args.at)} is not allowed; epochs must be >= 1")
    cfg = env_config("CoEL-Graph-v0")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        world = World(args.scenario)
        world.reset(seed)
        plan = fixed_plan(world, args.bits)
        pot = HomeLookahead(args.epochs, cfg)
        world.step(plan)
        for at in sorted(set(args.at)):
            while world.epoch < at:
                world.step()
            pot.reset(world.plan)  # the potential is measured from the plan in force
            for label, draft in one_edit_drafts(world.plan):
                rows.append({"seed": seed, "epoch": at, "edit": label,
                             "potential": pot(world, draft)})  # fmt: skip
    by = {}
    for r in rows:
        by.setdefault(r["edit"], []).append(r["potential"])
    print(f"{args.scenario}: every home on every server, {args.bits}-bit experts; "
          f"{args.epochs}-epoch lookaheads, seeds {args.first_seed}-"
          f"{args.first_seed + args.seeds - 1}, epochs {sorted(set(args.at))}")  # fmt: skip
    for label, vals in sorted(by.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"{label:<44} mean {np.mean(vals):+8.3f}   min {min(vals):+8.3f}   "
              f"max {max(vals):+8.3f}")  # fmt: skip
    if args.out is not None:
        write_csv(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
