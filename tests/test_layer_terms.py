"""Whole MoE layers: the calibrated layer terms, their fit, the files that carry them,
``coel cost calibrate`` and ``coel profile --layers`` (tiny CPU runs)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coel_env import cli, cost, cost_cli, profiler, profiles
from coel_env.catalog import get_model

CALIB = profiles._data_path("h200_moe_layers_eager_calib.csv")


pytestmark = pytest.mark.usefixtures("clean_user_registry")


@pytest.fixture(scope="module")
def calib_rows():
    return profiles.read_layer_csv(CALIB, device="cuda")


# --------------------------------------------------------------------------- the fit


def test_shipped_file_is_the_shared_measurement(calib_rows) -> None:
    assert len(calib_rows) == 12
    assert set(calib_rows.model) == {"mixtral-8x7b", "deepseek-v2-lite"}
    assert sorted(set(calib_rows.tokens.astype(int))) == [1, 4, 16, 64, 256, 1024]


def test_calibrated_layers_fit_the_measured_rows(calib_rows) -> None:
    """The shipped terms: 3.7% mean absolute error over the 12 layers, within the issue's
    aim of 5% (first principles: 12.9%). Only DeepSeek's 64-token layer stays off (24%):
    it was measured slower than the 256-token one with the same 64 active experts, which
    no term that grows with the work can follow."""
    cal = cost.layer_rows(calib_rows, "h200", "calibrated")
    fp = cost.layer_rows(calib_rows, "h200", "first-principles")
    assert cal.ape.mean() <= 5.0
    assert fp.ape.mean() > 12.0
    by_model = cal.groupby("model").ape.mean()
    assert by_model["mixtral-8x7b"] < 3.0 and by_model["deepseek-v2-lite"] < 6.0
    odd = (cal.model == "deepseek-v2-lite") & (cal.tokens == 64)
    assert cal.ape[~odd].max() < 7.5
    # the routing-mask term is what brings DeepSeek's 1024-token layer in (was 17%)
    big = (cal.model == "deepseek-v2-lite") & (cal.tokens == 1024)
    assert float(cal.ape[big].iloc[0]) < 5.0


def test_mask_term_keeps_leave_one_model_out(calib_rows) -> None:
    """Fitted on one model's rows alone the mask term is not needed, so predicting the
    other model is as it was without the term (mean 24.4% Mixtral, 10.2% DeepSeek)."""
    for held, at_most in (("mixtral-8x7b", 24.5), ("deepseek-v2-lite", 10.3)):
        train = calib_rows[calib_rows.model != held].reset_index(drop=True)
        test = calib_rows[calib_rows.model == held].reset_index(drop=True)
        fit = cost.fit_layer_terms(train, "h200")
        dev = replace(profiles.get_device("h200"), layer=fit)
        assert cost.layer_rows(test, dev).ape.mean() <= at_most


def test_shipped_terms() -> None:
    fit = cost.layer_fit("h200")
    assert fit.source == "h200_moe_layers_eager_calib.csv" and fit.n_rows == 12
    assert not fit.derived and fit.mode == "eager"
    assert abs(fit.dispatch_ops - cost.DISPATCH_OPS) <= 1  # near the first-principles count
    assert 0.2 < fit.layer_ms < 0.35 and fit.active_ms < 0.01 and 0 < fit.move_ms_per_mb < 0.01
    assert 1.0 < fit.mask_ms_per_mvalue < 20.0


def test_fit_recovers_terms_that_generated_the_rows(calib_rows) -> None:
    """The fit's design matrix is the layer formula: rows made by known terms give them back."""
    truth = profiles.LayerFit(
        0.15, 0.02, 0.004, dispatch_ops=3.0, source="truth", mask_ms_per_mvalue=2.5
    )
    dev = replace(profiles.get_device("h200"), layer=truth)
    made = calib_rows.copy()
    made["layer_ms"] = cost.layer_rows(calib_rows, dev).pred_ms.values
    fit = cost.fit_layer_terms(made, "h200")
    assert fit.dispatch_ops == 3.0
    for k in ("layer_ms", "active_ms", "move_ms_per_mb", "mask_ms_per_mvalue"):
        assert getattr(fit, k) == pytest.approx(getattr(truth, k), rel=1e-5, abs=1e-9)


def test_fit_refuses_rows_of_another_shape(calib_rows) -> None:
    bad = calib_rows.copy()
    bad.loc[0, "model"] = "olmoe-1b-7b"  # 64 experts; the row has 8 counts
    with pytest.raises(ValueError, match="olmoe-1b-7b has 64 experts"):
        cost.fit_layer_terms(bad, "h200")
    with pytest.raises(ValueError, match="no whole-layer rows"):
        cost.fit_layer_terms(calib_rows.iloc[:0], "h200")


def test_validate_reports_layers_per_model_and_tokens(capsys) -> None:
    assert cli.main(["cost", "validate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["layers"]
    assert len(rows) == 12
    pairs = {(r["model"], r["tokens"]) for r in rows}
    assert pairs >= {("mixtral-8x7b", 1), ("deepseek-v2-lite", 1024)}
    for r in rows:
        assert r["calibrated_ape"] == pytest.approx(
            abs(r["calibrated_ms"] / r["layer_ms"] - 1) * 100, abs=0.01
        )
    summary = {s["model"]: s for s in doc["layer_summary"]}
    assert summary["all"]["rows"] == 12
    assert summary["all"]["mean_calibrated_ape"] < summary["all"]["mean_first_principles_ape"]
    assert summary["all"]["mean_lomo_ape"] > summary["all"]["mean_calibrated_ape"]
    assert doc["layer_terms"]["n_rows"] == 12


def test_validate_prints_the_layer_table(capsys) -> None:
    assert cli.main(["cost", "validate"]) == 0
    out = capsys.readouterr().out
    assert "whole MoE layers" in out and "lomo_ape" in out and "deepseek-v2-lite" in out


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("model", ["mixtral-8x7b", "deepseek-v2-lite", "qwen1.5-moe-a2.7b"])
@pytest.mark.parametrize("terms", cost.LAYER_TERMS)
def test_parts_are_the_public_functions(model: str, terms: str) -> None:
    m = get_model(model)
    et = cost_cli.expert_tokens_for(m.n_experts, m.top_k, 16, 1.0)
    b = cost.moe_layer_breakdown(m, "h200", et, terms=terms)
    assert b["router_ms"] == pytest.approx(float(cost.router_ms(m, "h200", 16, terms=terms)))
    assert b["shared_ms"] == pytest.approx(float(cost.shared_ms(m, "h200", 16, terms=terms)))
    disp = cost.dispatch_ms(m, "h200", et, terms=terms).sum()
    assert b["dispatch_ms"] == pytest.approx(float(disp))
    total = b["router_ms"] + b["experts_ms"] + b["dispatch_ms"] + b["shared_ms"]
    assert b["total_ms"] == pytest.approx(total)


def test_first_principles_is_the_default() -> None:
    m = get_model("olmoe-1b-7b")
    et = cost_cli.expert_tokens_for(m.n_experts, m.top_k, 8)
    assert cost.moe_layer_latency_ms(m, "h200", et) == cost.moe_layer_latency_ms(
        m, "h200", et, terms="first-principles"
    )
    assert cost.moe_layer_latency_ms(m, "h200", et) != cost.moe_layer_latency_ms(
        m, "h200", et, terms="calibrated"
    )


def test_small_experts_cost_more_per_active_expert_than_their_ffn() -> None:
    """What the issue found: a small expert's dispatch launches are not hidden."""
    small, big = get_model("olmoe-1b-7b"), get_model("mixtral-8x7b")
    extra_small = cost.dispatch_ms(small, "h200", 1, terms="calibrated")
    extra_big = cost.dispatch_ms(big, "h200", 1, terms="calibrated")
    assert extra_small > 2 * extra_big
    assert extra_small > 0.5 * cost.expert_latency_ms(small, "h200", 1)


def test_router_kernel_ms_and_shared_combine() -> None:
    """``kernel_ms`` evaluates the first-principles router's kernel fit (the world passes
    its vectorised one); ``combine=False`` leaves the shared experts' FFN alone."""
    m = get_model("qwen1.5-moe-a2.7b")
    seen = []

    def kernel_ms(w, f, ops):
        seen.append((w, ops))
        return np.full(np.shape(f), 7.0)

    t = np.array([0.0, 4.0])
    got = cost.router_ms(m, "h200", t, kernel_ms=kernel_ms)
    assert got.tolist() == [0.0, 7.0]
    assert seen == [(cost.ACT_BYTES * m.d_model * m.n_experts, cost.ROUTER_OPS)]
    cal = cost.router_ms(m, "h200", t, terms="calibrated", kernel_ms=kernel_ms)
    assert len(seen) == 1 and cal[1] != 7.0  # calibrated: the fitted terms, not the callable
    ffn = cost.ffn_latency_ms("h200", m.d_model, m.d_ff_shared, m.gated, t)
    assert np.array_equal(cost.shared_ms(m, "h200", t, combine=False), ffn)
    assert cost.shared_ms(m, "h200", t)[1] > ffn[1]  # the sigmoid gate and the add


def test_zero_tokens_cost_nothing() -> None:
    m = get_model("deepseek-v2-lite")
    for fn in (cost.router_ms, cost.dispatch_ms, cost.shared_ms):
        assert float(fn(m, "h200", 0, terms="calibrated")) == 0.0
    assert cost.moe_layer_latency_ms(m, "h200", np.zeros(64), terms="calibrated") == 0.0


def test_terms_not_allowed() -> None:
    m = get_model("olmoe-1b-7b")
    with pytest.raises(ValueError, match="terms='measured' is not allowed.*'calibrated'"):
        cost.router_ms(m, "h200", 4, terms="measured")
    with pytest.raises(ValueError, match="mode='cudagraph'.*eager"):
        cost.moe_layer_latency_ms(m, "h200", np.ones(64), mode="cudagraph", terms="calibrated")


def test_cpu_without_terms_says_how_to_get_them() -> None:
    with pytest.raises(ValueError, match="xeon-16c.*coel profile --layers"):
        cost.layer_fit("xeon-16c")


def test_derived_gpu_takes_the_h200_terms_marked_derived() -> None:
    h200, l4 = cost.layer_fit("h200"), cost.layer_fit("l4")
    assert l4.derived and "derived" in l4.source and l4.n_rows == 0
    assert (l4.layer_ms, l4.active_ms, l4.dispatch_ops) == (
        h200.layer_ms,
        h200.active_ms,
        h200.dispatch_ops,
    )
    assert l4.move_ms_per_mb > 10 * h200.move_ms_per_mb  # 300 vs 4800 GB/s
    assert l4.mask_ms_per_mvalue == h200.mask_ms_per_mvalue  # kept, as host times are


def test_a_profile_own_terms_come_first() -> None:
    own = profiles.LayerFit(1.0, 0.0, 0.0, 0.0, source="mine")
    dev = replace(profiles.get_device("h200"), name="mine", layer=own)
    assert cost.layer_fit(dev) is own
    assert float(cost.router_ms("olmoe-1b-7b", dev, 1, terms="calibrated")) > 1.0


# --------------------------------------------------------------------------- files


def _write(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


HEADER = ",".join(profiles.LAYER_COLUMNS)


@pytest.mark.parametrize(
    "line,needle",
    [
        ("cuda,m,2,4,2,0,1.0,2,1 1 1 0", "add up to 3"),
        ("cuda,m,2,4,2,0,1.0,3,2 2 0 0", "'active_experts' row 1 has 3"),
        ("cuda,m,2,5,2,0,1.0,2,2 2 0 0", "'n_experts' row 1 has 5"),
        ("cuda,m,2,4,2,0,1.0,2,2 x 0 0", "space-separated integers"),
        ("cuda,m,2,4,2,0,1.0,2,2 1.5 0.5 0", "integers >= 0"),
        ("cuda,m,2,4,2,0,-1.0,2,2 2 0 0", "'layer_ms' row 1"),
    ],
)
def test_read_layer_csv_refuses_bad_rows(tmp_path: Path, line: str, needle: str) -> None:
    p = _write(tmp_path / "l.csv", HEADER, line)
    with pytest.raises(ValueError, match=needle) as e:
        profiles.read_layer_csv(p)
    assert str(p) in str(e.value)


def test_read_layer_csv_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        profiles.read_layer_csv(tmp_path / "none.csv")
    p = _write(tmp_path / "l.csv", "model,tokens", "m,1")
    with pytest.raises(ValueError, match="lacks columns.*layer_ms"):
        profiles.read_layer_csv(p)
    p = _write(tmp_path / "h.csv", HEADER)
    with pytest.raises(ValueError, match="no rows"):
        profiles.read_layer_csv(p)


def test_layer_fit_json_round_trip(tmp_path: Path) -> None:
    fit = cost.layer_fit("h200")
    p = tmp_path / "t.json"
    p.write_text(json.dumps(fit.to_dict()))
    assert profiles.read_layer_fit(p) == fit


def test_layer_fit_json_without_mask_term_reads_as_zero(tmp_path: Path) -> None:
    """Terms written before the routing-mask term read back with it at 0."""
    p = tmp_path / "old.json"
    p.write_text('{"layer_ms": 0.3, "active_ms": 0, "move_ms_per_mb": 0, "dispatch_ops": 5}')
    assert profiles.read_layer_fit(p).mask_ms_per_mvalue == 0.0
    p.write_text('{"layer_ms": 0.3, "active_ms": 0, "move_ms_per_mb": 0, "dispatch_ops": 5, '
                 '"mask_ms_per_mvalue": -1}')  # fmt: skip
    with pytest.raises(ValueError, match="mask_ms_per_mvalue=-1"):
        profiles.read_layer_fit(p)


def test_calibrated_router_counts_the_routing_mask() -> None:
    """The mask term: tokens x top_k x n_experts values at the fitted time per million."""
    m, fit = get_model("deepseek-v2-lite"), cost.layer_fit("h200")
    kw = dict(terms="calibrated")
    zero = replace(profiles.get_device("h200"), name="nomask",
                   layer=replace(fit, mask_ms_per_mvalue=0.0))  # fmt: skip
    for t in (1, 64, 1024):
        extra = float(cost.router_ms(m, "h200", t, **kw) - cost.router_ms(m, zero, t, **kw))
        assert extra == pytest.approx(fit.mask_ms_per_mvalue * t * 6 * 64 / 1e6, rel=1e-9)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("{", "not valid JSON"),
        ('{"layer_ms": 1}', "needs keys"),
        ('{"layer_ms": -1, "active_ms": 0, "move_ms_per_mb": 0, "dispatch_ops": 0}', "layer_ms"),
        ('{"layer_ms": 1, "active_ms": 0, "move_ms_per_mb": 0, "dispatch_ops": 0, '
         '"mode": "cudagraph"}', "mode='cudagraph'"),
    ],
)  # fmt: skip
def test_read_layer_fit_refuses_bad_files(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "t.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=needle):
        profiles.read_layer_fit(p)


# --------------------------------------------------------------------------- coel profile --layers


def _tiny(name: str, **kw):
    """A catalog model shrunk so a CPU runs its layer in milliseconds."""
    return replace(get_model(name), name=f"tiny-{name}", d_model=64, d_ff_expert=32, **kw)


def test_profile_layers_rows_on_cpu() -> None:
    models = [
        _tiny("qwen1.5-moe-a2.7b", d_ff_shared=48),  # shared expert with a sigmoid gate
        _tiny("deepseek-v2-lite", d_ff_shared=16),  # two merged shared experts
        _tiny("switch-base-8"),  # ReLU experts, top-1
    ]
    rows, device = profiler.profile_layers(
        "cpu", models, [1, 5], repeats=2, min_time_s=0.01, progress=False
    )
    assert device == "cpu"
    assert [(r["model"], r["tokens"]) for r in rows] == [
        (m.name, t) for m in models for t in (1, 5)
    ]
    for r, m in zip(rows, [m for m in models for _ in (1, 5)], strict=True):
        assert set(r) == set(profiler.LAYER_COLUMNS)
        counts = [int(c) for c in r["expert_token_counts"].split()]
        assert len(counts) == r["n_experts"] == m.n_experts and r["top_k"] == m.top_k
        assert sum(counts) == r["tokens"] * m.top_k
        assert r["active_experts"] == sum(c > 0 for c in counts)
        assert r["shared_ff"] == (m.d_ff_shared or 0) * m.n_shared_experts
        assert r["layer_ms"] > 0


@pytest.mark.parametrize("name", ["qwen1.5-moe-a2.7b", "deepseek-v2-lite", "switch-base-8"])
def test_layer_computes_the_moe(name: str) -> None:
    """The measured layer is a real MoE forward: against a per-token reference in fp32."""
    import torch
    import torch.nn.functional as F

    m = _tiny(name, **({"d_ff_shared": 16} if get_model(name).n_shared_experts else {}))
    layer = profiler._Layer(m, "cpu", seed=3)
    x = torch.randn(6, m.d_model, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.inference_mode():
        got = layer(x).float()
        weights, chosen = layer.routing(x)

    def ffn(v, g, u, d):
        g, u, d = (None if t is None else t.float() for t in (g, u, d))
        if g is None:
            return F.linear(F.relu(F.linear(v, u)), d)
        return F.linear(F.silu(F.linear(v, g)) * F.linear(v, u), d)

    want = torch.zeros_like(got)
    for i in range(x.shape[0]):
        v = x[i : i + 1].float()
        for w, e in zip(weights[i].float(), chosen[i].tolist(), strict=True):
            g = None if layer.gate is None else layer.gate[e]
            want[i] += w * ffn(v, g, layer.up[e], layer.down[e])[0]
        if layer.shared is not None:
            s = ffn(v, *layer.shared)[0]
            if layer.shared_gate is not None:
                s = torch.sigmoid(F.linear(v, layer.shared_gate.float()))[0] * s
            want[i] += s
    assert torch.allclose(got, want, rtol=0.05, atol=0.05 * float(want.abs().max()))
    if m.top_k > 1:
        assert torch.allclose(weights.float().sum(-1), torch.ones(6), atol=1e-2)


def test_cli_profile_layers_then_calibrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU: the layers run on the CPU, which is said; the file calibrates a CPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "l.csv"
    argv = ["profile", "--layers", "--models", "switch-base-8", "--tokens", "1", "3"]
    assert cli.main([*argv, "--min-time-s", "0.01", "--repeats", "1", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "no CUDA GPU found: measuring the layers on the CPU" in cap.err
    assert "coel cost calibrate --layers" in cap.out
    with open(out, newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames) == profiles.LAYER_COLUMNS
    assert len(profiles.read_layer_csv(out, device="cpu")) == 2
    info = json.loads(profiler.machine_path(out).read_text())
    assert info["args"]["layers"] is True and info["args"]["device"] == "cpu"

    terms = tmp_path / "t.json"
    argv = ["cost", "calibrate", "--layers", str(out), "--device", "epyc-2c"]
    assert cli.main([*argv, "--out", str(terms), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["rows"]) == 2 and doc["terms"]["source"] == "l.csv"
    assert profiles.read_layer_fit(terms).n_rows == 2
    # never overwritten without --force; a GPU device finds no cuda rows
    assert cli.main([*argv, "--out", str(terms)]) == 2
    assert "--force" in capsys.readouterr().err
    argv = ["cost", "calibrate", "--layers", str(out), "--device", "h200"]
    assert cli.main([*argv, "--out", str(tmp_path / "g.json")]) == 2
    assert "no rows with device 'cuda'" in capsys.readouterr().err


def test_cli_profile_layers_refuses_dtypes(tmp_path: Path, capsys) -> None:
    argv = ["profile", "--layers", "--dtypes", "fp32", "--out", str(tmp_path / "l.csv")]
    assert cli.main(argv) == 2
    assert "--dtypes is not used with --layers" in capsys.readouterr().err


def test_cli_profile_layers_unknown_model(tmp_path: Path, capsys) -> None:
    argv = ["profile", "--layers", "--device", "cpu", "--models", "gpt-9"]
    assert cli.main([*argv, "--out", str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err
    assert "'gpt-9'" in err and "olmoe-1b-7b" in err
    assert list(tmp_path.iterdir()) == []


def test_calibrate_with_a_profile_writes_terms_load_profile_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = tmp_path / "box.csv"
    argv = ["profile", "--device", "cpu", "--models", "switch-base", "--tokens", "1", "4", "16"]
    assert cli.main([*argv, "--dtypes", "bf16", "--min-time-s", "0.02", "--out", str(prof)]) == 0
    layers = _write(
        tmp_path / "l.csv",
        HEADER,
        "cpu,switch-base-8,1,8,1,0,2.0,1,0 1 0 0 0 0 0 0",
        "cpu,switch-base-8,4,8,1,0,5.0,3,1 2 0 0 0 1 0 0",
        "cpu,switch-base-8,16,8,1,0,9.0,8,2 2 2 2 2 2 2 2",
    )
    capsys.readouterr()
    assert cli.main(["cost", "calibrate", "--layers", str(layers), "--profile", str(prof)]) == 0
    assert "mean absolute error" in capsys.readouterr().out
    assert profiles.layer_fit_path(prof) == tmp_path / "box.layer_fit.json"
    dev = profiles.load_profile(prof, register=False)
    assert dev.layer is not None and dev.layer.source == "l.csv"
    assert cost.layer_fit(dev) is dev.layer
    assert dev.layer == profiles.read_layer_fit(profiles.layer_fit_path(prof))
    got = cost.layer_rows(profiles.read_layer_csv(layers), dev)  # made-up rows: no error bound
    assert (got.pred_ms > 0).all() and np.isfinite(got.pred_ms).all()


def test_calibrate_needs_out_with_device(tmp_path: Path, capsys) -> None:
    argv = ["cost", "calibrate", "--layers", str(CALIB), "--device", "h200"]
    assert cli.main(argv) == 2
    assert "--out is required with --device" in capsys.readouterr().err
