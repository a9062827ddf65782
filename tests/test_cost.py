"""Tests of coel_env.cost and coel_env.quality: monotonicity properties, the published
quality figures, transfers, fetches, energy, bad input and the ``coel cost`` command."""

from __future__ import annotations

import csv
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coel_env import cli, cost, profiles, quality
from coel_env.catalog import BITS, get_model, model_names
from coel_env.cost_cli import expert_tokens_for

PROFILES = Path(profiles.__file__).parent / "data" / "profiles"
DEVICES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "devices"

DEVICES = ("h200", "xeon-16c", "l4", "jetson-orin-nano-8gb")
MODELS = model_names()
PROPS = settings(max_examples=50, deadline=None)

# Relative perplexity increase against 8 bits, Mixtral-8x7B, llama.cpp k-quants (SPEC.md).
PUBLISHED_PPL = {
    "improved": {16: 0.0, 8: 0.0, 4: 0.0147, 3: 0.0447, 2: 0.232},
    "stock": {16: 0.0, 8: 0.0, 4: 0.0359, 3: 0.0766, 2: 0.819},
}

models = st.sampled_from(MODELS)
devices = st.sampled_from(DEVICES)
bits_st = st.sampled_from(BITS)
modes = st.sampled_from(("eager", "cudagraph"))
token_counts = st.floats(min_value=0.0, max_value=1e5, allow_nan=False)
keep_ratios = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)


# --------------------------------------------------------------------------- properties


@PROPS
@given(m=models, d=devices, b=bits_st, mode=modes, t1=token_counts, t2=token_counts)
def test_expert_latency_non_decreasing_in_tokens(m, d, b, mode, t1, t2) -> None:
    lo, hi = sorted((t1, t2))
    a = float(cost.expert_latency_ms(m, d, lo, bits=b, mode=mode))
    z = float(cost.expert_latency_ms(m, d, hi, bits=b, mode=mode))
    assert math.isfinite(a) and math.isfinite(z)
    assert a >= 0
    assert z >= a * (1 - 1e-12)


@PROPS
@given(
    m=models,
    d=devices,
    mode=modes,
    per_expert_bits=st.booleans(),
    data=st.data(),
)
def test_layer_latency_non_decreasing_in_expert_tokens(m, d, mode, per_expert_bits, data) -> None:
    n = get_model(m).n_experts
    et = np.array(data.draw(st.lists(st.integers(0, 512), min_size=n, max_size=n)), dtype=float)
    if per_expert_bits:
        bits = np.array(data.draw(st.lists(bits_st, min_size=n, max_size=n)))
    else:
        bits = data.draw(bits_st)
    i = data.draw(st.integers(0, n - 1))
    grown = et.copy()
    grown[i] += data.draw(st.integers(1, 1024))
    before = cost.moe_layer_latency_ms(m, d, et, bits=bits, mode=mode)
    after = cost.moe_layer_latency_ms(m, d, grown, bits=bits, mode=mode)
    assert math.isfinite(after)
    assert after >= before * (1 - 1e-12)
    assert after > 0


@PROPS
@given(m=models, data=st.data())
def test_expert_memory_non_increasing_with_fewer_bits(m, data) -> None:
    n = data.draw(st.integers(1, 16))
    bits = np.array(data.draw(st.lists(bits_st, min_size=n, max_size=n)))
    i = data.draw(st.integers(0, n - 1))
    lower = bits.copy()
    lower[i] = data.draw(st.sampled_from([b for b in BITS if b <= bits[i]]))
    assert cost.expert_memory_bytes(m, lower) <= cost.expert_memory_bytes(m, bits)
    # and it is the sum of the catalog's per-expert bytes
    mod = get_model(m)
    assert cost.expert_memory_bytes(m, bits) == sum(mod.expert_bytes(int(b)) for b in bits)


@PROPS
@given(scheme=st.sampled_from(("improved", "stock")), data=st.data())
def test_quantization_loss_non_decreasing_with_fewer_bits(scheme, data) -> None:
    n = data.draw(st.integers(1, 64))
    bits = np.array(data.draw(st.lists(bits_st, min_size=n, max_size=n)))
    pop = np.array(
        data.draw(
            st.lists(
                st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False),
                min_size=n,
                max_size=n,
            )
        )
    )
    i = data.draw(st.integers(0, n - 1))
    lower = bits.copy()
    lower[i] = data.draw(st.sampled_from([b for b in BITS if b <= bits[i]]))
    before = quality.quantization_loss(bits, pop, scheme=scheme)
    after = quality.quantization_loss(lower, pop, scheme=scheme)
    assert after >= before
    assert 0.0 <= before <= max(PUBLISHED_PPL[scheme].values()) + 1e-12  # float rounding


@PROPS
@given(k1=keep_ratios, k2=keep_ratios)
def test_token_keep_loss_non_decreasing_with_smaller_keep(k1, k2) -> None:
    lo, hi = sorted((k1, k2))
    assert float(quality.token_keep_loss(lo)) >= float(quality.token_keep_loss(hi))
    assert float(quality.token_keep_loss(hi)) >= 0.0


@PROPS
@given(
    t1=token_counts,
    t2=token_counts,
    k1=keep_ratios,
    k2=keep_ratios,
    d_model=st.integers(1, 8192),
    bw=st.floats(0.01, 400.0),
    lat=st.floats(0.0, 50.0),
)
def test_transfer_latency_non_decreasing_in_tokens_and_keep(t1, t2, k1, k2, d_model, bw, lat):
    (tl, th), (kl, kh) = sorted((t1, t2)), sorted((k1, k2))

    def f(t, k):
        return float(
            cost.transfer_latency_ms(t, d_model, bandwidth_gbit_s=bw, latency_ms=lat, keep_ratio=k)
        )

    assert f(th, kh) >= f(tl, kh)
    assert f(th, kh) >= f(th, kl)
    assert f(tl, kl) >= 0


# --------------------------------------------------------------------------- the MoE layer


def test_layer_signature() -> None:
    sig = inspect.signature(cost.moe_layer_latency_ms)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:3]] == ["model", "device", "expert_tokens"]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[:3])
    kw = {p.name: p for p in params[3:]}
    assert set(kw) == {"bits", "mode", "terms"}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in kw.values())
    assert kw["bits"].default == 16
    assert kw["mode"].default == "eager"
    assert kw["terms"].default == "first-principles"
    m = get_model("olmoe-1b-7b")
    out = cost.moe_layer_latency_ms("olmoe-1b-7b", "h200", np.ones(m.n_experts))
    assert isinstance(out, float)


@pytest.mark.parametrize("model", MODELS)
def test_layer_batch_is_sum_over_top_k(model: str) -> None:
    m = get_model(model)
    et = np.arange(m.n_experts, dtype=float)
    parts = cost.moe_layer_breakdown(model, "h200", et)
    assert parts["batch_tokens"] == pytest.approx(et.sum() / m.top_k)
    assert parts["active_experts"] == m.n_experts - 1
    assert parts["total_ms"] == pytest.approx(
        sum(parts[k] for k in ("router_ms", "experts_ms", "dispatch_ms", "shared_ms"))
    )
    zero = cost.moe_layer_latency_ms(model, "h200", np.zeros(m.n_experts))
    assert zero == 0.0


@pytest.mark.parametrize("device", ("h200", "xeon-16c", "l4"))
def test_spreading_tokens_over_more_experts_costs_more(device: str) -> None:
    m = get_model("olmoe-1b-7b")  # 64 small experts, top-8
    few = np.zeros(m.n_experts)
    few[:8] = 8.0  # 64 token-picks over 8 experts
    many = np.ones(m.n_experts)  # 64 token-picks over 64 experts
    assert few.sum() == many.sum()
    t_few = cost.moe_layer_latency_ms(m, device, few, mode="eager")
    t_many = cost.moe_layer_latency_ms(m, device, many, mode="eager")
    assert t_many > t_few


@pytest.mark.parametrize("device", DEVICES + ("rtx-4090", "a100-80gb"))
@pytest.mark.parametrize("model", MODELS)
def test_cudagraph_never_slower_than_eager(model: str, device: str) -> None:
    # A CUDA graph replays the same kernels without host dispatch: it cannot be slower.
    m = get_model(model)
    bad = []
    for bits in (16, 4):
        for tokens in (1, 4, 16, 64, 256, 1024, 4096):
            et = expert_tokens_for(m.n_experts, m.top_k, tokens)
            eager = cost.moe_layer_latency_ms(m, device, et, bits=bits, mode="eager")
            graph = cost.moe_layer_latency_ms(m, device, et, bits=bits, mode="cudagraph")
            if graph > eager * (1 + 1e-9):
                bad.append(f"{bits} bits, {tokens} tokens: x{graph / eager:.4f}")
    assert not bad, f"{model} on {device}: cudagraph slower than eager: " + "; ".join(bad)


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("scheme", ("improved", "stock"))
@pytest.mark.parametrize("bits", BITS)
def test_uniform_bits_give_published_figure(scheme: str, bits: int) -> None:
    rng = np.random.default_rng(bits)
    for n in (1, 8, 64):
        expert_bits = np.full(n, bits)
        want = PUBLISHED_PPL[scheme][bits]
        assert quality.quantization_loss(expert_bits, scheme=scheme) == pytest.approx(
            want, rel=1e-12, abs=1e-15
        )
        pop = rng.random(n)
        got = quality.quantization_loss(expert_bits, pop, scheme=scheme)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
        layers = np.full((3, n), bits)
        got = quality.quantization_loss(layers, rng.random((3, n)), scheme=scheme)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_popular_expert_at_two_bits_costs_more() -> None:
    pop = np.array([0.7, 0.1, 0.1, 0.1])
    popular_low = np.array([2, 16, 16, 16])
    unpopular_low = np.array([16, 2, 16, 16])
    assert quality.quantization_loss(popular_low, pop) > quality.quantization_loss(
        unpopular_low, pop
    )


def test_token_keep_loss_published_points() -> None:
    assert float(quality.token_keep_loss(1.0)) == 0.0
    # ToMe: 2x throughput (keep 0.5) for 0.2-0.3% accuracy -> 0.25%
    assert float(quality.token_keep_loss(0.5)) == pytest.approx(0.0025, rel=1e-9)
    # LLMLingua 20x (keep 0.05): GSM8K 78.85 -> 77.33
    assert float(quality.token_keep_loss(0.05)) == pytest.approx(1 - 77.33 / 78.85, abs=1e-4)


# --------------------------------------------------------------------------- fetch


def _measured_h2d_ms(nbytes: int) -> float:
    """Linear interpolation of the measured pinned host->device copies."""
    with (PROFILES / "h200_host_device_copies.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["direction"] == "h2d" and r["pinned"] == "1"]
    xs = np.array([float(r["bytes"]) for r in rows])
    ys = np.array([float(r["median_ms"]) for r in rows])
    order = np.argsort(xs)
    return float(np.interp(nbytes, xs[order], ys[order]))


def test_fetch_mixtral_expert_over_h200_pcie() -> None:
    nbytes = 3 * 4096 * 14336 * 2  # gated expert, bf16 (Mixtral config.json)
    assert get_model("mixtral-8x7b").expert_bytes(16) == nbytes
    got = float(cost.fetch_latency_ms("mixtral-8x7b", "h200"))
    assert got == pytest.approx(nbytes / 55e9 * 1e3, rel=0.15)  # ~55 GB/s pinned PCIe Gen5
    assert got == pytest.approx(6.4, rel=0.15)
    assert got == pytest.approx(_measured_h2d_ms(nbytes), rel=0.15)
    two = float(cost.fetch_latency_ms("mixtral-8x7b", "h200", 2))
    assert two == pytest.approx(2 * got)
    assert float(cost.fetch_latency_ms("mixtral-8x7b", "h200", bits=4)) < got
    assert float(cost.fetch_latency_ms("mixtral-8x7b", "h200", 0)) == 0.0


@pytest.mark.parametrize("device", ("jetson-orin-nano-8gb", "jetson-agx-orin-64gb"))
def test_fetch_on_unified_memory_is_free(device: str) -> None:
    assert float(cost.fetch_latency_ms("mixtral-8x7b", device, 3)) == 0.0


# --------------------------------------------------------------------------- transfer, energy


def test_transfer_latency_formula() -> None:
    # 10 tokens x 1000 values x 2 bytes = 20 kB = 160 kbit over 1 Gbit/s = 0.16 ms, + 1 ms
    got = float(cost.transfer_latency_ms(10, 1000, bandwidth_gbit_s=1.0, latency_ms=1.0))
    assert got == pytest.approx(1.16, rel=1e-12)
    half = float(
        cost.transfer_latency_ms(10, 1000, bandwidth_gbit_s=1.0, latency_ms=1.0, keep_ratio=0.5)
    )
    assert half == pytest.approx(1.08, rel=1e-12)
    fp32 = float(
        cost.transfer_latency_ms(10, 1000, bandwidth_gbit_s=2.0, latency_ms=0.0, bytes_per_value=4)
    )
    assert fp32 == pytest.approx(0.16, rel=1e-12)
    assert float(cost.transfer_latency_ms(0, 1000, bandwidth_gbit_s=1.0, latency_ms=1.0)) == 0.0
    nb = cost.activation_bytes(np.array([10, 20]), 1000, keep_ratio=0.5)
    np.testing.assert_array_equal(nb, [10_000, 20_000])


@pytest.mark.parametrize("device", ("h200", "l4", "jetson-orin-nano-8gb", "xeon-16c"))
def test_energy_is_power_times_time(device: str) -> None:
    dev = profiles.get_device(device)
    assert 0 < dev.power_idle_w < dev.power_busy_w
    got = float(cost.energy_j(device, 1500.0, 500.0))
    assert got == pytest.approx(1.5 * dev.power_busy_w + 0.5 * dev.power_idle_w, rel=1e-12)
    assert float(cost.energy_j(device, 0.0, 0.0)) == 0.0


def test_energy_uses_datasheet_power() -> None:
    # SPEC.md / vendor datasheets: L4 72 W, RTX 4090 450 W, A100 PCIe 300 W; the H200's
    # power limit read by nvidia-smi at measurement: 700 W (h200_machine.json).
    machine = json.loads((PROFILES / "h200_machine.json").read_text())
    h200_w = float(machine["nvidia_smi"].split(",")[-1].split()[0])
    for dev, watts in (("l4", 72.0), ("rtx-4090", 450.0), ("a100-80gb", 300.0), ("h200", h200_w)):
        assert float(cost.energy_j(dev, 1000.0)) == pytest.approx(watts, rel=1e-12)
    # Jetson Orin Nano: 7-25 W
    assert 7.0 <= profiles.get_device("jetson-orin-nano-8gb").power_busy_w <= 25.0


# --------------------------------------------------------------------------- bad input


def _raises(fn, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_unknown_model_lists_known() -> None:
    msg = _raises(lambda: cost.expert_latency_ms("gpt-5-moe", "h200", 1), "gpt-5-moe")
    for name in MODELS:
        assert name in msg


def test_unknown_device_lists_known() -> None:
    msg = _raises(lambda: cost.expert_latency_ms("mixtral-8x7b", "tpu-v9", 1), "tpu-v9")
    for name in ("h200", "l4", "jetson-orin-nano-8gb", "xeon-16c"):
        assert name in msg


def test_negative_tokens() -> None:
    _raises(lambda: cost.expert_latency_ms("mixtral-8x7b", "h200", -2), "-2", ">= 0")
    et = np.zeros(8)
    et[3] = -1
    _raises(lambda: cost.moe_layer_latency_ms("mixtral-8x7b", "h200", et), "-1", ">= 0")
    _raises(
        lambda: cost.transfer_latency_ms(-5, 10, bandwidth_gbit_s=1, latency_ms=0), "-5", ">= 0"
    )


def test_nan_tokens() -> None:
    _raises(lambda: cost.expert_latency_ms("mixtral-8x7b", "h200", float("nan")), "nan", "finite")
    et = np.ones(8)
    et[0] = np.nan
    _raises(lambda: cost.moe_layer_latency_ms("mixtral-8x7b", "h200", et), "nan", "finite")


@pytest.mark.parametrize(
    "call",
    [
        lambda: cost.expert_latency_ms("mixtral-8x7b", "h200", 1, bits=5),
        lambda: cost.moe_layer_latency_ms("mixtral-8x7b", "h200", np.ones(8), bits=5),
        lambda: cost.expert_memory_bytes("mixtral-8x7b", [16, 5]),
        lambda: cost.fetch_latency_ms("mixtral-8x7b", "h200", bits=5),
        lambda: cost.fetch_latency_ms("mixtral-8x7b", "jetson-orin-nano-8gb", bits=5),
        lambda: quality.quantization_loss([16, 5]),
    ],
    ids=["expert", "layer", "memory", "fetch-pcie", "fetch-unified", "quality"],
)
def test_bits_not_allowed(call) -> None:
    _raises(call, "5", "16, 8, 4, 3, 2")


@pytest.mark.parametrize("keep", [0.0, 1.5])
def test_keep_ratio_out_of_range(keep: float) -> None:
    _raises(
        lambda: cost.transfer_latency_ms(
            4, 16, bandwidth_gbit_s=1.0, latency_ms=0.0, keep_ratio=keep
        ),
        str(keep).rstrip("0").rstrip("."),
        "(0, 1]",
    )
    _raises(lambda: quality.token_keep_loss(keep), "(0, 1]")
    _raises(lambda: cost.activation_bytes(4, 16, keep_ratio=keep), "(0, 1]")


def test_expert_tokens_wrong_length() -> None:
    _raises(
        lambda: cost.moe_layer_latency_ms("olmoe-1b-7b", "h200", np.ones(8)),
        "(8,)",
        "64",
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: cost.expert_latency_ms("mixtral-8x7b", "h200", 1, mode="foo"),
        lambda: cost.moe_layer_latency_ms("mixtral-8x7b", "h200", np.ones(8), mode="foo"),
        lambda: cost.moe_layer_latency_ms("mixtral-8x7b", "h200", np.zeros(8), mode="foo"),
        lambda: cost.attention_latency_ms("mixtral-8x7b", "h200", mode="foo"),
    ],
    ids=["expert", "layer", "empty-layer", "attention"],
)
def test_mode_not_allowed(call) -> None:
    _raises(call, "foo", "eager", "cudagraph")


def test_fetch_on_cpu_device() -> None:
    _raises(lambda: cost.fetch_latency_ms("mixtral-8x7b", "xeon-16c"), "xeon-16c", "GPU")


# --------------------------------------------------------------------------- CLI


def test_cli_layer(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["cost", "layer", "--model", "olmoe-1b-7b", "--device", "h200", "--tokens", "16"])
    out = capsys.readouterr().out
    assert rc == 0
    total = [line for line in out.splitlines() if "layer total" in line]
    assert len(total) == 1
    assert float(total[0].split()[-2]) > 0


def test_cli_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["cost", "layer", "--model", "nope-moe", "--device", "h200", "--tokens", "4"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "nope-moe" in captured.err
    assert "mixtral-8x7b" in captured.err
    assert "Traceback" not in captured.err


def test_cli_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cost", "validate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    devices = {r["device"] for r in data["experts"]}
    assert devices == {"h200", "xeon-16c", "epyc-2c"}
    assert all(r["rows"] > 0 for r in data["experts"])
    assert {r["part"] for r in data["attention"]} == {"proj_ms", "sdpa_ms", "total_ms"}
    assert data["derived_checks"] == []


@pytest.mark.skipif(not DEVICES_DIR.is_dir(), reason=f"{DEVICES_DIR} is absent")
def test_cli_validate_derived_checks(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["cost", "validate", "--json", "--devices-dir", str(DEVICES_DIR)])
    assert rc == 0
    checks = json.loads(capsys.readouterr().out)["derived_checks"]
    assert {r["device"] for r in checks} >= {"rtx-4090", "a100-80gb", "jetson-orin-nano-8gb"}
    for r in checks:
        assert r["published_tok_s"] > 0
        assert r["pred_pytorch_kernels_tok_s"] > 0


def test_cli_validate_bad_devices_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["cost", "validate", "--devices-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(tmp_path) in err
