"""Readers of real expert-routing data: ESFT routes (npz) and Fiddler popularity (JSON).

The ESFT files hold the routes of DeepSeek-V2-Lite, the Fiddler files the expert
selection counts of Mixtral-8x7B.

:func:`load_esft` gives an :class:`coel_env.core.routing.EsftRoutes` (routes and
per-task popularity); :func:`load_fiddler` a popularity matrix per MMLU subject.
Both feed :class:`coel_env.core.routing.RoutingModel`. A malformed file raises
:class:`~coel_env.core.routing.RoutingDataError` naming the file and the value.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from coel_env.core.checks import is_int, read_only
from coel_env.core.routing import (
    _ESFT_ARRAY,
    FIDDLER_N_EXPERTS,
    FIDDLER_N_LAYERS,
    FIDDLER_VARIANTS,
    EsftRoutes,
    MissingRoutingDataError,
    PathLike,
    RoutingDataError,
    _check_expert_ids,
    _check_task_name,
)

__all__ = ["load_esft", "load_fiddler"]

_ESFT_FILE = re.compile(r"^esft_(?P<task>[A-Za-z0-9_\-]+?)_expert_ids\.npz$")
_FIDDLER_FILE = re.compile(r"^expert_popularity_(?P<subject>[A-Za-z0-9_\-]+)\.json$")
_FIDDLER_FIELD = "expert_popularity"
_FIDDLER_TOKENS_FIELD = "total_input_tokens"


def _esft_files(source: object) -> dict[str, Path]:
    """Task -> npz path from a folder, a sequence of paths or a task -> path mapping."""
    if isinstance(source, Mapping):
        files = {_check_task_name("load_esft source key", t): Path(p) for t, p in source.items()}
    elif isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.exists():
            raise MissingRoutingDataError(f"ESFT routing folder {str(folder)!r} does not exist")
        if not folder.is_dir():
            return _esft_files([folder])
        files = {}
        for path in sorted(folder.iterdir()):
            match = _ESFT_FILE.match(path.name)
            if match:
                files[match["task"]] = path
        if not files:
            raise MissingRoutingDataError(
                f"ESFT routing folder {str(folder)!r} has no esft_<task>_expert_ids.npz file"
            )
    elif isinstance(source, Sequence) and source:
        files = {}
        for item in source:
            path = Path(item)
            match = _ESFT_FILE.match(path.name)
            if not match:
                raise RoutingDataError(
                    f"ESFT file name {path.name!r} is not allowed; it must match "
                    "esft_<task>_expert_ids.npz (or pass a mapping task -> path)"
                )
            if match["task"] in files:
                raise RoutingDataError(f"ESFT task {match['task']!r} is given twice: {path}")
            files[match["task"]] = path
    else:
        raise ValueError(
            f"source={source!r} is not allowed; it must be a folder, a non-empty sequence of "
            "esft_<task>_expert_ids.npz paths or a mapping task -> path"
        )
    if not files:
        raise ValueError("source is empty, which is not allowed; give at least one ESFT file")
    return files


def load_esft(source: PathLike | Sequence[PathLike] | Mapping[str, PathLike]) -> EsftRoutes:
    """Load real DeepSeek-V2-Lite routes from ESFT ``expert_ids`` npz files.

    Each file holds one array ``expert_ids``: ``int [tokens, 26, 6]``, the
    distinct top-6 routed expert ids (0-63) of every token in each MoE layer.

    Args:
        source: A folder (every ``esft_<task>_expert_ids.npz`` in it is
            loaded), a sequence of such files, or a mapping task -> file.

    Returns:
        The :class:`EsftRoutes` (raw routes plus per-task popularity ``[26, 64]``).

    Raises:
        MissingRoutingDataError: A folder or file does not exist, or a folder
            has no ESFT file (also a ``FileNotFoundError``).
        RoutingDataError: A file is not an npz, lacks ``expert_ids``, or has a
            wrong shape or dtype, an expert id outside ``[0, 63]`` or a repeated
            expert within a token; the message names the file and the value.
    """
    arrays: dict[str, np.ndarray] = {}
    for task, path in _esft_files(source).items():
        if not path.is_file():
            raise MissingRoutingDataError(f"ESFT file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                if _ESFT_ARRAY not in names:
                    raise RoutingDataError(
                        f"{path}: has arrays {names}, which is not allowed; it must hold "
                        f"{_ESFT_ARRAY!r}"
                    )
                raw = npz[_ESFT_ARRAY]
        except RoutingDataError:
            raise
        except (OSError, ValueError) as exc:
            raise RoutingDataError(f"{path}: cannot be read as an .npz file ({exc})") from None
        arrays[task] = _check_expert_ids(str(path), raw)
    return EsftRoutes(arrays)


def _check_fiddler_json(path: Path) -> np.ndarray:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise RoutingDataError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict) or _FIDDLER_FIELD not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise RoutingDataError(
            f"{path}: has fields {keys}, which is not allowed; it must hold {_FIDDLER_FIELD!r}"
        )
    if _FIDDLER_TOKENS_FIELD in data:
        tokens = data[_FIDDLER_TOKENS_FIELD]
        if not is_int(tokens) or tokens < 1:
            raise RoutingDataError(
                f"{path}: {_FIDDLER_TOKENS_FIELD}={tokens!r} is not allowed; it must be a "
                "positive integer"
            )
    raw = data[_FIDDLER_FIELD]
    try:
        counts = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise RoutingDataError(
            f"{path}: {_FIDDLER_FIELD} is not allowed: it must be a numeric "
            f"[{FIDDLER_N_LAYERS}][{FIDDLER_N_EXPERTS}] list of lists"
        ) from None
    if counts.shape != (FIDDLER_N_LAYERS, FIDDLER_N_EXPERTS):
        raise RoutingDataError(
            f"{path}: {_FIDDLER_FIELD} has shape {counts.shape}, which is not allowed; it must "
            f"be [{FIDDLER_N_LAYERS}][{FIDDLER_N_EXPERTS}] (layers x experts)"
        )
    bad = ~np.isfinite(counts) | (counts < 0) | (counts != np.round(counts))
    if bad.any():
        layer, expert = (int(i) for i in np.argwhere(bad)[0])
        raise RoutingDataError(
            f"{path}: {_FIDDLER_FIELD}[{layer}][{expert}]={raw[layer][expert]!r} is not "
            "allowed; selection counts must be finite non-negative integers"
        )
    sums = counts.sum(axis=1)
    if (sums <= 0).any():
        layer = int(np.argmax(sums <= 0))
        raise RoutingDataError(
            f"{path}: {_FIDDLER_FIELD}[{layer}] sums to 0, which is not allowed; every layer "
            "needs at least one selection"
        )
    return read_only(counts / sums[:, None])


def load_fiddler(directory: PathLike, variant: str = "original") -> Mapping[str, np.ndarray]:
    """Load real Mixtral-8x7B expert popularity from Fiddler's MMLU counts.

    Reads ``<directory>/popularity_<variant>/expert_popularity_<subject>.json``;
    each holds ``expert_popularity``, selection counts ``[32][8]`` (layer x
    expert), and ``total_input_tokens`` (words of input, not tokens; unused).

    Args:
        directory: The Fiddler data folder (holding ``popularity_<variant>/``).
        variant: ``"original"`` (Mixtral-8x7B-v0.1) or ``"instruct"``.

    Returns:
        Read-only mapping subject -> read-only ``float64 [32, 8]`` popularity
        (each layer's counts divided by their sum), subjects sorted.

    Raises:
        ValueError: On an unknown ``variant`` (the message lists the allowed ones).
        MissingRoutingDataError: The folder does not exist or has no
            ``expert_popularity_<subject>.json`` (also a ``FileNotFoundError``).
        RoutingDataError: A file is not JSON, lacks ``expert_popularity``, or has
            a wrong shape, a negative, non-integer or non-finite count, or an
            all-zero layer; the message names the file and the value.
    """
    if variant not in FIDDLER_VARIANTS:
        raise ValueError(
            f"variant={variant!r} is not allowed; allowed variants: {', '.join(FIDDLER_VARIANTS)}"
        )
    folder = Path(directory) / f"popularity_{variant}"
    if not folder.is_dir():
        raise MissingRoutingDataError(f"Fiddler folder {str(folder)!r} does not exist")
    popularity: dict[str, np.ndarray] = {}
    for path in sorted(folder.iterdir()):
        match = _FIDDLER_FILE.match(path.name)
        if match:
            popularity[match["subject"]] = _check_fiddler_json(path)
    if not popularity:
        raise MissingRoutingDataError(
            f"Fiddler folder {str(folder)!r} has no expert_popularity_<subject>.json file"
        )
    return types.MappingProxyType(popularity)
