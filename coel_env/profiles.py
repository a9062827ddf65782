"""Device profiles: measured expert-FFN latencies, the latency model fitted to them,
and devices derived from datasheet figures with the same model.

The latency model (one form for every device, mode and kernel kind)::

    kernel_ms = smax(W / bw,  W / bw_stream + F / tp;  p)
    t_ms      = c + smax(n_ops * op_ms, kernel_ms;  p)

where ``W`` is the weight bytes of the expert, ``F`` its matmul FLOPs for the
token count, ``smax(a, b; p) = (a^p + b^p)^(1/p)`` a smooth maximum (the knee of
the roofline), ``n_ops`` the kernels one expert forward launches (5 gated:
gate, up, silu, mul, down; 3 not gated) and ``op_ms`` the host time to dispatch
one of them. In eager PyTorch the GPU kernels hide under the dispatch floor for
small experts (the profiles README: small experts cost 0.05-0.1 ms in eager mode
against 0.01-0.03 ms of kernel time); CUDA-graph replay removes it. ``bw`` is the
weight-streaming bandwidth of a memory-bound call, ``bw_stream`` and ``tp`` the
weight re-read and the matrix throughput of a compute-bound one. The second term
in the first ``smax`` is "roofline, or better if the data says so": CPUs keep
streaming weights at a lower rate while compute-bound.

Parameters are fitted per (device, mode, kind) by robust least squares on the
log of the ratio predicted / measured (scipy ``least_squares``, soft-L1 loss).
Measurements of the same kind taken in a different session (the bf16 rows that
sit beside the weight-only-quantized rows, in their own file) share the kernel
parameters and get two nuisance factors per file, one on the dispatch floor and
one on the kernel time (``run_factors``): the same shape was measured 30-60%
apart in two sessions on the small experts, where host load dominates. They are
reported by ``coel cost validate`` (with the error without them); the simulator
always uses the primary run (factors 1).

Kinds: ``bf16``, ``fp16``, ``fp32`` (eager; ``bf16`` also in cudagraph mode) and
the weight-only quantized kernels ``w8`` and ``w4`` that were really measured. The
eager file's ``fp8``/``int8`` rows are naive cast-and-rescale paths, not quantized
kernels (profiles README), and are not fitted. A bit width without a measured
kernel on a device uses the nearest measured quantized kernel with its own weight
bytes: 3 and 2 bits scale from the 4-bit fit by weight bytes (profiles README);
8 bits on the H200, where only 4-bit weights were measured, is derived the same
way from the 4-bit fit, and marked so in :func:`DeviceProfile.kernel_for`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from coel_env.utils import frozen_reduce

#: Expert shapes measured in the shared profiles: name -> (d_model, d_ff, gated).
#: Sources: the config.json of each public model (see coel_env.catalog).
EXPERT_SHAPES: Mapping[str, tuple[int, int, bool]] = MappingProxyType(
    {
        "mixtral-8x7b": (4096, 14336, True),
        "phi-3.5-moe": (4096, 6400, True),
        "gpt-oss-20b": (2880, 2880, True),
        "qwen1.5-moe-a2.7b": (2048, 1408, True),
        "qwen1.5-moe-shared": (2048, 5632, True),
        "olmoe-1b-7b": (2048, 1024, True),
        "switch-base": (768, 3072, False),
    }
)

#: Kernel kinds the latency model is fitted for.
FITTED_KINDS = ("bf16", "fp16", "fp32", "w8", "w4")
#: Rows of these kinds are naive paths in the eager file; never fitted.
NAIVE_KINDS = ("fp8", "int8")
MODES = ("eager", "cudagraph")

_REQUIRED_ANY = (("median_ms", "graph_ms"), ("dtype", "kind"))
_REQUIRED = ("model", "d_model", "d_ff", "tokens")


def n_ops(gated: bool) -> int:
    """Kernels one expert forward launches in eager PyTorch (gate, up, act, mul, down)."""
    return 5 if gated else 3


def n_mats(gated: bool) -> int:
    return 3 if gated else 2


def _smax(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    """Smooth maximum (a^p + b^p)^(1/p) of positive a, b."""
    hi = np.maximum(a, b)  # scale by the larger so the powers cannot overflow
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


@dataclass(frozen=True)
class KernelFit:
    """Fitted latency model of one kernel kind on one device in one mode.

    Attributes:
        bw_gbps: weight bandwidth of a memory-bound call [GB/s].
        stream_gbps: weight re-read bandwidth while compute-bound [GB/s].
        tflops: matrix throughput while compute-bound [TFLOP/s].
        c_ms: fixed time per call [ms].
        op_ms: host dispatch time per launched kernel [ms] (eager floor).
        p: sharpness of the smooth maximum (>= 1).
        source: where the parameters come from (files, or "derived from ...").
        derived: True when not fitted to measurements of this device.
        n_rows: measured rows behind the fit (0 when derived).
    """

    bw_gbps: float
    stream_gbps: float
    tflops: float
    c_ms: float
    op_ms: float
    p: float
    source: str
    derived: bool = False
    n_rows: int = 0

    def latency_ms(self, weight_bytes, flops, ops) -> np.ndarray:
        """Predicted time of one call (vectorised over numpy arrays)."""
        w = np.asarray(weight_bytes, dtype=float) / 1e6  # [MB] -> ms at GB/s
        f = np.maximum(np.asarray(flops, dtype=float), 1.0) / 1e9  # [GFLOP] -> ms at TFLOP/s
        kernel = _smax(w / self.bw_gbps, w / self.stream_gbps + f / self.tflops, self.p)
        floor = np.maximum(np.asarray(ops, dtype=float) * self.op_ms, 1e-12)
        return self.c_ms + _smax(floor, kernel, self.p)

    @property
    def weight_gbps(self) -> float:
        """Effective weight bandwidth of a memory-bound call (both streams combined) [GB/s]."""
        p = self.p
        return float((self.bw_gbps**-p + self.stream_gbps**-p) ** (-1 / p))

    def without_dispatch(self) -> KernelFit:
        """The same kernels replayed from a CUDA graph: no host dispatch floor."""
        return replace(self, op_ms=1e-9, source=self.source + " (dispatch removed)", derived=True)

    def scaled(self, bw: float, tp: float, source: str) -> KernelFit:
        """Another device with the same efficiency: bandwidths x bw, throughput x tp."""
        return replace(
            self,
            bw_gbps=self.bw_gbps * bw,
            stream_gbps=self.stream_gbps * bw,
            tflops=self.tflops * tp,
            source=source,
            derived=True,
            n_rows=0,
        )


@dataclass(frozen=True)
class AttentionFit:
    """Dense part of a layer: QKV/O projections and scaled-dot-product attention.

    ``proj`` uses the device's bf16 expert kernel model with its own fixed time
    ``proj_c_ms``; ``sdpa`` is ``sdpa_c_ms + smax(KV bytes / sdpa_gbps,
    attention FLOPs / sdpa_tflops)``.
    """

    proj_c_ms: float
    sdpa_c_ms: float
    sdpa_gbps: float
    sdpa_tflops: float
    source: str
    derived: bool = False


@dataclass(frozen=True)
class CopyFit:
    """Host <-> device copy: ``latency_ms + bytes / gbps`` (pinned memory)."""

    gbps: float
    latency_ms: float
    source: str
    derived: bool = False

    def copy_ms(self, nbytes) -> np.ndarray:
        return self.latency_ms + np.asarray(nbytes, dtype=float) / (self.gbps * 1e6)


@dataclass(frozen=True)
class LayerFit:
    """Layer-level terms of an eager MoE layer beyond its expert FFNs, fitted to whole layers.

    :func:`coel_env.cost.moe_layer_breakdown` with ``terms="calibrated"`` composes a
    layer as the router GEMM (the device's 16-bit kernel fit without its host floor)
    plus ``layer_ms`` and ``mask_ms_per_mvalue`` per million values of the dense one-hot
    routing mask (``tokens x top_k x n_experts``); every active expert's FFN (the expert
    fit, unchanged) plus its dispatch: ``active_ms``, ``move_ms_per_mb`` per MB of its
    tokens' activations gathered, scaled and scatter-added (three passes of ``d_model``
    bf16 values per token), and the host time of ``dispatch_ops`` more kernel launches
    that join the FFN's own launches (hidden under the GPU time of a large expert, not of a small
    one); and the shared experts as in the first-principles model.

    Attributes:
        layer_ms: fixed time per layer: softmax, top-k, sort and mask kernels of the
            router and the final combine [ms].
        active_ms: fixed time per active expert (the host waiting for its token
            indices) [ms].
        move_ms_per_mb: time per MB of routed activations moved by dispatch [ms/MB].
        dispatch_ops: kernel launches per active expert besides its FFN.
        mask_ms_per_mvalue: time per million values of the one-hot routing mask that the
            eager layer builds, sums per expert and searches once per active expert
            (``torch.where``) [ms]; 0 in terms fitted before it was a term.
        source: where the terms come from (a file, or "derived from ...").
        derived: True when not fitted to whole layers measured on this device.
        n_rows: measured layers behind the fit (0 when derived).
        mode: the execution mode the layers were measured in (``"eager"``).
    """

    layer_ms: float
    active_ms: float
    move_ms_per_mb: float
    dispatch_ops: float
    source: str
    derived: bool = False
    n_rows: int = 0
    mode: str = "eager"
    mask_ms_per_mvalue: float = 0.0

    def __post_init__(self) -> None:
        for fname in ("layer_ms", "active_ms", "move_ms_per_mb", "dispatch_ops",
                      "mask_ms_per_mvalue"):  # fmt: skip
            v = getattr(self, fname)
            ok = isinstance(v, int | float | np.floating) and not isinstance(v, bool)
            if not (ok and math.isfinite(v) and v >= 0):
                raise ValueError(f"{fname}={v!r} is not allowed; must be a finite number >= 0")
            object.__setattr__(self, fname, float(v))
        if self.mode != "eager":
            raise ValueError(
                f"mode={self.mode!r} is not allowed; layer terms are fitted to eager layers: "
                "'eager'"
            )

    def to_dict(self) -> dict:
        """The terms as a JSON-ready dict (:func:`read_layer_fit` reads it back)."""
        return dataclasses.asdict(self)

    def derived_for(self, bw_scale: float, source: str) -> LayerFit:
        """The terms on another device: host times kept (as the kernel fits keep their
        dispatch times; the routing-mask time too: at about 6 ns per value on the H200 it
        is no bandwidth cost), activation moves faster by ``bw_scale`` (its memory
        bandwidth over this device's)."""
        return replace(
            self, move_ms_per_mb=self.move_ms_per_mb / bw_scale, source=source, derived=True,
            n_rows=0,
        )  # fmt: skip


@dataclass(frozen=True)
class DeviceProfile:
    """One compute device: a GPU (with PCIe or unified memory) or a host CPU.

    Attributes:
        name: catalog name, e.g. ``"h200"``.
        kind: ``"gpu"`` or ``"cpu"``.
        measured: True for profiles fitted to our measurements.
        description: what the device is, and where its figures come from.
        memory_gb: device memory [GB] (GPU memory, or host memory for a CPU).
        mem_bw_gbps: datasheet memory bandwidth [GB/s].
        peak_tflops: datasheet dense bf16/fp16 matrix throughput [TFLOP/s].
        power_busy_w: board power while busy [W].
        power_idle_w: board power while idle [W].
        unified_memory: True when CPU and GPU share memory (no PCIe hop).
        host_cpu: name of the host CPU profile paired with a GPU.
        kernels: fitted models keyed by ``(mode, kind)``.
        attention: dense-part model (GPUs).
        pcie: host -> device copy model (None on unified memory and CPUs).
        run_factors: (floor, kernel) nuisance factors of secondary measurement
            files, keyed ``"file [mode/kind]"``.
        layer: layer-level terms fitted to whole layers measured on this device
            (None: :func:`coel_env.cost.layer_fit` supplies the shipped or derived ones).
    """

    name: str
    kind: str
    measured: bool
    description: str
    memory_gb: float
    mem_bw_gbps: float
    peak_tflops: float
    power_busy_w: float
    power_idle_w: float
    unified_memory: bool = False
    host_cpu: str | None = None
    kernels: Mapping[tuple[str, str], KernelFit] = field(default_factory=dict)
    attention: AttentionFit | None = None
    pcie: CopyFit | None = None
    run_factors: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    layer: LayerFit | None = None

    __reduce__ = frozen_reduce

    def __post_init__(self) -> None:
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"kind={self.kind!r} is not allowed; allowed: 'gpu', 'cpu'")
        for fname in ("memory_gb", "mem_bw_gbps", "peak_tflops", "power_busy_w"):
            v = getattr(self, fname)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{fname}={v!r} is not allowed; must be a positive number")
        if not self.kernels:
            raise ValueError(f"device {self.name!r}: no fitted kernels")
        object.__setattr__(self, "kernels", MappingProxyType(dict(self.kernels)))
        object.__setattr__(self, "run_factors", MappingProxyType(dict(self.run_factors)))

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(sorted({m for m, _ in self.kernels}))

    def kernel_for(self, bits: int, mode: str = "eager") -> tuple[KernelFit, bool]:
        """The kernel model for weights at ``bits`` in ``mode``.

        Returns:
            ``(fit, derived)``; ``derived`` is True when the bit width has no
            measured kernel of its own on this device and is scaled by weight
            bytes from the nearest measured quantized kernel (see module doc).
        """
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not allowed; allowed modes: {', '.join(MODES)}")
        if bits == 16:
            prefs = ["bf16", "fp16"]
        elif bits == 8:
            prefs = ["w8", "w4"]
        elif bits in (4, 3, 2):
            prefs = ["w4", "w8"]
        else:
            raise ValueError(f"bits={bits!r} is not allowed; allowed bit widths: 16, 8, 4, 3, 2")
        for i, k in enumerate(prefs):
            if (mode, k) in self.kernels:
                exact = (bits == 16) or (bits == 8 and k == "w8") or (bits == 4 and k == "w4")
                return self.kernels[(mode, k)], (i > 0 or not exact)
        if mode == "cudagraph":
            fit, _ = self.kernel_for(bits, "eager")
            return fit.without_dispatch(), True
        raise ValueError(
            f"device {self.name!r} has no kernel for bits={bits} in mode={mode!r}; "
            f"fitted: {sorted(self.kernels)}"
        )


# --------------------------------------------------------------------------- reading


def read_expert_csv(path: str | Path, device: str | None = None) -> pd.DataFrame:
    """Read one measured expert file (any of the shared schemas, or ``coel profile`` output).

    Accepted columns: ``model, d_model, d_ff, tokens``, one of ``median_ms``/``graph_ms``
    (graph rows are CUDA-graph replay), one of ``dtype``/``kind``, and optionally
    ``device, gated, weight_bytes, mode``. Missing ``gated`` comes from
    :data:`EXPERT_SHAPES` (gated when the shape is unknown); missing
    ``weight_bytes`` from the shape at 2 bytes per weight.

    Returns:
        A frame with columns ``model, d_model, d_ff, gated, kind, mode, tokens,
        median_ms, weight_bytes, flops, run``.

    Raises:
        ValueError: the file is missing, not a CSV, lacks columns, or holds
            non-numeric, non-positive or non-finite values.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"profile file {str(p)!r} does not exist")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"profile file {str(p)!r} is not a readable CSV: {exc}") from None
    cols = set(df.columns)
    missing = [c for c in _REQUIRED if c not in cols]
    missing += ["/".join(alt) for alt in _REQUIRED_ANY if not any(a in cols for a in alt)]
    if missing:
        raise ValueError(
            f"profile file {str(p)!r} lacks columns {missing}; required: "
            f"{', '.join(_REQUIRED)}, median_ms (or graph_ms), dtype (or kind); "
            f"found: {sorted(cols)}"
        )
    if len(df) == 0:
        raise ValueError(f"profile file {str(p)!r} has no rows")
    graph = "graph_ms" in cols and "median_ms" not in cols
    out = pd.DataFrame(
        {
            "model": df["model"].astype(str),
            "kind": (df["dtype"] if "dtype" in cols else df["kind"]).astype(str),
        }
    )
    for c in ("d_model", "d_ff", "tokens"):
        out[c] = _numeric(df[c], c, p)
    out["median_ms"] = _numeric(df["graph_ms" if graph else "median_ms"], "median_ms", p)
    if "mode" in cols:
        out["mode"] = df["mode"].astype(str)
        bad = sorted(set(out["mode"]) - set(MODES))
        if bad:
            raise ValueError(f"profile file {str(p)!r}: mode {bad} not allowed; allowed: {MODES}")
    else:
        out["mode"] = "cudagraph" if graph else "eager"
    if "gated" in cols:
        out["gated"] = _numeric(df["gated"], "gated", p, positive=False).astype(bool)
    else:
        out["gated"] = [EXPERT_SHAPES.get(m, (0, 0, True))[2] for m in out["model"]]
    if "weight_bytes" in cols:
        out["weight_bytes"] = _numeric(df["weight_bytes"], "weight_bytes", p)
    else:
        out["weight_bytes"] = [
            n_mats(g) * d * f * 2 for g, d, f in zip(out.gated, out.d_model, out.d_ff, strict=True)
        ]
    if device is not None and "device" in cols:
        out = out[df["device"].astype(str).values == device]
    out["flops"] = 2.0 * out.tokens * out.gated.map(n_mats) * out.d_model * out.d_ff
    out["run"] = p.name
    return out.reset_index(drop=True)


def _numeric(col: pd.Series, name: str, path: Path, positive: bool = True) -> pd.Series:
    vals = pd.to_numeric(col, errors="coerce")
    bad = vals.isna() | ~np.isfinite(vals) | ((vals <= 0) if positive else (vals < 0))
    if bad.any():
        i = int(np.flatnonzero(bad.values)[0])
        rule = "a positive finite number" if positive else "a non-negative number"
        raise ValueError(
            f"profile file {str(path)!r}: column {name!r} row {i + 1} has {col.iloc[i]!r}; "
            f"must be {rule}"
        )
    return vals.astype(float)


# --------------------------------------------------------------------------- fitting

#: Sharpness values tried for the smooth maximum; the best fit wins.
_P_GRID = (1.5, 2.0, 3.0, 5.0, 8.0, 12.0)
_X0 = np.log([1000.0, 1000.0, 100.0, 0.01, 0.01])


def _unpack(x: np.ndarray, p: float) -> dict:
    bw, stream, tp, c, op = np.exp(x[:5])
    return {"bw_gbps": bw, "stream_gbps": stream, "tflops": tp, "c_ms": c, "op_ms": op, "p": p}


def fit_kernel(rows: pd.DataFrame, primary_run: str | None = None) -> tuple[KernelFit, dict]:
    """Fit :class:`KernelFit` to the rows of one (device, mode, kind).

    Rows from a secondary file (another measuring session) share the kernel
    parameters but get two nuisance factors: one on the host dispatch floor and
    one on the kernel time, since a session's host load and memory state shift
    them independently.

    Args:
        rows: output of :func:`read_expert_csv` (possibly several files).
        primary_run: the file whose factors are fixed to 1 (default: the run
            with the most rows).

    Returns:
        ``(fit, run_factors)`` with ``(floor, kernel)`` factors for every
        non-primary run.
    """
    runs = sorted(rows.run.unique(), key=lambda r: (-(rows.run == r).sum(), r))
    primary = primary_run if primary_run in runs else runs[0]
    others = [r for r in runs if r != primary]
    run_idx = np.array([others.index(r) if r in others else -1 for r in rows.run])
    w, f = rows.weight_bytes.values, rows.flops.values
    ops = rows.gated.map(n_ops).values
    y = np.log(rows.median_ms.values)
    best = None
    for p in _P_GRID:

        def resid(x, p=p):
            fit = KernelFit(**_unpack(x, p), source="")
            floor_f, kern_f = _run_scales(x[5:], run_idx)
            return np.log(fit.latency_ms(w * kern_f, f * kern_f, ops * floor_f)) - y

        x0 = np.concatenate([_X0, np.zeros(2 * len(others))])
        r = least_squares(resid, x0, loss="soft_l1", f_scale=0.05, max_nfev=4000)
        if best is None or r.cost < best[0].cost:
            best = (r, p)
    r, p = best
    fit = KernelFit(**_unpack(r.x, p), source=", ".join(runs), n_rows=len(rows))
    factors = np.exp(r.x[5:]).reshape(-1, 2)
    return fit, {run: (float(a), float(b)) for run, (a, b) in zip(others, factors, strict=True)}


def _run_scales(x: np.ndarray, run_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (floor, kernel) scale factors from the log run factors ``x``."""
    if len(x) == 0:
        return np.ones(len(run_idx)), np.ones(len(run_idx))
    lf = np.exp(x).reshape(-1, 2)
    lf = np.vstack([lf, [1.0, 1.0]])  # index -1: the primary run
    return lf[run_idx, 0], lf[run_idx, 1]


def predict_rows(
    fit: KernelFit, rows: pd.DataFrame, run_factors: Mapping[str, tuple[float, float]]
) -> np.ndarray:
    """Predicted median_ms of measured rows, with their runs' (floor, kernel) factors."""
    ff = np.array([run_factors.get(r, (1.0, 1.0))[0] for r in rows.run])
    kf = np.array([run_factors.get(r, (1.0, 1.0))[1] for r in rows.run])
    ops = rows.gated.map(n_ops).values
    return fit.latency_ms(rows.weight_bytes.values * kf, rows.flops.values * kf, ops * ff)


def fit_device_rows(rows: pd.DataFrame, primary_runs: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Fit every (mode, kind) present in ``rows``; naive fp8/int8 rows are skipped."""
    kernels, factors = {}, {}
    rows = rows[rows.kind.isin(FITTED_KINDS)]
    for (mode, kind), grp in rows.groupby(["mode", "kind"], sort=True):
        primary = next((r for r in primary_runs if r in set(grp.run)), None)
        fit, rf = fit_kernel(grp, primary)
        kernels[(mode, kind)] = fit
        factors.update({f"{run} [{mode}/{kind}]": v for run, v in rf.items()})
    return kernels, factors


#: Columns of a whole-layer file (``h200_moe_layers_eager_calib.csv``, ``coel profile --layers``).
LAYER_COLUMNS = (
    "device", "model", "tokens", "n_experts", "top_k", "shared_ff", "layer_ms",
    "active_experts", "expert_token_counts",
)  # fmt: skip
_LAYER_REQUIRED = ("model", "tokens", "top_k", "layer_ms", "expert_token_counts")


def read_layer_csv(path: str | Path, device: str | None = None) -> pd.DataFrame:
    """Read a whole-layer file (:data:`LAYER_COLUMNS`; ``device``, ``n_experts``,
    ``shared_ff`` and ``active_experts`` may be missing).

    Args:
        path: the CSV.
        device: keep only rows of this ``device`` column value (``"cuda"``, ``"cpu"``).

    Returns:
        A frame with columns ``device, model, tokens, top_k, layer_ms, counts`` (one
        float array of routed-expert token counts per row) and ``run`` (the file name).

    Raises:
        ValueError: a missing or unreadable file, missing columns, a non-positive
            ``tokens``/``top_k``/``layer_ms``, token counts that are not non-negative
            integers or do not add up to ``tokens * top_k``, or an ``n_experts`` /
            ``active_experts`` that disagrees with them; the message names the row.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"layer file {str(p)!r} does not exist")
    try:
        df = pd.read_csv(p, dtype={"expert_token_counts": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"layer file {str(p)!r} is not a readable CSV: {exc}") from None
    missing = [c for c in _LAYER_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(
            f"layer file {str(p)!r} lacks columns {missing}; required: "
            f"{', '.join(_LAYER_REQUIRED)}; found: {sorted(df.columns)}"
        )
    if len(df) == 0:
        raise ValueError(f"layer file {str(p)!r} has no rows")
    out = pd.DataFrame({"model": df["model"].astype(str)})
    out["device"] = df["device"].astype(str) if "device" in df.columns else "cuda"
    for c in ("tokens", "top_k", "layer_ms"):
        out[c] = _numeric(df[c], c, p)
    counts = []
    for i, text in enumerate(df["expert_token_counts"]):
        where = f"layer file {str(p)!r}: column 'expert_token_counts' row {i + 1}"
        try:
            c = np.array([float(v) for v in str(text).split()])
        except ValueError:
            raise ValueError(f"{where} has {text!r}; must be space-separated integers") from None
        if c.size == 0 or not np.all(np.isfinite(c)) or (c < 0).any() or (c % 1 != 0).any():
            raise ValueError(f"{where} has {text!r}; must be space-separated integers >= 0")
        r = df.iloc[i]
        if c.sum() != out.tokens.iloc[i] * out.top_k.iloc[i]:
            raise ValueError(
                f"{where}: the counts add up to {c.sum():g}; must be tokens x top_k = "
                f"{out.tokens.iloc[i]:g} x {out.top_k.iloc[i]:g}"
            )
        for col, want in (("n_experts", c.size), ("active_experts", int((c > 0).sum()))):
            if col in df.columns and float(r[col]) != want:
                raise ValueError(
                    f"layer file {str(p)!r}: column {col!r} row {i + 1} has {r[col]}; "
                    f"the token counts give {want}"
                )
        counts.append(c)
    out["counts"] = counts
    if device is not None:
        out = out[out["device"].values == device]
    out["run"] = p.name
    return out.reset_index(drop=True)


def read_layer_fit(path: str | Path) -> LayerFit:
    """Read layer terms written by ``coel cost calibrate --layers`` (a JSON object).

    Raises:
        ValueError: a missing file, invalid JSON, or missing or bad terms.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"layer-fit file {str(p)!r} does not exist")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"layer-fit file {str(p)!r} is not valid JSON: {exc}") from None
    need = ("layer_ms", "active_ms", "move_ms_per_mb", "dispatch_ops")
    if not isinstance(d, dict) or any(k not in d for k in need):
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"layer-fit file {str(p)!r} needs keys {list(need)}; found {got}")
    known = {f.name for f in dataclasses.fields(LayerFit)}
    kw = {k: v for k, v in d.items() if k in known}
    kw.setdefault("source", p.name)
    try:
        return LayerFit(**kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"layer-fit file {str(p)!r}: {exc}") from None


def layer_fit_path(profile_csv: str | Path) -> Path:
    """Where the layer terms of a ``coel profile`` profile live: ``<stem>.layer_fit.json``."""
    p = Path(profile_csv)
    return p.with_name(p.stem + ".layer_fit.json")


def read_copies_csv(path: str | Path) -> CopyFit:
    """Fit ``latency + bytes / bandwidth`` to the pinned host->device rows of a copies file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"copies file {str(p)!r} does not exist")
    df = pd.read_csv(p)
    need = ("direction", "pinned", "bytes", "median_ms")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"copies file {str(p)!r} lacks columns {missing}; required: {need}")
    h2d = df[(df.direction == "h2d") & (df.pinned.astype(int) == 1)]
    if len(h2d) < 2:
        raise ValueError(f"copies file {str(p)!r} needs >= 2 pinned h2d rows, has {len(h2d)}")
    b = _numeric(h2d["bytes"], "bytes", p).values
    t = _numeric(h2d["median_ms"], "median_ms", p).values
    # least squares on relative error: t ~ lat + b / (gbps * 1e6)
    a = np.stack([np.ones_like(b), b / 1e6], axis=1) / t[:, None]
    (lat, inv_gbps), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    return CopyFit(gbps=float(1 / inv_gbps), latency_ms=float(max(lat, 0.0)), source=p.name)


def fit_attention(path: str | Path, bf16: KernelFit) -> AttentionFit:
    """Fit the dense part of a layer to an attention file (``h200_gpu_attention.csv`` schema)."""
    p = Path(path)
    df = pd.read_csv(p)
    need = ("d_model", "heads", "kv_heads", "head_dim", "phase", "batch", "tokens", "kv_len")
    missing = [c for c in (*need, "proj_ms", "sdpa_ms") if c not in df.columns]
    if missing:
        raise ValueError(f"attention file {str(p)!r} lacks columns {missing}")
    shape = dict(
        d_model=df.d_model.values,
        heads=df.heads.values,
        kv_heads=df.kv_heads.values,
        head_dim=df.head_dim.values,
        batch=df.batch.values,
        tokens=df.tokens.values,
        kv_len=df.kv_len.values,
        prefill=(df.phase == "prefill").values,
    )
    pw, pf = gqa_proj_cost(**shape)
    kvb, af = gqa_sdpa_cost(**shape)

    kernel = bf16.without_dispatch()

    def r_proj(x):
        return np.log(np.exp(x[0]) + kernel.latency_ms(pw, pf, 4) - kernel.c_ms) - np.log(
            df.proj_ms
        )

    rp = least_squares(r_proj, [np.log(0.01)], loss="soft_l1", f_scale=0.05)

    def r_sdpa(x):
        c, bw, tp = np.exp(x)
        return np.log(c + _smax(kvb / 1e6 / bw, af / 1e9 / tp, 3.0)) - np.log(df.sdpa_ms)

    rs = least_squares(r_sdpa, np.log([0.01, 1000.0, 100.0]), loss="soft_l1", f_scale=0.05)
    c, bw, tp = np.exp(rs.x)
    return AttentionFit(
        proj_c_ms=float(np.exp(rp.x[0])),
        sdpa_c_ms=float(c),
        sdpa_gbps=float(bw),
        sdpa_tflops=float(tp),
        source=p.name,
    )


def gqa_proj_cost(d_model, heads, kv_heads, head_dim, batch, tokens, **_):
    """Weight bytes (bf16) and FLOPs of Q, K, V and O projections for batch x tokens."""
    params = np.asarray(d_model) * np.asarray(head_dim) * (2 * np.asarray(heads) + 2 * kv_heads)
    return 2.0 * params, 2.0 * params * np.asarray(batch) * np.asarray(tokens)


def gqa_sdpa_cost(d_model, heads, kv_heads, head_dim, batch, tokens, kv_len, prefill, **_):
    """KV bytes read (bf16) and FLOPs of attention (QK^T and PV; causal halves prefill)."""
    kv_bytes = 2.0 * 2 * np.asarray(batch) * kv_len * kv_heads * head_dim
    flops = 4.0 * np.asarray(batch) * tokens * kv_len * heads * head_dim
    return kv_bytes, np.where(prefill, flops / 2, flops)


# --------------------------------------------------------------------------- devices


def _data_path(name: str) -> Path:
    return Path(str(resources.files("coel_env") / "data" / "profiles" / name))


#: Primary measurement file per measured device; the others carry a run factor.
_MEASURED_FILES = {
    "h200": ("h200_gpu_experts_eager.csv", "h200_gpu_experts_cudagraph.csv",
             "h200_gpu_experts_weight_only_quant.csv"),
    "xeon-16c": ("h200_host_cpu_experts.csv", "h200_host_cpu_experts_weight_only_quant.csv"),
    "epyc-2c": ("epyc_2core_cpu_experts.csv", "epyc_2core_cpu_experts_weight_only_quant.csv"),
}  # fmt: skip

# Datasheet figures. H200: NVIDIA H200 datasheet (141 GB HBM3e, 4.8 TB/s, 989 TFLOP/s dense
# bf16); power limit 700 W read by nvidia-smi at measurement (h200_machine.json). CPUs: core
# counts from the measuring machines (h200_machine.json: 16 threads; the EPYC VM: 2 cores);
# the bandwidth/peak figures of the two CPUs are not published for these VMs, so the CPU
# entries carry the fitted bandwidth and throughput as their "datasheet" figures (marked).
# Idle/busy power of CPUs and GPU idle power are assumptions (no measurement), stated as such.
_MEASURED_SPECS = {
    "h200": dict(
        kind="gpu", memory_gb=141.0, mem_bw_gbps=4800.0, peak_tflops=989.0,
        power_busy_w=700.0, power_idle_w=100.0, host_cpu="xeon-16c",
        description="NVIDIA H200 (measured: eager and CUDA-graph expert FFNs, W4A16 kernel, "
        "attention, PCIe Gen5 copies; torch 2.11 + CUDA 13). Idle power 100 W assumed.",
    ),
    "xeon-16c": dict(
        kind="cpu", memory_gb=128.0, power_busy_w=150.0, power_idle_w=40.0,
        description="16-core Intel Xeon host of the H200 (measured: fp32/bf16 experts, w4/w8 "
        "weight-only kernels). Power 150 W busy / 40 W idle assumed.",
    ),
    "epyc-2c": dict(
        kind="cpu", memory_gb=8.0, power_busy_w=20.0, power_idle_w=5.0,
        description="2-core AMD EPYC VM (measured: fp32/bf16 experts, w4/w8 weight-only "
        "kernels). Power 20 W busy / 5 W idle assumed (2 cores of a server part).",
    ),
}  # fmt: skip


def _measured(name: str) -> DeviceProfile:
    spec = dict(_MEASURED_SPECS[name])
    files = _MEASURED_FILES[name]
    dev = "cuda" if spec["kind"] == "gpu" else "cpu"
    rows = pd.concat([read_expert_csv(_data_path(f), device=dev) for f in files], ignore_index=True)
    kernels, factors = fit_device_rows(rows, primary_runs=files)
    attention = pcie = None
    if name == "h200":
        attention = fit_attention(_data_path("h200_gpu_attention.csv"), kernels[("eager", "bf16")])
        pcie = read_copies_csv(_data_path("h200_host_device_copies.csv"))
    if spec["kind"] == "cpu":
        bf16 = kernels[("eager", "bf16")]
        spec.setdefault("mem_bw_gbps", bf16.bw_gbps)
        spec.setdefault("peak_tflops", bf16.tflops)
    return DeviceProfile(
        name=name, measured=True, kernels=kernels, attention=attention, pcie=pcie,
        run_factors=factors, **spec,
    )  # fmt: skip


# Derived GPUs. Figures from vendor datasheets (SPEC.md lists memory, bandwidth, power and
# PCIe; dense bf16/fp16 tensor throughput from the same datasheets):
#   Jetson Orin Nano 8 GB: 68 GB/s LPDDR5, 7-25 W; 40 INT8 TOPS (sparse) -> 10 TFLOP/s dense
#     fp16 taken as 1/4 of the sparse INT8 figure (assumption, stated); unified memory.
#   Jetson AGX Orin 64 GB: 204.8 GB/s, 15-60 W; GPU 170 INT8 TOPS sparse -> 42.5 TFLOP/s
#     dense fp16 (same rule); unified memory.
#   NVIDIA L4: 24 GB, 300 GB/s, 121 TFLOP/s dense bf16 (242 sparse), 72 W, PCIe Gen4 x16.
#   RTX 4090: 24 GB, 1008 GB/s, 165.2 TFLOP/s dense fp16/bf16 with fp32 accumulate (Ada
#     whitepaper), 450 W, PCIe Gen4 x16.
#   A100 80 GB PCIe: 1935 GB/s, 312 TFLOP/s dense bf16, 300 W, PCIe Gen4 x16.
# PCIe x16 effective per direction: Gen4 ~25 GB/s (SPEC.md); latency as measured on the H200.
# Idle power: the low end of the published range for Jetsons, else an assumed ~15-20% of TDP.
_DERIVED_GPUS = {
    "jetson-orin-nano-8gb": dict(
        memory_gb=8.0, mem_bw_gbps=68.0, peak_tflops=10.0, power_busy_w=15.0, power_idle_w=7.0,
        unified_memory=True, host_cpu="orin-nano-cpu", pcie_gbps=None,
        description="Jetson Orin Nano 8 GB (derived from datasheet; unified memory)"),
    "jetson-agx-orin-64gb": dict(
        memory_gb=64.0, mem_bw_gbps=204.8, peak_tflops=42.5, power_busy_w=60.0, power_idle_w=15.0,
        unified_memory=True, host_cpu="agx-orin-cpu", pcie_gbps=None,
        description="Jetson AGX Orin 64 GB (derived from datasheet; unified memory)"),
    "l4": dict(
        memory_gb=24.0, mem_bw_gbps=300.0, peak_tflops=121.0, power_busy_w=72.0, power_idle_w=16.0,
        host_cpu="edge-x86-8c", pcie_gbps=25.0,
        description="NVIDIA L4 24 GB, PCIe Gen4 x16 (derived from datasheet)"),
    "rtx-4090": dict(
        memory_gb=24.0, mem_bw_gbps=1008.0, peak_tflops=165.2, power_busy_w=450.0,
        power_idle_w=30.0, host_cpu="edge-x86-8c", pcie_gbps=25.0,
        description="NVIDIA RTX 4090 24 GB, PCIe Gen4 x16 (derived from datasheet)"),
    "a100-80gb": dict(
        memory_gb=80.0, mem_bw_gbps=1935.0, peak_tflops=312.0, power_busy_w=300.0,
        power_idle_w=50.0, host_cpu="edge-x86-16c", pcie_gbps=25.0,
        description="NVIDIA A100 80 GB PCIe, PCIe Gen4 x16 (derived from datasheet)"),
}  # fmt: skip

# Derived host CPUs, scaled per core from the measured 2-core EPYC VM (bandwidth per core,
# throughput per core x clock), with bandwidth capped at 80% of the DRAM figure (assumed
# achievable share). No edge CPU was measured, so the rule itself is unchecked.
#   Orin Nano CPU: 6x Cortex-A78AE @ 1.5 GHz, shares 68 GB/s (NVIDIA datasheet).
#   AGX Orin CPU: 12x Cortex-A78AE @ 2.2 GHz, shares 204.8 GB/s (NVIDIA datasheet).
#   edge-x86-8c / -16c: an 8-core (2-channel DDR4-3200, 51.2 GB/s) and a 16-core (4-channel,
#   102.4 GB/s) x86 edge host at ~3.0 GHz (JEDEC DDR4-3200 = 25.6 GB/s per channel).
# The EPYC VM's clock is taken as 3.0 GHz (assumption). Power: assumed, stated per entry.
_EPYC_GHZ = 3.0
_DERIVED_CPUS = {
    "orin-nano-cpu": dict(cores=6, ghz=1.5, dram_gbps=68.0, memory_gb=8.0,
                          power_busy_w=5.0, power_idle_w=1.0),
    "agx-orin-cpu": dict(cores=12, ghz=2.2, dram_gbps=204.8, memory_gb=64.0,
                         power_busy_w=15.0, power_idle_w=3.0),
    "edge-x86-8c": dict(cores=8, ghz=3.0, dram_gbps=51.2, memory_gb=64.0,
                        power_busy_w=65.0, power_idle_w=15.0),
    "edge-x86-16c": dict(cores=16, ghz=3.0, dram_gbps=102.4, memory_gb=128.0,
                         power_busy_w=125.0, power_idle_w=30.0),
}  # fmt: skip


def derive_gpu(name: str, spec: Mapping, reference: DeviceProfile) -> DeviceProfile:
    """A GPU from datasheet figures, with the reference GPU's fitted efficiencies.

    Every kernel's bandwidths scale by ``mem_bw / reference mem_bw`` and its
    throughput by ``peak_tflops / reference peak``; fixed and dispatch times are
    kept (the host dispatch cost of an edge CPU is not measured: assumption).
    """
    spec = dict(spec)
    bw, tp = (
        spec["mem_bw_gbps"] / reference.mem_bw_gbps,
        spec["peak_tflops"] / reference.peak_tflops,
    )
    src = f"derived from datasheet with {reference.name} fit efficiencies"
    kernels = {k: v.scaled(bw, tp, src) for k, v in reference.kernels.items()}
    att = reference.attention
    attention = replace(
        att, sdpa_gbps=att.sdpa_gbps * bw, sdpa_tflops=att.sdpa_tflops * tp, source=src,
        derived=True,
    )  # fmt: skip
    pcie_gbps = spec.pop("pcie_gbps")
    pcie = None
    if pcie_gbps is not None:
        pcie = CopyFit(
            gbps=pcie_gbps, latency_ms=reference.pcie.latency_ms, source=src, derived=True
        )
    return DeviceProfile(
        name=name, kind="gpu", measured=False, kernels=kernels, attention=attention, pcie=pcie,
        description=spec.pop("description") + "; " + src, **spec,
    )  # fmt: skip


def derive_cpu(name: str, spec: Mapping, reference: DeviceProfile) -> DeviceProfile:
    """A host CPU scaled per core from a measured CPU (see the table comment above)."""
    ref_cores = 2 if reference.name == "epyc-2c" else 16
    cores, ghz = spec["cores"], spec["ghz"]
    tp = cores * ghz / (ref_cores * _EPYC_GHZ)
    kernels = {}
    for key, v in reference.kernels.items():
        bw_scale = min(cores / ref_cores, 0.8 * spec["dram_gbps"] / v.weight_gbps)
        src = f"derived per core from {reference.name}"
        kernels[key] = v.scaled(bw_scale, tp, src)
    bf16 = kernels[("eager", "bf16")]
    return DeviceProfile(
        name=name, kind="cpu", measured=False, kernels=kernels,
        memory_gb=spec["memory_gb"], mem_bw_gbps=spec["dram_gbps"], peak_tflops=bf16.tflops,
        power_busy_w=spec["power_busy_w"], power_idle_w=spec["power_idle_w"],
        description=f"{cores}-core CPU @ {ghz} GHz, {spec['dram_gbps']} GB/s DRAM "
        f"(derived per core from {reference.name}; power assumed)",
    )  # fmt: skip


_USER: dict[str, DeviceProfile] = {}


def builtin_device_names() -> tuple[str, ...]:
    return tuple(sorted([*_MEASURED_SPECS, *_DERIVED_GPUS, *_DERIVED_CPUS]))


def device_names() -> tuple[str, ...]:
    """Names of every known device: built-in measured, derived, and user-loaded."""
    return tuple(sorted({*builtin_device_names(), *_USER}))


@functools.cache
def _builtin(name: str) -> DeviceProfile:
    if name in _MEASURED_SPECS:
        return _measured(name)
    if name in _DERIVED_GPUS:
        return derive_gpu(name, _DERIVED_GPUS[name], _builtin("h200"))
    return derive_cpu(name, _DERIVED_CPUS[name], _builtin("epyc-2c"))


def get_device(name: str | DeviceProfile) -> DeviceProfile:
    """Look a device profile up by name (fits lazily, cached per process).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, DeviceProfile):
        return name
    if name in _USER:
        return _USER[name]
    if name not in builtin_device_names():
        raise ValueError(f"unknown device {name!r}; known devices: {', '.join(device_names())}")
    return _builtin(name)


def load_profile(path: str | Path, name: str | None = None, register: bool = True) -> DeviceProfile:
    """Load a profile written by ``coel profile`` and use it like a built-in device.

    The expert CSV is required; ``<stem>.copies.csv`` (PCIe copies),
    ``<stem>.machine.json`` (GPU memory) and ``<stem>.layer_fit.json`` (layer terms
    from ``coel cost calibrate --layers``) are read when present. A GPU profile
    without an attention file takes the H200 attention fit scaled by its fitted
    bandwidth; one without copies takes a PCIe Gen4 x16 link (~25 GB/s, SPEC.md).

    Args:
        path: the CSV written by ``coel profile --out``.
        name: device name to register under (default: the file stem).
        register: make ``get_device(name)`` return it.

    Raises:
        ValueError: a missing, malformed or incomplete file, or a name that
            shadows a built-in device.
    """
    p = Path(path)
    rows = read_expert_csv(p)
    df = pd.read_csv(p)
    devs = set(df["device"].astype(str)) if "device" in df.columns else {"cpu"}
    if len(devs) != 1 or not devs <= {"cpu", "cuda"}:
        raise ValueError(f"profile file {str(p)!r}: column 'device' must be all 'cpu' or all "
                         f"'cuda'; found {sorted(devs)}")  # fmt: skip
    kind = "gpu" if devs == {"cuda"} else "cpu"
    name = name or p.stem
    if name in builtin_device_names():
        raise ValueError(f"name={name!r} shadows a built-in device; choose another name")
    kernels, factors = fit_device_rows(rows)
    if ("eager", "bf16") not in kernels and ("eager", "fp16") not in kernels:
        raise ValueError(
            f"profile file {str(p)!r} has no eager bf16/fp16 rows; the 16-bit model needs them"
        )
    k16 = kernels.get(("eager", "bf16")) or kernels[("eager", "fp16")]
    machine = {}
    mpath = p.with_name(p.stem + ".machine.json")
    if mpath.is_file():
        try:
            machine = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"machine file {str(mpath)!r} is not valid JSON: {exc}") from None
    common = dict(
        name=name, kind=kind, measured=True, kernels=kernels, run_factors=factors,
        mem_bw_gbps=k16.bw_gbps, peak_tflops=k16.tflops,
        description=f"user profile from {p.name} (measured with coel profile)",
    )  # fmt: skip
    lpath = layer_fit_path(p)
    if lpath.is_file():
        common["layer"] = read_layer_fit(lpath)
    if kind == "gpu":
        ref = _builtin("h200")
        cpath = p.with_name(p.stem + ".copies.csv")
        pcie = (
            read_copies_csv(cpath)
            if cpath.is_file()
            else CopyFit(25.0, ref.pcie.latency_ms, "assumed PCIe Gen4", True)
        )
        scale = k16.bw_gbps / ref.kernels[("eager", "bf16")].bw_gbps
        att = replace(
            ref.attention,
            sdpa_gbps=ref.attention.sdpa_gbps * scale,
            source="h200 attention scaled by bandwidth",
            derived=True,
        )
        prof = DeviceProfile(
            memory_gb=float(machine.get("gpu_mem_gib", 16.0)), power_busy_w=300.0,
            power_idle_w=50.0, host_cpu="xeon-16c", attention=att, pcie=pcie, **common,
        )  # fmt: skip
    else:
        prof = DeviceProfile(memory_gb=64.0, power_busy_w=65.0, power_idle_w=15.0, **common)
    if register:
        _USER[name] = prof
    return prof


def measured_rows(name: str) -> pd.DataFrame:
    """Every measured expert row of a built-in measured device (for validation)."""
    if name not in _MEASURED_FILES:
        raise ValueError(
            f"device {name!r} has no measured rows; measured: {sorted(_MEASURED_FILES)}"
        )
    dev = "cuda" if _MEASURED_SPECS[name]["kind"] == "gpu" else "cpu"
    files = _MEASURED_FILES[name]
    return pd.concat([read_expert_csv(_data_path(f), device=dev) for f in files], ignore_index=True)
