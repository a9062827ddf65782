"""Tests of coel_env.profiles: fit quality against the measured rows, the quantized-kernel
behaviour the profiles README describes, derived devices, CSV reading and user profiles."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from coel_env import cli, cost, cost_cli, profiles

MEASURED = ("h200", "xeon-16c", "epyc-2c")
# The groups the acceptance bar covers: (mode, kind) per measured device.
ACCEPTANCE_GROUPS = {
    "h200": (("eager", "bf16"), ("cudagraph", "bf16"), ("eager", "w4")),
    "xeon-16c": (("eager", "bf16"), ("eager", "w4"), ("eager", "w8")),
    "epyc-2c": (("eager", "bf16"), ("eager", "w4"), ("eager", "w8")),
}
MEDIAN_APE_MAX = 10.0  # [%] acceptance bar of the issue
MEAN_APE_MAX = 15.0  # [%]

DERIVED_GPUS = ("jetson-orin-nano-8gb", "jetson-agx-orin-64gb", "l4", "rtx-4090", "a100-80gb")
DERIVED_CPUS = ("orin-nano-cpu", "agx-orin-cpu", "edge-x86-8c", "edge-x86-16c")
# Datasheet memory bandwidth [GB/s] (SPEC.md, vendor datasheets).
DATASHEET_BW = {
    "jetson-orin-nano-8gb": 68.0,
    "jetson-agx-orin-64gb": 204.8,
    "l4": 300.0,
    "rtx-4090": 1008.0,
    "a100-80gb": 1935.0,
}

REQUIRED_COLUMNS = ("model", "d_model", "d_ff", "tokens", "median_ms", "dtype")


# Every test starts and ends with the user-profile registry as it found it.
pytestmark = pytest.mark.usefixtures("clean_user_registry")


def _run_factors(dev: profiles.DeviceProfile, mode: str, kind: str) -> dict:
    tag = f" [{mode}/{kind}]"
    return {k[: -len(tag)]: v for k, v in dev.run_factors.items() if k.endswith(tag)}


def _ape(name: str, mode: str, kind: str) -> np.ndarray:
    """Absolute percentage errors of the fitted model (with run factors) on measured rows."""
    dev = profiles.get_device(name)
    rows = profiles.measured_rows(name)
    g = rows[
        (rows["mode"] == mode) & (rows.kind == kind) & (rows.tokens >= 1) & (rows.tokens <= 4096)
    ]
    assert len(g) > 0, f"{name}: no measured {mode}/{kind} rows"
    fit = dev.kernels[(mode, kind)]
    pred = profiles.predict_rows(fit, g, _run_factors(dev, mode, kind))
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    return np.abs(pred / g.median_ms.to_numpy() - 1.0) * 100.0


# --------------------------------------------------------------------------- fit quality


@pytest.mark.parametrize("name", MEASURED)
def test_fit_quality_meets_acceptance_bar(name: str) -> None:
    dev = profiles.get_device(name)
    assert dev.measured
    failures, pooled = [], []
    for mode, kind in ACCEPTANCE_GROUPS[name]:
        assert (mode, kind) in dev.kernels, f"{name}: no fit for {mode}/{kind}"
        assert not dev.kernels[(mode, kind)].derived
        err = _ape(name, mode, kind)
        pooled.append(err)
        med, mean = float(np.median(err)), float(err.mean())
        if med > MEDIAN_APE_MAX or mean > MEAN_APE_MAX:
            failures.append(f"{mode}/{kind}: median {med:.1f}%, mean {mean:.1f}%")
    allerr = np.concatenate(pooled)
    assert float(np.median(allerr)) <= MEDIAN_APE_MAX
    assert float(allerr.mean()) <= MEAN_APE_MAX
    assert not failures, f"{name}: " + "; ".join(failures)


def test_validation_table_agrees_with_recomputed_errors() -> None:
    table = cost_cli.validation_table()
    for name, groups in ACCEPTANCE_GROUPS.items():
        for mode, kind in groups:
            (row,) = [r for r in table if (r["device"], r["mode"], r["kind"]) == (name, mode, kind)]
            err = _ape(name, mode, kind)
            assert row["rows"] == len(err)
            assert row["median_ape"] == pytest.approx(float(np.median(err)), rel=1e-9)
            assert row["mean_ape"] == pytest.approx(float(err.mean()), rel=1e-9)
            assert row["max_ape"] == pytest.approx(float(err.max()), rel=1e-9)


def test_fit_is_deterministic() -> None:
    a = profiles._measured("epyc-2c")
    b = profiles._measured("epyc-2c")
    assert dict(a.kernels) == dict(b.kernels)
    assert dict(a.run_factors) == dict(b.run_factors)


# --------------------------------------------------------------------------- quantized kernels


def _measured_ms(name: str, kind: str, tokens: int, run_suffix: str) -> float:
    rows = profiles.measured_rows(name)
    g = rows[
        (rows.model == "mixtral-8x7b")
        & (rows.kind == kind)
        & (rows.tokens == tokens)
        & (rows["mode"] == "eager")
        & rows.run.str.endswith(run_suffix)
    ]
    assert len(g) == 1
    return float(g.median_ms.iloc[0])


def test_h200_w4_kernel_fast_at_decode_slow_at_prefill() -> None:
    # The README's W4A16 kernel: faster than bf16 for one token, far slower for big batches.
    q = "_weight_only_quant.csv"
    assert _measured_ms("h200", "w4", 1, q) < _measured_ms("h200", "bf16", 1, q)
    assert _measured_ms("h200", "w4", 1024, q) > 5 * _measured_ms("h200", "bf16", 1024, q)

    def pred(t: int, bits: int) -> float:
        return float(cost.expert_latency_ms("mixtral-8x7b", "h200", t, bits=bits))

    assert pred(1, 4) < pred(1, 16)
    assert pred(1024, 4) > 5 * pred(1024, 16)


def test_xeon_w4_faster_than_bf16_at_one_token() -> None:
    q = "_weight_only_quant.csv"
    assert _measured_ms("xeon-16c", "w4", 1, q) < _measured_ms("xeon-16c", "bf16", 1, q)
    one = {b: float(cost.expert_latency_ms("mixtral-8x7b", "xeon-16c", 1, bits=b)) for b in (16, 4)}
    assert one[4] < one[16]


def test_bit_widths_without_own_kernel_are_marked_derived() -> None:
    h200 = profiles.get_device("h200")
    assert h200.kernel_for(16)[1] is False
    assert h200.kernel_for(4)[1] is False
    for bits in (8, 3, 2):  # no measured 8-bit kernel on the H200; 3/2 scale from 4
        assert h200.kernel_for(bits)[1] is True
    xeon = profiles.get_device("xeon-16c")
    assert xeon.kernel_for(8)[1] is False
    assert xeon.kernel_for(3)[1] is True


# --------------------------------------------------------------------------- derived devices


@pytest.mark.parametrize("name", DERIVED_GPUS + DERIVED_CPUS)
def test_derived_devices_are_marked_derived(name: str) -> None:
    dev = profiles.get_device(name)
    assert dev.measured is False
    assert dev.kernels
    for key, fit in dev.kernels.items():
        assert fit.derived is True, key
        assert fit.n_rows == 0, key
    if dev.attention is not None:
        assert dev.attention.derived is True
    if dev.pcie is not None:
        assert dev.pcie.derived is True


@pytest.mark.parametrize("name", ("jetson-orin-nano-8gb", "jetson-agx-orin-64gb"))
def test_jetsons_have_unified_memory(name: str) -> None:
    dev = profiles.get_device(name)
    assert dev.kind == "gpu"
    assert dev.unified_memory is True
    assert dev.pcie is None


@pytest.mark.parametrize("name", ("l4", "rtx-4090", "a100-80gb"))
def test_pcie_gpus_have_a_link(name: str) -> None:
    dev = profiles.get_device(name)
    assert dev.unified_memory is False
    assert dev.pcie is not None
    # PCIe Gen4 x16, ~25 GB/s effective per direction (SPEC.md)
    assert dev.pcie.gbps == pytest.approx(25.0, rel=0.2)


@pytest.mark.parametrize("mode", profiles.MODES)
def test_more_datasheet_bandwidth_means_faster_decode(mode: str) -> None:
    for a, b in itertools.permutations(DERIVED_GPUS, 2):
        dev_a, dev_b = profiles.get_device(a), profiles.get_device(b)
        assert dev_a.mem_bw_gbps == DATASHEET_BW[a]
        if dev_a.mem_bw_gbps > dev_b.mem_bw_gbps:
            ta = float(cost.expert_latency_ms("mixtral-8x7b", a, 1, mode=mode))
            tb = float(cost.expert_latency_ms("mixtral-8x7b", b, 1, mode=mode))
            assert ta < tb, f"{a} ({ta:.4f} ms) should beat {b} ({tb:.4f} ms)"


# --------------------------------------------------------------------------- lookup


def test_get_device_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError) as info:
        profiles.get_device("no-such-gpu")
    msg = str(info.value)
    assert "no-such-gpu" in msg
    for name in profiles.builtin_device_names():
        assert name in msg


def test_get_device_is_cached() -> None:
    for name in ("h200", "l4", "edge-x86-8c"):
        a = profiles.get_device(name)
        assert profiles.get_device(name) is a
        assert profiles.get_device(a) is a
        assert name in profiles.device_names()


# --------------------------------------------------------------------------- reading CSVs


def _write_rows(path: Path, columns: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


def _good_row(**over: object) -> list[object]:
    row = dict(model="olmoe-1b-7b", d_model=2048, d_ff=1024, tokens=4, median_ms=0.1, dtype="bf16")
    row.update(over)
    return [row[c] for c in REQUIRED_COLUMNS]


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        profiles.read_expert_csv(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_read_expert_csv_accepts_minimal_schema(tmp_path: Path) -> None:
    p = _write_rows(tmp_path / "ok.csv", list(REQUIRED_COLUMNS), [_good_row()])
    df = profiles.read_expert_csv(p)
    assert len(df) == 1
    # missing weight_bytes: 3 gated matrices at 2 bytes per weight
    assert df.weight_bytes.iloc[0] == 3 * 2048 * 1024 * 2
    assert df.flops.iloc[0] == 2.0 * 4 * 3 * 2048 * 1024
    assert df["mode"].iloc[0] == "eager"


def test_read_expert_csv_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope.csv", "does not exist")


def test_read_expert_csv_missing_columns(tmp_path: Path) -> None:
    cols = ["model", "d_model", "tokens", "dtype"]  # no d_ff, no median_ms/graph_ms
    p = _write_rows(tmp_path / "cols.csv", cols, [["olmoe-1b-7b", 2048, 4, "bf16"]])
    msg = _expect_error(p, "lacks columns", "d_ff", "median_ms")
    assert "'model'" not in msg.split("lacks columns")[1].split("]")[0]


def test_read_expert_csv_non_numeric_median(tmp_path: Path) -> None:
    p = _write_rows(tmp_path / "nn.csv", list(REQUIRED_COLUMNS), [_good_row(median_ms="fast")])
    _expect_error(p, "median_ms", "fast")


def test_read_expert_csv_negative_tokens(tmp_path: Path) -> None:
    rows = [_good_row(), _good_row(tokens=-3)]
    p = _write_rows(tmp_path / "neg.csv", list(REQUIRED_COLUMNS), rows)
    _expect_error(p, "tokens", "-3", "row 2")


def test_read_expert_csv_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    _expect_error(p, "not a readable CSV")


def test_read_expert_csv_header_only(tmp_path: Path) -> None:
    p = _write_rows(tmp_path / "header.csv", list(REQUIRED_COLUMNS), [])
    _expect_error(p, "no rows")


@pytest.mark.parametrize(
    "payload",
    [
        np.random.default_rng(0).bytes(4096),
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        b"\x00" * 512,
    ],
    ids=["random", "png", "nul"],
)
def test_read_expert_csv_binary_garbage(tmp_path: Path, payload: bytes) -> None:
    p = tmp_path / "garbage.csv"
    p.write_bytes(payload)
    msg = _expect_error(p)
    assert "readable CSV" in msg or "lacks columns" in msg


# --------------------------------------------------------------------------- user profiles


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prof") / "mycpu.csv"
    argv = ["profile", "--device", "cpu", "--models", "switch-base", "--tokens", "1", "4", "16"]
    argv += ["--dtypes", "bf16", "fp32", "--min-time-s", "0.02", "--repeats", "1"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert out.is_file()
    return out


def test_load_profile_registers_a_device(tiny_profile: Path) -> None:
    assert "mycpu" not in profiles.device_names()
    prof = profiles.load_profile(tiny_profile)
    assert prof.name == "mycpu"
    assert prof.kind == "cpu"
    assert profiles.get_device("mycpu") is prof
    assert "mycpu" in profiles.device_names()
    assert ("eager", "bf16") in prof.kernels
    ms = float(cost.expert_latency_ms("olmoe-1b-7b", "mycpu", 4))
    assert math.isfinite(ms) and ms > 0


def test_user_registry_is_cleaned_between_tests() -> None:
    assert "mycpu" not in profiles._USER
    with pytest.raises(ValueError, match="mycpu"):
        profiles.get_device("mycpu")


def test_load_profile_without_register(tiny_profile: Path) -> None:
    prof = profiles.load_profile(tiny_profile, name="unregistered", register=False)
    assert prof.name == "unregistered"
    assert "unregistered" not in profiles.device_names()


def test_load_profile_refuses_builtin_name(tiny_profile: Path) -> None:
    with pytest.raises(ValueError, match="h200"):
        profiles.load_profile(tiny_profile, name="h200")
    assert profiles.get_device("h200").measured  # still the built-in one
    assert "h200" not in profiles._USER


def test_load_profile_needs_16_bit_rows(tiny_profile: Path, tmp_path: Path) -> None:
    with tiny_profile.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r["dtype"] == "fp32"]
    assert rows
    p = tmp_path / "fp32only.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError) as info:
        profiles.load_profile(p)
    msg = str(info.value)
    assert str(p) in msg and "bf16" in msg
    assert "fp32only" not in profiles.device_names()
