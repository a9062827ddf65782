"""Measure one MoE expert FFN forward (and host<->device copies) with PyTorch.

For each expert shape (--models), dtype (--dtypes) and token count (--tokens)
this times one expert forward in eager PyTorch, the way the shipped profiles
in coel_env/data/profiles/ were measured:

  * gated experts (SwiGLU) run down(silu(gate(x)) * up(x)), the Switch expert
    runs down(relu(up(x))); bias-free matmuls on weight tensors.
  * Weights rotate over several copies so that each call reads them from
    memory, not from cache: about 3x the GPU's L2 on cuda, about 64 MB on
    cpu; at most about 2 GB of copies on cpu (8 GB on cuda), so big shapes
    get fewer copies (at least one).
  * 3 warm-up calls. On cuda: the median (and p10/p90) of --repeats timings
    of 20 back-to-back calls with CUDA events, per call. On cpu: calls are
    timed one by one with time.perf_counter for about --min-time-s seconds
    (and at least --repeats calls); median, p10 and p90 per call.
  * On cuda the bf16 expert is also timed by CUDA-graph replay (20 calls
    captured in one graph), which gives kernel time without launch overhead
    (rows with mode "cudagraph"), and host<->device copy bandwidth is measured
    (h2d and d2h, pinned and pageable, 1 MiB to 1 GiB by 4x, plus one
    device-to-device copy whose bytes count read plus write).

Dtypes: fp32, fp16, bf16, and weight-only quantized w8 and w4 through
PyTorch's own kernels with bf16 activations: w4 is
aten._weight_int4pack_mm (cuda) or aten._weight_int4pack_mm_for_cpu (cpu),
asymmetric, group size 128 (64 where the size needs it); w8 is
aten._weight_int8pack_mm, symmetric per output channel. If a kind is not
supported on the device (a kernel missing from this torch build, or a shape
it rejects), its rows are skipped with a warning line on stderr.

Defaults: cuda: all shapes, tokens 1 2 4 ... 4096, bf16. cpu: the small
shapes (olmoe-1b-7b, qwen1.5-moe-a2.7b, switch-base), tokens 1 4 16 64 256,
fp32 and bf16. --device defaults to cpu.

Output: --out FILE.csv gets the expert rows, columns
  device,model,d_model,d_ff,gated,dtype,mode,tokens,median_ms,p10_ms,p90_ms,
  flops,weight_bytes,tflops,weight_gbps
(flops = 2 * tokens * (3 if gated else 2) * d_model * d_ff; weight_bytes are
the bytes of the weight tensors used, packed weights plus scales for w4/w8;
tflops and weight_gbps from median_ms). FILE.machine.json gets versions,
device properties, the date and the arguments; on cuda FILE.copies.csv gets
the copy rows (direction,pinned,bytes,median_ms,p10_ms,p90_ms,gbps). An
existing output is never overwritten unless --force is given (which also
removes a stale FILE.copies.csv when no copies were measured).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ExpertShape(NamedTuple):
    """The FFN shape of one expert of a public MoE model config.

    Attributes:
        d_model: Hidden size (input and output width).
        d_ff: Intermediate size of the expert.
        gated: True for a SwiGLU expert (gate, up, down), False for a
            two-matrix ReLU expert (up, down).
    """

    d_model: int
    d_ff: int
    gated: bool


EXPERT_SHAPES: dict[str, ExpertShape] = {
    "mixtral-8x7b": ExpertShape(4096, 14336, True),
    "phi-3.5-moe": ExpertShape(4096, 6400, True),
    "gpt-oss-20b": ExpertShape(2880, 2880, True),
    "qwen1.5-moe-a2.7b": ExpertShape(2048, 1408, True),
    "qwen1.5-moe-shared": ExpertShape(2048, 5632, True),
    "olmoe-1b-7b": ExpertShape(2048, 1024, True),
    "switch-base": ExpertShape(768, 3072, False),
}
"""Expert shapes by model name: (d_model, d_ff, gated)."""

DEVICES: tuple[str, ...] = ("cpu", "cuda")
DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "w8", "w4")
QUANT_DTYPES: frozenset[str] = frozenset({"w8", "w4"})

DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "cuda": tuple(EXPERT_SHAPES),
    "cpu": ("olmoe-1b-7b", "qwen1.5-moe-a2.7b", "switch-base"),
}
DEFAULT_TOKENS: dict[str, tuple[int, ...]] = {
    "cuda": tuple(2**i for i in range(13)),
    "cpu": (1, 4, 16, 64, 256),
}
DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {"cuda": ("bf16",), "cpu": ("fp32", "bf16")}

EXPERT_COLUMNS: tuple[str, ...] = (
    "device",
    "model",
    "d_model",
    "d_ff",
    "gated",
    "dtype",
    "mode",
    "tokens",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "flops",
    "weight_bytes",
    "tflops",
    "weight_gbps",
)
"""Columns of the expert CSV, in order."""

COPY_COLUMNS: tuple[str, ...] = (
    "direction",
    "pinned",
    "bytes",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "gbps",
)
"""Columns of the copies CSV, in order."""

WARMUP_CALLS = 3
CALLS_PER_TIMING = 20
CPU_ROTATE_BYTES = 64 * 2**20
CPU_MAX_ROTATE_BYTES = 2 * 2**30
CUDA_L2_FACTOR = 3
CUDA_DEFAULT_L2_BYTES = 50 * 2**20
CUDA_MAX_ROTATE_BYTES = 8 * 2**30
COPY_SIZES: tuple[int, ...] = tuple(2**20 * 4**i for i in range(6))  # 1 MiB .. 1 GiB
COPY_BYTES_PER_TIMING = 64 * 2**20
D2D_BUFFER_BYTES = 2 * 2**30
W4_GROUP_SIZES: tuple[int, ...] = (128, 64, 32)

_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


# --------------------------------------------------------------------------- paths


def _sibling(out: Path, suffix: str) -> Path:
    """Return the file beside an expert CSV that shares its stem.

    Args:
        out: The expert CSV path (``FILE.csv``).
        suffix: What replaces ``.csv`` (e.g. ``.copies.csv``).

    Returns:
        ``FILE`` + ``suffix`` beside it.
    """
    out = Path(out)
    stem = out.name[: -len(".csv")] if out.name.endswith(".csv") else out.name
    return out.with_name(stem + suffix)


def copies_path(out: Path) -> Path:
    """Return the copies CSV ``FILE.copies.csv`` beside the expert CSV ``out`` (``FILE.csv``)."""
    return _sibling(out, ".copies.csv")


def machine_path(out: Path) -> Path:
    """Return the machine-info JSON ``FILE.machine.json`` beside the expert CSV ``out``."""
    return _sibling(out, ".machine.json")


# ---------------------------------------------------------------------- validation


def _known_shapes() -> str:
    return ", ".join(
        f"{name} ({s.d_model}x{s.d_ff} {'gated' if s.gated else 'relu'})"
        for name, s in EXPERT_SHAPES.items()
    )


def _dedupe(items: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"--device {device!r}: unknown device; allowed: {', '.join(DEVICES)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available; allowed here: cpu")
    return device


def _check_names(
    flag: str, names: Sequence[str] | str, allowed: Iterable[str], what: str, hint: str
) -> list[str]:
    """Return ``names`` (one name or several) without repeats, each checked against ``allowed``.

    Errors read ``FLAG NAME: unknown WHAT; HINT`` and ``FLAG: empty; HINT``.
    """
    if isinstance(names, str):
        names = [names]
    for name in names:
        if name not in allowed:
            raise ValueError(f"{flag} {name!r}: unknown {what}; {hint}")
    if not names:
        raise ValueError(f"{flag}: empty; {hint}")
    return _dedupe(names)


def _check_models(models: Sequence[str] | None, device: str) -> list[str]:
    if models is None:
        return list(DEFAULT_MODELS[device])
    hint = f"known: {_known_shapes()}"
    return _check_names("--models", models, EXPERT_SHAPES, "expert shape", hint)


def _check_dtypes(dtypes: Sequence[str] | None, device: str) -> list[str]:
    if dtypes is None:
        return list(DEFAULT_DTYPES[device])
    return _check_names("--dtypes", dtypes, DTYPES, "dtype", f"allowed: {', '.join(DTYPES)}")


def _check_tokens(tokens: Sequence[int | str] | None, device: str) -> list[int]:
    if tokens is None:
        return list(DEFAULT_TOKENS[device])
    if isinstance(tokens, (int, str)):
        tokens = [tokens]
    out: list[int] = []
    for t in tokens:
        value: int | None = None
        if isinstance(t, int) and not isinstance(t, bool):
            value = t
        elif isinstance(t, str) and t.strip().lstrip("+").isdigit():
            value = int(t)
        if value is None or value < 1:
            raise ValueError(f"--tokens {t!r}: not a token count; allowed: integers >= 1")
        out.append(value)
    if not out:
        raise ValueError("--tokens: empty; allowed: integers >= 1")
    return _dedupe(out)


def _check_repeats(repeats: int) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"--repeats {repeats!r}: must be an integer >= 1")
    return repeats


def _check_min_time(min_time_s: float) -> float:
    ok = isinstance(min_time_s, (int, float)) and not isinstance(min_time_s, bool)
    if not ok or not math.isfinite(min_time_s) or min_time_s <= 0:
        raise ValueError(f"--min-time-s {min_time_s!r}: must be a number > 0")
    return float(min_time_s)


def _output_paths(out: Path) -> tuple[Path, Path, Path]:
    return Path(out), copies_path(out), machine_path(out)


def check_out(out: Path | str, force: bool = False) -> Path:
    """Validate an output path before anything is measured.

    Args:
        out: The expert CSV path; must end in ``.csv``.
        force: Allow overwriting existing output files.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: If the path is not a .csv path, its folder does not
            exist, or it (or one of its sibling files) exists and ``force``
            is False.
    """
    out = Path(out)
    if out.suffix != ".csv":
        raise ValueError(f"--out {str(out)!r}: not a .csv path; allowed: a path ending in .csv")
    parent = out.parent
    if not parent.is_dir():
        raise ValueError(
            f"--out {str(out)!r}: folder {str(parent)!r} does not exist; "
            "allowed: a path in an existing folder"
        )
    if not force:
        for p in _output_paths(out):
            if p.exists():
                raise ValueError(
                    f"--out {str(out)!r}: {str(p)!r} already exists; "
                    "pass --force to overwrite, or choose a new path"
                )
    return out


# ---------------------------------------------------------------------- statistics


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (as numpy's default), q in [0, 100]."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _stats(times_ms: Sequence[float]) -> tuple[float, float, float]:
    return _percentile(times_ms, 50), _percentile(times_ms, 10), _percentile(times_ms, 90)


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def expert_flops(shape: ExpertShape, tokens: int) -> int:
    """FLOPs of one expert forward: 2 * tokens * (3 if gated else 2) * d_model * d_ff.

    Args:
        shape: The expert shape.
        tokens: Tokens the expert processes in the call.

    Returns:
        Multiply-add FLOPs (2 per multiply-add).
    """
    return 2 * tokens * (3 if shape.gated else 2) * shape.d_model * shape.d_ff


# ------------------------------------------------------------------ expert builders


def _w4_group_size(k: int) -> int:
    for g in W4_GROUP_SIZES:
        if k % g == 0:
            return g
    raise RuntimeError(f"w4: in-features {k} not divisible by any group size {W4_GROUP_SIZES}")


def _w4_inner_k_tiles(k: int, device: str) -> int:
    if device == "cpu":
        return 8  # the cpu packing ignores the tiling constraint
    for tiles in (8, 4, 2):
        if k % (tiles * 16) == 0:
            return tiles
    raise RuntimeError(f"w4: in-features {k} not divisible by 32 (int4 tile)")


def _quantize_w4(w: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Asymmetric 4-bit group quantization in the layout of aten's int4 kernels.

    Args:
        w: Float weight of shape (out_features N, in_features K).
        device: "cpu" or "cuda" (the packed layouts differ).

    Returns:
        (packed weight, scales_and_zeros of shape (K/g, N, 2) in bf16, group size g).
        The kernels dequantize a weight as (q - 8) * scale + zero.
    """
    import torch

    n, k = w.shape
    g = _w4_group_size(k)
    wg = w.float().reshape(n, k // g, g)
    lo = wg.amin(dim=-1)
    hi = wg.amax(dim=-1)
    scale = ((hi - lo) / 15).clamp(min=1e-6)
    zero = lo + scale * 8
    q = torch.round((wg - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    q = q.reshape(n, k)
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
    tiles = _w4_inner_k_tiles(k, device)
    if device == "cpu":
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, tiles)
    else:
        q8 = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(q8.contiguous(), tiles)
    return packed, scales_and_zeros, g


def _quantize_w8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantization for aten._weight_int8pack_mm.

    Args:
        w: Float weight of shape (out_features, in_features).

    Returns:
        (int8 weight of the same shape, bf16 scales of shape (out_features,)).
    """
    import torch

    scale = (w.float().abs().amax(dim=1) / 127).clamp(min=1e-8)
    q = torch.round(w.float() / scale[:, None]).clamp(-128, 127).to(torch.int8)
    return q.contiguous(), scale.to(torch.bfloat16)


def _linear_fn(dtype: str, device: str) -> Callable[..., torch.Tensor]:
    import torch
    import torch.nn.functional as F

    if dtype == "w4":
        op = (
            torch.ops.aten._weight_int4pack_mm_for_cpu
            if device == "cpu"
            else torch.ops.aten._weight_int4pack_mm
        )
        return lambda x, w: op(x, w[0], w[2], w[1])
    if dtype == "w8":
        op8 = torch.ops.aten._weight_int8pack_mm
        return lambda x, w: op8(x, w[0], w[1])
    return lambda x, w: F.linear(x, w)


def _act_dtype(dtype: str) -> torch.dtype:
    import torch

    if dtype in QUANT_DTYPES:
        return torch.bfloat16
    return getattr(torch, _TORCH_DTYPES[dtype])


def _nbytes(w: Any) -> int:
    if isinstance(w, tuple):
        return sum(int(t.nbytes) for t in w if hasattr(t, "nbytes"))
    return int(w.nbytes)


def _make_weights(shape: ExpertShape, dtype: str, device: str, seed: int = 0) -> list[Any]:
    """One copy of an expert's weights: [gate, up, down] or [up, down].

    Each entry is a tensor (fp dtypes) or a tuple of packed tensors (w4, w8).
    """
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    shapes = [(shape.d_ff, shape.d_model)] * (2 if shape.gated else 1)
    shapes.append((shape.d_model, shape.d_ff))
    std_in = shape.d_model**-0.5
    weights: list[Any] = []
    for i, (n, k) in enumerate(shapes):
        std = std_in if i < len(shapes) - 1 else shape.d_ff**-0.5
        wdtype = torch.float32 if dtype in QUANT_DTYPES else _act_dtype(dtype)
        w = torch.randn(n, k, generator=gen, dtype=torch.float32, device=device) * std
        w = w.to(wdtype)
        if dtype == "w4":
            weights.append(_quantize_w4(w, device))
        elif dtype == "w8":
            weights.append(_quantize_w8(w))
        else:
            weights.append(w)
        del w
    return weights


def _clone(w: Any) -> Any:
    if isinstance(w, tuple):
        return tuple(t.clone() if hasattr(t, "clone") else t for t in w)
    return w.clone()


def _expert_call(
    shape: ExpertShape, dtype: str, device: str, weights: list[Any]
) -> Callable[[torch.Tensor], torch.Tensor]:
    import torch.nn.functional as F

    lin = _linear_fn(dtype, device)
    if shape.gated:
        gate, up, down = weights
        return lambda x: lin(F.silu(lin(x, gate)) * lin(x, up), down)
    up, down = weights
    return lambda x: lin(F.relu(lin(x, up)), down)


def _rotation_copies(bytes_per_copy: int, device: str) -> int:
    """How many weight copies to rotate over so each call reads from memory."""
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        l2 = int(getattr(props, "L2_cache_size", 0) or CUDA_DEFAULT_L2_BYTES)
        target = CUDA_L2_FACTOR * l2
        free, _total = torch.cuda.mem_get_info()
        cap = min(CUDA_MAX_ROTATE_BYTES, free // 4)
    else:
        target, cap = CPU_ROTATE_BYTES, CPU_MAX_ROTATE_BYTES
    want = math.ceil(target / max(bytes_per_copy, 1))
    return max(1, min(want, cap // max(bytes_per_copy, 1)))


def _build_expert(
    shape: ExpertShape, dtype: str, device: str, copies: int | None = None
) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], int]:
    """Build the rotating copies of one expert.

    Args:
        shape: Expert shape.
        dtype: One of DTYPES.
        device: "cpu" or "cuda".
        copies: Number of weight copies; None picks enough to defeat the cache.

    Returns:
        (one forward callable per weight copy, weight bytes of one copy).

    Raises:
        RuntimeError: If the dtype's kernel is unavailable or rejects the shape.
    """
    base = _make_weights(shape, dtype, device)
    weight_bytes = sum(_nbytes(w) for w in base)
    n = copies if copies is not None else _rotation_copies(weight_bytes, device)
    sets = [base] + [[_clone(w) for w in base] for _ in range(n - 1)]
    return [_expert_call(shape, dtype, device, ws) for ws in sets], weight_bytes


# -------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _time_cpu(
    calls: Sequence[Callable[[Any], Any]], x: Any, min_time_s: float, min_calls: int
) -> list[float]:
    times: list[float] = []
    i = 0
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_time_s:
        fn = calls[i % len(calls)]
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return times


def _time_cuda_eager(
    calls: Sequence[Callable[[Any], Any]], x: Any, repeats: int, offset: int
) -> list[float]:
    import torch

    times: list[float] = []
    i = offset
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(CALLS_PER_TIMING):
            calls[i % len(calls)](x)
            i += 1
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / CALLS_PER_TIMING)
    return times


def _time_cuda_graph(calls: Sequence[Callable[[Any], Any]], x: Any, repeats: int) -> list[float]:
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(WARMUP_CALLS):
            calls[i % len(calls)](x)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(CALLS_PER_TIMING):
            calls[i % len(calls)](x)
    graph.replay()
    torch.cuda.synchronize()
    times: list[float] = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / CALLS_PER_TIMING)
    del graph
    return times


def _expert_row(
    device: str,
    model: str,
    dtype: str,
    mode: str,
    tokens: int,
    times_ms: Sequence[float],
    weight_bytes: int,
) -> dict[str, Any]:
    shape = EXPERT_SHAPES[model]
    median, p10, p90 = _stats(times_ms)
    flops = expert_flops(shape, tokens)
    return {
        "device": device,
        "model": model,
        "d_model": shape.d_model,
        "d_ff": shape.d_ff,
        "gated": int(shape.gated),
        "dtype": dtype,
        "mode": mode,
        "tokens": tokens,
        "median_ms": _round(median),
        "p10_ms": _round(p10),
        "p90_ms": _round(p90),
        "flops": flops,
        "weight_bytes": weight_bytes,
        "tflops": _round(flops / (median * 1e-3) / 1e12),
        "weight_gbps": _round(weight_bytes / (median * 1e-3) / 1e9),
    }


def _time_copy(
    dst: torch.Tensor, src: torch.Tensor, repeats: int, non_blocking: bool
) -> list[float]:
    """Per-copy times (ms) of dst.copy_(src), CUDA events, ~64 MiB per timing."""
    import torch

    per_timing = max(1, COPY_BYTES_PER_TIMING // int(src.nbytes))
    dst.copy_(src, non_blocking=non_blocking)  # warm-up
    torch.cuda.synchronize()
    times: list[float] = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(per_timing):
            dst.copy_(src, non_blocking=non_blocking)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / per_timing)
    return times


def _copy_row(
    direction: str, pinned: bool, nbytes: int, times_ms: Sequence[float]
) -> dict[str, Any]:
    median, p10, p90 = _stats(times_ms)
    return {
        "direction": direction,
        "pinned": int(pinned),
        "bytes": nbytes,
        "median_ms": _round(median),
        "p10_ms": _round(p10),
        "p90_ms": _round(p90),
        "gbps": _round(nbytes / (median * 1e-3) / 1e9),
    }


def _measure_copies(repeats: int, progress: Any) -> list[dict[str, Any]]:
    """Host<->device copy bandwidth (pinned, pageable) and one device-to-device copy.

    Args:
        repeats: Timings per size.
        progress: A tqdm bar, advanced once per row.

    Returns:
        Rows keyed by COPY_COLUMNS, in the order of h200_host_device_copies.csv.
    """
    import torch

    rows: list[dict[str, Any]] = []
    for pinned in (True, False):
        for size in COPY_SIZES:
            host = torch.ones(size, dtype=torch.uint8, pin_memory=pinned)
            dev = torch.ones(size, dtype=torch.uint8, device="cuda")
            for direction, dst, src in (("h2d", dev, host), ("d2h", host, dev)):
                times = _time_copy(dst, src, repeats, non_blocking=pinned)
                rows.append(_copy_row(direction, pinned, size, times))
                progress.update(1)
            del host, dev
    free, _total = torch.cuda.mem_get_info()
    buf = D2D_BUFFER_BYTES
    while buf > 2**20 and 4 * buf > free:
        buf //= 2
    a = torch.ones(buf, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    times = _time_copy(b, a, repeats, non_blocking=False)
    rows.append(_copy_row("d2d", False, 2 * buf, times))  # bytes: read plus write
    progress.update(1)
    del a, b
    torch.cuda.empty_cache()
    return rows


def _warn(message: str) -> None:
    print(f"coel profile: warning: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- public API


def profile(
    device: str = "cpu",
    models: Sequence[str] | None = None,
    tokens: Sequence[int | str] | None = None,
    dtypes: Sequence[str] | None = None,
    repeats: int = 5,
    min_time_s: float = 1.5,
    *,
    copies: bool = True,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure expert FFN forwards (and, on cuda, copy bandwidth).

    Args:
        device: "cpu" or "cuda".
        models: Expert shape names (keys of EXPERT_SHAPES); None for the
            device's defaults.
        tokens: Token counts (integers >= 1); None for the device's defaults.
        dtypes: Any of DTYPES; None for the device's defaults. A quantized
            kind whose kernel fails on this device is skipped with a warning
            on stderr.
        repeats: cuda: timings (of 20 calls each) per row; cpu: the least
            number of timed calls per row.
        min_time_s: cpu: time calls for about this long per row.
        copies: On cuda, also measure host<->device copies.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        (expert rows, copy rows): lists of dicts keyed by EXPERT_COLUMNS and
        COPY_COLUMNS. Copy rows are empty on cpu.

    Raises:
        ValueError: On an unknown device, model or dtype, a bad token count,
            repeats < 1, min_time_s <= 0, or cuda requested without a GPU.
    """
    device = _check_device(device)
    models = _check_models(models, device)
    token_list = _check_tokens(tokens, device)
    dtype_list = _check_dtypes(dtypes, device)
    repeats = _check_repeats(repeats)
    min_time_s = _check_min_time(min_time_s)

    import torch
    from tqdm import tqdm

    plan: list[tuple[str, str, str]] = []  # (model, dtype, mode)
    for model in models:
        for dtype in dtype_list:
            plan.append((model, dtype, "eager"))
            if device == "cuda" and dtype == "bf16":
                plan.append((model, dtype, "cudagraph"))
    measure_copies = copies and device == "cuda"
    n_copy_rows = 4 * len(COPY_SIZES) + 1 if measure_copies else 0
    total = len(plan) * len(token_list) + n_copy_rows

    rows: list[dict[str, Any]] = []
    copy_rows: list[dict[str, Any]] = []
    bar = tqdm(total=total, desc="coel profile", unit="row", disable=not progress, file=sys.stderr)
    try:
        with torch.inference_mode():
            built: dict[tuple[str, str], tuple[list[Any], int] | None] = {}
            for model, dtype, mode in plan:
                shape = EXPERT_SHAPES[model]
                key = (model, dtype)
                if key not in built:
                    # free the previous expert before building the next
                    built.clear()
                    entry = calls = x = None
                    if device == "cuda":
                        torch.cuda.empty_cache()
                    built[key] = _build_checked(shape, model, dtype, device)
                entry = built[key]
                if entry is None:
                    bar.update(len(token_list))
                    continue
                calls, weight_bytes = entry
                bar.set_postfix_str(f"{model} {dtype} {mode}")
                offset = 0
                for n_tok in token_list:
                    x = torch.randn(n_tok, shape.d_model, dtype=_act_dtype(dtype), device=device)
                    for i in range(WARMUP_CALLS):
                        calls[i % len(calls)](x)
                    _sync(device)
                    if device == "cpu":
                        times = _time_cpu(calls, x, min_time_s, repeats)
                    elif mode == "eager":
                        times = _time_cuda_eager(calls, x, repeats, offset)
                        offset += repeats * CALLS_PER_TIMING
                    else:
                        times = _time_cuda_graph(calls, x, repeats)
                    rows.append(_expert_row(device, model, dtype, mode, n_tok, times, weight_bytes))
                    bar.update(1)
            built.clear()
            entry = calls = x = None
            if measure_copies:
                torch.cuda.empty_cache()
                bar.set_postfix_str("copies")
                copy_rows = _measure_copies(repeats, bar)
    finally:
        bar.close()
    return rows, copy_rows


def _build_checked(
    shape: ExpertShape, model: str, dtype: str, device: str
) -> tuple[list[Any], int] | None:
    """Build an expert and run it once; None (with a warning) if the kernel fails."""
    import torch

    try:
        calls, weight_bytes = _build_expert(shape, dtype, device)
        x = torch.randn(1, shape.d_model, dtype=_act_dtype(dtype), device=device)
        calls[0](x)
        _sync(device)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _warn(f"{dtype} on {device} skipped for {model}: {reason}")
        if device == "cuda":
            torch.cuda.empty_cache()
        return None
    return calls, weight_bytes


def machine_info(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions and device properties, like the shipped h200_machine.json.

    Args:
        extra: Extra keys to add (for example the command's arguments).

    Returns:
        A JSON-serializable dict: python, torch, machine, cpu_threads,
        os_cpus, cpu_model, gpu, gpu_mem_gib, sm_count, cuda, date, and
        nvidia_smi where that tool is available.
    """
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "os_cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpu": None,
        "gpu_mem_gib": None,
        "sm_count": None,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpu"] = props.name
        info["gpu_mem_gib"] = round(props.total_memory / 2**30, 1)
        info["sm_count"] = props.multi_processor_count
        l2 = getattr(props, "L2_cache_size", None)
        if l2:
            info["l2_cache_bytes"] = int(l2)
        smi = _nvidia_smi()
        if smi:
            info["nvidia_smi"] = smi
    info["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if extra:
        info.update(extra)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = (
        "pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,"
        "clocks.current.sm,clocks.current.memory,power.limit"
    )
    try:
        res = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


def _write_csv(
    path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]], mode: str
) -> None:
    with open(path, mode, newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def write_profile(
    rows: Sequence[dict[str, Any]],
    copy_rows: Sequence[dict[str, Any]],
    out: Path | str,
    machine_info: dict[str, Any],
    *,
    force: bool = False,
) -> list[Path]:
    """Write a profile: expert CSV, copies CSV (if any rows) and machine JSON.

    Args:
        rows: Expert rows keyed by EXPERT_COLUMNS.
        copy_rows: Copy rows keyed by COPY_COLUMNS; none means no copies file
            (and, with ``force``, a stale one is removed).
        out: The expert CSV path (``FILE.csv``); siblings go to
            copies_path(out) and machine_path(out).
        machine_info: The machine description for the JSON file.
        force: Overwrite existing files.

    Returns:
        The paths written.

    Raises:
        ValueError: If ``out`` is not a writable new .csv path (see check_out).
    """
    out = check_out(out, force)
    mode = "w" if force else "x"
    written = [out]
    _write_csv(out, EXPERT_COLUMNS, rows, mode)
    cpath = copies_path(out)
    if copy_rows:
        _write_csv(cpath, COPY_COLUMNS, copy_rows, mode)
        written.append(cpath)
    elif force and cpath.exists():
        cpath.unlink()  # a stale copies file would be read as this profile's
    mpath = machine_path(out)
    with open(mpath, mode, encoding="utf-8") as f:
        json.dump(machine_info, f, indent=1)
        f.write("\n")
    written.append(mpath)
    return written


# -------------------------------------------------------------------- whole layers

LAYER_COLUMNS: tuple[str, ...] = (
    "device",
    "model",
    "tokens",
    "n_experts",
    "top_k",
    "shared_ff",
    "layer_ms",
    "active_experts",
    "expert_token_counts",
)
"""Columns of the whole-layer CSV (those of the shipped h200_moe_layers_eager_calib.csv)."""

DEFAULT_LAYER_MODELS: dict[str, tuple[str, ...] | None] = {
    "cuda": None,  # every catalog model
    "cpu": ("switch-base-8", "qwen1.5-moe-a2.7b", "olmoe-1b-7b"),
}
DEFAULT_LAYER_TOKENS: dict[str, tuple[int, ...]] = {
    "cuda": (1, 4, 16, 64, 256, 1024),
    "cpu": (1, 4, 16, 64),
}


def _layer_model(m: Any) -> Any:
    from coel_env.catalog import MoEModel, get_model, model_names

    if isinstance(m, MoEModel):
        return m
    if not isinstance(m, str) or m not in model_names():
        raise ValueError(f"--models {m!r}: unknown model; known: {', '.join(model_names())}")
    return get_model(m)


def _check_layer_models(models: Sequence[Any] | None, device: str) -> list[Any]:
    from coel_env.catalog import model_names

    if models is None:
        models = DEFAULT_LAYER_MODELS[device] or model_names()
    if isinstance(models, str):
        models = [models]
    if not models:
        raise ValueError(f"--models: empty; known: {', '.join(model_names())}")
    return _dedupe([_layer_model(m) for m in models])


def resolve_layer_device(device: str | None) -> tuple[str, str | None]:
    """The device whole layers run on, and a notice when the CPU stands in for a GPU.

    Args:
        device: ``"cpu"``, ``"cuda"``, or None for the GPU when there is one.

    Returns:
        ``(device, notice)``; ``notice`` is None unless no GPU was found for ``None``.
    """
    if device is not None:
        return _check_device(device), None
    import torch

    if torch.cuda.is_available():
        return "cuda", None
    return "cpu", "no CUDA GPU found: measuring the layers on the CPU"


class _Layer:
    """One MoE layer of a catalog model with random bf16 weights, run in eager PyTorch.

    The forward follows the Hugging Face sparse-MoE blocks: router GEMM, softmax in
    fp32, top-k with the weights renormalised, a one-hot expert mask; then for every
    expert that received a token, ``torch.where`` on its mask (the host waits for the
    indices), a gather of its tokens, its FFN, the scale by the routing weights and an
    ``index_add_`` into the output; shared experts on the whole batch (DeepSeek's
    merged into one FFN; Qwen's scaled by a sigmoid gate).
    """

    def __init__(self, m: Any, device: str, seed: int = 0, router: Any = None) -> None:
        import torch

        gen = torch.Generator(device=device).manual_seed(seed)
        bf16 = torch.bfloat16

        def rand(*shape: int) -> torch.Tensor:
            t = torch.randn(*shape, generator=gen, dtype=torch.float32, device=device)
            return (t * shape[-1] ** -0.5).to(bf16)

        d, f, e = m.d_model, m.d_ff_expert, m.n_experts
        self.m = m
        # copies share one router so that every copy routes a batch the same way
        self.router = rand(e, d) if router is None else router
        # one tensor per expert: CPU matmuls on views into a stacked tensor are several
        # times slower than on their own tensors (measured), which a real model has
        self.up = [rand(f, d) for _ in range(e)]
        self.gate = [rand(f, d) for _ in range(e)] if m.gated else None
        self.down = [rand(d, f) for _ in range(e)]
        self.shared = None
        if m.n_shared_experts:
            fs = m.d_ff_shared * m.n_shared_experts
            gate = rand(fs, d) if m.gated else None
            self.shared = (gate, rand(fs, d), rand(d, fs))
        self.shared_gate = rand(1, d) if m.shared_expert_gate else None
        experts = [*self.up, *(self.gate or ()), *self.down]
        rest = (self.router, self.shared_gate, *(self.shared or ()))
        self.nbytes = sum(int(t.nbytes) for t in (*experts, *rest) if t is not None)

    def _ffn(self, x: torch.Tensor, gate: Any, up: Any, down: Any) -> torch.Tensor:
        import torch.nn.functional as F

        if gate is None:
            return F.linear(F.relu(F.linear(x, up)), down)
        return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        probs = torch.softmax(F.linear(x, self.router).float(), dim=-1)
        weights, chosen = torch.topk(probs, self.m.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), chosen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        weights, chosen = self.routing(x)
        mask = F.one_hot(chosen, num_classes=self.m.n_experts).permute(2, 1, 0)
        out = torch.zeros_like(x)
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit.flatten().tolist():
            slot, tok = torch.where(mask[e])
            g = None if self.gate is None else self.gate[e]
            y = self._ffn(x[tok], g, self.up[e], self.down[e]) * weights[tok, slot, None]
            out.index_add_(0, tok, y)
        if self.shared is not None:
            s = self._ffn(x, *self.shared)
            if self.shared_gate is not None:
                s = torch.sigmoid(F.linear(x, self.shared_gate)) * s
            out = out + s
        return out

    def token_counts(self, x: torch.Tensor) -> list[int]:
        import torch

        _, chosen = self.routing(x)
        return torch.bincount(chosen.flatten(), minlength=self.m.n_experts).tolist()


def _layer_row(device: str, m: Any, tokens: int, counts: Sequence[int], times: Sequence[float]):
    median, _p10, _p90 = _stats(times)
    return {
        "device": device,
        "model": m.name,
        "tokens": tokens,
        "n_experts": m.n_experts,
        "top_k": m.top_k,
        "shared_ff": (m.d_ff_shared or 0) * m.n_shared_experts,
        "layer_ms": _round(median),
        "active_experts": sum(1 for c in counts if c > 0),
        "expert_token_counts": " ".join(str(int(c)) for c in counts),
    }


def profile_layers(
    device: str | None = None,
    models: Sequence[Any] | None = None,
    tokens: Sequence[int | str] | None = None,
    repeats: int = 5,
    min_time_s: float = 1.5,
    *,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], str]:
    """Measure whole MoE layers (router, dispatch, routed and shared experts), eager bf16.

    Each layer is built from its catalog model's shapes with random weights
    (:class:`_Layer`); its routing is the router's on a random input, fixed per
    token count, and its expert token counts are recorded with the time. Weights
    rotate over copies of the layer as in :func:`profile`; 3 warm-up calls, then on
    cuda the median of ``repeats`` timings of 20 back-to-back calls (CUDA events), on
    cpu calls timed one by one for about ``min_time_s`` seconds.

    Args:
        device: ``"cpu"``, ``"cuda"``, or None for the GPU when there is one (else
            the CPU, with a notice on stderr).
        models: catalog names (or :class:`coel_env.catalog.MoEModel` objects); None
            for the device's defaults (every catalog model on cuda; switch-base-8,
            qwen1.5-moe-a2.7b and olmoe-1b-7b on cpu).
        tokens: batch sizes entering the layer (integers >= 1); None for
            1 4 16 64 256 1024 on cuda, 1 4 16 64 on cpu.
        repeats: as for :func:`profile`.
        min_time_s: as for :func:`profile`.
        progress: show a tqdm bar on stderr.

    Returns:
        ``(rows, device)``: rows keyed by :data:`LAYER_COLUMNS` and the device used.

    Raises:
        ValueError: an unknown device or model, a bad token count, repeats < 1,
            min_time_s <= 0, or cuda requested without a GPU.
    """
    device, notice = resolve_layer_device(device)
    if notice:
        _warn(notice)
    model_list = _check_layer_models(models, device)
    token_list = (
        list(DEFAULT_LAYER_TOKENS[device]) if tokens is None else _check_tokens(tokens, device)
    )
    repeats = _check_repeats(repeats)
    min_time_s = _check_min_time(min_time_s)

    import torch
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    total = len(model_list) * len(token_list)
    bar = tqdm(total=total, desc="coel profile --layers", unit="row", disable=not progress,
               file=sys.stderr)  # fmt: skip
    try:
        with torch.inference_mode():
            for m in model_list:
                bar.set_postfix_str(m.name)
                first = _Layer(m, device)
                n_copies = _rotation_copies(first.nbytes, device)
                layers = [first]
                layers += [_Layer(m, device, i, first.router) for i in range(1, n_copies)]
                gen = torch.Generator(device=device).manual_seed(1)
                offset = 0
                for n_tok in token_list:
                    x = torch.randn(n_tok, m.d_model, generator=gen, device=device)
                    x = x.to(torch.bfloat16)
                    counts = first.token_counts(x)
                    for i in range(WARMUP_CALLS):
                        layers[i % len(layers)](x)
                    _sync(device)
                    if device == "cpu":
                        times = _time_cpu(layers, x, min_time_s, repeats)
                    else:
                        times = _time_cuda_eager(layers, x, repeats, offset)
                        offset += repeats * CALLS_PER_TIMING
                    rows.append(_layer_row(device, m, n_tok, counts, times))
                    bar.update(1)
                del layers, first
                if device == "cuda":
                    torch.cuda.empty_cache()
    finally:
        bar.close()
    return rows, device


def write_layers(
    rows: Sequence[dict[str, Any]],
    out: Path | str,
    machine_info: dict[str, Any],
    *,
    force: bool = False,
) -> list[Path]:
    """Write whole-layer rows (:data:`LAYER_COLUMNS`) and ``FILE.machine.json``.

    Raises:
        ValueError: If ``out`` is not a writable new .csv path (see check_out).
    """
    out = check_out(out, force)
    mode = "w" if force else "x"
    _write_csv(out, LAYER_COLUMNS, rows, mode)
    mpath = machine_path(out)
    with open(mpath, mode, encoding="utf-8") as f:
        json.dump(machine_info, f, indent=1)
        f.write("\n")
    return [out, mpath]


def _layers_main(args: argparse.Namespace, out: Path) -> int:
    if args.dtypes is not None:
        raise ValueError("--dtypes is not used with --layers: layers run in bf16")
    started = time.time()
    rows, device = profile_layers(
        device=args.device,
        models=args.models,
        tokens=args.tokens,
        repeats=args.repeats,
        min_time_s=args.min_time_s,
    )
    options = {
        "layers": True,
        "device": device,
        "models": args.models,
        "tokens": None if args.tokens is None else _check_tokens(args.tokens, device),
        "repeats": args.repeats,
        "min_time_s": args.min_time_s,
        "out": str(args.out),
        "force": bool(args.force),
    }
    info = machine_info(
        {"args": options, "argv": sys.argv[1:], "elapsed_s": round(time.time() - started, 1)}
    )
    written = write_layers(rows, out, info, force=args.force)
    header = ("model", "tokens", "active", "layer_ms")
    table = [header] + [
        (r["model"], str(r["tokens"]), str(r["active_experts"]), f"{r['layer_ms']:.4f}")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))))  # fmt: skip
    print(f"wrote {len(rows)} layer rows ({device}) to {written[0]}")
    print(f"wrote {written[1]}")
    print(f"fit the layer terms with: coel cost calibrate --layers {written[0]} "
          "--profile PROFILE.csv (or --device NAME)")  # fmt: skip
    return 0


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``coel profile`` options to a parser.

    Args:
        parser: The subcommand's parser.
    """
    parser.add_argument(
        "--device",
        default=None,
        metavar="{cpu,cuda}",
        help="where to run the experts (default: cpu) or layers (default: the GPU if there "
        "is one, else the CPU)",
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="measure whole MoE layers of catalog models (router, dispatch, routed and "
        "shared experts; bf16, eager) instead of single experts; --models then takes "
        "catalog names (default: all on cuda, switch-base-8 qwen1.5-moe-a2.7b olmoe-1b-7b "
        "on cpu) and --tokens the batch entering the layer (default: 1 4 16 64 256 1024 on "
        "cuda, 1 4 16 64 on cpu); writes the columns of h200_moe_layers_eager_calib.csv",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help=f"expert shapes (default: all on cuda, small ones on cpu); known: "
        f"{', '.join(EXPERT_SHAPES)}",
    )
    parser.add_argument(
        "--tokens",
        nargs="+",
        default=None,
        metavar="N",
        help="token counts per expert call (default: 1 2 4 .. 4096 on cuda, 1 4 16 64 256 on cpu)",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=None,
        metavar="DTYPE",
        help=f"any of {', '.join(DTYPES)} (default: bf16 on cuda, fp32 bf16 on cpu)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="cuda: timings of 20 calls per row; cpu: least timed calls per row (default: 5)",
    )
    parser.add_argument(
        "--min-time-s",
        type=float,
        default=1.5,
        help="cpu: seconds of timed calls per row (default: 1.5)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output .csv path")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _summary(rows: Sequence[dict[str, Any]]) -> str:
    header = ("model", "dtype", "mode", "tokens", "median_ms")
    table = [header] + [
        (r["model"], r["dtype"], r["mode"], str(r["tokens"]), f"{r['median_ms']:.4f}") for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for line in table:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run ``coel profile``: validate, measure, write, print a summary.

    Args:
        args: Parsed options from add_arguments.

    Returns:
        The exit code (0).

    Raises:
        ValueError: On bad input (reported by the CLI as one line, exit 2).
    """
    out = check_out(args.out, args.force)
    if getattr(args, "layers", False):
        return _layers_main(args, out)
    if args.device is None:
        args.device = "cpu"
    started = time.time()
    rows, copy_rows = profile(
        device=args.device,
        models=args.models,
        tokens=args.tokens,
        dtypes=args.dtypes,
        repeats=args.repeats,
        min_time_s=args.min_time_s,
    )
    options = {
        "device": args.device,
        "models": args.models,
        "tokens": None if args.tokens is None else _check_tokens(args.tokens, args.device),
        "dtypes": args.dtypes,
        "repeats": args.repeats,
        "min_time_s": args.min_time_s,
        "out": str(args.out),
        "force": bool(args.force),
    }
    info = machine_info(
        {"args": options, "argv": sys.argv[1:], "elapsed_s": round(time.time() - started, 1)}
    )
    written = write_profile(rows, copy_rows, out, info, force=args.force)
    if rows:
        print(_summary(rows))
    print(f"wrote {len(rows)} expert rows to {written[0]}")
    for path in written[1:]:
        print(f"wrote {path}")
    return 0
