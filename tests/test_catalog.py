"""Tests for coel_env.catalog: parameter counts, bytes, validation, immutability."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coel_env import catalog
from coel_env.catalog import (
    BITS,
    CATALOG,
    AttentionConfig,
    MoEModel,
    get_model,
    model_names,
    weight_bytes,
)

PROFILES = Path(catalog.__file__).parent / "data" / "profiles"

# (name, published total, published active, publisher counts the input embedding
# in "active"). Sources: Mixtral paper / model card (46.7B / 12.9B); OLMoE paper
# (6.9B / 1.3B); Qwen1.5-MoE blog (14.3B / 2.7B); DeepSeek-V2 paper (15.7B / 2.4B);
# Phi-3.5-MoE model card (41.9B / 6.6B).
PUBLISHED = [
    ("mixtral-8x7b", 46.7e9, 12.9e9, True),
    ("olmoe-1b-7b", 6.9e9, 1.3e9, True),
    ("qwen1.5-moe-a2.7b", 14.3e9, 2.7e9, True),
    ("deepseek-v2-lite", 15.7e9, 2.4e9, False),
    ("phi-3.5-moe", 41.9e9, 6.6e9, True),
]


def _valid_kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = dict(
        name="toy",
        hf_repo="toy/toy",
        n_layers=2,
        d_model=16,
        d_ff_expert=32,
        gated=True,
        n_experts=4,
        top_k=2,
        attention=AttentionConfig(n_heads=2, n_kv_heads=1, head_dim=8),
        vocab_size=100,
        tie_embeddings=False,
    )
    kwargs.update(overrides)
    return kwargs


# ---------------------------------------------------------------- counts
@pytest.mark.parametrize(("name", "total", "active", "counts_input_embedding"), PUBLISHED)
def test_total_params_match_published(
    name: str, total: float, active: float, counts_input_embedding: bool
) -> None:
    assert get_model(name).total_params == pytest.approx(total, rel=0.05)


@pytest.mark.parametrize(("name", "total", "active", "counts_input_embedding"), PUBLISHED)
def test_active_params_match_published(
    name: str, total: float, active: float, counts_input_embedding: bool
) -> None:
    model = get_model(name)
    got = model.active_params
    if not counts_input_embedding:
        got -= model.embedding_params
    assert got == pytest.approx(active, rel=0.05)


def test_deepseek_active_convention_is_what_separates_the_figures() -> None:
    # Documented: with the input embedding DeepSeek-V2-Lite is ~2.66B, which is
    # more than 5% off DeepSeek's 2.4B; without it, it matches.
    model = get_model("deepseek-v2-lite")
    assert model.active_params > 2.4e9 * 1.05
    assert model.active_params - model.embedding_params == pytest.approx(2.4e9, rel=0.05)


@pytest.mark.parametrize(("name", "total"), [("switch-base-8", 0.62e9), ("switch-base-128", 7.4e9)])
def test_switch_total_params_match_published(name: str, total: float) -> None:
    assert get_model(name).total_params == pytest.approx(total, rel=0.10)


def test_mixtral_exact_counts() -> None:
    m = get_model("mixtral-8x7b")
    assert m.n_moe_layers == 32
    assert m.expert_params == 3 * 4096 * 14336
    assert m.router_params == 4096 * 8
    assert m.shared_expert_params == 0
    assert m.attention_params == 4096 * 4096 * 2 + 2 * 4096 * 8 * 128
    assert m.expert_flops_per_token() == 2 * 3 * 4096 * 14336


def test_qwen_shared_expert_and_gate() -> None:
    m = get_model("qwen1.5-moe-a2.7b")
    assert m.shared_expert_params == 3 * 2048 * 5632
    assert m.router_params == 2048 * 60 + 2048  # router + sigmoid shared-expert gate
    assert m.attention_params == 4 * 2048 * 2048 + 3 * 2048  # q/k/v bias, no o bias


def test_deepseek_mla_attention_formula() -> None:
    m = get_model("deepseek-v2-lite")
    d, h = 2048, 16
    expected = (
        d * h * (128 + 64)  # q_proj (no q compression)
        + d * (512 + 64)  # kv_a_proj_with_mqa
        + 512  # kv_a_layernorm
        + 512 * h * (128 + 128)  # kv_b_proj
        + h * 128 * d  # o_proj
    )
    assert m.attention_params == expected
    assert m.n_moe_layers == 26
    assert m.dense_ffn_params == 3 * d * 10944
    assert m.shared_expert_params == 2 * 3 * d * 1408
    assert m.attention.kv_cache_values_per_token == 512 + 64


def test_switch_structure() -> None:
    m = get_model("switch-base-8")
    assert m.n_moe_layers == 12
    assert m.n_dense_layers == 12
    assert m.expert_params == 2 * 768 * 3072  # ReLU, not gated
    assert m.top_k == 1
    assert m.lm_head_params == 0  # tied
    # 24 self-attention blocks + 12 decoder cross-attention blocks
    n_blocks = m.non_expert_params - (
        m.embedding_params
        + m.position_params
        + m.norm_params
        + 12 * m.router_params
        + 12 * m.dense_ffn_params
    )
    assert n_blocks == 36 * 4 * 768 * 768
    assert m.position_params == 2 * 32 * 12


def test_active_less_than_total_and_decomposes() -> None:
    for name in model_names():
        m = get_model(name)
        assert m.total_params == m.non_expert_params + m.n_moe_layers * m.n_experts * (
            m.expert_params
        )
        assert m.active_params == m.non_expert_params + m.n_moe_layers * m.top_k * m.expert_params
        assert m.active_params <= m.total_params


# ---------------------------------------------------------------- profiles
def test_profile_shapes_exist_in_measured_csv_with_matching_dims() -> None:
    with (PROFILES / "h200_gpu_experts_eager.csv").open() as f:
        shapes = {(r["model"], int(r["d_model"]), int(r["d_ff"])) for r in csv.DictReader(f)}
    for name in model_names():
        m = get_model(name)
        if m.profile_shape is not None:
            assert (m.profile_shape, m.d_model, m.d_ff_expert) in shapes, name
        if m.shared_profile_shape is not None:
            assert (m.shared_profile_shape, m.d_model, m.d_ff_shared) in shapes, name


def test_profile_shape_names() -> None:
    assert get_model("mixtral-8x7b").profile_shape == "mixtral-8x7b"
    assert get_model("qwen1.5-moe-a2.7b").shared_profile_shape == "qwen1.5-moe-shared"
    assert get_model("switch-base-8").profile_shape == "switch-base"
    assert get_model("switch-base-128").profile_shape == "switch-base"
    assert get_model("deepseek-v2-lite").profile_shape is None
    ds, qwen = get_model("deepseek-v2-lite"), get_model("qwen1.5-moe-a2.7b")
    assert (ds.d_model, ds.d_ff_expert, ds.gated) == (qwen.d_model, qwen.d_ff_expert, qwen.gated)


# ---------------------------------------------------------------- bytes
@pytest.mark.parametrize("name", model_names())
def test_expert_bytes_16_bit_is_two_bytes_per_param(name: str) -> None:
    m = get_model(name)
    assert m.expert_bytes(16) == 2 * m.expert_params


@pytest.mark.parametrize("name", model_names())
def test_expert_bytes_monotone_in_bits(name: str) -> None:
    m = get_model(name)
    sizes = [m.expert_bytes(b) for b in BITS]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > sizes[-1]


def test_expert_bytes_4_bit_includes_group_overhead() -> None:
    m = get_model("mixtral-8x7b")
    n = m.expert_params
    expected = math.ceil(n * 4 / 8) + 4 * math.ceil(n / 128)
    assert m.expert_bytes(4) == expected
    assert m.expert_bytes(4) > n // 2


def test_weight_bytes_rule_exact() -> None:
    assert weight_bytes(256, 16) == 512
    assert weight_bytes(256, 8) == 256 + 2 * 2
    assert weight_bytes(256, 3) == 96 + 4 * 2
    assert weight_bytes(257, 2) == 65 + 4 * 3  # partial last group costs a full group
    assert weight_bytes(256, 4, group_size=64) == 128 + 4 * 4
    assert weight_bytes(0, 4) == 0


def test_shared_and_non_expert_bytes() -> None:
    qwen = get_model("qwen1.5-moe-a2.7b")
    assert qwen.shared_expert_bytes(16) == 2 * qwen.shared_expert_params
    assert get_model("mixtral-8x7b").shared_expert_bytes(4) == 0
    assert qwen.non_expert_bytes() == 2 * qwen.non_expert_params
    assert qwen.non_expert_bytes(4) < qwen.non_expert_bytes(8) < qwen.non_expert_bytes()


@given(
    name=st.sampled_from(model_names()),
    pair=st.lists(st.sampled_from(BITS), min_size=2, max_size=2, unique=True),
    group_size=st.sampled_from([32, 64, 128, 256]),
)
def test_expert_bytes_never_grow_with_fewer_bits(
    name: str, pair: list[int], group_size: int
) -> None:
    b1, b2 = max(pair), min(pair)
    m = get_model(name)
    assert m.expert_bytes(b1, group_size) >= m.expert_bytes(b2, group_size)


# ---------------------------------------------------------------- bad input
def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError) as info:
        get_model("foo-moe")
    message = str(info.value)
    assert "foo-moe" in message
    for name in model_names():
        assert name in message


@pytest.mark.parametrize("bits", [5, 1, 32, 0, True])
def test_bad_bits_rejected(bits: int) -> None:
    with pytest.raises(ValueError) as info:
        weight_bytes(1000, bits)
    assert f"bits={bits!r}" in str(info.value)
    assert "16, 8, 4, 3, 2" in str(info.value)


def test_bad_bits_rejected_by_methods() -> None:
    with pytest.raises(ValueError, match="bits=5"):
        get_model("mixtral-8x7b").expert_bytes(5)


@pytest.mark.parametrize("group_size", [0, -128])
def test_bad_group_size_rejected(group_size: int) -> None:
    with pytest.raises(ValueError, match="group_size"):
        weight_bytes(1000, 4, group_size=group_size)


def test_negative_params_rejected() -> None:
    with pytest.raises(ValueError, match="n_params"):
        weight_bytes(-1, 16)


def test_top_k_above_n_experts_rejected() -> None:
    with pytest.raises(ValueError, match="top_k") as info:
        MoEModel(**_valid_kwargs(top_k=5))  # type: ignore[arg-type]
    assert "5" in str(info.value) and "n_experts" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_layers": 0}, "n_layers"),
        ({"d_model": -1}, "d_model"),
        ({"n_experts": 2.0}, "n_experts"),
        ({"gated": 1}, "gated"),
        ({"n_dense_layers": 2, "d_ff_dense": 8}, "n_dense_layers"),
        ({"n_dense_layers": 1}, "d_ff_dense"),
        ({"n_shared_experts": 1}, "d_ff_shared"),
        ({"shared_expert_gate": True}, "shared_expert_gate"),
        ({"n_stacks": 3}, "n_stacks"),
        ({"name": ""}, "name"),
    ],
)
def test_invalid_model_fields_rejected(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MoEModel(**_valid_kwargs(**overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_heads": 6, "n_kv_heads": 4, "head_dim": 8}, "n_kv_heads"),
        ({"n_heads": 0, "n_kv_heads": 1, "head_dim": 8}, "n_heads"),
        ({"n_heads": 2, "n_kv_heads": 2, "head_dim": 8, "v_head_dim": 8}, "v_head_dim"),
        ({"n_heads": 2, "n_kv_heads": 2, "head_dim": 8, "kv_lora_rank": 4}, "qk_nope_head_dim"),
        (
            {
                "n_heads": 2,
                "n_kv_heads": 2,
                "head_dim": 8,
                "kv_lora_rank": 4,
                "qk_nope_head_dim": 4,
                "qk_rope_head_dim": 2,
                "v_head_dim": 4,
            },
            "head_dim",
        ),
    ],
)
def test_invalid_attention_rejected(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AttentionConfig(**kwargs)  # type: ignore[arg-type]


def test_valid_toy_model_constructs() -> None:
    m = MoEModel(**_valid_kwargs())  # type: ignore[arg-type]
    assert m.n_moe_layers == 2
    assert m.expert_params == 3 * 16 * 32


# ---------------------------------------------------------------- immutability
def test_model_is_frozen() -> None:
    m = get_model("mixtral-8x7b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.top_k = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.attention.n_heads = 1  # type: ignore[misc]


def test_catalog_is_read_only_and_names_sorted() -> None:
    with pytest.raises(TypeError):
        CATALOG["x"] = get_model("mixtral-8x7b")  # type: ignore[index]
    assert model_names() == tuple(sorted(CATALOG))
    assert set(model_names()) == {
        "mixtral-8x7b",
        "qwen1.5-moe-a2.7b",
        "olmoe-1b-7b",
        "deepseek-v2-lite",
        "switch-base-8",
        "switch-base-128",
        "phi-3.5-moe",
    }
