"""Requests and the workloads that produce them: a calibrated synthetic generator and trace replay.

A batch of requests is a :class:`Requests`, a struct of numpy arrays sorted by
arrival time. Two workloads serve the simulator one epoch at a time through the
same call, ``generate(t0_s, duration_s, rng) -> Requests`` (see :class:`Workload`):

* :class:`SyntheticWorkload` draws requests from a :class:`WorkloadConfig`
  whose defaults are fitted to the Azure LLM inference traces (2023, Splitwise,
  CC-BY-4.0). The fitted values are the module constants :data:`AZURE_CONV_FIT`
  (the default) and :data:`AZURE_CODE_FIT`; ``experiments/calibrate_workload.py``
  recomputes them from the trace files with :func:`fit_trace`, and a test checks
  that the constants still match.
* :class:`TraceWorkload` replays a trace loaded by
  :func:`coel_env.core.io.traces.load_azure_trace` or
  :func:`coel_env.core.io.traces.load_generic_trace`.

What a request demands
    ``slo_ms`` is an **end-to-end** latency budget, from arrival to the last
    output token: ``ttft_ms + tpot_ms * output_tokens`` (:class:`SloConfig`), so
    that long answers get proportionally more time. ``quality_floor`` is the
    largest relative quality loss the request tolerates (0.05: the answer must
    keep at least 95% of the uncompressed model's quality).

Arrival model
    Each server has its own independent renewal process whose inter-arrival
    times are hyperexponential (H2: a mixture of a short-gap and a long-gap
    exponential phase). Three numbers fix it: the mean rate, the coefficient of
    variation (CV) of the gaps, and the probability of a short gap. The first
    two are matched exactly to the trace; the third is the maximum-likelihood
    value given the first two (:func:`fit_trace`). On the Azure code trace this
    reproduces the burstiness seen at other time scales: the index of
    dispersion of 1 s counts is ~9 for the model against 13.2 for the trace,
    and ~75% of 1 s windows are empty in both. A gamma renewal process with the
    same CV gives ~69 and 93%, far too clumped, hence H2. CV < 1 (smoother than
    Poisson) is outside the H2 family and is refused.

    Each call to ``generate`` samples its window as an exact *stationary* H2
    process (the first arrival is drawn from the equilibrium residual-life
    distribution), independently of earlier calls. Burstiness inside a window
    is exact; correlation across windows (a silence spanning two epochs) is not
    carried over, which matters only for epochs shorter than the long gaps
    (~44 s mean on the code trace, ~0.27 s on the conversation trace).
    The world draws its arrivals from a :class:`SyntheticStream` instead: one
    continuous process per server across epochs (so the silence is carried
    over), drawn in chunks for speed.

    Rate scaling for the edge: :meth:`WorkloadConfig.from_fit` gives each of
    ``n`` servers ``fit.rate_per_s * load_scale / n``, i.e. the whole trace's
    load is shared equally by the edge network. An optional diurnal profile
    multiplies every server's rate by ``1 + A sin(2 pi t / P + phase)``; it is
    applied as a time change (the process runs in integrated-rate time), which
    keeps the burstiness in that time and keeps the long-run mean rate.

Trace replay
    :class:`TraceWorkload` replays a trace read by
    :func:`coel_env.core.io.traces.load_azure_trace` or
    :func:`coel_env.core.io.traces.load_generic_trace` (the file formats, the row
    order and how rows without a server, model or task are mapped are described
    there).

The module is longer than most (about 1,200 lines): the request batch, the arrival
model, its calibration against the traces and the two workloads are one model,
read and tested together; the trace files are read in :mod:`coel_env.core.io.traces`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np

from coel_env.core.checks import check_int, check_real, is_int, read_only_view
from coel_env.core.kernels.workload import (
    any_short,
    cumulative_rows,
    inverse_cdf,
    sort_into_window,
    take_points,
)

__all__ = [
    "AZURE_CODE_FIT",
    "AZURE_CONV_FIT",
    "TASK_NAMES",
    "LogNormalTokens",
    "Requests",
    "SloConfig",
    "SyntheticStream",
    "SyntheticWorkload",
    "TraceFit",
    "TraceMapping",
    "TraceWorkload",
    "Workload",
    "WorkloadConfig",
    "dispersion_of_counts",
    "fast_gap_probability_range",
    "fit_trace",
]

#: Task types: "code" and "conversation" are the two Azure 2023 traces; "intent",
#: "law", "summary" and "translation" are the four tasks of the DeepSeek-V2-Lite
#: expert-routing traces (ESFT) that drive expert popularity.
TASK_NAMES: tuple[str, ...] = ("code", "conversation", "intent", "law", "summary", "translation")


_INT32_MAX = np.iinfo(np.int32).max


# ----------------------------------------------------------------------------- validation


def _check_names(owner: str, field: str, names: object) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) == 0:
        raise ValueError(
            f"{owner}.{field}={names!r} is not allowed; it must be a non-empty sequence of names"
        )
    out = tuple(names)
    if not all(isinstance(n, str) and n.strip() == n and n for n in out):
        raise ValueError(
            f"{owner}.{field}={names!r} is not allowed; names must be non-empty strings "
            "without surrounding spaces"
        )
    if len(set(out)) != len(out):
        raise ValueError(f"{owner}.{field}={names!r} is not allowed; names must be unique")
    return out


def _check_probabilities(owner: str, field: str, values: object, n: int) -> np.ndarray:
    """A probability vector of length n (non-negative, summing to 1 within 1e-6)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty((0,))
    if arr.shape != (n,) or not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(
            f"{owner}.{field}={values!r} is not allowed; it must be {n} non-negative probabilities"
        )
    if abs(arr.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"{owner}.{field}={values!r} is not allowed; "
            f"the probabilities sum to {arr.sum():.9g}, not 1"
        )
    return arr


def _check_mix(owner: str, field: str, mix: object, n_rows: int, row_len: int | None) -> np.ndarray:
    """A [n_rows, K] matrix whose rows are probability vectors."""
    try:
        arr = np.asarray(mix, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty((0,))
    shape = f"[{n_rows}, {row_len if row_len is not None else 'K'}]"
    ok_shape = arr.ndim == 2 and arr.shape[0] == n_rows and arr.shape[1] >= 1
    if not ok_shape or (row_len is not None and arr.shape[1] != row_len):
        raise ValueError(
            f"{owner}.{field} has shape {arr.shape}; it must be {shape} "
            "(one probability row per server)"
        )
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{owner}.{field} is not allowed; probabilities must be finite and >= 0")
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise ValueError(
            f"{owner}.{field} row {bad[0]} sums to {sums[bad[0]]:.9g}; every row must sum to 1"
        )
    return arr


def _cumulative(mix: np.ndarray) -> np.ndarray:
    """Row-wise cumulative probabilities, last column exactly 1 (for inverse-CDF draws)."""
    cum = np.cumsum(mix, axis=1)
    cum[:, -1] = 1.0
    return cum


def _draw_categorical(cum_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row of ``cum_rows`` (cumulative probabilities); no draw if K == 1."""
    n, k = cum_rows.shape
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    return np.minimum((u[:, None] >= cum_rows).sum(axis=1), k - 1)


# ----------------------------------------------------------------------------- token counts


@dataclass(frozen=True)
class LogNormalTokens:
    """A token-count distribution: ``round(exp(N(mu_log, sigma_log^2)))`` clipped to
    ``[1, max_tokens]``.

    Attributes:
        mu_log: Mean of the natural log of the count.
        sigma_log: Standard deviation of the natural log of the count.
        max_tokens: Largest count drawn; larger draws are clipped to it (the
            fitted constants use the trace's maximum).
    """

    mu_log: float
    sigma_log: float
    max_tokens: int

    def __post_init__(self) -> None:
        check_real("LogNormalTokens.mu_log", self.mu_log)
        check_real("LogNormalTokens.sigma_log", self.sigma_log, low=0.0)
        m = self.max_tokens
        if not is_int(m) or not 1 <= m <= _INT32_MAX:
            raise ValueError(
                f"LogNormalTokens.max_tokens={m!r} is not allowed; it must be an integer in "
                f"[1, {_INT32_MAX}]"
            )

    @property
    def median(self) -> float:
        """Median of the unclipped log-normal, ``exp(mu_log)``."""
        return math.exp(self.mu_log)

    def quantile(self, q: float) -> float:
        """Quantile ``q`` of the unclipped log-normal."""
        return math.exp(self.mu_log + self.sigma_log * NormalDist().inv_cdf(q))

    def clipped_share(self) -> float:
        """Probability that a draw is clipped to ``max_tokens`` (rounds above it)."""
        if self.sigma_log == 0.0:
            return float(self.median >= self.max_tokens + 0.5)
        z = (math.log(self.max_tokens + 0.5) - self.mu_log) / self.sigma_log
        return 1.0 - NormalDist().cdf(z)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` counts (int32)."""
        x = np.rint(np.exp(self.mu_log + self.sigma_log * rng.standard_normal(n)))
        return np.clip(x, 1, self.max_tokens).astype(np.int32)


# ----------------------------------------------------------------------------- arrival model


def fast_gap_probability_range(cv: float) -> tuple[float, float]:
    """Open interval of short-gap probabilities ``p`` for which an H2 with this CV exists.

    With unit mean gap and ``s = sqrt((cv^2 - 1) / 2)``, the phase means are
    ``m_fast = 1 - sqrt((1 - p) / p) * s`` and ``m_slow = 1 + sqrt(p / (1 - p)) * s``;
    ``m_fast > 0`` needs ``p > s^2 / (1 + s^2)``. At ``cv == 1`` every ``p`` gives
    the exponential (Poisson arrivals).
    """
    s2 = (cv * cv - 1.0) / 2.0
    return s2 / (1.0 + s2), 1.0


def _h2_unit_means(cv: float, p: float) -> tuple[float, float]:
    """Phase means (short, long) of a unit-mean H2 with this CV and short-gap probability."""
    if cv == 1.0 or p == 1.0:
        return 1.0, 1.0
    s = math.sqrt((cv * cv - 1.0) / 2.0)
    return 1.0 - math.sqrt((1.0 - p) / p) * s, 1.0 + math.sqrt(p / (1.0 - p)) * s


def _check_arrivals(owner: str, cv: object, p: object) -> tuple[float, float]:
    cv_f = check_real(f"{owner}.interarrival_cv", cv, low=1.0)
    lo, _ = fast_gap_probability_range(cv_f)
    if cv_f == 1.0:
        p_f = check_real(f"{owner}.fast_gap_probability", p, low=0.0, high=1.0, low_open=True)
    else:
        p_f = check_real(
            f"{owner}.fast_gap_probability", p, low=lo, high=1.0, low_open=True, high_open=True
        )
    return cv_f, p_f


def _h2_points(
    span: np.ndarray, cv: float, p: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points of independent stationary unit-rate H2 renewal processes on ``[0, span[i])``.

    Returns:
        (positions, process index), unsorted across processes.
    """
    m_fast, m_slow = _h2_unit_means(cv, p)
    active = np.flatnonzero(span > 0)
    # Equilibrium residual life of a mixture of exponentials: the phase is picked
    # with probability proportional to p_i * m_i (its share of time), then an
    # exponential with that phase's mean (memoryless), so the window is stationary.
    first_fast = rng.random(active.size) < p * m_fast
    pos = rng.standard_exponential(active.size) * np.where(first_fast, m_fast, m_slow)
    inside = pos < span[active]
    out_u, out_i = [pos[inside]], [active[inside]]
    active, pos = active[inside], pos[inside]
    while active.size:
        remaining = span[active] - pos
        # Enough gaps to cross the end most of the time; the rest loop again.
        b = (np.ceil(remaining + cv * np.sqrt(remaining)) + 16).astype(np.int64)
        total = int(b.sum())
        fast = rng.random(total) < p
        gaps = rng.standard_exponential(total) * np.where(fast, m_fast, m_slow)
        ends = np.cumsum(b)
        cs = np.cumsum(gaps)
        before = np.concatenate(([0.0], cs[ends[:-1] - 1]))
        u = cs - np.repeat(before - pos, b)
        owner = np.repeat(active, b)
        keep = u < span[owner]
        out_u.append(u[keep])
        out_i.append(owner[keep])
        last = u[ends - 1]
        more = last < span[active]
        active, pos = active[more], last[more]
    return np.concatenate(out_u), np.concatenate(out_i)


# ----------------------------------------------------------------------------- SLO


@dataclass(frozen=True)
class SloConfig:
    """What each request demands.

    ``slo_ms = ttft_ms + tpot_ms * output_tokens`` is an end-to-end budget from
    arrival to the last output token.

    Attributes:
        ttft_ms: Time-to-first-token budget [ms]. Default 2500 ms: DistServe
            (Zhong et al., OSDI'24), Table 1, chatbot on OPT-66B.
        tpot_ms: Time-per-output-token budget [ms]. Default 150 ms: same source.
        quality_floor: Largest tolerated relative quality loss, in [0, 1].
            Default 0.05: a design choice of this project (keep >= 95% of the
            uncompressed quality), not a measurement.
    """

    ttft_ms: float = 2500.0
    tpot_ms: float = 150.0
    quality_floor: float = 0.05

    def __post_init__(self) -> None:
        check_real("SloConfig.ttft_ms", self.ttft_ms, low=0.0, low_open=True)
        check_real("SloConfig.tpot_ms", self.tpot_ms, low=0.0)
        check_real("SloConfig.quality_floor", self.quality_floor, low=0.0, high=1.0)

    def slo_ms(self, output_tokens: np.ndarray) -> np.ndarray:
        """End-to-end latency budget [ms] per request (float32)."""
        out = np.asarray(output_tokens, dtype=np.float64)
        return (self.ttft_ms + self.tpot_ms * out).astype(np.float32)


# ----------------------------------------------------------------------------- requests

_DTYPES: dict[str, type[np.generic]] = {
    "arrival_s": np.float64,
    "origin": np.int32,
    "model": np.int16,
    "input_tokens": np.int32,
    "output_tokens": np.int32,
    "task": np.int16,
    "slo_ms": np.float32,
    "quality_floor": np.float32,
}


@dataclass(frozen=True, eq=False)
class Requests:
    """A batch of requests as a struct of arrays, sorted by arrival time.

    Arrays are stored as read-only views in the dtypes below; all have one
    entry per request.

    Attributes:
        arrival_s: Arrival time [s], float64, non-decreasing.
        origin: Index of the server the request arrives at, int32.
        model: Index of the requested model, int16.
        input_tokens: Prompt length [tokens], int32.
        output_tokens: Generated length [tokens], int32.
        task: Index of the task type, int16.
        slo_ms: End-to-end latency budget [ms], arrival to last token, float32.
        quality_floor: Largest tolerated relative quality loss, float32 in [0, 1].
    """

    arrival_s: np.ndarray
    origin: np.ndarray
    model: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    task: np.ndarray
    slo_ms: np.ndarray
    quality_floor: np.ndarray

    def __post_init__(self) -> None:
        arrays = {}
        for name, dtype in _DTYPES.items():
            raw = np.asarray(getattr(self, name))
            if raw.ndim != 1:
                raise ValueError(f"Requests.{name} has shape {raw.shape}; it must be 1-D")
            wants_int = np.dtype(dtype).kind == "i"
            ok = raw.dtype.kind in "iu" or (
                raw.dtype.kind == "f" and (not wants_int or np.array_equal(raw, np.rint(raw)))
            )
            if raw.size and not ok:
                kind = "integers" if wants_int else "numbers"
                raise ValueError(f"Requests.{name} has dtype {raw.dtype}; it must hold {kind}")
            arrays[name] = raw.astype(dtype, copy=False)
        n = len(arrays["arrival_s"])
        bad = [k for k, a in arrays.items() if len(a) != n]
        if bad:
            raise ValueError(
                f"Requests arrays must have equal lengths; arrival_s has {n}, "
                + ", ".join(f"{k} has {len(arrays[k])}" for k in bad)
            )
        t = arrays["arrival_s"]
        if not np.isfinite(t).all():
            raise ValueError(
                "Requests.arrival_s holds non-finite values; arrival times must be finite"
            )
        if n > 1 and (np.diff(t) < 0).any():
            i = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
            raise ValueError(
                f"Requests.arrival_s is not sorted: entry {i} ({t[i]!r}) < entry {i - 1} "
                f"({t[i - 1]!r}); arrival times must be non-decreasing"
            )
        for name in ("origin", "model", "task", "input_tokens", "output_tokens"):
            if n and arrays[name].min() < 0:
                raise ValueError(f"Requests.{name} has negative values; it must be >= 0")
        if n and not (np.isfinite(arrays["slo_ms"]).all() and arrays["slo_ms"].min() > 0):
            raise ValueError("Requests.slo_ms must be finite and > 0")
        qf = arrays["quality_floor"]
        if n and not (np.isfinite(qf).all() and qf.min() >= 0 and qf.max() <= 1):
            raise ValueError("Requests.quality_floor must lie in [0, 1]")
        for name, arr in arrays.items():
            object.__setattr__(self, name, read_only_view(arr))

    @classmethod
    def _unchecked(cls, **arrays: np.ndarray) -> Requests:
        """Build from arrays already in the right dtypes and order (internal fast path)."""
        obj = object.__new__(cls)
        for name in _DTYPES:
            object.__setattr__(obj, name, read_only_view(arrays[name]))
        return obj

    @classmethod
    def empty(cls) -> Requests:
        """No requests."""
        return cls._unchecked(**{k: np.empty(0, dtype=d) for k, d in _DTYPES.items()})

    @classmethod
    def concat(cls, parts: Sequence[Requests]) -> Requests:
        """Join batches; the result is sorted by arrival (stable: ties keep part order)."""
        if not parts:
            return cls.empty()
        arrays = {k: np.concatenate([getattr(p, k) for p in parts]) for k in _DTYPES}
        t = arrays["arrival_s"]
        if t.size > 1 and (np.diff(t) < 0).any():
            order = np.argsort(t, kind="stable")
            arrays = {k: a[order] for k, a in arrays.items()}
        return cls._unchecked(**arrays)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def __getitem__(self, key: slice | np.ndarray) -> Requests:
        """A subset: a slice (views) or an index array / boolean mask in arrival order."""
        if isinstance(key, slice):
            return Requests._unchecked(**{k: getattr(self, k)[key] for k in _DTYPES})
        return Requests(**{k: getattr(self, k)[key] for k in _DTYPES})

    def window(self, t0_s: float, t1_s: float) -> Requests:
        """Requests with ``t0_s <= arrival_s < t1_s`` (views, no copy)."""
        if not t1_s >= t0_s:
            raise ValueError(f"window t1_s={t1_s!r} is not allowed; it must be >= t0_s={t0_s!r}")
        i0, i1 = np.searchsorted(self.arrival_s, (t0_s, t1_s), side="left")
        return self[int(i0) : int(i1)]

    def shifted(self, dt_s: float) -> Requests:
        """The same requests with ``dt_s`` added to every arrival time."""
        return self._with_arrival(self.arrival_s + dt_s)

    def _with_arrival(self, arrival_s: np.ndarray) -> Requests:
        """The same requests at new (still sorted) arrival times."""
        arrays = {k: getattr(self, k) for k in _DTYPES}
        arrays["arrival_s"] = arrival_s
        return Requests._unchecked(**arrays)


def _check_window(t0_s: object, duration_s: object) -> tuple[float, float]:
    t0 = check_real("generate.t0_s", t0_s, low=0.0)
    d = check_real("generate.duration_s", duration_s, low=0.0)
    return t0, t0 + d


def _wall_clock(wl, op: np.ndarray, origin: np.ndarray, t0: float, t1: float, ends=None):
    """Points at operational times ``op`` back to wall-clock arrivals in ``[t0, t1)``,
    sorted (stable), with their origins in the same order.

    Without a diurnal profile operational time is wall-clock time; with one, the
    profile's cumulative rate is inverted piecewise-linearly on a grid of P/4096 steps
    (inverse error < 1e-3 s for a 1-day period). ``ends``: the cumulative profile at
    ``[t0, t1]`` when the caller has it (the whole grid when the window is that short).
    """
    c = wl.config
    if c.diurnal_amplitude == 0.0:
        arrival = op
    else:
        n_grid = max(2, math.ceil((t1 - t0) / (c.diurnal_period_s / 4096.0)) + 1)
        if n_grid == 2 and ends is not None:  # np.linspace(t0, t1, 2) is [t0, t1]
            grid, profile = np.array([t0, t1]), ends
        else:
            grid = np.linspace(t0, t1, n_grid)
            profile = wl.cumulative_profile(grid)
        arrival = np.interp(op, profile, grid)
    if arrival.size and t1 > t0:  # sorted (stable), clipped to the window
        return sort_into_window(arrival, origin, t0, np.nextafter(t1, -np.inf))
    order = np.argsort(arrival, kind="stable")
    return arrival[order], origin[order]


def _clip_to_window(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Guard the half-open window against rounding at its ends."""
    return np.clip(t, t0, np.nextafter(t1, -np.inf)) if t.size and t1 > t0 else t


class Workload(Protocol):
    """What the simulator asks of a workload: one window of requests at a time."""

    def generate(self, t0_s: float, duration_s: float, rng: np.random.Generator) -> Requests:
        """Requests arriving in ``[t0_s, t0_s + duration_s)``, sorted by arrival."""
        ...


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class TraceFit:
    """Statistics of a request trace, as fitted by :func:`fit_trace`.

    Attributes:
        name: Short name of the trace.
        source: Where the numbers come from.
        n_requests: Number of requests.
        duration_s: Last minus first arrival [s].
        rate_per_s: Mean arrival rate, ``(n - 1) / duration_s`` [req/s].
        interarrival_cv: Coefficient of variation of inter-arrival times.
        fast_gap_probability: Short-gap probability of the H2 model
            (maximum likelihood given the mean and CV); 1.0 when CV <= 1.
        dispersion_1s: Index of dispersion (variance / mean) of arrival counts
            in complete 1 s windows from the first arrival.
        input_tokens: Log-normal fit of prompt lengths (ContextTokens).
        output_tokens: Log-normal fit of generated lengths (GeneratedTokens).
    """

    name: str
    source: str
    n_requests: int
    duration_s: float
    rate_per_s: float
    interarrival_cv: float
    fast_gap_probability: float
    dispersion_1s: float
    input_tokens: LogNormalTokens
    output_tokens: LogNormalTokens


_FIT_SOURCE = (
    "fitted by experiments/calibrate_workload.py on {file} "
    "(Azure LLM inference trace 2023, Splitwise, ISCA'24; CC-BY-4.0)"
)

#: Azure 2023 conversation trace (19,366 requests, ~58 min). The default workload.
AZURE_CONV_FIT = TraceFit(
    name="azure_conv_2023",
    source=_FIT_SOURCE.format(file="AzureLLMInferenceTrace_conv.csv"),
    n_requests=19366,
    duration_s=3501.721937,
    rate_per_s=5.530136,
    interarrival_cv=1.094170,
    fast_gap_probability=0.703073,
    dispersion_1s=1.385142,
    input_tokens=LogNormalTokens(mu_log=6.633313, sigma_log=0.985154, max_tokens=14050),
    output_tokens=LogNormalTokens(mu_log=5.018997, sigma_log=0.859009, max_tokens=1000),
)

#: Azure 2023 code trace (8,819 requests, ~57 min): far burstier than conversation.
AZURE_CODE_FIT = TraceFit(
    name="azure_code_2023",
    source=_FIT_SOURCE.format(file="AzureLLMInferenceTrace_code.csv"),
    n_requests=8819,
    duration_s=3435.948056,
    rate_per_s=2.566395,
    interarrival_cv=13.151291,
    fast_gap_probability=0.993221,
    dispersion_1s=13.186428,
    input_tokens=LogNormalTokens(mu_log=6.998644, sigma_log=1.360193, max_tokens=7437),
    output_tokens=LogNormalTokens(mu_log=2.788157, sigma_log=0.847238, max_tokens=1899),
)


def dispersion_of_counts(arrival_s: np.ndarray, window_s: float = 1.0) -> float:
    """Index of dispersion (population variance / mean) of arrival counts.

    Counts are taken in consecutive complete windows of ``window_s`` starting at
    the first arrival (a partial last window is dropped). NaN if there are
    fewer than two windows or no arrivals in them.
    """
    t = np.asarray(arrival_s, dtype=np.float64)
    if t.size == 0:
        return float("nan")
    rel = (t - t[0]) / window_s
    n_windows = int(math.floor(rel[-1]))
    if n_windows < 2:
        return float("nan")
    counts = np.bincount(rel[rel < n_windows].astype(np.int64), minlength=n_windows)
    mean = counts.mean()
    return float(counts.var() / mean) if mean > 0 else float("nan")


def _h2_nll(x: np.ndarray, cv: float, p: float) -> float:
    """Negative log-likelihood of unit-mean gaps ``x`` under the H2 (cv, p)."""
    m_fast, m_slow = _h2_unit_means(cv, p)
    a = math.log(p) - math.log(m_fast) - x / m_fast
    b = math.log1p(-p) - math.log(m_slow) - x / m_slow
    return float(-np.logaddexp(a, b).sum())


def _fit_fast_gap_probability(gaps: np.ndarray, cv: float) -> float:
    """Maximum-likelihood short-gap probability of an H2 with the gaps' mean and CV."""
    if cv <= 1.0:
        return 1.0
    from scipy.optimize import minimize_scalar

    x = gaps / gaps.mean()
    lo, _ = fast_gap_probability_range(cv)
    # Search q = 1 - p on a log grid (p is close to 1 for bursty traces), then refine.
    q_hi, q_lo = 1.0 - lo, 1e-9
    qs = np.geomspace(q_lo, q_hi, 202)[1:-1]
    nll = [_h2_nll(x, cv, 1.0 - q) for q in qs]
    k = int(np.argmin(nll))
    bracket = (math.log(qs[max(k - 1, 0)]), math.log(qs[min(k + 1, qs.size - 1)]))
    res = minimize_scalar(
        lambda lq: _h2_nll(x, cv, 1.0 - math.exp(lq)),
        bounds=bracket,
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(1.0 - math.exp(res.x))


def _fit_lognormal(owner: str, counts: np.ndarray) -> LogNormalTokens:
    positive = counts[counts > 0].astype(np.float64)
    if positive.size < 2:
        raise ValueError(f"{owner}: fewer than 2 positive token counts; cannot fit a log-normal")
    logs = np.log(positive)
    return LogNormalTokens(
        mu_log=float(logs.mean()), sigma_log=float(logs.std()), max_tokens=int(counts.max())
    )


def fit_trace(requests: Requests, *, name: str = "trace", source: str = "") -> TraceFit:
    """Fit the synthetic workload's parameters to a trace.

    Rate and CV come from the inter-arrival gaps (population std / mean);
    ``fast_gap_probability`` maximises the H2 likelihood of the gaps with the
    mean and CV held at their measured values. Token counts get log-normal
    maximum-likelihood fits (mean and population std of ``log(count)``) over
    the positive counts; ``max_tokens`` is the trace's maximum.

    Args:
        requests: The trace (at least 3 requests spanning a positive time).
        name: Short name stored in the result.
        source: Provenance text stored in the result.

    Returns:
        The fitted :class:`TraceFit`.
    """
    t = requests.arrival_s
    if len(t) < 3 or not t[-1] > t[0]:
        raise ValueError(
            f"fit_trace: {len(t)} request(s) over {t[-1] - t[0] if len(t) else 0:.6g} s is not "
            "enough; it needs at least 3 requests spanning a positive time"
        )
    gaps = np.diff(t)
    cv = float(gaps.std() / gaps.mean())
    return TraceFit(
        name=name,
        source=source,
        n_requests=len(t),
        duration_s=float(t[-1] - t[0]),
        rate_per_s=float(1.0 / gaps.mean()),
        interarrival_cv=cv,
        fast_gap_probability=_fit_fast_gap_probability(gaps, cv),
        dispersion_1s=dispersion_of_counts(t, 1.0),
        input_tokens=_fit_lognormal(f"{name} input_tokens", requests.input_tokens),
        output_tokens=_fit_lognormal(f"{name} output_tokens", requests.output_tokens),
    )


# ----------------------------------------------------------------------------- synthetic


def _as_tuple_matrix(mix: object) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(mix, dtype=np.float64))


@dataclass(frozen=True)
class WorkloadConfig:
    """Parameters of :class:`SyntheticWorkload`. Defaults: the Azure conversation fit.

    Attributes:
        rates_per_s: Mean arrival rate at each server [req/s] (>= 0); its length
            is the number of servers.
        interarrival_cv: Coefficient of variation of each server's inter-arrival
            times (>= 1; 1 is Poisson).
        fast_gap_probability: Probability that a gap comes from the short-gap
            phase of the H2 model (see :func:`fast_gap_probability_range`).
        input_tokens: Prompt-length distribution.
        output_tokens: Output-length distribution.
        task_names: Task types; requests carry an index into it.
        task_mix: Per-server probabilities over ``task_names`` [servers][tasks];
            None means uniform at every server.
        model_mix: Per-server probabilities over model indices [servers][models];
            None means every request asks for model 0.
        diurnal_amplitude: ``A`` of the rate multiplier
            ``1 + A sin(2 pi t / diurnal_period_s + diurnal_phase_rad)``, in
            [0, 1); 0 disables it. Applies to all servers alike.
        diurnal_period_s: Period of the profile [s]; 86400 s is one day.
        diurnal_phase_rad: Phase of the profile at ``t = 0`` [rad].
        slo: Latency budget and quality floor of every request.
    """

    rates_per_s: tuple[float, ...]
    interarrival_cv: float = AZURE_CONV_FIT.interarrival_cv
    fast_gap_probability: float = AZURE_CONV_FIT.fast_gap_probability
    input_tokens: LogNormalTokens = AZURE_CONV_FIT.input_tokens
    output_tokens: LogNormalTokens = AZURE_CONV_FIT.output_tokens
    task_names: tuple[str, ...] = TASK_NAMES
    task_mix: tuple[tuple[float, ...], ...] | None = None
    model_mix: tuple[tuple[float, ...], ...] | None = None
    diurnal_amplitude: float = 0.0
    diurnal_period_s: float = 86400.0
    diurnal_phase_rad: float = 0.0
    slo: SloConfig = SloConfig()

    def __post_init__(self) -> None:
        owner = "WorkloadConfig"
        rates = self.rates_per_s
        if isinstance(rates, str) or not isinstance(rates, Sequence) or len(rates) == 0:
            raise ValueError(
                f"{owner}.rates_per_s={rates!r} is not allowed; it must be a non-empty "
                "sequence of rates >= 0, one per server"
            )
        for i, r in enumerate(rates):
            check_real(f"{owner}.rates_per_s[{i}]", r, low=0.0)
        object.__setattr__(self, "rates_per_s", tuple(float(r) for r in rates))
        _check_arrivals(owner, self.interarrival_cv, self.fast_gap_probability)
        for f in ("input_tokens", "output_tokens"):
            if not isinstance(getattr(self, f), LogNormalTokens):
                raise ValueError(
                    f"{owner}.{f}={getattr(self, f)!r} is not allowed; it must be a LogNormalTokens"
                )
        names = _check_names(owner, "task_names", self.task_names)
        object.__setattr__(self, "task_names", names)
        n = len(self.rates_per_s)
        if self.task_mix is not None:
            mix = _check_mix(owner, "task_mix", self.task_mix, n, len(names))
            object.__setattr__(self, "task_mix", _as_tuple_matrix(mix))
        if self.model_mix is not None:
            mix = _check_mix(owner, "model_mix", self.model_mix, n, None)
            object.__setattr__(self, "model_mix", _as_tuple_matrix(mix))
        check_real(
            f"{owner}.diurnal_amplitude", self.diurnal_amplitude, low=0.0, high=1.0, high_open=True
        )
        check_real(f"{owner}.diurnal_period_s", self.diurnal_period_s, low=0.0, low_open=True)
        check_real(f"{owner}.diurnal_phase_rad", self.diurnal_phase_rad)
        if not isinstance(self.slo, SloConfig):
            raise ValueError(f"{owner}.slo={self.slo!r} is not allowed; it must be a SloConfig")

    @classmethod
    def from_fit(
        cls, fit: TraceFit, n_servers: int, *, load_scale: float = 1.0, **overrides: object
    ) -> WorkloadConfig:
        """A config whose arrivals and token counts follow ``fit``.

        Each server gets ``fit.rate_per_s * load_scale / n_servers`` req/s: the
        trace's whole load shared equally by the edge network.

        Args:
            fit: Fitted trace statistics, e.g. :data:`AZURE_CODE_FIT`.
            n_servers: Number of servers (>= 1).
            load_scale: Multiplier of the trace's total rate (> 0).
            **overrides: Any other :class:`WorkloadConfig` field.
        """
        check_int("n_servers", n_servers, 1)
        scale = check_real("WorkloadConfig.from_fit.load_scale", load_scale, low=0.0, low_open=True)
        per_server = fit.rate_per_s * scale / int(n_servers)
        kwargs: dict[str, object] = {
            "rates_per_s": (per_server,) * int(n_servers),
            "interarrival_cv": fit.interarrival_cv,
            "fast_gap_probability": fit.fast_gap_probability,
            "input_tokens": fit.input_tokens,
            "output_tokens": fit.output_tokens,
        }
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def n_servers(self) -> int:
        return len(self.rates_per_s)

    @property
    def n_models(self) -> int:
        return 1 if self.model_mix is None else len(self.model_mix[0])


class SyntheticWorkload:
    """Draws requests from a :class:`WorkloadConfig` (see the module docstring).

    Args:
        config: The workload parameters.
    """

    def __init__(self, config: WorkloadConfig) -> None:
        if not isinstance(config, WorkloadConfig):
            raise ValueError(f"config={config!r} is not allowed; it must be a WorkloadConfig")
        self.config = config
        n = config.n_servers
        self._rates = np.asarray(config.rates_per_s, dtype=np.float64)
        t_mix = (
            np.full((n, len(config.task_names)), 1.0 / len(config.task_names))
            if config.task_mix is None
            else np.asarray(config.task_mix)
        )
        m_mix = np.ones((n, 1)) if config.model_mix is None else np.asarray(config.model_mix)
        self._task_cum = _cumulative(t_mix)
        self._model_cum = _cumulative(m_mix)

    @property
    def n_servers(self) -> int:
        return self.config.n_servers

    def cumulative_profile(self, t_s: np.ndarray | float) -> np.ndarray:
        """Integrated rate multiplier ``int_0^t (1 + A sin(2 pi s / P + phase)) ds`` [s]."""
        c = self.config
        t = np.asarray(t_s, dtype=np.float64)
        if c.diurnal_amplitude == 0.0:
            return t
        w = 2.0 * math.pi / c.diurnal_period_s
        phi = c.diurnal_phase_rad
        return t + c.diurnal_amplitude / w * (math.cos(phi) - np.cos(w * t + phi))

    def generate(
        self,
        t0_s: float,
        duration_s: float,
        rng: np.random.Generator,
        *,
        rates_per_s: np.ndarray | None = None,
        task_mix: np.ndarray | None = None,
        model_mix: np.ndarray | None = None,
    ) -> Requests:
        """Requests arriving in ``[t0_s, t0_s + duration_s)``.

        Args:
            t0_s: Window start [s], >= 0 (absolute time, which places the
                diurnal profile).
            duration_s: Window length [s], >= 0.
            rng: The only source of randomness.
            rates_per_s: Per-server rates for this window, replacing the
                config's (e.g. drifting demand); shape [servers].
            task_mix: Per-server task probabilities for this window,
                [servers, tasks].
            model_mix: Per-server model probabilities for this window,
                [servers, models].

        Returns:
            The requests, sorted by arrival.
        """
        t0, t1 = _check_window(t0_s, duration_s)
        c = self.config
        n_srv = c.n_servers
        rates = self._rates
        if rates_per_s is not None:
            rates = np.asarray(rates_per_s, dtype=np.float64)
            if rates.shape != (n_srv,) or not np.isfinite(rates).all() or (rates < 0).any():
                raise ValueError(
                    f"rates_per_s={rates_per_s!r} is not allowed; "
                    f"it must be {n_srv} finite rates >= 0"
                )
        task_cum = self._task_cum
        if task_mix is not None:
            task_cum = _cumulative(
                _check_mix("generate", "task_mix", task_mix, n_srv, len(c.task_names))
            )
        model_cum = self._model_cum
        if model_mix is not None:
            model_cum = _cumulative(_check_mix("generate", "model_mix", model_mix, n_srv, None))

        big_l0, big_l1 = self.cumulative_profile(np.array([t0, t1]))
        u, origin = _h2_points(
            rates * (big_l1 - big_l0), c.interarrival_cv, c.fast_gap_probability, rng
        )
        arrival, origin = _wall_clock(self, big_l0 + u / rates[origin], origin, t0, t1)
        n = arrival.size
        task = _draw_categorical(task_cum[origin], rng)
        model = _draw_categorical(model_cum[origin], rng)
        out_tokens = c.output_tokens.sample(rng, n)
        return Requests._unchecked(
            arrival_s=arrival,
            origin=origin.astype(np.int32),
            model=model.astype(np.int16),
            input_tokens=c.input_tokens.sample(rng, n),
            output_tokens=out_tokens,
            task=task.astype(np.int16),
            slo_ms=c.slo.slo_ms(out_tokens),
            quality_floor=np.full(n, c.slo.quality_floor, dtype=np.float32),
        )


class SyntheticStream:
    """Epoch after epoch of a :class:`SyntheticWorkload`, drawn in chunks (the world's
    arrivals).

    Each server's arrivals are one continuous H2 renewal process in integrated-rate
    time (started stationary, as in ``generate``), so a silence that spans two
    windows is carried over (``generate`` restarts every window). Its points are
    drawn :data:`CHUNK_POINTS` at a time per server, and the per-request draws (task,
    model, prompt and output lengths) :data:`CHUNK_REQUESTS` requests at a time; each
    window consumes them in order. A window's rates scale the time its servers'
    processes advance (``rates * the integrated diurnal profile``), exactly as in
    ``generate``. The draws depend only on the generator and the windows asked for,
    so an episode is reproducible (and continues identically after pickling).

    Args:
        workload: the workload drawn from.
        rng: the generator of every draw.
    """

    #: Points drawn per server at a time.
    CHUNK_POINTS = 256
    #: Requests' attributes drawn at a time.
    CHUNK_REQUESTS = 4096

    def __init__(self, workload: SyntheticWorkload, rng: np.random.Generator) -> None:
        self.workload = workload
        self.rng = rng
        c = workload.config
        n = c.n_servers
        self._m_fast, self._m_slow = _h2_unit_means(c.interarrival_cv, c.fast_gap_probability)
        k = self.CHUNK_POINTS
        # stationary start: the first point from the equilibrium residual life
        p = c.fast_gap_probability
        first_fast = rng.random(n) < p * self._m_fast
        first = rng.standard_exponential(n) * np.where(first_fast, self._m_fast, self._m_slow)
        self._points = np.empty((n, k))
        self._points[:, 0] = first
        self._points[:, 1:] = first[:, None] + np.cumsum(self._gaps((n, k - 1)), axis=1)
        self._ptr = np.zeros(n, np.int64)
        self._used = np.zeros(n)
        self._attrs: dict[str, np.ndarray] = {}
        self._at = 0
        self._draw_attributes(0)

    def _gaps(self, shape) -> np.ndarray:
        p = self.workload.config.fast_gap_probability
        fast = self.rng.random(shape) < p
        return self.rng.standard_exponential(shape) * np.where(fast, self._m_fast, self._m_slow)

    def _refill(self, span: np.ndarray) -> None:
        """Draw more points for servers whose chunk ends before their window does (the
        chunk widens when one window needs more than half of it)."""
        while True:
            if not any_short(self._points, self._used, span):
                return
            short = np.flatnonzero(self._points[:, -1] < self._used + span)
            if not short.size:
                return
            width = self._points.shape[1]
            if (width - self._ptr[short]).max() > width // 2:
                wide = np.empty((self._points.shape[0], 2 * width))
                wide[:, :width] = self._points
                wide[:, width:] = self._points[:, -1:] + np.cumsum(
                    self._gaps((wide.shape[0], width)), axis=1
                )
                self._points = wide
                continue
            for i in short.tolist():
                rest = self._points[i, self._ptr[i] :].copy()
                fresh = self._points[i, -1] + np.cumsum(self._gaps(width - rest.size))
                self._points[i, : rest.size] = rest
                self._points[i, rest.size :] = fresh
                self._ptr[i] = 0

    def _draw_attributes(self, keep_from: int) -> None:
        """Draw the next chunk of per-request attributes (after the unused ones)."""
        c = self.workload.config
        m = self.CHUNK_REQUESTS
        new = {
            "u_task": self.rng.random(m),
            "u_model": self.rng.random(m),
            "input_tokens": c.input_tokens.sample(self.rng, m),
            "output_tokens": c.output_tokens.sample(self.rng, m),
        }
        old = self._attrs
        self._attrs = {
            k: np.concatenate([old[k][keep_from:], v]) if old else v for k, v in new.items()
        }
        self._at = 0

    def next_window(
        self, t0_s: float, duration_s: float, rates_per_s: np.ndarray, task_mix: np.ndarray
    ) -> Requests:
        """Requests arriving in ``[t0_s, t0_s + duration_s)`` at these rates and task mix
        (as :meth:`SyntheticWorkload.generate`, unchecked: the world's own arrays)."""
        wl = self.workload
        c = wl.config
        t0, t1 = t0_s, t0_s + duration_s
        rates = np.asarray(rates_per_s, dtype=np.float64)
        ends = wl.cumulative_profile(np.array([t0, t1]))
        big_l0, big_l1 = ends
        span = rates * (big_l1 - big_l0)
        self._refill(span)
        u, origin = take_points(self._points, self._ptr, self._used, span)
        arrival, origin = _wall_clock(wl, big_l0 + u / rates[origin], origin, t0, t1, ends)
        n = arrival.size
        if self._at + n > self._attrs["u_task"].size:
            self._draw_attributes(self._at)
            while n > self._attrs["u_task"].size:
                self._draw_attributes(0)
        a, b = self._at, self._at + n
        self._at = b
        attrs = self._attrs
        task_cum = cumulative_rows(np.asarray(task_mix, dtype=np.float64))
        task = inverse_cdf(attrs["u_task"][a:b], task_cum, origin)
        model = inverse_cdf(attrs["u_model"][a:b], wl._model_cum, origin)
        out_tokens = attrs["output_tokens"][a:b]
        return Requests._unchecked(
            arrival_s=arrival,
            origin=origin.astype(np.int32),
            model=model,
            input_tokens=attrs["input_tokens"][a:b].copy(),
            output_tokens=out_tokens.copy(),
            task=task,
            slo_ms=c.slo.slo_ms(out_tokens),
            quality_floor=np.full(n, c.slo.quality_floor, dtype=np.float32),
        )


# ----------------------------------------------------------------------------- trace replay


@dataclass(frozen=True)
class TraceMapping:
    """How trace rows map onto the scenario's servers, models and tasks.

    Values in a trace's ``server``/``model``/``task`` columns must be names
    listed here (compared as strings, surrounding spaces stripped); requests
    carry their index. A missing column is filled by independent draws, one
    per row, from the weights (uniform when None) with the loader's ``rng``.

    Attributes:
        servers: Server names.
        models: Model names.
        tasks: Task names.
        server_weights: Probabilities over ``servers`` for rows without a server.
        model_weights: Probabilities over ``models`` for rows without a model.
        task_weights: Probabilities over ``tasks`` for rows without a task.
        slo: SLO rule for rows without ``slo_ms``/``quality_floor`` columns.
    """

    servers: tuple[str, ...] = ("server0",)
    models: tuple[str, ...] = ("model0",)
    tasks: tuple[str, ...] = TASK_NAMES
    server_weights: tuple[float, ...] | None = None
    model_weights: tuple[float, ...] | None = None
    task_weights: tuple[float, ...] | None = None
    slo: SloConfig = SloConfig()

    def __post_init__(self) -> None:
        for names, weights in (
            ("servers", "server_weights"),
            ("models", "model_weights"),
            ("tasks", "task_weights"),
        ):
            values = _check_names("TraceMapping", names, getattr(self, names))
            object.__setattr__(self, names, values)
            w = getattr(self, weights)
            if w is not None:
                arr = _check_probabilities("TraceMapping", weights, w, len(values))
                object.__setattr__(self, weights, tuple(float(v) for v in arr))
        if not isinstance(self.slo, SloConfig):
            raise ValueError(
                f"TraceMapping.slo={self.slo!r} is not allowed; it must be a SloConfig"
            )


class TraceWorkload:
    """Serves windows of a loaded trace through the :class:`Workload` interface.

    With ``loop=True`` the trace repeats with period ``period_s``: copy ``k``
    is shifted by ``k * period_s``. With ``loop=False`` windows after the last
    request are empty.

    Args:
        requests: The trace; arrival times must be >= 0.
        loop: Repeat the trace forever.
        period_s: Repeat period [s]; must exceed the last arrival. Default: the
            last arrival plus the mean inter-arrival gap, so that the seam
            looks like an ordinary gap.
    """

    def __init__(
        self, requests: Requests, *, loop: bool = True, period_s: float | None = None
    ) -> None:
        if not isinstance(requests, Requests) or len(requests) == 0:
            raise ValueError("TraceWorkload.requests must be a non-empty Requests")
        t = requests.arrival_s
        if t[0] < 0:
            raise ValueError(
                f"TraceWorkload.requests starts at {t[0]!r} s; arrival times must be >= 0"
            )
        last = float(t[-1])
        if period_s is None:
            period_s = last + (last - float(t[0])) / (len(t) - 1) if len(t) > 1 else 0.0
            if not period_s > last:
                raise ValueError(
                    "TraceWorkload.period_s cannot be derived from a trace whose requests all "
                    f"arrive at {last!r} s; pass period_s > {last!r}"
                )
        else:
            period_s = check_real("TraceWorkload.period_s", period_s, low=last, low_open=True)
        self.requests = requests
        self.loop = bool(loop)
        self.period_s = float(period_s)

    def generate(
        self, t0_s: float, duration_s: float, rng: np.random.Generator | None = None
    ) -> Requests:
        """Requests in ``[t0_s, t0_s + duration_s)``; ``rng`` is unused (replay is exact)."""
        t0, t1 = _check_window(t0_s, duration_s)
        if not self.loop:
            return self.requests.window(t0, t1)
        period = self.period_s
        parts = []
        for k in range(int(math.floor(t0 / period)), int(math.ceil(t1 / period))):
            part = self.requests.window(t0 - k * period, t1 - k * period)
            if len(part):
                parts.append(part.shifted(k * period) if k else part)
        out = Requests.concat(parts)
        # Shifted copies can round onto t1; keep the window half-open.
        return out._with_arrival(_clip_to_window(out.arrival_s, t0, t1))


# The file readers moved to coel_env.core.io.traces; their names stay importable from
# here (its ``__all__``), loaded on first use (the readers import this module).


def __getattr__(name: str) -> object:
    """A reader's name from its :mod:`coel_env.core.io` module (PEP 562)."""
    from coel_env.core.io import traces

    if name in traces.__all__:
        return getattr(traces, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
