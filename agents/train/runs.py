"""Run folders of ``coel train``: YAML files, versions, new folders, checkpoints.

The layout of a run folder is described in :mod:`agents.train`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

_CKPT = re.compile(r"^model_(\d+)_steps\.zip$")


def _plain(x: Any) -> Any:
    """YAML-safe plain data (numpy scalars and arrays, tuples and paths converted)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def _write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(_plain(data), sort_keys=False), encoding="utf-8")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path} could not be read ({exc})") from None


def versions() -> dict[str, Any]:
    """Versions of Python, the libraries and the repository (git commit, dirty flag)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "coel-gym"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    root = Path(__file__).resolve().parents[2]  # agents/train/runs.py -> the repository
    out["git_commit"] = None
    out["git_dirty"] = None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        out["git_commit"] = head.stdout.strip() or None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        out["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def check_run_dir(run_dir: str | Path | None, runs_root: str | Path) -> None:
    """Refuse the destination of a new run before any work: ``--run-dir`` that exists
    or cannot be made, or a ``--runs-root`` that cannot be a folder.

    Raises:
        ValueError: naming the flag, the path and why.
    """
    from agents.cli_common import check_runs_root

    if run_dir is not None:
        path = Path(run_dir)
        if path.exists():
            raise ValueError(
                f"--run-dir {str(path)!r} already exists; runs are never overwritten "
                "(choose a new folder, or --resume it)"
            )
        check_runs_root(path, "--run-dir")
    else:
        check_runs_root(Path(runs_root), "--runs-root")


def _new_run_dir(run_dir: str | Path | None, runs_root: str | Path, name: str) -> Path:
    check_run_dir(run_dir, runs_root)
    if run_dir is not None:
        path = Path(run_dir)
        path.mkdir(parents=True)
        return path
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = root / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ValueError(f"could not create a new run folder under {str(root)!r}")


def _command_line(argv: Sequence[str] | None, what: str, kwargs: Mapping[str, Any]) -> str:
    if argv is not None:
        return shlex.join(str(a) for a in argv)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"python API: agents.train.{what}({args})"


def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(steps, path)`` of the run's checkpoints, in step order."""
    folder = Path(run_dir) / "checkpoints"
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
    return sorted(out)


def _vecnormalize_for(model_path: Path) -> Path:
    name = model_path.name
    m = _CKPT.match(name)
    if m:
        return model_path.with_name(f"model_vecnormalize_{m.group(1)}_steps.pkl")
    if name == "best_model.zip":
        return model_path.with_name("vecnormalize_best.pkl")
    return model_path.with_name("vecnormalize.pkl")
