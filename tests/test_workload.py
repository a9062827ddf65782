"""Tests of coel_env.core.workload: requests, the synthetic generator, trace replay, calibration."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from coel_env.core.io import TraceWarning, load_azure_trace, load_generic_trace
from coel_env.core.workload import (
    AZURE_CODE_FIT,
    AZURE_CONV_FIT,
    TASK_NAMES,
    LogNormalTokens,
    Requests,
    SloConfig,
    SyntheticStream,
    SyntheticWorkload,
    TraceFit,
    TraceMapping,
    TraceWorkload,
    WorkloadConfig,
    dispersion_of_counts,
    fit_trace,
)

REPO = Path(__file__).resolve().parents[1]
AZURE_DIR = REPO.parent / "shared" / "data" / "traces" / "azure_llm_2023"
AZURE_FILES = {
    "code": ("AzureLLMInferenceTrace_code.csv", AZURE_CODE_FIT),
    "conv": ("AzureLLMInferenceTrace_conv.csv", AZURE_CONV_FIT),
}
needs_azure = pytest.mark.skipif(
    not all((AZURE_DIR / f).is_file() for f, _ in AZURE_FILES.values()),
    reason=f"Azure 2023 traces not found under {AZURE_DIR}",
)
FIELDS = (
    "arrival_s",
    "origin",
    "model",
    "input_tokens",
    "output_tokens",
    "task",
    "slo_ms",
    "quality_floor",
)


def _same(a: Requests, b: Requests) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def _write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _requests(arrival_s: list[float] | np.ndarray) -> Requests:
    t = np.asarray(arrival_s, dtype=np.float64)
    n = t.size
    return Requests(
        arrival_s=t,
        origin=np.zeros(n),
        model=np.zeros(n),
        input_tokens=np.arange(n),
        output_tokens=np.ones(n),
        task=np.zeros(n),
        slo_ms=np.full(n, 1000.0),
        quality_floor=np.full(n, 0.05),
    )


# ----------------------------------------------------------------------------- Requests


def test_requests_coerce_dtypes_and_are_read_only() -> None:
    r = _requests([0.0, 1.0, 1.0, 2.5])
    assert r.arrival_s.dtype == np.float64 and r.origin.dtype == np.int32
    assert r.model.dtype == np.int16 and r.task.dtype == np.int16
    assert r.input_tokens.dtype == np.int32 and r.slo_ms.dtype == np.float32
    assert len(r) == 4
    with pytest.raises(ValueError):
        r.arrival_s[0] = 5.0


def test_requests_reject_unsorted_arrivals_and_unequal_lengths() -> None:
    with pytest.raises(ValueError, match=r"arrival_s is not sorted: entry 2"):
        _requests([0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="equal lengths"):
        Requests(
            arrival_s=np.zeros(2),
            origin=np.zeros(3),
            model=np.zeros(2),
            input_tokens=np.zeros(2),
            output_tokens=np.zeros(2),
            task=np.zeros(2),
            slo_ms=np.ones(2),
            quality_floor=np.zeros(2),
        )


def test_window_partitions_requests_exactly() -> None:
    rng = np.random.default_rng(7)
    r = _requests(np.sort(rng.uniform(0, 100, 5000).round(1)))  # many ties
    bounds = np.concatenate(([0.0], np.sort(rng.uniform(0, 100, 40)), [100.0 + 1e-9]))
    parts = [r.window(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert sum(len(p) for p in parts) == len(r)
    for p, a, b in zip(parts, bounds[:-1], bounds[1:], strict=True):
        assert len(p) == 0 or (p.arrival_s.min() >= a and p.arrival_s.max() < b)
    assert _same(Requests.concat(parts), r)


def test_concat_sorts_stably_and_empty_is_empty() -> None:
    a, b = _requests([0.0, 2.0]), _requests([1.0, 2.0])
    c = Requests.concat([a, b])
    assert c.arrival_s.tolist() == [0.0, 1.0, 2.0, 2.0]
    assert c.input_tokens.tolist() == [0, 0, 1, 1]  # the tie at 2.0 keeps part order
    assert len(Requests.concat([])) == 0 and len(Requests.empty()) == 0


# ----------------------------------------------------------------------------- synthetic


def _conv_workload(n_servers: int = 3, **overrides: object) -> SyntheticWorkload:
    return SyntheticWorkload(WorkloadConfig.from_fit(AZURE_CONV_FIT, n_servers, **overrides))


def test_generate_is_deterministic_for_a_seed() -> None:
    w = _conv_workload(model_mix=((0.5, 0.5),) * 3)
    a = w.generate(10.0, 60.0, np.random.default_rng(123))
    b = w.generate(10.0, 60.0, np.random.default_rng(123))
    c = w.generate(10.0, 60.0, np.random.default_rng(124))
    assert len(a) > 100 and _same(a, b)
    assert not (len(a) == len(c) and _same(a, c))


def test_generated_window_is_half_open_and_sorted() -> None:
    w = _conv_workload()
    r = w.generate(5.0, 20.0, np.random.default_rng(0))
    assert r.arrival_s.min() >= 5.0 and r.arrival_s.max() < 25.0
    assert (np.diff(r.arrival_s) >= 0).all()
    assert set(np.unique(r.origin)) == {0, 1, 2}
    assert len(w.generate(5.0, 0.0, np.random.default_rng(0))) == 0


def test_long_run_rate_cv_and_token_medians_match_the_conversation_fit() -> None:
    fit = AZURE_CONV_FIT
    w = _conv_workload(n_servers=2)
    duration_s = 20_000.0
    r = w.generate(0.0, duration_s, np.random.default_rng(1))
    assert len(r) / duration_s == pytest.approx(fit.rate_per_s, rel=0.03)
    for s in (0, 1):
        gaps = np.diff(r.arrival_s[r.origin == s])
        assert gaps.std() / gaps.mean() == pytest.approx(fit.interarrival_cv, rel=0.03)
    # Rounding to integers moves the median by at most 0.5 token.
    assert np.median(r.input_tokens) == pytest.approx(fit.input_tokens.median, rel=0.02)
    assert np.median(r.output_tokens) == pytest.approx(fit.output_tokens.median, rel=0.02)
    assert r.input_tokens.max() <= fit.input_tokens.max_tokens and r.input_tokens.min() >= 1
    assert r.output_tokens.max() <= fit.output_tokens.max_tokens


def test_code_fit_keeps_the_traces_burstiness() -> None:
    """CV is matched exactly by construction; the 1 s dispersion (13.2 in the trace,
    not fitted) must stay near it: a gamma renewal with the same CV gives ~69."""
    fit = AZURE_CODE_FIT
    w = SyntheticWorkload(WorkloadConfig.from_fit(fit, 1))
    r = w.generate(0.0, 100_000.0, np.random.default_rng(0))
    gaps = np.diff(r.arrival_s)
    assert 1.0 / gaps.mean() == pytest.approx(fit.rate_per_s, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(fit.interarrival_cv, rel=0.10)
    assert 6.0 < dispersion_of_counts(r.arrival_s, 1.0) < 20.0


def test_short_epochs_keep_the_long_run_rate() -> None:
    """Each window starts in the H2 equilibrium: starting it with a fresh gap would
    put a burst at every window start and inflate the rate of short epochs."""
    fit = AZURE_CODE_FIT
    w = SyntheticWorkload(WorkloadConfig.from_fit(fit, 1))
    rng = np.random.default_rng(11)
    n_epochs, epoch_s = 5000, 2.0
    total = sum(len(w.generate(k * epoch_s, epoch_s, rng)) for k in range(n_epochs))
    assert total / (n_epochs * epoch_s) == pytest.approx(fit.rate_per_s, rel=0.10)


def test_diurnal_profile_changes_the_rate_across_the_period() -> None:
    period_s, amplitude = 1000.0, 0.8
    w = _conv_workload(n_servers=1, diurnal_amplitude=amplitude, diurnal_period_s=period_s)
    r = w.generate(0.0, 40 * period_s, np.random.default_rng(2))
    phase = (r.arrival_s % period_s) / period_s
    high, low = int((phase < 0.5).sum()), int((phase >= 0.5).sum())
    expected = (1 + 2 * amplitude / math.pi) / (1 - 2 * amplitude / math.pi)  # ~3.07
    assert high / low == pytest.approx(expected, rel=0.10)
    assert len(r) / (40 * period_s) == pytest.approx(AZURE_CONV_FIT.rate_per_s, rel=0.03)
    flat = _conv_workload(n_servers=1).generate(0.0, 40 * period_s, np.random.default_rng(2))
    flat_phase = (flat.arrival_s % period_s) / period_s
    assert (flat_phase < 0.5).sum() / (flat_phase >= 0.5).sum() == pytest.approx(1.0, rel=0.05)


def test_mixes_assign_tasks_models_and_slos() -> None:
    cfg = WorkloadConfig(
        rates_per_s=(2.0, 2.0),
        task_mix=((1.0, 0, 0, 0, 0, 0), (0, 0, 0.5, 0.5, 0, 0)),
        model_mix=((0.0, 1.0), (1.0, 0.0)),
        slo=SloConfig(ttft_ms=100.0, tpot_ms=10.0, quality_floor=0.02),
    )
    r = SyntheticWorkload(cfg).generate(0.0, 500.0, np.random.default_rng(3))
    at0, at1 = r.origin == 0, r.origin == 1
    assert (r.task[at0] == 0).all() and set(np.unique(r.task[at1])) == {2, 3}
    assert (r.model[at0] == 1).all() and (r.model[at1] == 0).all()
    np.testing.assert_allclose(r.slo_ms, 100.0 + 10.0 * r.output_tokens, rtol=1e-6)
    assert np.all(r.quality_floor == np.float32(0.02))


def test_per_call_overrides_drive_demand() -> None:
    w = _conv_workload(n_servers=3)
    r = w.generate(
        0.0,
        200.0,
        np.random.default_rng(4),
        rates_per_s=np.array([0.0, 3.0, 0.0]),
        task_mix=np.tile(np.eye(6)[5], (3, 1)),
    )
    assert len(r) > 0 and (r.origin == 1).all() and (r.task == 5).all()
    with pytest.raises(ValueError, match="rates_per_s=.* it must be 3 finite rates >= 0"):
        w.generate(0.0, 1.0, np.random.default_rng(0), rates_per_s=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"task_mix row 0 sums to 2"):
        w.generate(0.0, 1.0, np.random.default_rng(0), task_mix=np.full((3, 6), 1 / 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rates_per_s": ()}, r"rates_per_s=\(\) is not allowed"),
        ({"rates_per_s": (1.0, -2.0)}, r"rates_per_s\[1\]=-2.0 is not allowed; .*\[0, inf\)"),
        ({"interarrival_cv": 0.5}, r"interarrival_cv=0.5 is not allowed; .*\[1, inf\)"),
        ({"interarrival_cv": 13.0, "fast_gap_probability": 0.5}, "fast_gap_probability=0.5"),
        ({"task_mix": ((1.0,),)}, r"task_mix has shape \(1, 1\); it must be \[1, 6\]"),
        ({"model_mix": ((0.4, 0.4),)}, "model_mix row 0 sums to 0.8"),
        ({"diurnal_amplitude": 1.0}, r"diurnal_amplitude=1.0 is not allowed; .*\[0, 1\)"),
        ({"diurnal_period_s": 0.0}, "diurnal_period_s=0.0"),
        ({"task_names": ("a", "a")}, "names must be unique"),
    ],
)
def test_workload_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"rates_per_s": (1.0,)}
    with pytest.raises(ValueError, match=message):
        WorkloadConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_small_configs_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="SloConfig.quality_floor=1.5"):
        SloConfig(quality_floor=1.5)
    with pytest.raises(ValueError, match="LogNormalTokens.max_tokens=0"):
        LogNormalTokens(mu_log=1.0, sigma_log=1.0, max_tokens=0)
    with pytest.raises(ValueError, match="TraceMapping.server_weights"):
        TraceMapping(servers=("a", "b"), server_weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="n_servers=0"):
        WorkloadConfig.from_fit(AZURE_CONV_FIT, 0)
    with pytest.raises(ValueError, match="t0_s=-1"):
        _conv_workload().generate(-1, 1.0, np.random.default_rng(0))


# ----------------------------------------------------------------------------- Azure replay


@needs_azure
@pytest.mark.parametrize("key", sorted(AZURE_FILES))
def test_azure_replay_loads_every_row(key: str) -> None:
    file, fit = AZURE_FILES[key]
    path = AZURE_DIR / file
    lines = path.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    r = load_azure_trace(path, task="code" if key == "code" else "conversation")
    assert len(r) == len(rows) == fit.n_requests
    assert r.arrival_s[0] == 0.0 and (np.diff(r.arrival_s) >= 0).all()
    assert r.arrival_s[-1] == pytest.approx(fit.duration_s, abs=1e-6)
    assert r.input_tokens.tolist() == [int(row[1]) for row in rows]
    assert r.output_tokens.tolist() == [int(row[2]) for row in rows]
    assert (r.task == TASK_NAMES.index("code" if key == "code" else "conversation")).all()
    half = load_azure_trace(path, time_scale=0.5)
    np.testing.assert_allclose(half.arrival_s, r.arrival_s / 2, rtol=0, atol=1e-9)
    assert half.arrival_s[-1] == pytest.approx(r.arrival_s[-1] / 2)


@needs_azure
def test_azure_replay_maps_rows_to_servers_by_weight() -> None:
    mapping = TraceMapping(servers=("a", "b", "c"), server_weights=(0.5, 0.25, 0.25))
    path = AZURE_DIR / AZURE_FILES["conv"][0]
    r = load_azure_trace(path, mapping=mapping, rng=np.random.default_rng(5))
    share = np.bincount(r.origin, minlength=3) / len(r)
    np.testing.assert_allclose(share, [0.5, 0.25, 0.25], atol=0.02)
    again = load_azure_trace(path, mapping=mapping, rng=np.random.default_rng(5))
    assert _same(r, again)


@needs_azure
@pytest.mark.parametrize("key", sorted(AZURE_FILES))
def test_module_constants_equal_the_calibration_on_the_real_files(key: str) -> None:
    file, constant = AZURE_FILES[key]
    fit = fit_trace(load_azure_trace(AZURE_DIR / file), name=constant.name, source=constant.source)
    # The constants carry 6 decimals.
    for name in ("duration_s", "rate_per_s", "interarrival_cv", "fast_gap_probability"):
        assert getattr(fit, name) == pytest.approx(getattr(constant, name), abs=1e-6), name
    assert fit.dispersion_1s == pytest.approx(constant.dispersion_1s, abs=1e-6)
    assert fit.n_requests == constant.n_requests
    for name in ("input_tokens", "output_tokens"):
        got, want = getattr(fit, name), getattr(constant, name)
        assert got.mu_log == pytest.approx(want.mu_log, abs=1e-6), name
        assert got.sigma_log == pytest.approx(want.sigma_log, abs=1e-6), name
        assert got.max_tokens == want.max_tokens, name


@needs_azure
def test_calibration_script_prints_the_fits(tmp_path: Path) -> None:
    script = REPO / "experiments" / "calibrate_workload.py"
    done = subprocess.run(
        [sys.executable, str(script), "--trace-dir", str(AZURE_DIR)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"interarrival_cv   {AZURE_CODE_FIT.interarrival_cv:.6f}" in done.stdout
    assert f"mu_log={AZURE_CONV_FIT.output_tokens.mu_log:.6f}" in done.stdout
    assert done.stdout.count("matches") == 2


def test_calibration_script_reports_a_missing_folder(tmp_path: Path) -> None:
    script = REPO / "experiments" / "calibrate_workload.py"
    done = subprocess.run(
        [sys.executable, str(script), "--trace-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_fit_trace_recovers_a_synthetic_workload() -> None:
    w = _conv_workload(n_servers=1)
    r = w.generate(0.0, 5000.0, np.random.default_rng(9))
    fit = fit_trace(r)
    assert isinstance(fit, TraceFit)
    assert fit.rate_per_s == pytest.approx(AZURE_CONV_FIT.rate_per_s, rel=0.03)
    assert fit.interarrival_cv == pytest.approx(AZURE_CONV_FIT.interarrival_cv, rel=0.03)
    assert fit.output_tokens.mu_log == pytest.approx(AZURE_CONV_FIT.output_tokens.mu_log, abs=0.03)


# ----------------------------------------------------------------------------- generic replay

GENERIC = "arrival_s,input_tokens,output_tokens\n0.0,10,5\n0.5,20,6\n1.5,30,7\n4.0,40,8\n"


def test_generic_csv_without_optional_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, GENERIC)
    mapping = TraceMapping(servers=("a", "b"), models=("m0", "m1", "m2"), tasks=("x", "y"))
    r = load_generic_trace(path, mapping=mapping, rng=np.random.default_rng(0))
    assert r.arrival_s.tolist() == [0.0, 0.5, 1.5, 4.0]
    assert r.input_tokens.tolist() == [10, 20, 30, 40]
    assert r.origin.max() < 2 and r.model.max() < 3 and r.task.max() < 2
    np.testing.assert_allclose(r.slo_ms, 2500.0 + 150.0 * r.output_tokens)
    assert np.all(r.quality_floor == np.float32(0.05))
    assert _same(r, load_generic_trace(path, mapping=mapping, rng=np.random.default_rng(0)))
    scaled = load_generic_trace(path, time_scale=2.0, mapping=mapping)
    assert scaled.arrival_s.tolist() == [0.0, 1.0, 3.0, 8.0]


def test_generic_csv_with_optional_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "arrival_s,input_tokens,output_tokens,server,model,task,slo_ms,quality_floor\n"
        "0.0,10,5,b,m1,law,900,0.1\n"
        "1.0,20,6, a ,m0,code,1200.5,0\n",
    )
    mapping = TraceMapping(servers=("a", "b"), models=("m0", "m1"))
    r = load_generic_trace(path, mapping=mapping)
    assert r.origin.tolist() == [1, 0] and r.model.tolist() == [1, 0]
    assert r.task.tolist() == [TASK_NAMES.index("law"), TASK_NAMES.index("code")]
    assert r.slo_ms.tolist() == [900.0, np.float32(1200.5)]
    assert r.quality_floor.tolist() == [np.float32(0.1), 0.0]


def test_trace_workload_loops_and_partitions_windows(tmp_path: Path) -> None:
    trace = load_generic_trace(_write(tmp_path, GENERIC))
    w = TraceWorkload(trace)  # period = 4.0 + mean gap 4/3
    period = 4.0 + 4.0 / 3.0
    assert w.period_s == pytest.approx(period)
    whole = w.generate(0.0, 3 * period)
    assert len(whole) == 3 * len(trace)
    np.testing.assert_allclose(whole.arrival_s[4:8], trace.arrival_s + period)
    edges = np.concatenate(([0.0], np.sort(np.random.default_rng(0).uniform(0, 3 * period, 25))))
    edges = np.append(edges, 3 * period)
    parts = [w.generate(a, b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    assert sum(len(p) for p in parts) == len(whole)
    assert _same(Requests.concat(parts), whole)
    once = TraceWorkload(trace, loop=False)
    assert len(once.generate(0.0, 100.0)) == len(trace) and len(once.generate(5.0, 10.0)) == 0


def test_trace_workload_rejects_a_short_period(tmp_path: Path) -> None:
    trace = load_generic_trace(_write(tmp_path, GENERIC))
    with pytest.raises(ValueError, match=r"period_s=3.0 is not allowed; it must be in \(4, inf\)"):
        TraceWorkload(trace, period_s=3.0)


# ----------------------------------------------------------------------------- bad input

AZURE_OK = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:17:03.9799600,4808,10\n"
    "2023-11-16 18:17:04.0319600,3180,8\n"
    "2023-11-16 18:17:04.0781490,110,27\n"
)


def _azure_with(row: int, column: int, value: str) -> str:
    lines = AZURE_OK.splitlines()
    cells = lines[row + 1].split(",")
    cells[column] = value
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_azure_with(1, 1, "abc"), r"row 2 \(line 3\), column 'ContextTokens': 'abc' is not a"),
        (_azure_with(2, 2, "-4"), r"row 3 \(line 4\), column 'GeneratedTokens': '-4' is negative"),
        (_azure_with(0, 2, "2.5"), r"column 'GeneratedTokens': '2.5' is not an integer"),
        (_azure_with(0, 1, ""), r"row 1 \(line 2\), column 'ContextTokens': '' is missing"),
        (_azure_with(1, 0, "yesterday"), r"row 2 \(line 3\), column 'TIMESTAMP': 'yesterday'"),
        (
            _azure_with(2, 0, "2023-11-16 18:17:04.0000000"),
            r"row 3 \(line 4\), column 'TIMESTAMP': '2023-11-16 18:17:04.0000000' is earlier "
            r"than row 2 .*must be non-decreasing .*sort=True",
        ),
        ("", r"the file is empty; an Azure trace needs a header \(TIMESTAMP, ContextTokens"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", r"the trace is empty"),
        (
            "TIMESTAMP,Context,GeneratedTokens\n2023-11-16 18:17:03,1,2\n",
            r"missing required column\(s\) ContextTokens; .*found: TIMESTAMP, Context, Generated",
        ),
    ],
)
def test_bad_azure_files_raise_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(ValueError, match=message) as info:
        load_azure_trace(path)
    assert str(path) in str(info.value)
    if "row" in message:
        assert "values must be" in str(info.value) or "timestamps must be" in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"trace file .*nope.csv does not exist"):
        load_azure_trace(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_generic_trace(tmp_path / "nope.csv")


def test_unsorted_rows_can_be_sorted_with_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, "arrival_s,input_tokens,output_tokens\n2.0,1,1\n1.0,2,2\n3.0,3,3\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 3\), column 'arrival_s': '1.0' is earlier"):
        load_generic_trace(path)
    with pytest.warns(TraceWarning, match=r"1 row\(s\) out of timestamp order"):
        r = load_generic_trace(path, sort=True)
    assert r.arrival_s.tolist() == [1.0, 2.0, 3.0] and r.input_tokens.tolist() == [2, 1, 3]


def test_duplicate_timestamps_are_kept_with_a_warning(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "arrival_s,input_tokens,output_tokens\n1.0,1,1\n1.0,2,2\n1.0,3,3\n2.0,4,4\n"
    )
    with pytest.warns(TraceWarning, match=r"2 request\(s\) share the 'arrival_s' value .*row 2"):
        r = load_generic_trace(path)
    assert r.arrival_s.tolist() == [1.0, 1.0, 1.0, 2.0] and r.input_tokens.tolist() == [1, 2, 3, 4]


@needs_azure
def test_real_azure_files_load_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for file, _ in AZURE_FILES.values():
            load_azure_trace(AZURE_DIR / file)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "arrival_s,input_tokens,output_tokens,server\n0,1,1,a\n1,1,1,zz\n",
            r"row 2 \(line 3\), column 'server': 'zz' is not a known name; allowed: a, b",
        ),
        (
            "arrival_s,input_tokens,output_tokens,model\n0,1,1,m9\n",
            r"column 'model': 'm9' is not a known name; allowed: model0",
        ),
        (
            "arrival_s,input_tokens,output_tokens,task\n0,1,1,poetry\n",
            r"column 'task': 'poetry' is not a known name; allowed: code, conversation, intent",
        ),
        (
            "arrival_s,input_tokens,output_tokens\n-1,1,1\n",
            r"row 1 \(line 2\), column 'arrival_s': '-1' is negative; values must be finite "
            r"numbers >= 0",
        ),
        ("arrival_s,input_tokens,output_tokens\nnan,1,1\n", r"'nan' is not a finite number"),
        (
            "arrival_s,input_tokens,output_tokens,slo_ms\n0,1,1,0\n",
            r"column 'slo_ms': '0' is too small; values must be finite numbers > 0",
        ),
        (
            "arrival_s,input_tokens,output_tokens,quality_floor\n0,1,1,1.5\n",
            r"column 'quality_floor': '1.5' is too large; .* >= 0 and <= 1",
        ),
        (
            "arrival_s,output_tokens\n0,1\n",
            r"missing required column\(s\) input_tokens; a generic trace needs arrival_s, "
            r"input_tokens, output_tokens",
        ),
        (
            "arrival_s,input_tokens,output_tokens\n0,1,x\n1,2,y\n",
            r"'x' is not a finite number; .* \(2 bad rows in all\)",
        ),
    ],
)
def test_bad_generic_files_raise_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text, "bad.csv")
    mapping = TraceMapping(servers=("a", "b"))
    with pytest.raises(ValueError, match=message) as info:
        load_generic_trace(path, mapping=mapping)
    assert str(path) in str(info.value)


def test_a_row_longer_than_the_header_is_an_error(tmp_path: Path) -> None:
    for rows, where in (
        ("0,1,2\n1,2,3,4\n", "row 2 \\(line 3\\)"),
        ("0,1,2,9\n", "row 1 \\(line 2\\)"),
    ):
        path = _write(tmp_path, "arrival_s,input_tokens,output_tokens\n" + rows)
        with pytest.raises(ValueError, match=where + " has 4 fields, the header 3; rows must not"):
            load_generic_trace(path)


def test_unknown_generic_columns_warn(tmp_path: Path) -> None:
    path = _write(tmp_path, "arrival_s,input_tokens,output_tokens,slo\n0,1,1,5\n")
    with pytest.warns(TraceWarning, match=r"column\(s\) slo ignored"):
        load_generic_trace(path)


def test_unknown_task_argument_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, AZURE_OK)
    with pytest.raises(ValueError, match=r"task='poetry' is not allowed; allowed: code, conv"):
        load_azure_trace(path, task="poetry")


def _stream(rate: float, seed: int = 0, n: int = 3):
    cfg = WorkloadConfig.from_fit(AZURE_CONV_FIT, n, rates_per_s=(rate,) * n)
    return SyntheticStream(SyntheticWorkload(cfg), np.random.default_rng(seed)), cfg


@pytest.mark.parametrize("rate", [0.3, 40.0])  # a few per window; chunks that must widen
def test_the_world_arrival_stream_keeps_rate_and_burstiness(rate):
    """Windows of the chunked stream form one H2 process per server: its mean rate and
    gap CV are the config's, across window boundaries."""
    stream, cfg = _stream(rate)
    dt, windows = 10.0, 3000 if rate < 1 else 150
    rates = np.full(3, rate)
    mix = np.full((3, len(cfg.task_names)), 1.0 / len(cfg.task_names))
    times = [[] for _ in range(3)]
    for k in range(windows):
        r = stream.next_window(k * dt, dt, rates, mix)
        assert np.all(np.diff(r.arrival_s) >= 0)
        assert np.all((r.arrival_s >= k * dt) & (r.arrival_s < (k + 1) * dt))
        for s in range(3):
            times[s].append(r.arrival_s[r.origin == s])
    gaps = np.concatenate([np.diff(np.concatenate(t)) for t in times])
    total = sum(np.concatenate(t).size for t in times)
    assert total / (3 * windows * dt) == pytest.approx(rate, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(cfg.interarrival_cv, rel=0.12)


def test_the_world_arrival_stream_is_reproducible_and_continues_after_pickling():
    a, cfg = _stream(2.0, seed=5)
    b, _ = _stream(2.0, seed=5)
    rates = np.array([2.0, 0.0, 7.0])  # an idle server too
    mix = np.full((3, len(cfg.task_names)), 1.0 / len(cfg.task_names))
    for k in range(30):
        ra, rb = (
            a.next_window(k * 10.0, 10.0, rates, mix),
            b.next_window(k * 10.0, 10.0, rates, mix),
        )
        assert (ra.origin != 1).all()
        for f in ("arrival_s", "origin", "model", "task", "input_tokens", "output_tokens"):
            np.testing.assert_array_equal(getattr(ra, f), getattr(rb, f))
    c = pickle.loads(pickle.dumps(a))
    for k in range(30, 400):
        ra, rc = (
            a.next_window(k * 10.0, 10.0, rates, mix),
            c.next_window(k * 10.0, 10.0, rates, mix),
        )
        np.testing.assert_array_equal(ra.arrival_s, rc.arrival_s)
        np.testing.assert_array_equal(ra.output_tokens, rc.output_tokens)


@pytest.mark.parametrize(
    ("text", "loader"),
    [
        ("arrival_s,input_tokens,output_tokens\n0,10,5\n1,0,0\n2,0,0\n3,0,7\n", "generic"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,10,5\n"
         "2023-11-16 18:00:01,0,0\n2023-11-16 18:00:02,0,0\n", "azure"),
    ],
)  # fmt: skip
def test_rows_without_any_token_are_refused_naming_file_row_and_columns(
    tmp_path: Path, text: str, loader: str
) -> None:
    path = _write(tmp_path, text, "empty.csv")
    cols = (
        "'input_tokens' and 'output_tokens'"
        if loader == "generic"
        else "'ContextTokens' and 'GeneratedTokens'"
    )
    load = load_generic_trace if loader == "generic" else load_azure_trace
    with pytest.raises(ValueError) as info:
        load(path)
    assert str(info.value) == (
        f"{path}: row 2 (line 3), columns {cols}: both 0, a request with no tokens; every row "
        "needs at least one input or output token (2 such rows in all)"
    )


def test_an_unsorted_trace_advises_a_settable_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "arrival_s,input_tokens,output_tokens\n2,1,1\n1,1,1\n")
    with pytest.raises(ValueError, match=r"pass sort=True, or in a scenario set workload.sort="):
        load_generic_trace(path)


@pytest.mark.parametrize(
    "module, readers", [("workload", "traces"), ("routing", "routing"), ("topology", "topologies")]
)
def test_the_readers_stay_importable_from_the_models_modules(module, readers):
    """``coel_env.core.{workload,routing,topology}`` hand out the names their readers'
    modules export, and nothing else."""
    code = (
        "import importlib\n"
        f"old = importlib.import_module('coel_env.core.{module}')\n"
        f"new = importlib.import_module('coel_env.core.io.{readers}')\n"
        "assert new.__all__ and all(getattr(old, n) is getattr(new, n) for n in new.__all__)\n"
        "try:\n"
        "    old.nope\n"
        "except AttributeError as e:\n"
        f"    assert str(e) == \"module 'coel_env.core.{module}' has no attribute 'nope'\", e\n"
        "else:\n"
        "    raise AssertionError('old.nope')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]
