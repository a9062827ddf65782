"""Fixed plans on a scenario: what a plan set once and never changed earns.

    python experiments/fixed_plans.py [--scenario default] [--seeds 3] [--first-seed 0]
        [--epochs 200] [--bits 4] (--homes "0,1,2,3,4;0,1,2,3,4" "0,1,2;3,4" ... |
        --all-home-sets) [--out episodes.csv]

Each ``--homes`` value is one plan: the world's naive plan (every expert on every server
it deploys) with every expert at ``--bits`` bits on the GPU and the given home servers,
one comma-separated list per model in the world's model order, models separated by
``;``. ``--all-home-sets`` prices every assignment instead: each server runs a non-empty
set of the world's models and each model has a home (241 plans on ``default``'s 5
servers and 2 models; refused above 1,000). The policy hands the plan to the world in
the first epoch and keeps it for the rest of the episode; it plays through the
evaluation harness (:func:`agents.harness.run_episode`), so returns are those of ``coel
evaluate`` and ``coel baselines`` on the same seeds. Prints the mean of each metric per
plan; ``--out`` writes every episode as CSV (the policy named ``fixed:<homes>``), which
``experiments/paired.py`` reads.

This is a probe of the reward landscape (which fixed plans a policy could find), not a
baseline: the plan is chosen by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents import harness  # noqa: E402
from agents.cli_common import write_csv  # noqa: E402
from coel_env.catalog import BITS  # noqa: E402
from coel_env.core.plan import Plan  # noqa: E402
from coel_env.core.world import World  # noqa: E402


def parse_homes(text: str) -> tuple[tuple[int, ...], ...]:
    """``"0,1,2;3,4"`` -> ``((0, 1, 2), (3, 4))``."""
    out = []
    for part in text.split(";"):
        try:
            servers = tuple(int(s) for s in part.split(",") if s.strip())
        except ValueError:
            raise ValueError(
                f"--homes {text!r}: {part!r} is not a comma-separated list of server indices"
            ) from None
        if not servers:
            raise ValueError(f"--homes {text!r}: a model has no home server")
        out.append(servers)
    return tuple(out)


class FixedPlan:
    """Hands one plan to the world in the first epoch, then keeps it."""

    sees = "view"

    def __init__(self, homes: tuple[tuple[int, ...], ...], bits: int, name: str) -> None:
        self.homes, self.bits, self.name = homes, bits, name

    def reset(self, world, seed: int) -> None:
        if len(self.homes) != len(world.models):
            raise ValueError(
                f"{self.name}: --homes gives {len(self.homes)} models; the world has "
                f"{len(world.models)} ({', '.join(world.models)})"
            )
        self._sent = False

    def act(self, world, obs):
        if self._sent:
            return None
        self._sent = True
        models = {}
        for homes, (name, mp) in zip(self.homes, world.plan.models.items(), strict=True):
            models[name] = dataclasses.replace(
                mp, bits=np.full_like(mp.bits, self.bits),
                location=(mp.location > 0).astype(np.int8), home=homes,
            )  # fmt: skip
        return Plan(models)


#: Most plans ``--all-home-sets`` may price.
MAX_HOME_SETS = 1000


def all_home_sets(n_servers: int, n_models: int) -> list[str]:
    """``--homes`` texts of every assignment of a non-empty set of the models to each
    server in which every model has a home (server 0's choice varies slowest)."""
    choices = range(1, 2**n_models)  # non-empty sets of models, as bit masks
    count = (2**n_models - 1) ** n_servers
    if count > MAX_HOME_SETS:
        raise ValueError(
            f"--all-home-sets: {n_servers} servers and {n_models} models give {count} "
            f"assignments, above {MAX_HOME_SETS}; give --homes instead"
        )
    out = []
    for sets in itertools.product(choices, repeat=n_servers):
        homes = [[s for s in range(n_servers) if sets[s] >> m & 1] for m in range(n_models)]
        if all(homes):
            out.append(";".join(",".join(map(str, h)) for h in homes))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="default")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--bits", type=int, default=4, choices=BITS)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--homes", nargs="+", help='e.g. "0,1,2;3,4"')
    which.add_argument("--all-home-sets", action="store_true", help="every assignment")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    for key in ("seeds", "epochs"):
        if getattr(args, key) < 1:
            p.error(f"--{key}={getattr(args, key)} is not allowed; must be >= 1")
    if args.first_seed < 0:
        p.error(f"--first-seed={args.first_seed} is not allowed; must be >= 0")
    try:
        texts = args.homes
        if args.all_home_sets:
            world = World(args.scenario)
            texts = all_home_sets(world.n, len(world.models))
        plans = [(h, parse_homes(h)) for h in texts]
    except ValueError as e:
        p.error(str(e))
    rows = []
    for text, homes in plans:
        pol = FixedPlan(homes, args.bits, f"fixed:{text}")
        try:
            eps = [
                harness.run_episode(pol, args.scenario, s, args.epochs)
                for s in range(args.first_seed, args.first_seed + args.seeds)
            ]
        except ValueError as e:
            print(f"fixed_plans: error: {e}", file=sys.stderr)
            return 2
        rows += [e.row() for e in eps]
        mean = {k: np.mean([e.metrics[k] for e in eps]) for k in harness.METRICS}
        print(
            f"{pol.name:24s} return {mean['return']:8.2f}  slo {mean['slo_attainment']:.4f}  "
            f"p95 {mean['latency_p95_ms']:8.0f} ms  quality loss {mean['quality_loss']:.4f}  "
            f"energy {mean['energy_kj']:6.0f} kJ  invalid epochs {mean['invalid_epochs']:.1f}",
            flush=True,
        )
    if args.out is not None:
        write_csv(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
