"""Readers of request traces: the Azure LLM inference trace CSV (2023) and a generic CSV.

Each reader parses a file into a :class:`coel_env.core.workload.Requests`, which
:class:`coel_env.core.workload.TraceWorkload` replays.

Rows become requests in file order. Timestamps must be non-decreasing: an
unsorted file is an error naming the first row out of order (pass
``sort=True``, in a scenario ``workload.sort: true``, to sort it stably, with a
:class:`TraceWarning`). A row with no input and no output tokens is an error (it is
no request). Duplicate
timestamps are legitimate simultaneous arrivals (traces logged at ms
granularity have them; the Azure 2023 files have none at their 100 ns
resolution): they are kept in file order, with one :class:`TraceWarning`
per file that says how many there are. Columns that say which server,
model or task a request belongs to are optional; when absent, each row's
value is drawn independently from the :class:`~coel_env.core.workload.TraceMapping`
weights with the ``rng`` passed (uniform by default), which splits the trace's
arrival process randomly rather than regularly (round-robin would smooth it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coel_env.core.checks import check_real
from coel_env.core.workload import Requests, TraceMapping

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AZURE_COLUMNS",
    "GENERIC_OPTIONAL",
    "GENERIC_REQUIRED",
    "TraceWarning",
    "load_azure_trace",
    "load_generic_trace",
]

_INT32_MAX = np.iinfo(np.int32).max


#: Columns of the Azure LLM inference trace CSV files (2023).
AZURE_COLUMNS: tuple[str, str, str] = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
#: Required and optional columns of a generic trace CSV.
GENERIC_REQUIRED: tuple[str, ...] = ("arrival_s", "input_tokens", "output_tokens")
GENERIC_OPTIONAL: tuple[str, ...] = ("server", "model", "task", "slo_ms", "quality_floor")


class TraceWarning(UserWarning):
    """A trace is usable but unusual (duplicate timestamps, sorted rows, unknown columns)."""


def _draw_names(
    names: tuple[str, ...], weights: tuple[float, ...] | None, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Independent per-row indices into ``names`` (uniform if no weights); no draw for one name."""
    if len(names) == 1:
        return np.zeros(n, dtype=np.int64)
    return rng.choice(len(names), size=n, p=weights)


def _read_csv(path: str | Path, required: Sequence[str], kind: str) -> tuple[Path, pd.DataFrame]:
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"trace file {p} does not exist")
    if not p.is_file():
        raise ValueError(f"trace path {p} is not a file")
    try:
        with warnings.catch_warnings():
            # index_col=False: a row longer than the header must not shift into an index.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{p}: the file is empty; {kind} trace needs a header ({', '.join(required)}) "
            "and at least one request"
        ) from None
    except (pd.errors.ParserWarning, pd.errors.ParserError) as e:
        long_row = _first_long_row(p)
        what = f"{long_row}; rows must not have more fields than the header" if long_row else e
        raise ValueError(f"{p}: not a readable CSV file ({what})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a readable CSV file ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{p}: missing required column(s) {', '.join(missing)}; {kind} trace needs "
            f"{', '.join(required)} (found: {', '.join(df.columns) or 'none'})"
        )
    if len(df) == 0:
        raise ValueError(f"{p}: the trace is empty (a header and no requests)")
    return p, df


def _first_long_row(p: Path) -> str | None:
    """Describe the first row with more fields than the header, if any (error path only)."""
    import csv

    with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        width = len(next(reader, []))
        for i, row in enumerate(reader):
            if len(row) > width:
                return f"row {i + 1} (line {i + 2}) has {len(row)} fields, the header {width}"
    return None


def _row_error(
    p: Path, i: int, column: str, value: str, problem: str, rule: str, n_bad: int
) -> ValueError:
    more = f" ({n_bad} bad rows in all)" if n_bad > 1 else ""
    return ValueError(
        f"{p}: row {i + 1} (line {i + 2}), column {column!r}: {value!r} {problem}; {rule}{more}"
    )


def _parse_numbers(
    p: Path,
    df: pd.DataFrame,
    column: str,
    *,
    integer: bool,
    low: float,
    low_open: bool,
    high: float | None = None,
) -> np.ndarray:
    import pandas as pd

    raw = df[column].str.strip()
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        not_num = ~np.isfinite(num)
        too_low = (num <= low) if low_open else (num < low)
        too_high = (num > high) if high is not None else np.zeros_like(not_num)
        frac = (num != np.rint(num)) if integer else np.zeros_like(not_num)
    bad = not_num | too_low | too_high | frac
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "integers" if integer else "numbers"
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        rng_text = f"{bound}" + (f" and <= {high:.10g}" if high is not None else "")
        rule = f"values must be finite {kind} {rng_text}"
        if not_num[i]:
            problem = "is missing" if raw.iloc[i] == "" else "is not a finite number"
        elif frac[i]:
            problem = "is not an integer"
        elif too_low[i]:
            problem = "is negative" if num[i] < 0 else "is too small"
        else:
            problem = "is too large"
        raise _row_error(p, i, column, raw.iloc[i], problem, rule, int(bad.sum()))
    return num


def _parse_tokens(p: Path, df: pd.DataFrame, column: str) -> np.ndarray:
    num = _parse_numbers(
        p, df, column, integer=True, low=0.0, low_open=False, high=float(_INT32_MAX)
    )
    return num.astype(np.int32)


def _parse_names(p: Path, df: pd.DataFrame, column: str, allowed: tuple[str, ...]) -> np.ndarray:
    import pandas as pd

    raw = df[column].str.strip()
    idx = pd.Index(allowed).get_indexer(raw)
    bad = idx < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _row_error(
            p,
            i,
            column,
            raw.iloc[i],
            "is not a known name",
            f"allowed: {', '.join(allowed)}",
            int(bad.sum()),
        )
    return idx


def _order_rows(
    p: Path, arrival: np.ndarray, raw_time: pd.Series, column: str, sort: bool
) -> np.ndarray | None:
    """Check timestamp order; return a stable sorting permutation if sorting, else None."""
    d = np.diff(arrival)
    back = np.flatnonzero(d < 0)
    order = None
    if back.size:
        i = int(back[0]) + 1
        if not sort:
            raise ValueError(
                f"{p}: row {i + 1} (line {i + 2}), column {column!r}: "
                f"{raw_time.iloc[i].strip()!r} is earlier than row {i} "
                f"({raw_time.iloc[i - 1].strip()!r}); timestamps must be "
                f"non-decreasing ({back.size} row(s) out of order; to sort the rows, pass "
                "sort=True, or in a scenario set workload.sort=true, e.g. --set workload.sort=true)"
            )
        warnings.warn(
            f"{p}: {back.size} row(s) out of timestamp order (first: row {i + 1}); rows sorted by "
            "timestamp, ties kept in file order",
            TraceWarning,
            stacklevel=4,
        )
        order = np.argsort(arrival, kind="stable")
        d = np.diff(arrival[order])
    dup = np.flatnonzero(d == 0)
    if dup.size:
        j = int(dup[0]) + 1
        where = f"row {j + 1}" if order is None else f"row {int(order[j]) + 1}"
        warnings.warn(
            f"{p}: {dup.size} request(s) share the {column!r} value of the request before them "
            f"(first: {where}); they are kept as simultaneous arrivals",
            TraceWarning,
            stacklevel=4,
        )
    return order


def _build(
    p: Path,
    df: pd.DataFrame,
    arrival: np.ndarray,
    time_column: str,
    input_column: str,
    output_column: str,
    *,
    mapping: TraceMapping,
    rng: np.random.Generator | None,
    time_scale: float,
    sort: bool,
    fixed_task: int | None,
) -> Requests:
    time_scale = check_real("trace.time_scale", time_scale, low=0.0, low_open=True)
    inp = _parse_tokens(p, df, input_column)
    out = _parse_tokens(p, df, output_column)
    empty = np.flatnonzero((inp == 0) & (out == 0))
    if empty.size:
        i = int(empty[0])
        more = f" ({empty.size} such rows in all)" if empty.size > 1 else ""
        raise ValueError(
            f"{p}: row {i + 1} (line {i + 2}), columns {input_column!r} and {output_column!r}: "
            f"both 0, a request with no tokens; every row needs at least one input or output "
            f"token{more}"
        )
    n = len(df)
    cols = df.columns
    known: dict[str, np.ndarray] = {}
    for col, names in (
        ("server", mapping.servers),
        ("model", mapping.models),
        ("task", mapping.tasks),
    ):
        if col in cols:
            known[col] = _parse_names(p, df, col, names)
    if "slo_ms" in cols:
        known["slo_ms"] = _parse_numbers(p, df, "slo_ms", integer=False, low=0.0, low_open=True)
    if "quality_floor" in cols:
        known["quality_floor"] = _parse_numbers(
            p, df, "quality_floor", integer=False, low=0.0, low_open=False, high=1.0
        )
    order = _order_rows(p, arrival, df[time_column], time_column, sort)
    if order is not None:
        arrival, inp, out = arrival[order], inp[order], out[order]
        known = {k: v[order] for k, v in known.items()}
    arrival = arrival * time_scale
    gen = rng if rng is not None else np.random.default_rng(0)
    if "server" in known:
        origin = known["server"]
    else:
        origin = _draw_names(mapping.servers, mapping.server_weights, n, gen)
    if "model" in known:
        model = known["model"]
    else:
        model = _draw_names(mapping.models, mapping.model_weights, n, gen)
    if "task" in known:
        task = known["task"]
    elif fixed_task is not None:
        task = np.full(n, fixed_task)
    else:
        task = _draw_names(mapping.tasks, mapping.task_weights, n, gen)
    slo = known["slo_ms"].astype(np.float32) if "slo_ms" in known else mapping.slo.slo_ms(out)
    qf = (
        known["quality_floor"].astype(np.float32)
        if "quality_floor" in known
        else np.full(n, mapping.slo.quality_floor, dtype=np.float32)
    )
    return Requests._unchecked(
        arrival_s=arrival.astype(np.float64),
        origin=origin.astype(np.int32),
        model=model.astype(np.int16),
        input_tokens=inp,
        output_tokens=out,
        task=task.astype(np.int16),
        slo_ms=slo,
        quality_floor=qf,
    )


def load_azure_trace(
    path: str | Path,
    *,
    time_scale: float = 1.0,
    mapping: TraceMapping | None = None,
    task: str | None = None,
    rng: np.random.Generator | None = None,
    sort: bool = False,
) -> Requests:
    """Load an Azure LLM inference trace CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    ``TIMESTAMP`` is a datetime string (ISO 8601, e.g. ``2023-11-16 18:17:03.9799600``);
    ``arrival_s`` is seconds after the earliest row, times ``time_scale``.
    ContextTokens become ``input_tokens`` and GeneratedTokens ``output_tokens``.
    Servers, models and (unless ``task`` is given) tasks are drawn per row from
    ``mapping``'s weights; SLOs follow ``mapping.slo``. Other columns are ignored.

    Args:
        path: The CSV file.
        time_scale: Multiplies every inter-arrival time (0.5 doubles the rate).
        mapping: Names and weights for servers, models and tasks; default
            one server, one model, :data:`~coel_env.core.workload.TASK_NAMES`.
        task: Task name of every row (e.g. ``"code"`` for the code trace); must
            be in ``mapping.tasks``. None draws tasks from the mapping.
        rng: Source of the per-row draws; None uses ``np.random.default_rng(0)``
            so that loading is deterministic.
        sort: Sort unsorted rows (with a :class:`TraceWarning`) instead of
            raising.

    Returns:
        The requests, sorted by arrival.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is empty, lacks a column, or a row is bad; the
            message names the file, row, column and rule.
    """
    import pandas as pd

    mapping = TraceMapping() if mapping is None else mapping
    fixed_task = None
    if task is not None:
        if task not in mapping.tasks:
            raise ValueError(f"task={task!r} is not allowed; allowed: {', '.join(mapping.tasks)}")
        fixed_task = mapping.tasks.index(task)
    p, df = _read_csv(path, AZURE_COLUMNS, "an Azure")
    raw = df["TIMESTAMP"].str.strip()
    stamps = pd.to_datetime(raw, format="ISO8601", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problem = "is missing" if raw.iloc[i] == "" else "is not a datetime"
        rule = "timestamps must be ISO 8601 datetimes such as '2023-11-16 18:17:03.9799600'"
        raise _row_error(p, i, "TIMESTAMP", raw.iloc[i], problem, rule, int(bad.sum()))
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    arrival = (ns - ns.min()) / 1e9
    return _build(
        p,
        df,
        arrival,
        "TIMESTAMP",
        "ContextTokens",
        "GeneratedTokens",
        mapping=mapping,
        rng=rng,
        time_scale=time_scale,
        sort=sort,
        fixed_task=fixed_task,
    )


def load_generic_trace(
    path: str | Path,
    *,
    time_scale: float = 1.0,
    mapping: TraceMapping | None = None,
    rng: np.random.Generator | None = None,
    sort: bool = False,
) -> Requests:
    """Load a generic trace CSV.

    Required columns: ``arrival_s`` (seconds >= 0 from the trace's origin),
    ``input_tokens``, ``output_tokens``. Optional: ``server``, ``model``,
    ``task`` (names from ``mapping``), ``slo_ms`` (> 0) and ``quality_floor``
    (in [0, 1]). Absent optional columns are filled as :class:`TraceMapping`
    says. Unrecognised columns are ignored with a :class:`TraceWarning`.

    Args:
        path: The CSV file.
        time_scale: Multiplies every ``arrival_s`` value, hence every
            inter-arrival time.
        mapping: Names, weights and SLO rule; default one server, one model,
            :data:`~coel_env.core.workload.TASK_NAMES`.
        rng: Source of the per-row draws; None uses ``np.random.default_rng(0)``.
        sort: Sort unsorted rows (with a :class:`TraceWarning`) instead of
            raising.

    Returns:
        The requests, sorted by arrival.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is empty, lacks a column, or a row is bad; the
            message names the file, row, column and rule.
    """
    mapping = TraceMapping() if mapping is None else mapping
    p, df = _read_csv(path, GENERIC_REQUIRED, "a generic")
    extra = [c for c in df.columns if c not in GENERIC_REQUIRED + GENERIC_OPTIONAL]
    if extra:
        warnings.warn(
            f"{p}: column(s) {', '.join(extra)} ignored; known columns: "
            f"{', '.join(GENERIC_REQUIRED + GENERIC_OPTIONAL)}",
            TraceWarning,
            stacklevel=2,
        )
    arrival = _parse_numbers(p, df, "arrival_s", integer=False, low=0.0, low_open=False)
    return _build(
        p,
        df,
        arrival,
        "arrival_s",
        "input_tokens",
        "output_tokens",
        mapping=mapping,
        rng=rng,
        time_scale=time_scale,
        sort=sort,
        fixed_task=None,
    )
