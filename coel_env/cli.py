"""The ``coel`` command line: one entry point, one subcommand per capability.

Subcommands import their modules lazily so ``coel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: (subcommand, module, help). Each module has ``add_arguments(parser)`` and, unless it
#: has subcommands of its own, ``main(args) -> int``.
SUBCOMMANDS = (
    ("profile", "coel_env.profiler", "measure expert FFN latency and host<->device copies"),
    ("cost", "coel_env.cost_cli", "validate the fitted cost model, or predict a layer's latency"),
    ("simulate", "coel_env.simulate_cli", "run a scenario's world under a policy, print metrics"),
    ("train", "agents.train", "train an RL agent (PPO, A2C, MaskablePPO, DQN) on a CoEL env"),
    ("baselines", "agents.baselines_cli", "compare baselines on the same seeded instances"),
    ("evaluate", "agents.evaluate_cli", "run a saved policy through the baselines' harness"),
    ("compare", "agents.compare_cli", "policies and trained runs: table and figures"),
    ("study", "experiments.study_cli", "run a study: headline, ablation, sensitivity"),
    ("train-ma", "agents.multiagent", "parameter-shared PPO on multi-agent CoEL (PettingZoo)"),
    ("sweep", "agents.sweep", "a grid of algorithms x seeds x scenarios on Ray Tune"),
)


def _add(
    sub: argparse._SubParsersAction, name: str, module: str, help_: str, entry: str = "main"
) -> None:
    """A subparser from ``module``'s docstring and ``add_arguments``; ``entry(args)`` runs it."""
    mod = importlib.import_module(module)
    p = sub.add_parser(
        name,
        help=help_,
        description=mod.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(p)
    if hasattr(mod, entry):
        p.set_defaults(func=getattr(mod, entry))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coel",
        description="CoEL-Gym: MoE LLM deployment on edge-server networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module, help_ in SUBCOMMANDS:
        _add(sub, name, module, help_)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except ValueError as exc:  # bad input: one clear line, no traceback
        print(f"coel {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
