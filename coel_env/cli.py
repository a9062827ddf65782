"""The ``coel`` command line: one entry point, one subcommand per capability.

Subcommands import their modules lazily so ``coel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_profile(sub: argparse._SubParsersAction) -> None:
    from coel_env import profiler

    p = sub.add_parser(
        "profile",
        help="measure expert FFN latency and host<->device copies with torch",
        description=profiler.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profiler.add_arguments(p)
    p.set_defaults(func=profiler.main)


def _add_cost(sub: argparse._SubParsersAction) -> None:
    from coel_env import cost_cli

    p = sub.add_parser(
        "cost",
        help="validate the fitted cost model, or predict a layer's latency",
        description=cost_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cost_cli.add_arguments(p)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from coel_env import simulate_cli

    p = sub.add_parser(
        "simulate",
        help="run a scenario's world under the naive plan and print run metrics",
        description=simulate_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate_cli.add_arguments(p)


def _add_baselines(sub: argparse._SubParsersAction) -> None:
    from agents import baselines_cli

    p = sub.add_parser(
        "baselines",
        help="compare baseline policies on the same seeded instances",
        description=baselines_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    baselines_cli.add_arguments(p)
    p.set_defaults(func=baselines_cli.main)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from agents import train

    p = sub.add_parser(
        "train",
        help="train an RL agent (PPO, A2C, MaskablePPO, DQN) on a CoEL environment",
        description=train.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_arguments(p)
    p.set_defaults(func=train.main)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from agents import evaluate_cli

    p = sub.add_parser(
        "evaluate",
        help="run a saved policy through the baselines' harness",
        description=evaluate_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate_cli.add_arguments(p)
    p.set_defaults(func=evaluate_cli.main)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from agents import compare_cli

    p = sub.add_parser(
        "compare",
        help="trained policies and baselines on the same instances: table and figures",
        description=compare_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare_cli.add_arguments(p)
    p.set_defaults(func=compare_cli.main)


_SUBCOMMANDS = (
    _add_profile,
    _add_cost,
    _add_simulate,
    _add_train,
    _add_baselines,
    _add_evaluate,
    _add_compare,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coel",
        description="CoEL-Gym: MoE LLM deployment on edge-server networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
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
