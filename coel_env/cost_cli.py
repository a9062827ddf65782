"""``coel cost``: check the fitted cost model against measurements, or ask it about a layer.

coel cost validate [--markdown]
    per measured device, mode and kernel kind: rows, median / mean / max
    absolute percentage error of the fitted expert model against every
    measured row (with the run factors of secondary files, and without);
    the attention fit; whole H200 MoE layers per model and token count: the
    first-principles and the calibrated layer model, and the calibrated model
    fitted without the row's model (leave one model out); the derived devices
    against published decode throughput when --devices-dir points at the
    published device figures (the devices folder of the data sets listed in
    the README).
coel cost layer --model M --device D --tokens T [--bits B] [--mode eager|cudagraph]
                [--terms first-principles|calibrated]
    one MoE layer's predicted latency with its parts, for T tokens routed
    by the model's top-k over its experts (uniform routing, or --skew).
coel cost calibrate --layers FILE (--device D | --profile P.csv) [--out F.json]
    fit the layer terms (router, top-k and sort, per-active-expert dispatch)
    to whole layers measured by coel profile --layers, on the expert fits of
    a device (a built-in name, or a profile written by coel profile); prints
    each layer's error and writes the terms as JSON (default with --profile:
    P.layer_fit.json beside it, which coel_env.profiles.load_profile reads).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from coel_env import cost, profiles
from coel_env.catalog import BITS, model_names

# Dense Llama-family shapes for checking derived GPUs against published decode throughput.
# Source: the config.json of meta-llama/Meta-Llama-3-8B (32 layers, d 4096, ff 14336, 32/8
# heads of 128, vocab 128256) and meta-llama/Llama-3.2-3B (28, 3072, 8192, 24/8 of 128,
# vocab 128256, tied embeddings). Llama 3.1 8B has the Llama 3 8B shape.
DENSE_SHAPES = {
    "llama-3-8b": dict(n_layers=32, d_model=4096, d_ff=14336, heads=32, kv_heads=8, head_dim=128,
                       vocab=128256),
    "llama-3.2-3b": dict(n_layers=28, d_model=3072, d_ff=8192, heads=24, kv_heads=8,
                         head_dim=128, vocab=128256),
}  # fmt: skip
# (device, published row) pairs that are comparable: same GPU, single card, a Llama 3 model.
# llama.cpp Q4_K_M is ~4.85 bits per weight (llama.cpp quantize table); F16 is 16.
_LLAMACPP = "llamacpp_llama3_gpu_tokens_per_s.csv"
_ORIN = "jetson_orin_nano_mlc_int4_decode_tokens_per_s.csv"
_CHECKS = (
    ("rtx-4090", _LLAMACPP, "4090 24GB", "LLaMA-3-8B"),
    ("a100-80gb", _LLAMACPP, "A100 PCIe 80GB", "LLaMA-3-8B"),
    ("jetson-orin-nano-8gb", _ORIN, None, "Llama 3.1 8B"),
    ("jetson-orin-nano-8gb", _ORIN, None, "Llama 3.2 3B"),
)
_DENSE_FOR = {
    "LLaMA-3-8B": "llama-3-8b",
    "Llama 3.1 8B": "llama-3-8b",
    "Llama 3.2 3B": "llama-3.2-3b",
}
KV_LEN_CHECK = 512  # short context of the decode benchmarks


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cost_command", metavar="{validate,layer,calibrate}")
    sub.required = True
    v = sub.add_parser("validate", help="fitted model against every measured row")
    v.add_argument("--markdown", action="store_true", help="print markdown tables")
    v.add_argument(
        "--devices-dir",
        type=Path,
        help="folder with the published decode-throughput CSVs (the data sets' devices/)",
    )
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=validate_main)
    lay = sub.add_parser("layer", help="one MoE layer's predicted latency with its parts")
    lay.add_argument("--model", required=True, help=f"one of: {', '.join(model_names())}")
    lay.add_argument("--device", required=True, help="a device name (see coel cost validate)")
    lay.add_argument("--tokens", required=True, type=int, help="tokens in the batch (>= 1)")
    lay.add_argument("--bits", type=int, default=16, help=f"weight bits, one of {BITS}")
    lay.add_argument("--mode", default="eager", choices=profiles.MODES)
    lay.add_argument(
        "--skew",
        type=float,
        default=0.0,
        help="Zipf exponent of expert popularity (0: uniform routing)",
    )
    lay.add_argument("--kv-len", type=int, default=512, help="KV length for the attention part")
    lay.add_argument(
        "--terms",
        default="first-principles",
        choices=cost.LAYER_TERMS,
        help="router and dispatch from first principles, or the terms fitted to whole layers",
    )
    lay.set_defaults(func=layer_main)
    cal = sub.add_parser("calibrate", help="fit the layer terms to measured whole layers")
    cal.add_argument(
        "--layers", required=True, type=Path, help="whole-layer CSV (coel profile --layers)"
    )
    where = cal.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", help="a built-in or loaded device whose expert fits to use")
    where.add_argument(
        "--profile", type=Path, help="a profile CSV written by coel profile (its expert fits)"
    )
    cal.add_argument(
        "--out",
        type=Path,
        help="JSON for the fitted terms (default with --profile: PROFILE.layer_fit.json)",
    )
    cal.add_argument("--force", action="store_true", help="overwrite --out")
    cal.add_argument("--json", action="store_true", help="print one JSON object")
    cal.set_defaults(func=calibrate_main)


def expert_tokens_for(n_experts: int, top_k: int, tokens: int, skew: float = 0.0) -> np.ndarray:
    """Expected tokens per expert when ``tokens`` tokens each pick ``top_k`` experts.

    Popularity follows a Zipf law of exponent ``skew`` (0 = uniform); each
    expert's share is capped at one pick per token, the excess spread over the rest.
    """
    if tokens < 1:
        raise ValueError(f"tokens={tokens!r} is not allowed; must be an integer >= 1")
    if skew < 0:
        raise ValueError(f"skew={skew!r} is not allowed; must be >= 0")
    pop = 1.0 / np.arange(1, n_experts + 1) ** skew
    share = pop / pop.sum() * top_k
    for _ in range(n_experts):  # water-filling: no expert above 1 pick per token
        over = share > 1
        if not over.any():
            break
        excess = (share[over] - 1).sum()
        share[over] = 1
        share[~over] += excess * share[~over] / share[~over].sum()
    return share * tokens


def layer_main(args: argparse.Namespace) -> int:
    from coel_env.catalog import get_model

    m = get_model(args.model)
    dev = profiles.get_device(args.device)
    et = expert_tokens_for(m.n_experts, m.top_k, args.tokens, args.skew)
    parts = cost.moe_layer_breakdown(m, dev, et, bits=args.bits, mode=args.mode, terms=args.terms)
    att = cost.attention_latency_ms(m, dev, batch=args.tokens, kv_len=args.kv_len, mode=args.mode)
    tag = "measured" if dev.measured else "derived"
    print(f"{m.name} on {dev.name} ({tag}), {args.tokens} tokens, {args.bits} bits, {args.mode}, "
          f"{args.terms} layer terms")  # fmt: skip
    print(f"  active experts   {parts['active_experts']:>10d}")
    for k in ("router_ms", "experts_ms", "dispatch_ms", "shared_ms", "total_ms"):
        print(f"  moe {k:<13s}{parts[k]:>10.4f}")
    print(f"  attention (decode, KV {args.kv_len}): proj {att['proj_ms']:.4f} ms, "
          f"sdpa {att['sdpa_ms']:.4f} ms")  # fmt: skip
    print(f"  layer total      {parts['total_ms'] + att['total_ms']:>10.4f} ms")
    return 0


def validation_table() -> list[dict]:
    """One row per measured (device, mode, kind): errors with and without run factors."""
    out = []
    for name in ("h200", "xeon-16c", "epyc-2c"):
        dev = profiles.get_device(name)
        rows = profiles.measured_rows(name)
        for (mode, kind), fit in sorted(dev.kernels.items()):
            g = rows[(rows["mode"] == mode) & (rows.kind == kind)]
            tag = f"[{mode}/{kind}]"
            rf = {k.split(" [")[0]: v for k, v in dev.run_factors.items() if k.endswith(tag)}
            meas = g.median_ms.values
            err = np.abs(profiles.predict_rows(fit, g, rf) / meas - 1) * 100
            raw = np.abs(profiles.predict_rows(fit, g, {}) / meas - 1) * 100
            out.append(
                dict(
                    device=name, mode=mode, kind=kind, rows=len(g),
                    median_ape=float(np.median(err)), mean_ape=float(err.mean()),
                    max_ape=float(err.max()),
                    mean_ape_no_run_factor=float(raw.mean()),
                    weight_gbps=fit.weight_gbps, tflops=fit.tflops, c_ms=fit.c_ms,
                    op_ms=fit.op_ms, p=fit.p,
                    run_factors="; ".join(f"{k}: floor x{a:.2f}, kernel x{b:.2f}"
                                          for k, (a, b) in rf.items()),
                )
            )  # fmt: skip
    return out


def attention_table() -> list[dict]:
    """The H200 dense-part fit against every row of the attention file."""
    from coel_env.catalog import CATALOG

    df = pd.read_csv(profiles._data_path("h200_gpu_attention.csv"))
    by_shape = {"switch-base": "switch-base-8"}
    out = []
    for col in ("proj_ms", "sdpa_ms", "total_ms"):
        errs = []
        for r in df.itertuples():
            name = by_shape.get(r.model, r.model)
            if name not in CATALOG:
                continue
            pred = cost.attention_latency_ms(
                name, "h200", batch=int(r.batch), kv_len=int(r.kv_len), phase=r.phase,
                tokens=int(r.tokens),
            )[col]  # fmt: skip
            errs.append(abs(pred / getattr(r, col) - 1) * 100)
        e = np.array(errs)
        out.append(dict(part=col, rows=len(e), median_ape=float(np.median(e)),
                        mean_ape=float(e.mean()), max_ape=float(e.max())))  # fmt: skip
    return out


def layer_table(device: str = "h200") -> tuple[list[dict], list[dict], dict]:
    """Whole measured layers of a built-in device against the layer model.

    Returns:
        ``(rows, summary, fit)``: one row per measured layer with the first-principles
        and calibrated predictions and their absolute % errors, and the calibrated
        model fitted on the other models' rows only (``lomo_*``: leave one model out,
        the proxy for models the terms were not fitted on); one summary row per model
        and one for all; the fitted terms.
    """
    from dataclasses import replace

    rows = profiles.read_layer_csv(profiles._data_path(cost.LAYER_FILES[device]), "cuda")
    dev = profiles.get_device(device)
    fp = cost.layer_rows(rows, dev, "first-principles")
    cal = cost.layer_rows(rows, dev, "calibrated")
    lomo = pd.Series(np.nan, index=rows.index)
    lomo_ape = pd.Series(np.nan, index=rows.index)
    models = list(dict.fromkeys(rows.model))
    for name in models if len(models) > 1 else ():
        held = rows.model == name
        fit = cost.fit_layer_terms(rows[~held].reset_index(drop=True), dev)
        pred = cost.layer_rows(rows[held].reset_index(drop=True), replace(dev, layer=fit))
        lomo[held] = pred.pred_ms.values
        lomo_ape[held] = pred.ape.values
    out = []
    for i in range(len(rows)):
        out.append(
            dict(
                model=cal.model[i], tokens=int(cal.tokens[i]),
                active_experts=int(cal.active_experts[i]), layer_ms=float(cal.layer_ms[i]),
                first_principles_ms=float(fp.pred_ms[i]),
                first_principles_ape=round(float(fp.ape[i]), 2),
                calibrated_ms=float(cal.pred_ms[i]), calibrated_ape=round(float(cal.ape[i]), 2),
                lomo_ms=float(lomo[i]), lomo_ape=round(float(lomo_ape[i]), 2),
            )
        )  # fmt: skip
    summary = []
    for name in [*models, "all"]:
        sel = [r for r in out if name in ("all", r["model"])]
        row = {"model": name, "rows": len(sel)}
        for k in ("first_principles_ape", "calibrated_ape", "lomo_ape"):
            v = np.array([r[k] for r in sel])
            row[f"mean_{k}"] = float(v.mean())
            row[f"max_{k}"] = float(v.max())
        summary.append(row)
    return out, summary, cost.layer_fit(dev).to_dict()


def dense_decode_tok_s(device: str, shape: str, bits: int, efficient_int4: bool) -> float:
    """Predicted decode tokens/s of a dense Llama model (one sequence, CUDA-graph mode).

    ``efficient_int4``: stream 4-bit weights at the bf16 kernel's bandwidth (as
    llama.cpp's and MLC's fused kernels do) instead of PyTorch's W4A16 GEMV.
    """
    s = DENSE_SHAPES[shape]
    dev = profiles.get_device(device)
    ffn = 3 * s["d_model"] * s["d_ff"]
    proj = s["d_model"] * s["head_dim"] * (2 * s["heads"] + 2 * s["kv_heads"])
    head = s["d_model"] * s["vocab"]
    k_bits = 16 if efficient_int4 else bits
    fit = dev.kernel_for(k_bits, "cudagraph")[0]
    from coel_env.catalog import weight_bytes

    def mm(n_params: int) -> float:
        return float(fit.latency_ms(weight_bytes(n_params, bits), 2.0 * n_params, 1))

    kv_bytes = 2 * 2 * KV_LEN_CHECK * s["kv_heads"] * s["head_dim"]
    att = dev.attention
    sdpa = att.sdpa_c_ms + kv_bytes / 1e6 / att.sdpa_gbps
    per_layer = mm(ffn) + mm(proj) + sdpa
    return 1000.0 / (s["n_layers"] * per_layer + mm(head))


def derived_check_table(devices_dir: Path) -> list[dict]:
    """Derived GPUs against published decode throughput, where a comparable row exists."""
    out = []
    for device, fname, gpu, model in _CHECKS:
        path = devices_dir / fname
        if not path.is_file():
            raise ValueError(f"--devices-dir: {str(path)!r} does not exist")
        with path.open() as f:
            rows = list(csv.DictReader(f))
        for prec, bits in (("Q4_K_M", 4), ("F16", 16)) if gpu else (("INT4", 4),):
            if gpu:
                key = ("text_generation_tg", gpu, model, prec)
                hit = [
                    r
                    for r in rows
                    if (r["metric"], r["gpu_config"], r["model"], r["precision"]) == key
                ]
                if not hit or hit[0]["tokens_per_s"] == "OOM":
                    continue
                published = float(hit[0]["tokens_per_s"])
                source = f"llama.cpp {gpu} {model} {prec}"
            else:
                hit = [r for r in rows if r["model"] == model]
                published = float(hit[0]["jetson_orin_nano_original_tok_s"])
                source = f"MLC INT4 Orin Nano (original) {model}"
            shape = _DENSE_FOR[model]
            row = dict(device=device, published=source, published_tok_s=published)
            for label, eff in (("pytorch_kernels", False), ("efficient_int4", True)):
                if bits == 16 and eff:
                    continue
                pred = dense_decode_tok_s(device, shape, bits, eff)
                row[f"pred_{label}_tok_s"] = pred
                row[f"err_{label}_pct"] = (pred / published - 1) * 100
            out.append(row)
    return out


def _print_table(rows: list[dict], cols: list[str], markdown: bool) -> None:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    if markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    else:
        w = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
        print("  ".join(c.ljust(n) for c, n in zip(cols, w, strict=True)))
        for r in rows:
            print("  ".join(fmt(r.get(c, "")).ljust(n) for c, n in zip(cols, w, strict=True)))
    print()


def validate_main(args: argparse.Namespace) -> int:
    table = validation_table()
    att = attention_table()
    checks = derived_check_table(args.devices_dir) if args.devices_dir else []
    layers, layer_summary, layer_terms = layer_table("h200")
    if args.json:
        doc = {"experts": table, "attention": att, "layers": layers,
               "layer_summary": layer_summary, "layer_terms": layer_terms,
               "derived_checks": checks}  # fmt: skip
        print(json.dumps(doc, indent=1))
        return 0
    md = args.markdown
    print("Expert FFN latency model against every measured row (APE = absolute % error)\n")
    cols = ["device", "mode", "kind", "rows", "median_ape", "mean_ape", "max_ape"]
    cols += ["mean_ape_no_run_factor", "weight_gbps", "tflops", "op_ms"]
    _print_table(table, cols, md)
    rf = [r for r in table if r["run_factors"]]
    if rf:
        print("Run factors of secondary measurement files:\n")
        _print_table(rf, ["device", "mode", "kind", "run_factors"], md)
    print("H200 dense part (attention projections + SDPA) against h200_gpu_attention.csv\n")
    _print_table(att, ["part", "rows", "median_ape", "mean_ape", "max_ape"], md)
    print(
        "H200 whole MoE layers (eager) against h200_moe_layers_eager_calib.csv: first "
        "principles, calibrated (layer terms fitted to these rows), and calibrated without "
        "the row's model (lomo: fitted on the other model's rows only)\n"
    )
    cols = ["model", "tokens", "active_experts", "layer_ms", "first_principles_ms"]
    cols += ["first_principles_ape", "calibrated_ms", "calibrated_ape", "lomo_ms", "lomo_ape"]
    _print_table(layers, cols, md)
    cols = ["model", "rows", "mean_first_principles_ape", "mean_calibrated_ape"]
    cols += ["max_calibrated_ape", "mean_lomo_ape", "max_lomo_ape"]
    _print_table(layer_summary, cols, md)
    t = layer_terms
    print(f"Layer terms: {t['layer_ms']:.4f} ms per layer, {t['mask_ms_per_mvalue']:.3f} ms per "
          f"million routing-mask values, {t['active_ms']:.4f} ms per active "
          f"expert, {t['move_ms_per_mb']:.4f} ms per MB moved, {t['dispatch_ops']:g} launches "
          f"per active expert besides its FFN ({t['n_rows']} rows of {t['source']})\n")  # fmt: skip
    if checks:
        print("Derived GPUs against published decode throughput (tokens/s)\n")
        cols = [
            "device",
            "published",
            "published_tok_s",
            "pred_pytorch_kernels_tok_s",
            "err_pytorch_kernels_pct",
            "pred_efficient_int4_tok_s",
            "err_efficient_int4_pct",
        ]
        _print_table(checks, cols, md)
    return 0


def calibrate_main(args: argparse.Namespace) -> int:
    """Fit the layer terms of a device to a whole-layer file and write them as JSON."""
    from dataclasses import replace

    if args.profile is not None:
        dev = profiles.load_profile(args.profile, register=False)
        out = args.out or profiles.layer_fit_path(args.profile)
    else:
        dev = profiles.get_device(args.device)
        if args.out is None:
            raise ValueError("--out is required with --device (a path for the JSON terms)")
        out = args.out
    out = Path(out)
    if out.suffix != ".json":
        raise ValueError(f"--out {str(out)!r}: not a .json path; allowed: a path ending in .json")
    if not out.parent.is_dir():
        raise ValueError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    if out.exists() and not args.force:
        raise ValueError(f"--out {str(out)!r} already exists; pass --force to overwrite")
    want = "cuda" if dev.kind == "gpu" else "cpu"
    rows = profiles.read_layer_csv(args.layers)
    rows = rows[rows.device == want].reset_index(drop=True)
    if len(rows) == 0:
        raise ValueError(
            f"--layers {str(args.layers)!r} has no rows with device {want!r} "
            f"(the kind of {dev.name!r})"
        )
    fit = cost.fit_layer_terms(rows, dev, source=Path(args.layers).name)
    fitted = replace(dev, layer=fit)
    table = cost.layer_rows(rows, fitted, "calibrated")
    table["first_principles_ms"] = cost.layer_rows(rows, dev, "first-principles").pred_ms
    with open(out, "w" if args.force else "x", encoding="utf-8") as f:
        json.dump(fit.to_dict(), f, indent=1)
        f.write("\n")
    if args.json:
        doc = {"terms": fit.to_dict(), "rows": table.to_dict(orient="records"),
               "mean_ape": float(table.ape.mean()), "out": str(out)}  # fmt: skip
        print(json.dumps(doc, indent=1))
        return 0
    print(f"Layer terms of {dev.name} fitted to {len(rows)} layers of {Path(args.layers).name}\n")
    _print_table(table.to_dict(orient="records"), list(table.columns), False)
    print(f"mean absolute error {table.ape.mean():.2f}%; terms: {fit.layer_ms:.4f} ms per layer, "
          f"{fit.mask_ms_per_mvalue:.3f} ms per million routing-mask values, "
          f"{fit.active_ms:.4f} ms per active expert, {fit.move_ms_per_mb:.4f} ms per MB moved, "
          f"{fit.dispatch_ops:g} launches per active expert")  # fmt: skip
    print(f"wrote {out}")
    return 0
