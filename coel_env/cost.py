"""The MoE cost model: latency, transfers, memory and energy from fitted device profiles.

Pure functions over a catalog model (:mod:`coel_env.catalog`) and a device
profile (:mod:`coel_env.profiles`); token counts may be numpy arrays. Units are
in the names: ``_ms`` milliseconds, ``_bytes``, ``_gbit_s`` gigabits per
second (network links), ``_j`` joules.

A whole MoE layer in eager PyTorch (the Hugging Face ``SparseMoeBlock`` loop) is
modelled from first principles on the measured expert data:

* router: the gate matmul plus softmax, top-k, normalisation and the one-hot
  expert mask (:data:`ROUTER_OPS` dispatched kernels);
* per active expert: ``torch.where`` on the expert mask (which synchronises the
  host with the device, so dispatch does not overlap the previous expert's
  kernels), a gather of its tokens, the expert FFN (the fitted expert model),
  the scale by routing weights and a scatter-add (:data:`DISPATCH_OPS` kernels
  besides the FFN, moving ``3 * tokens * d_model`` activations);
* shared experts on the whole batch (Qwen adds a sigmoid gate);
* in ``cudagraph`` mode the same kernels without host dispatch floors.

That is ``terms="first-principles"``. With ``terms="calibrated"`` (eager mode) the
router and dispatch take layer-level terms fitted to whole measured layers
(:class:`coel_env.profiles.LayerFit`, :func:`layer_fit`, :func:`fit_layer_terms`):
the router GEMM plus a fixed time per layer (softmax, top-k, sort and mask) and a time
per value of the dense one-hot routing mask (``tokens x top_k x n_experts`` values that
the eager layer builds, sums per expert and searches once per active expert), and per
active expert a fixed time, a time per MB of its activations moved, and the host
time of more kernel launches beside its FFN's, which a large expert's GPU time hides
and a small one's does not (whole layers of small experts cost more per active
expert than their FFN alone). The expert FFN fits are the same in both.
:func:`router_ms`, :func:`dispatch_ms` and :func:`shared_ms` are the layer's parts;
the simulator's serving cost (:mod:`coel_env.core.evaluation`) and the MILP's
coefficients (:mod:`agents.milp.from_world`) take them from here for both ``terms``
(no other copy of the layer formula exists).

The dense part (attention projections and attention over the KV cache) is
separate: :func:`attention_latency_ms`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from coel_env.catalog import BITS, MoEModel, get_model, weight_bytes
from coel_env.profiles import (
    DeviceProfile,
    KernelFit,
    LayerFit,
    get_device,
    n_ops,
    read_layer_csv,
)
from coel_env.quality import bits_loss, quantization_loss, token_keep_loss

__all__ = [
    "BITS",
    "ROUTER_OPS",
    "DISPATCH_OPS",
    "expert_latency_ms",
    "ffn_latency_ms",
    "fetch_latency_ms",
    "attention_latency_ms",
    "LAYER_TERMS",
    "LAYER_FILES",
    "moe_layer_latency_ms",
    "moe_layer_breakdown",
    "router_ms",
    "dispatch_ms",
    "shared_ms",
    "layer_fit",
    "fit_layer_terms",
    "layer_rows",
    "activation_bytes",
    "transfer_latency_ms",
    "expert_memory_bytes",
    "model_memory_bytes",
    "energy_j",
    "bits_loss",
    "quantization_loss",
    "token_keep_loss",
]

#: Kernels the router launches: gate linear, softmax, top-k, renormalise (2), one-hot mask.
ROUTER_OPS = 6
#: Kernels per active expert besides its FFN: where (host sync), gather, index weights,
#: scale, index_add_.
DISPATCH_OPS = 5
#: Kernels of Qwen's shared-expert gate: linear, sigmoid, mul; plus the add of the output.
SHARED_GATE_OPS = 4
ACT_BYTES = 2  # bf16 activations
#: How a layer's router and dispatch are costed (see the module doc).
LAYER_TERMS = ("first-principles", "calibrated")
#: Whole layers measured per built-in device (in ``coel_env/data/profiles``).
LAYER_FILES = {"h200": "h200_moe_layers_eager_calib.csv"}
#: Kernel launches per active expert tried when fitting :attr:`LayerFit.dispatch_ops`.
DISPATCH_OPS_GRID = tuple(np.arange(0.0, 16.01, 0.5))
#: Terms :func:`fit_layer_terms` fits linearly: ``layer_ms``, ``active_ms``,
#: ``move_ms_per_mb`` and ``mask_ms_per_mvalue`` of :class:`coel_env.profiles.LayerFit`.
N_LAYER_TERMS = 4


def _model(model: str | MoEModel) -> MoEModel:
    return model if isinstance(model, MoEModel) else get_model(model)


def _tokens(tokens, field: str = "tokens") -> np.ndarray:
    t = np.asarray(tokens, dtype=float)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{field} must be finite numbers; got {tokens!r}")
    if (t < 0).any():
        raise ValueError(f"{field}={t[t < 0].flat[0]:g} is not allowed; must be >= 0")
    return t


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(
            f"bits={bits!r} is not allowed; allowed bit widths: {', '.join(map(str, BITS))}"
        )
    return int(bits)


def ffn_latency_ms(
    device: str | DeviceProfile,
    d_model: int,
    d_ff: int,
    gated: bool,
    tokens,
    *,
    bits: int = 16,
    mode: str = "eager",
) -> np.ndarray:
    """Latency of one FFN (an expert of any shape) for ``tokens`` tokens; 0 where tokens == 0."""
    dev = get_device(device)
    t = _tokens(tokens)
    n_params = (3 if gated else 2) * d_model * d_ff
    w = weight_bytes(n_params, _check_bits(bits))
    ms = _call_ms(dev, bits, mode, w, 2.0 * t * n_params, n_ops(gated))
    return np.where(t > 0, ms, 0.0)


def _call_ms(dev: DeviceProfile, bits: int, mode: str, w, flops, ops) -> np.ndarray:
    """Latency of kernel calls; a CUDA-graph replay is never slower than the eager call.

    The eager and CUDA-graph fits are separate; their kernel terms differ by a
    few percent, which on a slower derived device could make the replay the
    slower of the two. Replay runs the same kernels without launches, so take
    the smaller.
    """
    ms = dev.kernel_for(bits, mode)[0].latency_ms(w, flops, ops)
    if mode == "cudagraph":
        ms = np.minimum(ms, dev.kernel_for(bits, "eager")[0].latency_ms(w, flops, ops))
    return ms


def expert_latency_ms(
    model: str | MoEModel,
    device: str | DeviceProfile,
    tokens,
    *,
    bits: int = 16,
    mode: str = "eager",
) -> np.ndarray:
    """Latency of one routed expert of ``model`` on ``device`` (GPU or host CPU).

    Args:
        model: catalog name or model.
        device: device name or profile (a GPU, or a CPU for host execution).
        tokens: tokens the expert processes (scalar or array, >= 0).
        bits: weight bit width, one of 16, 8, 4, 3, 2.
        mode: ``"eager"`` or ``"cudagraph"``.

    Returns:
        Milliseconds, the shape of ``tokens`` (0 where no token).
    """
    m = _model(model)
    return ffn_latency_ms(device, m.d_model, m.d_ff_expert, m.gated, tokens, bits=bits, mode=mode)


def fetch_latency_ms(
    model: str | MoEModel, device: str | DeviceProfile, n_experts=1, *, bits: int = 16
) -> np.ndarray:
    """Copy ``n_experts`` routed experts' weights host -> GPU over the server's PCIe link.

    Zero on unified memory (Jetson): the GPU reads host memory directly.
    """
    m, dev = _model(model), get_device(device)
    if dev.kind != "gpu":
        raise ValueError(f"device={dev.name!r} is a CPU; fetching experts needs a GPU device")
    n = _tokens(n_experts, "n_experts")
    bits = _check_bits(bits)
    if dev.unified_memory or dev.pcie is None:
        return np.zeros_like(n)
    return np.where(n > 0, n * dev.pcie.copy_ms(m.expert_bytes(bits)), 0.0)


def _kernel16(dev: DeviceProfile, mode: str) -> KernelFit:
    return dev.kernel_for(16, mode)[0]


def attention_latency_ms(
    model: str | MoEModel,
    device: str | DeviceProfile,
    *,
    batch: int = 1,
    kv_len: int = 512,
    phase: str = "decode",
    tokens: int | None = None,
    mode: str = "eager",
) -> dict[str, float]:
    """Dense part of one layer: projections and attention, fitted to the H200 rows.

    Decode processes one new token per sequence against ``kv_len`` cached ones;
    prefill processes ``tokens`` (default ``kv_len``) with causal attention.
    DeepSeek's MLA uses its ranks: projection weights from the MLA shapes and a
    compressed KV cache of ``kv_lora_rank + qk_rope_head_dim`` values per token.

    Returns:
        ``{"proj_ms", "sdpa_ms", "total_ms"}``.
    """
    m, dev = _model(model), get_device(device)
    if phase not in ("decode", "prefill"):
        raise ValueError(f"phase={phase!r} is not allowed; allowed: 'decode', 'prefill'")
    for name, v in (("batch", batch), ("kv_len", kv_len)):
        if not (isinstance(v, int | np.integer) and v >= 1):
            raise ValueError(f"{name}={v!r} is not allowed; must be an integer >= 1")
    q_tokens = 1 if phase == "decode" else (kv_len if tokens is None else int(tokens))
    a = m.attention
    proj_params = m.attention.params(m.d_model)  # one layer
    k16 = _kernel16(dev, mode)
    kernel = k16.without_dispatch()
    n_tok = batch * q_tokens
    proj_ms = float(
        kernel.latency_ms(2.0 * proj_params, 2.0 * proj_params * n_tok, 4) - kernel.c_ms
    )
    if a.is_mla:  # absorbed MLA: scores over the latent (rank + rope), values in the latent
        qk_dim, v_dim = a.kv_lora_rank + a.qk_rope_head_dim, a.kv_lora_rank
    else:
        qk_dim = v_dim = a.head_dim
    kv_bytes = ACT_BYTES * batch * kv_len * a.kv_cache_values_per_token
    flops = 2.0 * n_tok * kv_len * a.n_heads * (qk_dim + v_dim)
    if phase == "prefill":
        flops /= 2
    att = dev.attention
    if att is not None:
        proj_ms += att.proj_c_ms
        sdpa_ms = att.sdpa_c_ms + float(
            np.exp(
                np.logaddexp(
                    3 * np.log(kv_bytes / 1e6 / att.sdpa_gbps),
                    3 * np.log(flops / 1e9 / att.sdpa_tflops),
                )
                / 3
            )
        )
    else:  # a CPU: the same roofline through its bf16 kernel model
        proj_ms += k16.c_ms + 4 * k16.op_ms
        sdpa_ms = float(k16.latency_ms(kv_bytes, flops, 3))
    return {"proj_ms": proj_ms, "sdpa_ms": sdpa_ms, "total_ms": proj_ms + sdpa_ms}


def _expert_bits(m: MoEModel, bits) -> np.ndarray:
    b = np.broadcast_to(np.asarray(bits), (m.n_experts,))
    for v in np.unique(b):
        _check_bits(int(v) if float(v).is_integer() else v)
    return b.astype(int)


def _check_terms(terms: str, mode: str) -> str:
    if terms not in LAYER_TERMS:
        raise ValueError(
            f"terms={terms!r} is not allowed; allowed: {', '.join(map(repr, LAYER_TERMS))}"
        )
    if terms == "calibrated" and mode != "eager":
        raise ValueError(
            f"terms='calibrated' with mode={mode!r} is not allowed: the layer terms are "
            "fitted to eager layers; use mode='eager' or terms='first-principles'"
        )
    return terms


@functools.cache
def _shipped_layer_fit(name: str) -> LayerFit:
    from coel_env.profiles import _data_path

    rows = read_layer_csv(_data_path(LAYER_FILES[name]), device="cuda")
    return fit_layer_terms(rows, name)


def layer_fit(device: str | DeviceProfile) -> LayerFit:
    """The layer-level terms of ``device`` (for ``terms="calibrated"``).

    A profile's own terms (``coel cost calibrate --layers``, read by
    :func:`coel_env.profiles.load_profile`) come first; the built-in measured GPU
    fits the shipped whole layers (:data:`LAYER_FILES`); any other GPU takes the H200
    terms with host times kept and activation moves scaled by its 16-bit weight
    bandwidth over the H200's (marked derived, as its kernel fits are).

    Raises:
        ValueError: a CPU without terms of its own (no layer was measured on one).
    """
    dev = get_device(device)
    if dev.layer is not None:
        return dev.layer
    if dev.name in LAYER_FILES:
        return _shipped_layer_fit(dev.name)
    if dev.kind != "gpu":
        raise ValueError(
            f"device {dev.name!r} is a CPU without layer terms; whole layers were measured "
            f"on: {', '.join(LAYER_FILES)}; measure its own with coel profile --layers and "
            "fit them with coel cost calibrate --layers"
        )
    ref = get_device("h200")
    scale = _kernel16(dev, "eager").weight_gbps / _kernel16(ref, "eager").weight_gbps
    src = "derived from the h200 layer terms (host times kept, moves scaled by bandwidth)"
    return _shipped_layer_fit("h200").derived_for(scale, src)


def router_ms(
    model: str | MoEModel,
    device: str | DeviceProfile,
    tokens,
    *,
    mode: str = "eager",
    terms: str = "first-principles",
    kernel_ms: Callable | None = None,
) -> np.ndarray:
    """The router of one MoE layer for a batch of ``tokens`` tokens (0 where none).

    First principles: the gate GEMM and :data:`ROUTER_OPS` launches through the
    16-bit kernel fit. Calibrated: the GEMM's kernel time plus the fitted per-layer
    time (:attr:`coel_env.profiles.LayerFit.layer_ms`) and the fitted time of the
    one-hot routing mask, ``tokens x top_k x n_experts`` values
    (:attr:`~coel_env.profiles.LayerFit.mask_ms_per_mvalue`).

    Args:
        kernel_ms: first principles only: ``kernel_ms(weight_bytes, flops, ops)``
            evaluates the device's 16-bit kernel fit in ``mode`` (default: the fit's
            :meth:`~coel_env.profiles.KernelFit.latency_ms`, the faster of the CUDA-graph
            and eager fits in ``cudagraph`` mode). The simulator passes its vectorised
            evaluation of the same fit, whose last bits its recorded results hold.
    """
    m, dev = _model(model), get_device(device)
    t = _tokens(tokens)
    _check_terms(terms, mode)
    d, e = m.d_model, m.n_experts
    if terms == "first-principles":
        if kernel_ms is None:
            ms = _call_ms(dev, 16, mode, ACT_BYTES * d * e, 2.0 * t * d * e, ROUTER_OPS)
        else:
            ms = kernel_ms(ACT_BYTES * d * e, 2.0 * t * d * e, ROUTER_OPS)
    else:
        fit, kernel = layer_fit(dev), _kernel16(dev, mode).without_dispatch()
        gemm = kernel.latency_ms(ACT_BYTES * d * e, 2.0 * t * d * e, 1) - kernel.c_ms
        mask = fit.mask_ms_per_mvalue * (t * m.top_k * e / 1e6)
        ms = fit.layer_ms + gemm + mask
    return np.where(t > 0, ms, 0.0)


def dispatch_ms(
    model: str | MoEModel,
    device: str | DeviceProfile,
    tokens,
    *,
    mode: str = "eager",
    terms: str = "first-principles",
) -> np.ndarray:
    """Dispatch of one active routed expert that receives ``tokens`` tokens, on the GPU
    that runs the layer (0 where no token): gather its tokens, scale by the routing
    weights, scatter-add the result.

    First principles: :data:`DISPATCH_OPS` launches moving ``3 * tokens * d_model``
    bf16 activations through the 16-bit kernel fit. Calibrated: the fitted time per
    active expert and per MB moved, and the fitted launches' host time beyond what the
    model's 16-bit expert FFN on this device hides (a quantized, host or remote expert
    is taken to hide as much: the launches are the home GPU's).
    """
    m, dev = _model(model), get_device(device)
    t = _tokens(tokens)
    _check_terms(terms, mode)
    moved = 3.0 * ACT_BYTES * m.d_model  # bytes per token: gather, scale, scatter-add
    if terms == "first-principles":
        ms = _call_ms(dev, 16, mode, moved * t, np.ones(t.shape), DISPATCH_OPS)
    else:
        fit, kernel = layer_fit(dev), _kernel16(dev, mode)
        w, f, ops = weight_bytes(m.expert_params, 16), 2.0 * m.expert_params * t, n_ops(m.gated)
        hidden = kernel.latency_ms(w, f, ops + fit.dispatch_ops) - kernel.latency_ms(w, f, ops)
        ms = fit.active_ms + fit.move_ms_per_mb * (moved * t / 1e6) + hidden
    return np.where(t > 0, ms, 0.0)


def shared_ms(
    model: str | MoEModel,
    device: str | DeviceProfile,
    tokens,
    *,
    mode: str = "eager",
    terms: str = "first-principles",
    combine: bool = True,
) -> np.ndarray:
    """The shared experts of one MoE layer on a batch of ``tokens`` tokens (0 without
    shared experts or tokens): their FFN (DeepSeek's merged into one) and, with
    ``combine``, the kernels that join their output to the routed experts' (the add,
    with Qwen's sigmoid gate: :data:`SHARED_GATE_OPS`). The same for both ``terms``.

    The simulator's first-principles serving cost counts the FFN alone
    (``combine=False``), as it always has: its recorded results hold that; its
    calibrated terms count the whole part, as the fit to whole layers does.
    """
    m, dev = _model(model), get_device(device)
    t = _tokens(tokens)
    _check_terms(terms, mode)
    if not m.n_shared_experts:
        return np.zeros_like(t)
    d = m.d_model
    d_ff_s = m.d_ff_shared * m.n_shared_experts  # DeepSeek merges its shared experts
    ms = ffn_latency_ms(dev, d, d_ff_s, m.gated, t, bits=16, mode=mode)
    if combine:
        gate_ops = SHARED_GATE_OPS if m.shared_expert_gate else 1
        ms = ms + _call_ms(dev, 16, mode, ACT_BYTES * d * t, 2.0 * t * d, gate_ops)
    return np.where(t > 0, ms, 0.0)


def moe_layer_breakdown(
    model: str | MoEModel,
    device: str | DeviceProfile,
    expert_tokens: Sequence[float] | np.ndarray,
    *,
    bits=16,
    mode: str = "eager",
    terms: str = "first-principles",
) -> dict[str, float]:
    """Parts of :func:`moe_layer_latency_ms`: router, experts, dispatch, shared, total [ms]."""
    m, dev = _model(model), get_device(device)
    et = _tokens(expert_tokens, "expert_tokens")
    if et.shape != (m.n_experts,):
        raise ValueError(
            f"expert_tokens has shape {et.shape}; {m.name} needs one count per routed expert "
            f"({m.n_experts})"
        )
    b = _expert_bits(m, bits)
    _kernel16(dev, mode)  # validates mode even for an empty batch
    _check_terms(terms, mode)
    batch = et.sum() / m.top_k
    out = {"batch_tokens": float(batch), "active_experts": int((et > 0).sum())}
    if batch == 0:
        return {**out, "router_ms": 0.0, "experts_ms": 0.0, "dispatch_ms": 0.0, "shared_ms": 0.0,
                "total_ms": 0.0}  # fmt: skip
    router = float(router_ms(m, dev, batch, mode=mode, terms=terms))
    experts = 0.0
    for bw in np.unique(b):
        sel = (b == bw) & (et > 0)
        if sel.any():
            experts += float(expert_latency_ms(m, dev, et[sel], bits=int(bw), mode=mode).sum())
    dispatch = float(dispatch_ms(m, dev, et[et > 0], mode=mode, terms=terms).sum())
    shared = float(shared_ms(m, dev, batch, mode=mode, terms=terms))
    total = router + experts + dispatch + shared
    return {**out, "router_ms": router, "experts_ms": experts, "dispatch_ms": dispatch,
            "shared_ms": shared, "total_ms": total}  # fmt: skip


def moe_layer_latency_ms(
    model: str | MoEModel,
    device: str | DeviceProfile,
    expert_tokens: Sequence[float] | np.ndarray,
    *,
    bits=16,
    mode: str = "eager",
    terms: str = "first-principles",
) -> float:
    """Latency of one whole MoE layer (router, routed and shared experts, dispatch).

    Args:
        model: catalog name or model.
        device: device name or profile.
        expert_tokens: one token count per routed expert; the batch is
            ``sum(expert_tokens) / top_k`` tokens.
        bits: one bit width, or one per routed expert.
        mode: ``"eager"`` (one kernel launch per op) or ``"cudagraph"``.
        terms: ``"first-principles"`` or ``"calibrated"`` (eager only): how the
            router and dispatch are costed (see the module doc).

    Returns:
        Milliseconds.
    """
    parts = moe_layer_breakdown(model, device, expert_tokens, bits=bits, mode=mode, terms=terms)
    return parts["total_ms"]


def _layer_models(rows: pd.DataFrame) -> list[MoEModel]:
    """The catalog model of every row of a whole-layer frame, checked against its counts."""
    out = []
    for i, r in enumerate(rows.itertuples()):
        m = get_model(r.model)
        if r.counts.size != m.n_experts or int(r.top_k) != m.top_k:
            raise ValueError(
                f"layer row {i + 1} ({r.model}, {r.tokens:g} tokens): {r.counts.size} expert "
                f"counts and top_k={r.top_k:g}; {m.name} has {m.n_experts} experts, top-{m.top_k}"
            )
        out.append(m)
    return out


def layer_rows(
    rows: pd.DataFrame, device: str | DeviceProfile, terms: str = "calibrated"
) -> pd.DataFrame:
    """Predicted whole layers beside measured ones.

    Args:
        rows: :func:`coel_env.profiles.read_layer_csv` output.
        device: the device (with the layer terms to use, for ``"calibrated"``).
        terms: one of :data:`LAYER_TERMS`.

    Returns:
        ``model, tokens, active_experts, layer_ms, pred_ms, ape`` (absolute % error).
    """
    dev = get_device(device)
    models = _layer_models(rows)
    pred = [
        moe_layer_latency_ms(m, dev, r.counts, terms=terms)
        for m, r in zip(models, rows.itertuples(), strict=True)
    ]
    out = pd.DataFrame(
        {
            "model": rows.model.values,
            "tokens": rows.tokens.values.astype(int),
            "active_experts": [int((c > 0).sum()) for c in rows.counts],
            "layer_ms": rows.layer_ms.values,
            "pred_ms": pred,
        }
    )
    out["ape"] = np.abs(out.pred_ms / out.layer_ms - 1) * 100
    return out


def fit_layer_terms(
    rows: pd.DataFrame, device: str | DeviceProfile, *, source: str | None = None
) -> LayerFit:
    """Fit the layer-level terms to whole measured layers, keeping the expert fits.

    The calibrated layer (:func:`moe_layer_latency_ms`) is linear in
    ``layer_ms``, ``active_ms``, ``move_ms_per_mb`` and ``mask_ms_per_mvalue`` for a given
    ``dispatch_ops``; for each ``dispatch_ops`` of :data:`DISPATCH_OPS_GRID` the four are fitted
    non-negative by least absolute relative error (a linear program, scipy's HiGHS:
    the mean absolute % error is the figure the model is judged by), and the
    ``dispatch_ops`` with the smallest error wins. Layers of small experts alone
    cannot tell launches from a fixed time per active expert (no launch is hidden),
    so among equally good fits the count nearest :data:`DISPATCH_OPS` (the launches
    the first-principles model counts) wins. The design matrix is the layer formula
    itself evaluated at unit terms, so the fit and the model cannot disagree.

    Args:
        rows: :func:`coel_env.profiles.read_layer_csv` output (eager layers).
        device: the device whose expert fits the layers ran on.
        source: recorded in the fit (default: the rows' file names).

    Raises:
        ValueError: no rows, or a row whose model is not in the catalog or whose
            counts do not fit the catalog model.
    """
    from scipy.optimize import linprog

    dev = get_device(device)
    if len(rows) == 0:
        raise ValueError("no whole-layer rows to fit the layer terms to")
    models = _layer_models(rows)
    y = rows.layer_ms.values.astype(float)
    n = len(y)

    def totals(x, ops):
        lf = LayerFit(*x[:3], dispatch_ops=ops, source="fit", mask_ms_per_mvalue=x[3])
        d = replace(dev, layer=lf)
        return np.array(
            [
                moe_layer_latency_ms(m, d, r.counts, terms="calibrated")
                for m, r in zip(models, rows.itertuples(), strict=True)
            ]
        )

    fits = []
    for ops in DISPATCH_OPS_GRID:
        base = totals(np.zeros(N_LAYER_TERMS), ops)
        units = np.eye(N_LAYER_TERMS)
        a = np.stack([totals(u, ops) - base for u in units], axis=1) / y[:, None]
        r = (y - base) / y
        # min sum(s) over x >= 0, s >= 0 with -s <= a x - r <= s
        c = np.r_[np.zeros(N_LAYER_TERMS), np.ones(n)]
        a_ub = np.block([[a, -np.eye(n)], [-a, -np.eye(n)]])
        res = linprog(c, A_ub=a_ub, b_ub=np.r_[r, -r], bounds=(0, None), method="highs")
        if not res.success:  # pragma: no cover - the program is always feasible
            raise RuntimeError(f"layer-term fit failed: {res.message}")
        x = np.maximum(res.x[:N_LAYER_TERMS], 0.0)
        fits.append((float(np.abs(a @ x - r).sum()), ops, x))
    least = min(f[0] for f in fits)
    tied = [f for f in fits if f[0] <= least * (1 + 1e-6) + 1e-12]
    _, ops, x = min(tied, key=lambda f: (abs(f[1] - DISPATCH_OPS), f[1]))
    if source is None:
        source = ", ".join(sorted(set(rows.run))) if "run" in rows.columns else "layers"
    x = [float(v) for v in x]
    return LayerFit(
        *x[:3], dispatch_ops=float(ops), source=source, n_rows=n, mask_ms_per_mvalue=x[3]
    )


def activation_bytes(tokens, d_model: int, *, keep_ratio=1.0, bytes_per_value: int = ACT_BYTES):
    """Bytes of activations for ``tokens`` tokens after keeping ``keep_ratio`` of them."""
    k = np.asarray(keep_ratio, dtype=float)
    if (~((k > 0) & (k <= 1))).any():
        raise ValueError(f"keep_ratio={keep_ratio!r} is not allowed; must be in (0, 1]")
    return np.ceil(_tokens(tokens) * k) * d_model * bytes_per_value


def transfer_latency_ms(
    tokens,
    d_model: int,
    *,
    bandwidth_gbit_s: float,
    latency_ms: float,
    keep_ratio=1.0,
    bytes_per_value: int = ACT_BYTES,
) -> np.ndarray:
    """Send activations between servers: ``latency + bytes * 8 / bandwidth``.

    ``tokens x d_model x bytes x keep_ratio`` go over a link of
    ``bandwidth_gbit_s`` gigabits per second and ``latency_ms`` one-way latency.
    """
    if not (math.isfinite(bandwidth_gbit_s) and bandwidth_gbit_s > 0):
        raise ValueError(f"bandwidth_gbit_s={bandwidth_gbit_s!r} is not allowed; must be > 0")
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency_ms={latency_ms!r} is not allowed; must be >= 0")
    nbytes = activation_bytes(
        tokens, d_model, keep_ratio=keep_ratio, bytes_per_value=bytes_per_value
    )
    return np.where(nbytes > 0, latency_ms + nbytes * 8 / (bandwidth_gbit_s * 1e6), 0.0)


def expert_memory_bytes(model: str | MoEModel, bits) -> int:
    """Memory of a set of routed experts: one bit width per expert (any array shape)."""
    m = _model(model)
    b = np.asarray(bits)
    if b.size == 0:
        return 0
    bad = ~np.isin(b, BITS)
    if bad.any():
        _check_bits(b[bad].flat[0])
    sizes = {k: m.expert_bytes(k) for k in BITS}
    return int(
        sum(sizes[int(k)] * int(n) for k, n in zip(*np.unique(b, return_counts=True), strict=True))
    )


def model_memory_bytes(model: str | MoEModel, expert_bits=16, *, non_expert_bits: int = 16) -> int:
    """Whole-model memory: non-expert weights plus every routed expert at its bit width."""
    m = _model(model)
    eb = np.broadcast_to(np.asarray(expert_bits), (m.n_moe_layers, m.n_experts))
    return m.non_expert_bytes(_check_bits(non_expert_bits)) + expert_memory_bytes(m, eb)


def energy_j(device: str | DeviceProfile, busy_ms, idle_ms=0.0) -> np.ndarray:
    """Energy of a device: busy time at busy power plus idle time at idle power [J]."""
    dev = get_device(device)
    busy, idle = _tokens(busy_ms, "busy_ms"), _tokens(idle_ms, "idle_ms")
    return (dev.power_busy_w * busy + dev.power_idle_w * idle) / 1000.0
