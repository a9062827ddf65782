"""Shared by the benchmark scripts: one thread per process, where numbers were measured,
the checks of their flags and the frame of their reports.

Import this module and call :func:`single_thread` before numpy is imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def single_thread() -> None:
    """Pin BLAS/OpenMP pools to one thread (before numpy is imported anywhere)."""
    for v in THREAD_VARS:
        os.environ.setdefault(v, "1")


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; "n/a" elsewhere): machines of the same
    ``platform`` differ by a third in speed, and in the last bits of float sums."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "n/a"


def machine(**extra: str) -> dict[str, str]:
    """Where the numbers were measured (plus ``extra`` entries)."""
    import numpy as np

    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        **extra,
        "threads": ", ".join(f"{v}={os.environ.get(v, '-')}" for v in THREAD_VARS),
        "affinity": (
            ",".join(map(str, sorted(os.sched_getaffinity(0))))
            if hasattr(os, "sched_getaffinity")
            else "n/a"
        ),
    }
    return out


def print_machine(**extra: str) -> dict[str, str]:
    """:func:`machine` (plus ``extra`` entries), printed one ``key: value`` a line."""
    info = machine(**extra)
    for k, v in info.items():
        print(f"{k}: {v}")
    return info


def add_pin(p: argparse.ArgumentParser) -> None:
    """The ``--pin CPU`` flag (see :func:`pin`)."""
    p.add_argument("--pin", type=int, metavar="CPU", help="also pin the process to this CPU")


def pin(p: argparse.ArgumentParser, cpu: int | None) -> None:
    """Pin the process to ``cpu`` (``--pin``; nothing when None)."""
    if cpu is None:
        return
    if not hasattr(os, "sched_setaffinity"):
        p.error("--pin is not supported on this platform")
    os.sched_setaffinity(0, {cpu})


def check_at_least(
    p: argparse.ArgumentParser, args: argparse.Namespace, low: int, *names: str
) -> None:
    """Refuse (``p.error``) the first of the flags ``names`` (argparse dests) below ``low``;
    a flag left at None is not checked."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            p.error(f"{flag} {value} is not allowed; must be >= {low}")


def check_registered(
    p: argparse.ArgumentParser, flag: str, ids: Sequence[str], known: Sequence[str]
) -> None:
    """Refuse (``p.error``) the first of ``ids`` that Gymnasium does not know, listing
    ``known``."""
    import gymnasium as gym

    for env_id in ids:
        if env_id not in gym.registry:
            p.error(f"{flag} {env_id!r} is not registered; known: {', '.join(known)}")


def markdown_report(title: str, command: str, body: Sequence[str], info: Mapping[str, str]) -> str:
    """A report: the title, the command that ran, ``body`` (notes and tables, a line each)
    and the machine (``info``)."""
    lines = [f"# {title}", "", f"Command: `{command}`", "", *body, "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that ran ``script`` (``experiments/NAME.py``) with these arguments
    (``sys.argv`` when ``argv`` is None), for the reports."""
    given = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", script, *given])


def write_report(
    out: Path | None, script: str, argv: Sequence[str] | None, render: Callable[[str], str]
) -> None:
    """Write ``render(command)`` to ``out`` (if given) and say so."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(command_line(script, argv)))
    print(f"wrote {out}")
