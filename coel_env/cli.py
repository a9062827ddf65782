"""The ``coel`` command line: one entry point, one subcommand per capability.

The simulator package owns ``profile`` and ``cost``; the packages above it (agents,
experiments) add theirs through the ``coel_env.commands`` entry-point group in
``pyproject.toml``: each entry names a table of (subcommand, module, help). So the
command line reaches training, baselines and studies without ``coel_env`` importing
them.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

#: (subcommand, module, help) of the simulator package's own commands. Each module has
#: ``add_arguments(parser)`` and, unless it has subcommands of its own, ``main(args)``.
OWN_COMMANDS = (
    ("profile", "coel_env.profiler", "measure expert FFN latency and host<->device copies"),
    ("cost", "coel_env.cost_cli", "validate the fitted cost model, or predict a layer's latency"),
)
#: The entry-point group whose entries name tables of further commands.
GROUP = "coel_env.commands"
#: Order of the packages' tables in ``coel --help``.
ORDER = ("agents", "experiments")


def subcommands() -> tuple[tuple[str, str, str], ...]:
    """Every subcommand: the simulator's own, then each installed package's table."""
    eps = sorted(
        entry_points(group=GROUP),
        key=lambda ep: (ORDER.index(ep.name) if ep.name in ORDER else len(ORDER), ep.name),
    )
    out = list(OWN_COMMANDS)
    for ep in eps:
        out += list(ep.load())
    return tuple(out)


#: An RST role (``:class:`~a.b.C```, ``:py:func:`f```) with its target.
_ROLE = re.compile(r":(?:[A-Za-z]+:)?[A-Za-z]+:`([^`]+)`")
#: Inline literals (````x````) and the default role (```x```).
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")


def _role_text(match: re.Match) -> str:
    text = match.group(1)
    if text.endswith(">") and " <" in text:  # :func:`shown text <target>`
        return text[: text.rindex(" <")]
    if text.startswith("~"):  # :class:`~a.b.C` shows C
        return text[1:].rsplit(".", 1)[-1]
    return text


def plain_text(doc: str | None) -> str | None:
    """``doc`` (a module docstring, reStructuredText) as plain text for ``--help``: roles
    such as ``:class:`~a.b.C``` become ``C``, inline literals lose their backticks."""
    if doc is None:
        return None
    doc = _ROLE.sub(_role_text, doc)
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), doc)


def _add(
    sub: argparse._SubParsersAction, name: str, module: str, help_: str, entry: str = "main"
) -> None:
    """A subparser from ``module``'s docstring (as plain text) and ``add_arguments``;
    ``entry(args)`` runs it."""
    mod = importlib.import_module(module)
    p = sub.add_parser(
        name,
        help=help_,
        description=plain_text(mod.__doc__),
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
    for name, module, help_ in subcommands():
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
