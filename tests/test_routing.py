"""Tests of coel_env.core.routing: popularity, sampling, real-data loaders, calibration, drift."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from coel_env.catalog import get_model, model_names
from coel_env.core import routing
from coel_env.core.io import load_esft, load_fiddler
from coel_env.core.routing import (
    ESFT_SKEW,
    ESFT_STATISTICS,
    ESFT_TASKS,
    FIDDLER_STATISTICS,
    FIDDLER_SUBJECTS,
    NO_DRIFT,
    DriftConfig,
    EsftRoutes,
    MissingRoutingDataError,
    RoutingDataError,
    RoutingModel,
    SkewParams,
    expected_expert_tokens,
    expert_token_counts,
    popularity_statistics,
    skew_for,
    synthetic_popularity,
)

ESFT_DIR = SHARED_DATA / "routing" / "deepseek_v2_lite_esft"
FIDDLER_DIR = SHARED_DATA / "routing" / "mixtral_fiddler"

needs_esft = pytest.mark.skipif(
    not ESFT_DIR.is_dir(), reason=f"ESFT routing data not found at {ESFT_DIR}"
)
needs_fiddler = pytest.mark.skipif(
    not FIDDLER_DIR.is_dir(), reason=f"Fiddler routing data not found at {FIDDLER_DIR}"
)


@pytest.fixture(scope="module")
def esft() -> EsftRoutes:
    if not ESFT_DIR.is_dir():
        pytest.skip(f"ESFT routing data not found at {ESFT_DIR}")
    return load_esft(ESFT_DIR)


def _stack(popularity: dict[str, np.ndarray] | object) -> np.ndarray:
    return np.stack([popularity[t] for t in popularity])  # type: ignore[index,union-attr]


def _check_counts(counts: np.ndarray, n_tokens: int, top_k: int, shape: tuple[int, int]) -> None:
    assert counts.shape == shape
    assert np.issubdtype(counts.dtype, np.integer)
    assert (counts >= 0).all()
    assert (counts.sum(axis=1) == n_tokens * top_k).all()
    assert (counts <= n_tokens).all()


# ------------------------------------------------------------- synthetic model


@pytest.mark.parametrize("name", model_names())
def test_synthetic_popularity_rows_sum_to_one(name: str) -> None:
    model = get_model(name)
    rm = RoutingModel.synthetic(name, np.random.default_rng(0))
    assert rm.tasks == routing.DEFAULT_TASKS
    for task in rm.tasks:
        p = rm.popularity(task)
        assert p.shape == (model.n_moe_layers, model.n_experts)
        assert (p >= 0).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        assert not p.flags.writeable
    mixed = rm.mix_popularity({rm.tasks[0]: 1.0, rm.tasks[1]: 3.0})
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-12)


def test_skew_for_splits_fine_and_coarse_models() -> None:
    fine = {n for n in model_names() if skew_for(n) is ESFT_SKEW}
    assert fine == {"deepseek-v2-lite", "olmoe-1b-7b", "qwen1.5-moe-a2.7b", "switch-base-128"}
    assert skew_for("mixtral-8x7b") is routing.FIDDLER_SKEW


def test_synthetic_is_deterministic_per_seed() -> None:
    a = RoutingModel.synthetic("olmoe-1b-7b", np.random.default_rng(7), ["code", "chat"])
    b = RoutingModel.synthetic("olmoe-1b-7b", np.random.default_rng(7), ["code", "chat"])
    c = RoutingModel.synthetic("olmoe-1b-7b", np.random.default_rng(8), ["code", "chat"])
    np.testing.assert_array_equal(a.popularity("code"), b.popularity("code"))
    assert not np.array_equal(a.popularity("code"), c.popularity("code"))


def test_mix_popularity_is_the_weighted_mixture() -> None:
    rm = RoutingModel.synthetic("deepseek-v2-lite", np.random.default_rng(1))
    law, intent = rm.popularity("law"), rm.popularity("intent")
    mixed = rm.mix_popularity({"law": 3.0, "intent": 1.0})
    np.testing.assert_allclose(mixed, 0.75 * law + 0.25 * intent, atol=1e-15)
    np.testing.assert_allclose(rm.mix_popularity("law"), law, atol=1e-15)
    weights = [0.0] * len(rm.tasks)
    weights[rm.tasks.index("intent")] = 2.0
    np.testing.assert_allclose(rm.mix_popularity(weights), intent, atol=1e-15)
    # The hot experts of a server move with its task mix.
    assert (np.argmax(law, axis=1) != np.argmax(intent, axis=1)).any()


# ------------------------------------------------------------------ sampling


def test_expert_token_counts_is_deterministic() -> None:
    rm = RoutingModel.synthetic("deepseek-v2-lite", np.random.default_rng(0))
    p = rm.popularity("law")
    for n in (1, 64, 512):
        a = expert_token_counts(p, n, 6, np.random.default_rng(3))
        b = expert_token_counts(p, n, 6, np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n_tokens", [0, 1, 2, 7, 64, 300, 2000])
@pytest.mark.parametrize("model", ["deepseek-v2-lite", "mixtral-8x7b", "switch-base-128"])
def test_counts_conserve_picks_and_respect_the_cap(model: str, n_tokens: int) -> None:
    rm = RoutingModel.synthetic(model, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    shape = (rm.n_moe_layers, rm.n_experts)
    for _ in range(5):
        counts = rm.expert_token_counts("law", n_tokens, rng)
        _check_counts(counts, n_tokens, rm.top_k, shape)


def test_counts_when_every_expert_is_picked() -> None:
    p = np.array([[0.7, 0.3, 0.0, 0.0], [0.25] * 4])
    counts = expert_token_counts(p, 5, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(counts, np.full((2, 4), 5))


def test_counts_fill_zero_popularity_experts_when_top_k_needs_them() -> None:
    p = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    counts = expert_token_counts(p, 10, 3, np.random.default_rng(0))
    _check_counts(counts, 10, 3, (1, 5))
    assert counts[0, 0] == 10


popularity_rows = st.integers(1, 4).flatmap(
    lambda n_layers: st.integers(1, 12).flatmap(
        lambda n_experts: st.lists(
            st.lists(
                st.one_of(st.just(0.0), st.floats(0.0, 1.0)), min_size=n_experts, max_size=n_experts
            ).filter(lambda row: sum(row) > 0),
            min_size=n_layers,
            max_size=n_layers,
        )
    )
)


@settings(max_examples=150, deadline=None)
@given(
    raw=popularity_rows,
    n_tokens=st.integers(0, 60),
    top_k_frac=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_expert_token_counts_properties(
    raw: list[list[float]], n_tokens: int, top_k_frac: float, seed: int
) -> None:
    p = np.array(raw, dtype=np.float64)
    p /= p.sum(axis=1, keepdims=True)
    n_experts = p.shape[1]
    top_k = 1 + int(top_k_frac * (n_experts - 1))
    counts = expert_token_counts(p, n_tokens, top_k, np.random.default_rng(seed))
    _check_counts(counts, n_tokens, top_k, p.shape)
    expected = expected_expert_tokens(p, n_tokens, top_k)
    np.testing.assert_allclose(expected.sum(axis=1), n_tokens * top_k, rtol=1e-9, atol=1e-9)
    assert (expected <= n_tokens + 1e-9).all() and (expected >= 0).all()
    if top_k == 1:  # no cap binds: experts with zero popularity get nothing
        assert (counts[p == 0] == 0).all()


def test_mean_counts_match_the_expectation_when_no_cap_binds() -> None:
    p = synthetic_popularity(3, 16, ["a"], ESFT_SKEW, np.random.default_rng(0))["a"]
    rng = np.random.default_rng(1)
    for n_tokens in (2, 50):  # inverse-CDF path and multinomial path
        mean = np.mean([expert_token_counts(p, n_tokens, 1, rng) for _ in range(4000)], axis=0)
        np.testing.assert_allclose(
            mean, expected_expert_tokens(p, n_tokens, 1), atol=0.05 * n_tokens
        )


def test_expected_expert_tokens_caps_and_redistributes() -> None:
    p = np.array([[0.5, 0.25, 0.25, 0.0]])
    np.testing.assert_allclose(expected_expert_tokens(p, 10, 1), [[5.0, 2.5, 2.5, 0.0]])
    # 4 picks per token: expert 0 would get 20 > 10; its excess goes to 1 and 2,
    # which then also hit the cap, and the rest to expert 3.
    np.testing.assert_allclose(expected_expert_tokens(p, 10, 4), [[10.0, 10.0, 10.0, 10.0]])
    np.testing.assert_allclose(expected_expert_tokens(p, 10, 3), [[10.0, 10.0, 10.0, 0.0]])
    np.testing.assert_array_equal(expected_expert_tokens(p, 0, 2), np.zeros((1, 4)))


def test_batch_skew_is_in_the_published_deepseek_v3_range() -> None:
    """Sanity check, not a fit: a DeepSeek-V3-sized layer (256 experts, top-8) with the
    ESFT skew gives a decode-batch max/mean expert load inside the published 5.6-8.1."""
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(4):
        p = synthetic_popularity(58, 256, ["a"], ESFT_SKEW, rng)["a"]
        counts = expert_token_counts(p, 1024, 8, rng)
        ratios.append(counts.max(axis=1) / counts.mean(axis=1))
    assert 5.6 <= float(np.mean(ratios)) <= 8.1


def test_expert_token_counts_is_fast() -> None:
    p = RoutingModel.synthetic("deepseek-v2-lite", np.random.default_rng(0)).popularity("law")
    rng = np.random.default_rng(1)
    expert_token_counts(p, 64, 6, rng)
    calls = 200
    start = time.perf_counter()
    for _ in range(calls):
        expert_token_counts(p, 64, 6, rng)
    per_call_s = (time.perf_counter() - start) / calls
    assert per_call_s < 5e-3, f"{per_call_s * 1e6:.0f} us per call (26 layers x 64 experts)"


# ------------------------------------------------------------------ real data


@needs_esft
def test_esft_loader_shapes_and_popularity(esft: EsftRoutes) -> None:
    assert esft.tasks == ESFT_TASKS
    for task in esft.tasks:
        ids = esft.expert_ids[task]
        assert ids.ndim == 3 and ids.shape[1:] == (26, 6) and ids.shape[0] > 1000
        p = esft.popularity[task]
        assert p.shape == (26, 64)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        assert not p.flags.writeable and not ids.flags.writeable
    rm = RoutingModel.from_esft(esft)
    assert rm.model.name == "deepseek-v2-lite" and rm.tasks == ESFT_TASKS


@needs_esft
def test_esft_tasks_route_to_different_experts(esft: EsftRoutes) -> None:
    top = {t: np.argsort(-esft.popularity[t], axis=1, kind="stable")[:, :6] for t in esft.tasks}
    for i, a in enumerate(esft.tasks):
        for b in esft.tasks[i + 1 :]:
            differs = [set(top[a][layer]) != set(top[b][layer]) for layer in range(26)]
            assert any(differs), (a, b)
    assert popularity_statistics(esft.popularity, 6).top_k_overlap < 0.5


@needs_esft
def test_esft_statistics_match_the_module_constants(esft: EsftRoutes) -> None:
    stats = popularity_statistics(esft.popularity, 6)
    assert stats.max_over_mean == pytest.approx(ESFT_STATISTICS.max_over_mean, abs=1e-3)
    assert stats.normalized_entropy == pytest.approx(ESFT_STATISTICS.normalized_entropy, abs=1e-4)
    assert stats.top_k_overlap == pytest.approx(ESFT_STATISTICS.top_k_overlap, abs=1e-4)


@needs_esft
def test_sample_routes_from_real_tokens(esft: EsftRoutes) -> None:
    rm = RoutingModel.from_esft(esft)
    for n, contiguous in ((0, False), (1, False), (64, False), (64, True), (20000, False)):
        counts = rm.sample_routes("law", n, np.random.default_rng(0), contiguous=contiguous)
        _check_counts(counts, n, 6, (26, 64))
        again = rm.sample_routes("law", n, np.random.default_rng(0), contiguous=contiguous)
        np.testing.assert_array_equal(counts, again)
    ids = esft.sample_expert_ids("intent", 5, np.random.default_rng(0))
    assert ids.shape == (5, 26, 6) and ids.dtype == np.int8
    # All of a task's tokens give back its popularity.
    n_all = esft.n_tokens("law")
    full = esft.sample_routes("law", n_all, np.random.default_rng(0))
    np.testing.assert_allclose(full / (6 * n_all), esft.popularity["law"], atol=1e-12)


@needs_fiddler
@pytest.mark.parametrize("variant", ["original", "instruct"])
def test_fiddler_loader_and_published_skew_range(variant: str) -> None:
    popularity = load_fiddler(FIDDLER_DIR, variant)
    assert tuple(popularity) == FIDDLER_SUBJECTS
    ratios = []
    for p in popularity.values():
        assert p.shape == (32, 8)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        ratios.append(p.max(axis=1) * 8)
    ratios = np.concatenate(ratios)
    # Published: Mixtral's busiest expert per layer gets 1.13-1.59x the mean. These
    # MMLU counts give 1.09-1.99 (mean 1.31) for "original", 1.08-1.90 for "instruct".
    assert 1.0 <= ratios.min() and ratios.max() <= 2.0, (ratios.min(), ratios.max())
    assert 1.13 <= float(np.median(ratios)) <= 1.59
    rm = RoutingModel.from_fiddler(FIDDLER_DIR, variant)
    assert rm.model.name == "mixtral-8x7b" and rm.tasks == FIDDLER_SUBJECTS


@needs_fiddler
def test_fiddler_statistics_match_the_module_constants() -> None:
    stats = popularity_statistics(load_fiddler(FIDDLER_DIR), 2)
    assert stats.max_over_mean == pytest.approx(FIDDLER_STATISTICS.max_over_mean, abs=1e-3)
    assert stats.normalized_entropy == pytest.approx(
        FIDDLER_STATISTICS.normalized_entropy, abs=1e-4
    )
    assert stats.top_k_overlap == pytest.approx(FIDDLER_STATISTICS.top_k_overlap, abs=1e-4)


# ---------------------------------------------------------------- calibration


def _synthetic_statistics(model: str, tasks: tuple[str, ...], top_k: int) -> np.ndarray:
    """Mean (max/mean, entropy, overlap) over 20 synthetic draws of the real data's shape."""
    values = []
    for seed in range(20):
        rm = RoutingModel.synthetic(model, np.random.default_rng(seed), tasks)
        s = popularity_statistics({t: rm.base_popularity(t) for t in tasks}, top_k)
        values.append((s.max_over_mean, s.normalized_entropy, s.top_k_overlap))
    return np.mean(values, axis=0)


def _assert_calibrated(synthetic: np.ndarray, real: routing.RoutingStatistics) -> None:
    max_over_mean, entropy, overlap = synthetic
    assert max_over_mean == pytest.approx(real.max_over_mean, rel=0.05)
    assert overlap == pytest.approx(real.top_k_overlap, abs=0.03)
    assert entropy == pytest.approx(real.normalized_entropy, abs=0.02)  # not fitted


def test_synthetic_calibration_matches_the_recorded_statistics() -> None:
    _assert_calibrated(_synthetic_statistics("deepseek-v2-lite", ESFT_TASKS, 6), ESFT_STATISTICS)
    _assert_calibrated(
        _synthetic_statistics("mixtral-8x7b", FIDDLER_SUBJECTS, 2), FIDDLER_STATISTICS
    )


@needs_esft
def test_synthetic_deepseek_matches_the_real_esft_statistics(esft: EsftRoutes) -> None:
    real = popularity_statistics(esft.popularity, 6)
    _assert_calibrated(_synthetic_statistics("deepseek-v2-lite", esft.tasks, 6), real)


@needs_fiddler
def test_synthetic_mixtral_matches_the_real_fiddler_statistics() -> None:
    popularity = load_fiddler(FIDDLER_DIR)
    real = popularity_statistics(popularity, 2)
    _assert_calibrated(_synthetic_statistics("mixtral-8x7b", tuple(popularity), 2), real)


# ---------------------------------------------------------------------- drift


def test_drift_changes_the_hot_expert_over_time() -> None:
    rm = RoutingModel.synthetic(
        "deepseek-v2-lite", np.random.default_rng(0), drift=DriftConfig(reversion_rate=0.1)
    )
    base_hot = np.argmax(rm.base_popularity("law"), axis=1)
    snapshot = rm.popularity("law")
    rng = np.random.default_rng(1)
    changed_layers = np.zeros(rm.n_moe_layers, dtype=bool)
    for _ in range(100):
        rm.step(rng)
        p = rm.popularity("law")
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        changed_layers |= np.argmax(p, axis=1) != base_hot
    assert changed_layers.sum() >= 3
    np.testing.assert_array_equal(snapshot, rm.base_popularity("law"))  # snapshots do not move
    rm.reset()
    np.testing.assert_array_equal(rm.popularity("law"), rm.base_popularity("law"))


def test_drift_is_deterministic_per_seed() -> None:
    def run() -> np.ndarray:
        rm = RoutingModel.synthetic("phi-3.5-moe", np.random.default_rng(0))
        rng = np.random.default_rng(5)
        for _ in range(10):
            rm.step(rng, dt=2.0)
        return rm.mix_popularity({"law": 1.0, "summary": 1.0})

    np.testing.assert_array_equal(run(), run())


def test_drift_off_leaves_popularity_and_rng_unchanged() -> None:
    rm = RoutingModel.synthetic("deepseek-v2-lite", np.random.default_rng(0), drift=NO_DRIFT)
    before = {t: rm.popularity(t).copy() for t in rm.tasks}
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    for _ in range(50):
        rm.step(rng)
    for task in rm.tasks:
        np.testing.assert_array_equal(rm.popularity(task), before[task])
    assert rng.bit_generator.state == state


def test_default_drift_scale_follows_the_model_skew() -> None:
    rm = RoutingModel.synthetic("mixtral-8x7b", np.random.default_rng(0))
    assert rm.drift_log_std == pytest.approx(0.5 * routing.FIDDLER_SKEW.log_std)
    rm = RoutingModel.synthetic(
        "mixtral-8x7b", np.random.default_rng(0), drift=DriftConfig(log_std=0.3)
    )
    assert rm.drift_log_std == 0.3


def test_routing_model_pickles() -> None:
    rm = RoutingModel.synthetic("qwen1.5-moe-a2.7b", np.random.default_rng(0))
    rm.step(np.random.default_rng(1))
    clone = pickle.loads(pickle.dumps(rm))
    np.testing.assert_array_equal(clone.mix_popularity("law"), rm.mix_popularity("law"))


# ----------------------------------------------------------------- bad input


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'gpt-moe'.*mixtral-8x7b"):
        RoutingModel.synthetic("gpt-moe", np.random.default_rng(0))


def test_unknown_task_lists_the_known_ones() -> None:
    rm = RoutingModel.synthetic("deepseek-v2-lite", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown task 'poetry'; known tasks: intent, law"):
        rm.mix_popularity({"poetry": 1.0})
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        rm.popularity("poetry")
    with pytest.raises(ValueError, match="weights must be finite, >= 0 and not all 0"):
        rm.mix_popularity({"law": -1.0})
    with pytest.raises(ValueError, match="4 weights in the order"):
        rm.mix_popularity([1.0, 2.0])
    with pytest.raises(ValueError, match="no real routes"):
        rm.sample_routes("law", 4, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("popularity", "message"),
    [
        ([[0.5, np.nan], [0.5, 0.5]], r"popularity\[0, 1\]=.*nan.*must be finite"),
        ([[1.5, -0.5], [0.5, 0.5]], r"popularity\[0, 1\]=.*-0.5.*must be >= 0"),
        ([0.5, 0.5], r"shape \(2,\).*2-D \[n_moe_layers, n_experts\]"),
        ([[0.5, 0.4], [0.5, 0.5]], r"row 0 sums to 0.9.*must sum to 1"),
    ],
)
def test_bad_popularity(popularity: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expert_token_counts(np.array(popularity), 4, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        expected_expert_tokens(np.array(popularity), 4, 1)


def test_bad_sampling_arguments() -> None:
    p = np.full((2, 4), 0.25)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"n_tokens=-1 is not allowed; it must be an integer >= 0"):
        expert_token_counts(p, -1, 2, rng)
    with pytest.raises(ValueError, match=r"top_k=5 is not allowed; it must be <= n_experts=4"):
        expert_token_counts(p, 3, 5, rng)
    with pytest.raises(ValueError, match=r"top_k=0 is not allowed"):
        expected_expert_tokens(p, 3, 0)
    with pytest.raises(
        ValueError, match=r"rng=42 is not allowed; it must be a numpy.random.Generator"
    ):
        expert_token_counts(p, 3, 2, 42)  # type: ignore[arg-type]


def test_bad_model_popularity_shape_names_the_task() -> None:
    with pytest.raises(ValueError, match=r"task_popularity\['law'\] has shape \(2, 4\).*\(32, 8\)"):
        RoutingModel("mixtral-8x7b", {"law": np.full((2, 4), 0.25)})


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match=r"DriftConfig.reversion_rate=0 is not allowed"):
        DriftConfig(reversion_rate=0)
    with pytest.raises(ValueError, match=r"DriftConfig.log_std=-1.0 is not allowed"):
        DriftConfig(log_std=-1.0)
    with pytest.raises(ValueError, match=r"SkewParams.shared_fraction=1.5 is not allowed"):
        SkewParams(log_std=0.5, shared_fraction=1.5, source="test")
    with pytest.raises(
        ValueError, match=r"tasks=\['a', 'a'\] is not allowed; task names must be unique"
    ):
        RoutingModel.synthetic("mixtral-8x7b", np.random.default_rng(0), ["a", "a"])
    rm = RoutingModel.synthetic("mixtral-8x7b", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dt=0 is not allowed"):
        rm.step(np.random.default_rng(0), dt=0)


def _write_esft(folder: Path, task: str, **arrays: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"esft_{task}_expert_ids.npz"
    np.savez(path, **arrays)
    return path


def _good_ids(n_tokens: int = 3) -> np.ndarray:
    ids = np.tile(np.arange(6, dtype=np.int8), (n_tokens, 26, 1))
    return ids


def test_esft_loader_on_a_small_good_file(tmp_path: Path) -> None:
    path = _write_esft(tmp_path, "chat", expert_ids=_good_ids())
    routes = load_esft(tmp_path)
    assert routes.tasks == ("chat",)
    np.testing.assert_allclose(routes.popularity["chat"][:, :6], 1 / 6)
    assert load_esft([path]).tasks == ("chat",) == load_esft({"chat": path}).tasks


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"ids": _good_ids()}, r"has arrays \['ids'\].*must hold 'expert_ids'"),
        (
            {"expert_ids": _good_ids()[:, :25]},
            r"expert_ids has shape \(3, 25, 6\).*\[tokens >= 1, 26, 6\]",
        ),
        ({"expert_ids": _good_ids().astype(np.float32)}, r"dtype float32.*integer"),
    ],
)
def test_esft_loader_rejects_bad_arrays(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _write_esft(tmp_path, "law", **arrays)
    with pytest.raises(RoutingDataError, match=message) as info:
        load_esft(tmp_path)
    assert str(path) in str(info.value)


def test_esft_loader_rejects_bad_expert_ids(tmp_path: Path) -> None:
    ids = _good_ids()
    ids[1, 4, 2] = 64
    _write_esft(tmp_path / "a", "law", expert_ids=ids)
    with pytest.raises(RoutingDataError, match=r"expert_ids\[1, 4, 2\]=64 .*\[0, 63\]"):
        load_esft(tmp_path / "a")
    ids = _good_ids()
    ids[2, 7, 5] = ids[2, 7, 0]
    _write_esft(tmp_path / "b", "law", expert_ids=ids)
    with pytest.raises(RoutingDataError, match=r"expert_ids\[2, 7\]=.*must be distinct"):
        load_esft(tmp_path / "b")


def test_esft_loader_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingRoutingDataError, match="does not exist") as info:
        load_esft(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    with pytest.raises(MissingRoutingDataError, match="has no esft_<task>_expert_ids.npz"):
        load_esft(tmp_path)
    with pytest.raises(MissingRoutingDataError, match="esft_law_expert_ids.npz' does not exist"):
        load_esft([tmp_path / "esft_law_expert_ids.npz"])
    (tmp_path / "esft_law_expert_ids.npz").write_text("not an npz")
    with pytest.raises(RoutingDataError, match="cannot be read as an .npz file"):
        load_esft(tmp_path)
    with pytest.raises(RoutingDataError, match="must match esft_<task>_expert_ids.npz"):
        load_esft([tmp_path / "law.npz"])


def _write_fiddler(folder: Path, subject: str, payload: object, variant: str = "original") -> Path:
    sub = folder / f"popularity_{variant}"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / f"expert_popularity_{subject}.json"
    path.write_text(json.dumps(payload))
    return path


def test_fiddler_loader_on_a_small_good_file(tmp_path: Path) -> None:
    counts = [[1, 2, 3, 4, 5, 6, 7, 8]] * 32
    _write_fiddler(tmp_path, "poetry", {"total_input_tokens": 18, "expert_popularity": counts})
    popularity = load_fiddler(tmp_path)
    assert tuple(popularity) == ("poetry",)
    np.testing.assert_allclose(popularity["poetry"][0], np.arange(1, 9) / 36)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"popularity": [[1] * 8] * 32},
            r"has fields \['popularity'\].*must hold 'expert_popularity'",
        ),
        ({"expert_popularity": [[1] * 8] * 31}, r"shape \(31, 8\).*\[32\]\[8\]"),
        (
            {"expert_popularity": [[1] * 7 + [-3]] + [[1] * 8] * 31},
            r"expert_popularity\[0\]\[7\]=-3 .*non-negative integers",
        ),
        ({"expert_popularity": [[0] * 8] + [[1] * 8] * 31}, r"expert_popularity\[0\] sums to 0"),
        (
            {"expert_popularity": [[1] * 8] * 32, "total_input_tokens": 0},
            r"total_input_tokens=0 is not allowed",
        ),
    ],
)
def test_fiddler_loader_rejects_bad_files(tmp_path: Path, payload: dict, message: str) -> None:
    path = _write_fiddler(tmp_path, "law", payload)
    with pytest.raises(RoutingDataError, match=message) as info:
        load_fiddler(tmp_path)
    assert str(path) in str(info.value)


def test_fiddler_loader_missing_folder_and_bad_variant(tmp_path: Path) -> None:
    with pytest.raises(MissingRoutingDataError, match=r"popularity_original' does not exist"):
        load_fiddler(tmp_path)
    (tmp_path / "popularity_original").mkdir()
    with pytest.raises(MissingRoutingDataError, match="has no expert_popularity_<subject>.json"):
        load_fiddler(tmp_path)
    with pytest.raises(
        ValueError, match="variant='chat' is not allowed; allowed variants: original, instruct"
    ):
        load_fiddler(tmp_path, "chat")
    (tmp_path / "popularity_original" / "expert_popularity_law.json").write_text("{not json")
    with pytest.raises(RoutingDataError, match="cannot be read as JSON"):
        load_fiddler(tmp_path)


def test_routes_only_for_deepseek(tmp_path: Path) -> None:
    _write_esft(tmp_path, "law", expert_ids=_good_ids())
    routes = load_esft(tmp_path)
    with pytest.raises(ValueError, match="routes is not allowed for model 'mixtral-8x7b'"):
        RoutingModel("mixtral-8x7b", {"law": np.full((32, 8), 1 / 8)}, routes=routes)
    with pytest.raises(ValueError, match="contiguous=True; task 'law' has 3 tokens"):
        routes.sample_routes("law", 4, np.random.default_rng(0), contiguous=True)
