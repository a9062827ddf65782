"""Serving modes: a fused-kernel runtime calibrated on published decode rates, and derived
quantized kernels that keep the measured 4-bit/16-bit ratio (``serving.quant_scaling``)."""

import csv

import numpy as np
import pytest

from coel_env import cost
from coel_env.catalog import get_model
from coel_env.core.evaluation import FUSED_BW_EFFICIENCY, ServingModel, _fused_ms
from coel_env.core.scenario import LEGACY_FIDELITY, data_root, load_scenario
from coel_env.profiles import get_device

OLMOE = get_model("olmoe-1b-7b")
TOKENS = np.array([1.0, 16.0, 128.0, 512.0, 2048.0])


def _row(sm: ServingModel, dev: str, bits: int) -> np.ndarray:
    """The serving model's expert latency of OLMoE on ``dev`` at ``bits`` at TOKENS."""
    r = sm._expert_row(OLMOE, get_device(dev), bits)
    return np.interp(TOKENS, sm._grid, sm._values[r])


def _model(**kw) -> ServingModel:
    return ServingModel([get_device("l4")], [get_device("edge-x86-8c")], **kw)


def test_ratio_scaling_keeps_the_measured_4_to_16_bit_ratio_on_a_derived_gpu():
    h200 = {b: cost.expert_latency_ms(OLMOE, "h200", TOKENS, bits=b) for b in (4, 16)}
    measured = h200[4] / h200[16]
    ratio = _model(mode="eager", quant_scaling="ratio")
    through = _model(mode="eager", quant_scaling="throughput")
    l4_ratio = _row(ratio, "l4", 4) / _row(ratio, "l4", 16)
    assert l4_ratio == pytest.approx(measured, rel=1e-6)
    # datasheet throughput scaling: 4-bit falls off the dispatch floor early on the slower
    # GPU, 6x the 16-bit time at 128 tokens where the H200 measures them about equal
    l4_through = _row(through, "l4", 4) / _row(through, "l4", 16)
    assert measured[2] < 1.2 and l4_through[2] > 5
    # the 16-bit kernels and the measured GPU are untouched
    assert np.array_equal(_row(ratio, "l4", 16), _row(through, "l4", 16))
    assert np.array_equal(_row(ratio, "h200", 4), _row(through, "h200", 4))


def test_a_fused_expert_reads_its_weights_at_the_calibrated_share_of_the_bandwidth():
    dev = get_device("l4")
    w = OLMOE.expert_bytes(16)
    one = float(_fused_ms(dev, 16, w, 2.0 * OLMOE.expert_params))
    bound = w / 1e6 / (FUSED_BW_EFFICIENCY[16] * dev.mem_bw_gbps)
    assert one == pytest.approx(bound, rel=0.01)  # memory-bound: the weights' read
    w4 = OLMOE.expert_bytes(4)
    assert float(_fused_ms(dev, 4, w4, 2.0 * OLMOE.expert_params)) == pytest.approx(
        w4 / 1e6 / (FUSED_BW_EFFICIENCY[4] * dev.mem_bw_gbps), rel=0.01
    )
    # compute-bound at long prompts: the 16-bit matmul throughput of the CUDA-graph fit
    k16 = dev.kernel_for(16, "cudagraph")[0]
    big = float(_fused_ms(dev, 16, w, 2.0 * OLMOE.expert_params * 65536))
    assert big == pytest.approx(2.0 * OLMOE.expert_params * 65536 / 1e9 / k16.tflops, rel=0.05)
    # a fused runtime is faster than eager PyTorch at every size on the edge GPUs
    fused, eager = _model(mode="fused"), _model(mode="eager")
    assert (_row(fused, "l4", 16) < _row(eager, "l4", 16)).all()
    assert (_row(fused, "l4", 4) < _row(fused, "l4", 16)).all()


def test_the_fused_efficiencies_are_the_published_llama_cpp_decode_rates():
    path = data_root() / "devices" / "llamacpp_llama3_gpu_tokens_per_s.csv"
    if not path.is_file():
        pytest.skip(f"{path} (the shared data sets) is not here")
    rows = {
        (r["gpu_config"], r["model"], r["precision"]): r["tokens_per_s"]
        for r in csv.DictReader(path.open())
        if r["metric"] == "text_generation_tg"  # decode, not prompt processing
    }
    bw = get_device("rtx-4090").mem_bw_gbps
    f16 = float(rows[("4090 24GB", "LLaMA-3-8B", "F16")])
    q4 = float(rows[("4090 24GB", "LLaMA-3-8B", "Q4_K_M")])
    assert bw == 1008.0
    assert FUSED_BW_EFFICIENCY[16] == pytest.approx(f16 * 8.03e9 * 2 / 1e9 / bw, rel=1e-3)
    assert FUSED_BW_EFFICIENCY[4] == pytest.approx(q4 * 4.92 / bw, rel=1e-9)


def test_the_default_is_fused_with_ratio_scaling_and_bad_values_are_refused():
    sc = load_scenario("default")
    assert sc.serving.mode == "fused" and sc.serving.quant_scaling == "ratio"
    sc = load_scenario("default", LEGACY_FIDELITY)
    assert sc.serving.mode == "eager" and sc.serving.quant_scaling == "throughput"
    assert load_scenario("default", {"serving.mode": "eager"}).serving.mode == "eager"
    with pytest.raises(ValueError, match=r"serving.mode='jit'.*'fused', 'eager', 'cudagraph'"):
        load_scenario("default", {"serving.mode": "jit"})
    # the calibrated layer terms are fitted to eager layers: not with the default mode
    with pytest.raises(ValueError, match=r"layer_terms='calibrated' with serving.mode='fused'"):
        load_scenario("default", {"serving.layer_terms": "calibrated"})
    over = {"serving.mode": "eager", "serving.layer_terms": "calibrated"}
    assert load_scenario("default", over).serving.layer_terms == "calibrated"
    with pytest.raises(ValueError, match=r"serving.quant_scaling='x'.*'ratio', 'throughput'"):
        load_scenario("default", {"serving.quant_scaling": "x"})
