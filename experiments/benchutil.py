"""Shared by the benchmark scripts: one thread per process, and where numbers were measured.

Import this module and call :func:`single_thread` before numpy is imported.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
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


def machine(**extra: str) -> dict[str, str]:
    """Where the numbers were measured (plus ``extra`` entries)."""
    import numpy as np

    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
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
