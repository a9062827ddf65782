"""What the ``coel`` commands on the agents side share: scenario overrides and run folders.

``coel simulate``, ``coel baselines``, ``coel evaluate`` and ``coel compare`` write
their outputs into a new run folder, ``<runs-root>/<command>-<env>-<scenario>-<YYYYmmdd-HHMMSS>``
(default root ``runs``; ``-2``, ``-3``... appended when that name is taken, so a folder
is never reused), with ``command.txt`` (the command line) and ``args.yml`` (the parsed
arguments) beside the outputs, and print its path at the end: on stdout, or on stderr
under ``--json`` so that stdout stays one JSON document. ``--out`` (``--out-dir`` for
``coel compare``) writes where it says instead and never replaces what is there without
``--force``. Every destination is checked before any episode runs.

Ctrl-C during the episodes keeps the finished ones (:func:`keep_interrupted`): in the run
folder as ``episodes.csv`` beside an ``INCOMPLETE`` file, or beside ``--out``/in
``--out-dir`` under an ``incomplete`` name; the command exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import re
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from coel_env.core.scenario import scenario_overrides

#: The parent of run folders unless ``--runs-root`` says otherwise.
RUNS_ROOT = "runs"
#: Characters kept in run folder names; any other becomes ``_``.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario overrides of the command line: ``--trace``, ``--topology``, then ``--set``.

    See :func:`coel_env.core.scenario.scenario_overrides` (``--set`` wins).
    """
    return scenario_overrides(args.trace, args.topology, args.overrides)


def add_runs_root(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    """``--runs-root DIR``: the parent of the command's new run folder."""
    p.add_argument("--runs-root", type=Path, default=Path(RUNS_ROOT), metavar="DIR",
                   help=f"parent of the new run folder (default {RUNS_ROOT})")  # fmt: skip


# ------------------------------------------------------------------ checks before any work


def check_out_file(path: Path, force: bool, flag: str = "--out") -> None:
    """Refuse ``path`` as an output file before any work is done.

    Raises:
        ValueError: ``path`` is a folder, exists without ``force``, or its folder does
            not exist (naming ``flag`` and the path).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; give a file name")
    if path.exists() and not force:
        raise ValueError(f"{flag} {str(path)!r} exists; not overwritten (use --force)")
    if not path.parent.is_dir():
        raise ValueError(
            f"{flag} {str(path)!r}: its folder {str(path.parent)!r} does not exist; create it first"
        )


def check_out_dir(path: Path, force: bool, flag: str = "--out-dir") -> None:
    """Refuse ``path`` as an output folder before any work is done (missing parents are made).

    Raises:
        ValueError: ``path`` or a folder above it is a file, or ``path`` is a folder
            that holds something and ``force`` is false.
    """
    path = Path(path)
    _check_can_be_folder(path, flag)
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ValueError(f"{flag} {str(path)!r} exists; not overwritten (use --force)")


def check_runs_root(root: Path, flag: str = "--runs-root") -> None:
    """Refuse ``root`` as the parent of run folders before any work (it is made if missing).

    Raises:
        ValueError: ``root`` or a folder above it is a file.
    """
    _check_can_be_folder(Path(root), flag)


def _check_can_be_folder(path: Path, flag: str) -> None:
    for p in (path, *path.parents):
        if p.exists():
            if p == path and not p.is_dir():
                raise ValueError(f"{flag} {str(path)!r} is a file; must be a folder")
            if not p.is_dir():
                raise ValueError(f"{flag} {str(path)!r} cannot be made: {str(p)!r} is a file")
            return


def check_count(flag: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` of ``flag`` as an int from ``low`` to ``high`` (None: no upper bound).

    Raises:
        ValueError: naming ``flag``, the value and what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{flag} {value!r} is not allowed; must be an integer >= {low}")
    if high is not None and value > high:
        raise ValueError(f"{flag} {value!r} is not allowed; must be at most {high:,}")
    return value


def check_destination(args: argparse.Namespace) -> None:
    """Check ``--out`` (with ``--force``) when given, else ``--runs-root``."""
    if args.out is not None:
        check_out_file(args.out, args.force)
    else:
        check_runs_root(args.runs_root)


# ------------------------------------------------------------------ run folders


def run_folder_name(
    command: str, env_id: str | None, scenario: str | Path | None, stamp: str
) -> str:
    """``<command>-<env>-<scenario>-<stamp>`` (a scenario file by its stem; parts left out
    when None; characters other than letters, digits and ``._+-`` become ``_``)."""
    scen = None if scenario is None else Path(str(scenario)).stem
    return "-".join(_UNSAFE.sub("_", str(p)) for p in (command, env_id, scen, stamp) if p)


def timestamp() -> str:
    """The local time as run folders name it (``YYYYmmdd-HHMMSS``, as ``coel train``)."""
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def new_run_folder(
    command: str,
    env_id: str | None,
    scenario: str | Path | None,
    runs_root: str | Path = RUNS_ROOT,
) -> Path:
    """Make and return a new, empty run folder under ``runs_root`` (made if missing).

    Named by :func:`run_folder_name` with the current local time
    (``baselines-CoEL-v2-default-20261206-153012``); when that folder exists, ``-2``,
    ``-3``... is appended: an existing folder is never reused.

    Raises:
        ValueError: ``runs_root`` cannot be a folder, or no free name was found.
    """
    root = Path(runs_root)
    check_runs_root(root)
    root.mkdir(parents=True, exist_ok=True)
    name = run_folder_name(command, env_id, scenario, timestamp())
    for i in range(1, 1000):
        path = root / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()  # atomic: two commands started in the same second get two folders
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not make a new run folder under {str(root)!r}")


@contextlib.contextmanager
def output_folder(
    command: str,
    env_id: str | None,
    scenario: str | Path | None,
    runs_root: str | Path = RUNS_ROOT,
    given: Path | None = None,
) -> Iterator[Path | None]:
    """A new run folder (:func:`new_run_folder`) for the ``with`` block, or None when
    ``given`` (the command's ``--out``) names where the outputs go.

    A run that fails leaves no empty folder behind (what it wrote is kept).
    """
    if given is not None:
        yield None
        return
    folder = new_run_folder(command, env_id, scenario, runs_root)
    try:
        yield folder
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
        raise


# ------------------------------------------------------------------ writing

#: The file that marks a run folder whose command was interrupted (what it holds is partial).
INCOMPLETE = "INCOMPLETE"


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command line (``sys.argv`` by default), the program by its name only: no
    machine-specific paths."""
    cmd = [str(a) for a in (sys.argv if argv is None else argv)]
    if cmd:
        cmd[0] = Path(cmd[0]).name
    return shlex.join(cmd)


def write_args(folder: Path, args: argparse.Namespace, command: bool = True) -> None:
    """``args.yml`` (the parsed arguments) and, with ``command``, ``command.txt`` in ``folder``."""
    import yaml

    data = {k: v for k, v in vars(args).items() if not callable(v)}
    (folder / "args.yml").write_text(
        yaml.safe_dump(_plain(data), sort_keys=False), encoding="utf-8"
    )
    if command:
        (folder / "command.txt").write_text(command_line() + "\n", encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON (anything JSON cannot hold written as its ``str``)."""
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def announce(path: Path, as_json: bool) -> None:
    """Print where the outputs are: stdout, or stderr under ``--json`` (stdout stays JSON)."""
    print(f"results: {path}", file=sys.stderr if as_json else sys.stdout)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` (dicts, at least one) as a CSV file with a header: every key of any row,
    in the order first seen, empty where a row lacks it (a MILP policy's episodes carry
    solver counts that the others' do not)."""
    import csv

    fields = list(dict.fromkeys(k for r in rows for k in r))
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def _free_name(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3``... when taken: nothing is replaced."""
    for i in range(1, 1000):
        p = path if i == 1 else path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not p.exists():
            return p
    raise ValueError(f"no free file name beside {str(path)!r}")


def keep_interrupted(
    rows: Sequence[Mapping[str, Any]],
    planned: int,
    folder: Path | None,
    given: Path | None = None,
    given_is_dir: bool = False,
) -> int:
    """Keep the episode rows finished before Ctrl-C, say where on stderr, return 130.

    Args:
        rows: the finished episodes' rows (``harness.episode_rows``).
        planned: the episodes the command was to run.
        folder: the command's new run folder: the rows go to ``episodes.csv`` in it and
            an ``INCOMPLETE`` file marks it (with ``args.yml`` and ``command.txt`` as
            written by the caller). None when ``given`` names the destination.
        given: ``--out FILE.csv`` (the rows go to ``FILE.incomplete.csv`` beside it) or,
            with ``given_is_dir``, ``--out-dir DIR`` (to ``DIR/episodes.incomplete.csv``);
            an existing file is never replaced (``-2``, ``-3``... appended), and what
            ``given`` holds is left as it was.
        given_is_dir: ``given`` is a folder.

    Returns:
        130, the exit status of a command stopped by Ctrl-C.
    """
    done = f"interrupted after {len(rows)} of {planned} episodes"
    if folder is not None:
        (folder / INCOMPLETE).write_text(
            f"{done} (Ctrl-C); episodes.csv holds the finished ones; no summary\n",
            encoding="utf-8",
        )
        path: Path | None = folder / "episodes.csv"
    elif given is not None and given_is_dir:
        given.mkdir(parents=True, exist_ok=True)
        path = _free_name(given / "episodes.incomplete.csv")
    elif given is not None:
        path = _free_name(given.with_name(f"{given.stem}.incomplete{given.suffix or '.csv'}"))
    else:
        path = None
    if rows and path is not None:
        write_csv(path, rows)
        where = f"the finished ones are in {path}"
        if folder is not None:
            where += f" (marked incomplete by {folder / INCOMPLETE})"
    else:
        where = "no episode had finished: nothing to keep"
        if folder is not None:
            where += f" ({folder} marked incomplete)"
    sys.stdout.flush()
    print(f"\n{done}; {where}", file=sys.stderr)
    return 130
