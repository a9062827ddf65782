"""Published mixture-of-experts (MoE) LLM configurations and their derived sizes.

Every model is a frozen :class:`MoEModel` built from the numbers in the
HuggingFace ``config.json`` of its model repository (each number cites its
source in a comment). From these the module derives parameter counts, FLOPs
and weight bytes at several bit widths, which the rest of CoEL-Gym uses to
decide where experts fit and how long they take to run or move.

Parameter accounting (all counts are weights only; buffers such as rotary
tables are not parameters):

* A *routed expert* is one FFN: ``3 * d_model * d_ff`` when gated (SwiGLU:
  gate, up, down) and ``2 * d_model * d_ff`` otherwise (ReLU: wi, wo). None of
  the catalogued models has FFN biases. Shared experts and dense FFN layers use
  the same gating as the routed experts of the same model.
* ``non_expert_params`` is everything except the routed experts: the input
  embedding, the LM head (if untied, plus its bias if any), relative-position
  bias tables, attention (self- and cross-), norms (including the norms inside
  attention: OLMoE's QK-norm, DeepSeek's MLA ``kv_a_layernorm``), routers
  (plus Qwen's shared-expert gate), shared experts and dense FFN layers.
* ``active_params`` is ``non_expert_params`` plus ``top_k`` routed experts in
  every MoE layer, i.e. it *includes* both the input embedding and the LM head.
  This is the convention of Mistral (12.9B), OLMoE (1.3B), Qwen (2.7B) and
  Microsoft (6.6B). DeepSeek's published 2.4B for DeepSeek-V2-Lite leaves the
  input-embedding table out (a table lookup, not a matmul): with it the count
  is 2.66B, without it 2.45B. Subtract :attr:`MoEModel.embedding_params` to
  compare with DeepSeek's figure.

Switch Transformers (``switch-base-*``) are T5 encoder-decoders. They are
modelled as ``n_layers = 24`` blocks (12 encoder + 12 decoder), each with one
self-attention block and one FFN, every other FFN being an MoE layer
(``n_dense_layers = 12``); the 12 decoder blocks add one cross-attention block
each (``n_cross_attention_layers``), of the same shape as self-attention, and
one more norm. The two stacks (``n_stacks = 2``) each have a final norm and a
relative-position bias table in their first block. The simplification: layer
indices do not say which block is encoder or decoder, or which FFN is sparse;
a placement policy that needs that order must add it. Counts are exact.

Weight bytes: see :func:`weight_bytes`.
"""

from __future__ import annotations

import numbers
import types
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BITS",
    "CATALOG",
    "AttentionConfig",
    "MoEModel",
    "get_model",
    "model_names",
    "weight_bytes",
]

#: Allowed weight bit widths, widest first.
BITS: tuple[int, ...] = (16, 8, 4, 3, 2)

_BITS_TEXT = ", ".join(str(b) for b in BITS)


def _is_int(value: object) -> bool:
    """True for Python/numpy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(owner: str, field: str, value: object, minimum: int) -> None:
    if not _is_int(value):
        raise ValueError(
            f"{owner}.{field}={value!r} is not allowed; it must be an integer >= {minimum}"
        )
    if value < minimum:  # type: ignore[operator]
        raise ValueError(f"{owner}.{field}={value!r} is not allowed; it must be >= {minimum}")


def _check_optional_int(owner: str, field: str, value: object, minimum: int) -> None:
    if value is not None:
        _check_int(owner, field, value, minimum)


def _check_bool(owner: str, field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{field}={value!r} is not allowed; it must be a bool")


def weight_bytes(n_params: int, bits: int, group_size: int = 128) -> int:
    """Bytes needed to store ``n_params`` weights at ``bits`` bits each.

    The rule, per bit width:

    * 16 bits (fp16/bf16): 2 bytes per weight, no overhead.
    * 8 bits (symmetric, e.g. LLM.int8/GPTQ-8): 1 byte per weight plus one fp16
      scale (2 bytes) per group of ``group_size`` weights.
    * 4, 3, 2 bits (asymmetric, as GPTQ/AWQ/HQQ): ``ceil(n_params * bits / 8)``
      bytes of tightly packed weights plus one fp16 scale and one fp16 zero point
      (4 bytes) per group of ``group_size`` weights.

    The weights are treated as one flat array: the number of groups is
    ``ceil(n_params / group_size)``, so a partial last group still costs a full
    scale (and zero point). Packing padding of real kernels is not modelled.
    With ``group_size >= 4`` and any expert-sized ``n_params`` the bytes are
    non-increasing as ``bits`` falls.

    Args:
        n_params: Number of weights, a non-negative integer.
        bits: Bits per weight; one of :data:`BITS`.
        group_size: Weights sharing one scale (and zero point); a positive
            integer. Ignored for 16 bits.

    Returns:
        The number of bytes, an ``int``.

    Raises:
        ValueError: If ``bits`` is not in :data:`BITS`, ``group_size`` is not a
            positive integer, or ``n_params`` is not a non-negative integer.
    """
    if not _is_int(bits) or bits not in BITS:
        raise ValueError(f"bits={bits!r} is not allowed; allowed bit widths: {_BITS_TEXT}")
    if not _is_int(group_size) or group_size <= 0:
        raise ValueError(f"group_size={group_size!r} is not allowed; it must be a positive integer")
    if not _is_int(n_params) or n_params < 0:
        raise ValueError(f"n_params={n_params!r} is not allowed; it must be a non-negative integer")
    n = int(n_params)
    bits = int(bits)
    if bits == 16:
        return 2 * n
    groups = -(-n // int(group_size))  # ceil division in integers
    if bits == 8:
        return n + 2 * groups
    return -(-n * bits // 8) + 4 * groups


def _ffn_params(d_model: int, d_ff: int, gated: bool) -> int:
    """Weights of one bias-free FFN: 3 matrices if gated, else 2."""
    return (3 if gated else 2) * d_model * d_ff


@dataclass(frozen=True)
class AttentionConfig:
    """Shape of one attention block.

    For grouped-query attention (GQA/MHA) only ``n_heads``, ``n_kv_heads``,
    ``head_dim`` and the flags matter. Multi-head latent attention (MLA,
    DeepSeek-V2) is selected by setting ``kv_lora_rank``; then
    ``qk_nope_head_dim``, ``qk_rope_head_dim`` and ``v_head_dim`` are required,
    ``q_lora_rank`` is optional (``None`` means queries are not compressed) and
    ``head_dim`` must equal ``qk_nope_head_dim + qk_rope_head_dim``.

    Attributes:
        n_heads: Query heads.
        n_kv_heads: Key/value heads (GQA groups); must divide ``n_heads``.
        head_dim: Per-head query/key dimension.
        qkv_bias: Whether the q, k, v projections have biases.
        o_bias: Whether the output projection has a bias.
        qk_norm: Whether q and k are RMS-normalised over their full width
            (OLMoE): ``n_heads*head_dim + n_kv_heads*head_dim`` weights.
        relative_attention_num_buckets: T5 relative-position buckets; the
            ``buckets x n_heads`` table lives in the first block of each stack
            and is counted by :class:`MoEModel`, not per block. 0 when unused.
        kv_lora_rank: MLA compressed KV width, or ``None`` for GQA.
        q_lora_rank: MLA compressed query width, or ``None``.
        qk_nope_head_dim: MLA per-head query/key width without RoPE.
        qk_rope_head_dim: MLA per-head query/key width with RoPE (the RoPE key
            is shared across heads).
        v_head_dim: MLA per-head value width.
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    relative_attention_num_buckets: int = 0
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None

    def __post_init__(self) -> None:
        owner = "AttentionConfig"
        for field in ("n_heads", "n_kv_heads", "head_dim"):
            _check_int(owner, field, getattr(self, field), 1)
        for field in ("qkv_bias", "o_bias", "qk_norm"):
            _check_bool(owner, field, getattr(self, field))
        _check_int(owner, "relative_attention_num_buckets", self.relative_attention_num_buckets, 0)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"{owner}.n_kv_heads={self.n_kv_heads!r} is not allowed; "
                f"it must divide n_heads={self.n_heads!r}"
            )
        mla_fields = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        for field in (*mla_fields, "q_lora_rank"):
            _check_optional_int(owner, field, getattr(self, field), 1)
        if self.kv_lora_rank is None:
            for field in (*mla_fields[1:], "q_lora_rank"):
                if getattr(self, field) is not None:
                    raise ValueError(
                        f"{owner}.{field}={getattr(self, field)!r} is not allowed; "
                        "it must be None unless kv_lora_rank is set (MLA)"
                    )
        else:
            for field in mla_fields[1:]:
                if getattr(self, field) is None:
                    raise ValueError(
                        f"{owner}.{field}=None is not allowed; "
                        "MLA (kv_lora_rank set) requires it to be a positive integer"
                    )
            expected = self.qk_nope_head_dim + self.qk_rope_head_dim  # type: ignore[operator]
            if self.head_dim != expected:
                raise ValueError(
                    f"{owner}.head_dim={self.head_dim!r} is not allowed; with MLA it must equal "
                    f"qk_nope_head_dim + qk_rope_head_dim = {expected}"
                )

    @property
    def is_mla(self) -> bool:
        """Whether this is multi-head latent attention (DeepSeek-V2)."""
        return self.kv_lora_rank is not None

    def params(self, d_model: int) -> int:
        """Weights of one attention block at model width ``d_model``.

        GQA: ``q = d*h*hd``, ``k = v = d*kv*hd``, ``o = h*hd*d``, plus biases and
        QK-norm weights if enabled.

        MLA (DeepSeek-V2 ``DeepseekV2Attention``): queries are
        ``q_proj = d * h*(nope+rope)`` when ``q_lora_rank`` is ``None``, else
        ``q_a_proj = d*q_lora + q_a_layernorm = q_lora + q_b_proj =
        q_lora * h*(nope+rope)``; then
        ``kv_a_proj_with_mqa = d*(kv_lora_rank + rope)``,
        ``kv_a_layernorm = kv_lora_rank``,
        ``kv_b_proj = kv_lora_rank * h*(nope + v_head_dim)`` and
        ``o_proj = h*v_head_dim*d``.

        Args:
            d_model: The residual-stream width.

        Returns:
            The number of weights.
        """
        h, kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        if not self.is_mla:
            q, k, v, o = d_model * h * hd, d_model * kv * hd, d_model * kv * hd, h * hd * d_model
            total = q + k + v + o
            if self.qkv_bias:
                total += h * hd + 2 * kv * hd
            if self.o_bias:
                total += d_model
            if self.qk_norm:
                total += h * hd + kv * hd
            return total
        nope, rope = self.qk_nope_head_dim, self.qk_rope_head_dim
        v_hd, kv_rank = self.v_head_dim, self.kv_lora_rank
        assert nope is not None and rope is not None and v_hd is not None and kv_rank is not None
        if self.q_lora_rank is None:
            q_total = d_model * h * (nope + rope)
        else:
            q_total = (
                d_model * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * (nope + rope)
            )
        kv_total = d_model * (kv_rank + rope) + kv_rank + kv_rank * h * (nope + v_hd)
        total = q_total + kv_total + h * v_hd * d_model
        if self.o_bias:
            total += d_model
        return total

    @property
    def kv_cache_values_per_token(self) -> int:
        """Cached values per token per attention block.

        GQA caches ``2 * n_kv_heads * head_dim`` (K and V); MLA caches the
        compressed latent plus the shared RoPE key,
        ``kv_lora_rank + qk_rope_head_dim``.
        """
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim  # type: ignore[operator]
        return 2 * self.n_kv_heads * self.head_dim


@dataclass(frozen=True)
class MoEModel:
    """A published MoE LLM configuration (frozen; validated on construction).

    Attributes:
        name: Catalog name (lower case).
        hf_repo: HuggingFace repository whose ``config.json`` gives the numbers.
        n_layers: Transformer blocks, each with one self-attention block and one
            FFN (for encoder-decoders: encoder + decoder blocks).
        d_model: Residual-stream width.
        d_ff_expert: Hidden width of one routed expert.
        gated: True for gated FFNs (3 matrices: gate/up/down), False for plain
            ones (2 matrices). Applies to routed, shared and dense FFNs.
        n_experts: Routed experts per MoE layer.
        top_k: Routed experts each token uses per MoE layer.
        attention: Shape of one attention block.
        vocab_size: Vocabulary size.
        tie_embeddings: Whether the LM head reuses the input embedding.
        n_dense_layers: Blocks whose FFN is dense instead of MoE.
        d_ff_dense: Hidden width of the dense FFN (``None`` without dense
            layers).
        n_shared_experts: Always-active shared experts per MoE layer.
        d_ff_shared: Hidden width of each shared expert (``None`` without).
        shared_expert_gate: Whether a ``d_model -> 1`` sigmoid gate scales the
            shared expert output (Qwen1.5-MoE); counted with the router.
        n_cross_attention_layers: Blocks with an extra cross-attention block of
            the same shape as self-attention (and one more norm).
        n_stacks: 1 for decoder-only, 2 for encoder-decoder; each stack has a
            final norm and, if used, a relative-position bias table.
        norm_bias: True for LayerNorm with weight and bias (2*d_model), False
            for RMSNorm / T5 LayerNorm (d_model).
        lm_head_bias: Whether the (untied) LM head has a bias.
        profile_shape: Expert-shape name in the measured profile CSVs, or
            ``None`` when the model's shape was not profiled under its own name.
        shared_profile_shape: Shared-expert shape name in the profile CSVs, or
            ``None``.
    """

    name: str
    hf_repo: str
    n_layers: int
    d_model: int
    d_ff_expert: int
    gated: bool
    n_experts: int
    top_k: int
    attention: AttentionConfig
    vocab_size: int
    tie_embeddings: bool
    n_dense_layers: int = 0
    d_ff_dense: int | None = None
    n_shared_experts: int = 0
    d_ff_shared: int | None = None
    shared_expert_gate: bool = False
    n_cross_attention_layers: int = 0
    n_stacks: int = 1
    norm_bias: bool = False
    lm_head_bias: bool = False
    profile_shape: str | None = None
    shared_profile_shape: str | None = None

    def __post_init__(self) -> None:
        owner = "MoEModel"
        for field in ("name", "hf_repo"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"{owner}.{field}={value!r} is not allowed; it must be a non-empty string"
                )
        for field in ("profile_shape", "shared_profile_shape"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"{owner}.{field}={value!r} is not allowed; "
                    "it must be None or a non-empty string"
                )
        for field in ("n_layers", "d_model", "d_ff_expert", "n_experts", "top_k", "vocab_size"):
            _check_int(owner, field, getattr(self, field), 1)
        for field in ("n_dense_layers", "n_shared_experts", "n_cross_attention_layers"):
            _check_int(owner, field, getattr(self, field), 0)
        _check_int(owner, "n_stacks", self.n_stacks, 1)
        for field in ("d_ff_dense", "d_ff_shared"):
            _check_optional_int(owner, field, getattr(self, field), 1)
        for field in (
            "gated",
            "tie_embeddings",
            "shared_expert_gate",
            "norm_bias",
            "lm_head_bias",
        ):
            _check_bool(owner, field, getattr(self, field))
        if not isinstance(self.attention, AttentionConfig):
            raise ValueError(
                f"{owner}.attention={self.attention!r} is not allowed; "
                "it must be an AttentionConfig"
            )
        if self.top_k > self.n_experts:
            raise ValueError(
                f"{owner}.top_k={self.top_k!r} is not allowed; "
                f"it must be <= n_experts={self.n_experts!r}"
            )
        if self.n_dense_layers >= self.n_layers:
            raise ValueError(
                f"{owner}.n_dense_layers={self.n_dense_layers!r} is not allowed; "
                f"it must be < n_layers={self.n_layers!r} (at least one MoE layer)"
            )
        if self.n_stacks > 2:
            raise ValueError(
                f"{owner}.n_stacks={self.n_stacks!r} is not allowed; "
                "it must be 1 (decoder-only) or 2 (encoder-decoder)"
            )
        if self.n_cross_attention_layers > self.n_layers:
            raise ValueError(
                f"{owner}.n_cross_attention_layers={self.n_cross_attention_layers!r} "
                f"is not allowed; it must be <= n_layers={self.n_layers!r}"
            )
        if (self.n_dense_layers > 0) != (self.d_ff_dense is not None):
            raise ValueError(
                f"{owner}.d_ff_dense={self.d_ff_dense!r} is not allowed; it must be set "
                f"exactly when n_dense_layers > 0 (n_dense_layers={self.n_dense_layers!r})"
            )
        if (self.n_shared_experts > 0) != (self.d_ff_shared is not None):
            raise ValueError(
                f"{owner}.d_ff_shared={self.d_ff_shared!r} is not allowed; it must be set "
                f"exactly when n_shared_experts > 0 (n_shared_experts={self.n_shared_experts!r})"
            )
        if self.n_shared_experts == 0 and self.shared_expert_gate:
            raise ValueError(
                f"{owner}.shared_expert_gate=True is not allowed; it requires "
                f"n_shared_experts > 0 (n_shared_experts={self.n_shared_experts!r})"
            )
        if self.n_shared_experts == 0 and self.shared_profile_shape is not None:
            raise ValueError(
                f"{owner}.shared_profile_shape={self.shared_profile_shape!r} is not allowed; "
                "it must be None without shared experts"
            )
        if self.tie_embeddings and self.lm_head_bias:
            raise ValueError(
                f"{owner}.lm_head_bias=True is not allowed; it requires tie_embeddings=False"
            )

    # ----------------------------------------------------------------- layers
    @property
    def n_moe_layers(self) -> int:
        """Blocks whose FFN is an MoE layer."""
        return self.n_layers - self.n_dense_layers

    # ------------------------------------------------------ per-unit counts
    @property
    def expert_params(self) -> int:
        """Weights of one routed expert (no biases)."""
        return _ffn_params(self.d_model, self.d_ff_expert, self.gated)

    @property
    def shared_expert_params(self) -> int:
        """Weights of all shared experts of one MoE layer together (0 if none)."""
        if self.d_ff_shared is None:
            return 0
        return self.n_shared_experts * _ffn_params(self.d_model, self.d_ff_shared, self.gated)

    @property
    def router_params(self) -> int:
        """Router weights of one MoE layer: ``d_model * n_experts`` (+ ``d_model``
        for a shared-expert gate). No catalogued router has a bias."""
        return self.d_model * self.n_experts + (self.d_model if self.shared_expert_gate else 0)

    @property
    def dense_ffn_params(self) -> int:
        """Weights of the FFN of one dense layer (0 without dense layers)."""
        if self.d_ff_dense is None:
            return 0
        return _ffn_params(self.d_model, self.d_ff_dense, self.gated)

    @property
    def attention_params(self) -> int:
        """Weights of one attention block (self- or cross-attention)."""
        return self.attention.params(self.d_model)

    @property
    def norm_params(self) -> int:
        """Weights of all block and final norms in the model.

        Two per block (pre-attention, pre-FFN), one more per cross-attention
        block, one final norm per stack; each ``d_model`` (RMSNorm) or
        ``2 * d_model`` (LayerNorm with bias). Norms inside attention are in
        :attr:`attention_params`.
        """
        n_norms = 2 * self.n_layers + self.n_cross_attention_layers + self.n_stacks
        return n_norms * self.d_model * (2 if self.norm_bias else 1)

    @property
    def embedding_params(self) -> int:
        """Weights of the input embedding table."""
        return self.vocab_size * self.d_model

    @property
    def lm_head_params(self) -> int:
        """Weights of the LM head not shared with the embedding (0 if tied)."""
        if self.tie_embeddings:
            return 0
        return self.vocab_size * self.d_model + (self.vocab_size if self.lm_head_bias else 0)

    @property
    def position_params(self) -> int:
        """Relative-position bias tables (T5): one per stack, 0 when unused."""
        return (
            self.n_stacks * self.attention.relative_attention_num_buckets * self.attention.n_heads
        )

    # ---------------------------------------------------------- model totals
    @property
    def routed_expert_params(self) -> int:
        """Weights of all routed experts of the model."""
        return self.n_moe_layers * self.n_experts * self.expert_params

    @property
    def non_expert_params(self) -> int:
        """Weights of everything except the routed experts (see module docstring)."""
        n_attention_blocks = self.n_layers + self.n_cross_attention_layers
        return (
            self.embedding_params
            + self.lm_head_params
            + self.position_params
            + n_attention_blocks * self.attention_params
            + self.norm_params
            + self.n_moe_layers * (self.router_params + self.shared_expert_params)
            + self.n_dense_layers * self.dense_ffn_params
        )

    @property
    def total_params(self) -> int:
        """All weights of the model."""
        return self.non_expert_params + self.routed_expert_params

    @property
    def active_params(self) -> int:
        """Weights used per token: non-expert + ``top_k`` routed experts per MoE layer.

        Includes the input embedding and the LM head (see the module docstring
        for how this matches each publisher's convention).
        """
        return self.non_expert_params + self.n_moe_layers * self.top_k * self.expert_params

    # ------------------------------------------------------------ compute
    def expert_flops_per_token(self) -> int:
        """FLOPs of one token through one routed expert: ``2 * expert_params``."""
        return 2 * self.expert_params

    def shared_expert_flops_per_token(self) -> int:
        """FLOPs of one token through all shared experts of one layer."""
        return 2 * self.shared_expert_params

    # -------------------------------------------------------------- bytes
    def expert_bytes(self, bits: int, group_size: int = 128) -> int:
        """Bytes of one routed expert at ``bits`` bits per weight.

        Args:
            bits: One of :data:`BITS`.
            group_size: Weights per quantization group (see :func:`weight_bytes`).

        Returns:
            Bytes, including per-group scale (and zero-point) overhead.

        Raises:
            ValueError: On a bit width or group size :func:`weight_bytes` rejects.
        """
        return weight_bytes(self.expert_params, bits, group_size)

    def shared_expert_bytes(self, bits: int, group_size: int = 128) -> int:
        """Bytes of all shared experts of one MoE layer at ``bits`` bits.

        Args:
            bits: One of :data:`BITS`.
            group_size: Weights per quantization group (see :func:`weight_bytes`).

        Returns:
            Bytes (0 without shared experts).
        """
        return weight_bytes(self.shared_expert_params, bits, group_size)

    def non_expert_bytes(self, bits: int = 16, group_size: int = 128) -> int:
        """Bytes of all non-expert weights at ``bits`` bits.

        The rule of :func:`weight_bytes` is applied to the whole non-expert
        count as one array. This is a simplification: real quantizers usually
        keep norms, biases and often embeddings in 16 bits; those are small
        except the embeddings, so quantized figures are a lower bound.

        Args:
            bits: One of :data:`BITS`; default 16.
            group_size: Weights per quantization group (see :func:`weight_bytes`).

        Returns:
            Bytes.
        """
        return weight_bytes(self.non_expert_params, bits, group_size)


def _build_catalog() -> dict[str, MoEModel]:
    models = [
        MoEModel(
            name="mixtral-8x7b",
            hf_repo="mistralai/Mixtral-8x7B-v0.1",
            n_layers=32,  # mistralai/Mixtral-8x7B-v0.1 config.json num_hidden_layers
            d_model=4096,  # mistralai/Mixtral-8x7B-v0.1 config.json hidden_size
            d_ff_expert=14336,  # mistralai/Mixtral-8x7B-v0.1 config.json intermediate_size
            gated=True,  # mistralai/Mixtral-8x7B-v0.1 config.json hidden_act silu (SwiGLU w1/w2/w3)
            n_experts=8,  # mistralai/Mixtral-8x7B-v0.1 config.json num_local_experts
            top_k=2,  # mistralai/Mixtral-8x7B-v0.1 config.json num_experts_per_tok
            attention=AttentionConfig(
                n_heads=32,  # mistralai/Mixtral-8x7B-v0.1 config.json num_attention_heads
                n_kv_heads=8,  # mistralai/Mixtral-8x7B-v0.1 config.json num_key_value_heads
                head_dim=128,  # mistralai/Mixtral-8x7B-v0.1 config.json hidden_size/heads
            ),
            vocab_size=32000,  # mistralai/Mixtral-8x7B-v0.1 config.json vocab_size
            tie_embeddings=False,  # mistralai/Mixtral-8x7B-v0.1 config.json tie_word_embeddings
            profile_shape="mixtral-8x7b",
        ),
        MoEModel(
            name="qwen1.5-moe-a2.7b",
            hf_repo="Qwen/Qwen1.5-MoE-A2.7B",
            n_layers=24,  # Qwen/Qwen1.5-MoE-A2.7B config.json num_hidden_layers
            d_model=2048,  # Qwen/Qwen1.5-MoE-A2.7B config.json hidden_size
            d_ff_expert=1408,  # Qwen/Qwen1.5-MoE-A2.7B config.json moe_intermediate_size
            gated=True,  # Qwen/Qwen1.5-MoE-A2.7B config.json hidden_act silu (gate/up/down)
            n_experts=60,  # Qwen/Qwen1.5-MoE-A2.7B config.json num_experts
            top_k=4,  # Qwen/Qwen1.5-MoE-A2.7B config.json num_experts_per_tok
            n_shared_experts=1,  # Qwen/Qwen1.5-MoE-A2.7B config.json (one shared_expert MLP)
            d_ff_shared=5632,  # Qwen/Qwen1.5-MoE-A2.7B config.json shared_expert_intermediate_size
            shared_expert_gate=True,  # Qwen/Qwen1.5-MoE-A2.7B Qwen2MoeSparseMoeBlock gate
            attention=AttentionConfig(
                n_heads=16,  # Qwen/Qwen1.5-MoE-A2.7B config.json num_attention_heads
                n_kv_heads=16,  # Qwen/Qwen1.5-MoE-A2.7B config.json num_key_value_heads
                head_dim=128,  # Qwen/Qwen1.5-MoE-A2.7B config.json hidden_size/heads
                qkv_bias=True,  # Qwen/Qwen1.5-MoE-A2.7B (Qwen2MoeAttention q/k/v bias=True)
            ),
            vocab_size=151936,  # Qwen/Qwen1.5-MoE-A2.7B config.json vocab_size
            tie_embeddings=False,  # Qwen/Qwen1.5-MoE-A2.7B config.json tie_word_embeddings
            profile_shape="qwen1.5-moe-a2.7b",
            shared_profile_shape="qwen1.5-moe-shared",
        ),
        MoEModel(
            name="olmoe-1b-7b",
            hf_repo="allenai/OLMoE-1B-7B-0924",
            n_layers=16,  # allenai/OLMoE-1B-7B-0924 config.json num_hidden_layers
            d_model=2048,  # allenai/OLMoE-1B-7B-0924 config.json hidden_size
            d_ff_expert=1024,  # allenai/OLMoE-1B-7B-0924 config.json intermediate_size
            gated=True,  # allenai/OLMoE-1B-7B-0924 config.json hidden_act silu (gate/up/down)
            n_experts=64,  # allenai/OLMoE-1B-7B-0924 config.json num_experts
            top_k=8,  # allenai/OLMoE-1B-7B-0924 config.json num_experts_per_tok
            attention=AttentionConfig(
                n_heads=16,  # allenai/OLMoE-1B-7B-0924 config.json num_attention_heads
                n_kv_heads=16,  # allenai/OLMoE-1B-7B-0924 config.json num_key_value_heads
                head_dim=128,  # allenai/OLMoE-1B-7B-0924 config.json hidden_size/heads
                qk_norm=True,  # allenai/OLMoE-1B-7B-0924 (OlmoeAttention q_norm/k_norm)
            ),
            vocab_size=50304,  # allenai/OLMoE-1B-7B-0924 config.json vocab_size
            tie_embeddings=False,  # allenai/OLMoE-1B-7B-0924 config.json tie_word_embeddings
            profile_shape="olmoe-1b-7b",
        ),
        MoEModel(
            name="deepseek-v2-lite",
            hf_repo="deepseek-ai/DeepSeek-V2-Lite",
            n_layers=27,  # deepseek-ai/DeepSeek-V2-Lite config.json num_hidden_layers
            n_dense_layers=1,  # deepseek-ai/DeepSeek-V2-Lite config.json first_k_dense_replace
            d_ff_dense=10944,  # deepseek-ai/DeepSeek-V2-Lite config.json intermediate_size
            d_model=2048,  # deepseek-ai/DeepSeek-V2-Lite config.json hidden_size
            d_ff_expert=1408,  # deepseek-ai/DeepSeek-V2-Lite config.json moe_intermediate_size
            gated=True,  # deepseek-ai/DeepSeek-V2-Lite config.json hidden_act silu (gate/up/down)
            n_experts=64,  # deepseek-ai/DeepSeek-V2-Lite config.json n_routed_experts
            top_k=6,  # deepseek-ai/DeepSeek-V2-Lite config.json num_experts_per_tok
            n_shared_experts=2,  # deepseek-ai/DeepSeek-V2-Lite config.json n_shared_experts
            d_ff_shared=1408,  # deepseek-ai/DeepSeek-V2-Lite config.json moe_intermediate_size
            attention=AttentionConfig(
                n_heads=16,  # deepseek-ai/DeepSeek-V2-Lite config.json num_attention_heads
                n_kv_heads=16,  # deepseek-ai/DeepSeek-V2-Lite config.json num_key_value_heads
                head_dim=192,  # deepseek-ai/DeepSeek-V2-Lite config.json qk_nope + qk_rope
                kv_lora_rank=512,  # deepseek-ai/DeepSeek-V2-Lite config.json kv_lora_rank
                q_lora_rank=None,  # deepseek-ai/DeepSeek-V2-Lite config.json q_lora_rank null
                qk_nope_head_dim=128,  # deepseek-ai/DeepSeek-V2-Lite config.json qk_nope_head_dim
                qk_rope_head_dim=64,  # deepseek-ai/DeepSeek-V2-Lite config.json qk_rope_head_dim
                v_head_dim=128,  # deepseek-ai/DeepSeek-V2-Lite config.json v_head_dim
            ),
            vocab_size=102400,  # deepseek-ai/DeepSeek-V2-Lite config.json vocab_size
            tie_embeddings=False,  # deepseek-ai/DeepSeek-V2-Lite config.json tie_word_embeddings
            # Not profiled under its own name: its routed (and each shared) expert is
            # 2048 x 1408 gated, the same shape as "qwen1.5-moe-a2.7b" in the CSVs.
            profile_shape=None,
        ),
        _switch(n_experts=8),
        _switch(n_experts=128),
        MoEModel(
            name="phi-3.5-moe",
            hf_repo="microsoft/Phi-3.5-MoE-instruct",
            n_layers=32,  # microsoft/Phi-3.5-MoE-instruct config.json num_hidden_layers
            d_model=4096,  # microsoft/Phi-3.5-MoE-instruct config.json hidden_size
            d_ff_expert=6400,  # microsoft/Phi-3.5-MoE-instruct config.json intermediate_size
            gated=True,  # microsoft/Phi-3.5-MoE-instruct config.json hidden_act silu (w1/w2/w3)
            n_experts=16,  # microsoft/Phi-3.5-MoE-instruct config.json num_local_experts
            top_k=2,  # microsoft/Phi-3.5-MoE-instruct config.json num_experts_per_tok
            attention=AttentionConfig(
                n_heads=32,  # microsoft/Phi-3.5-MoE-instruct config.json num_attention_heads
                n_kv_heads=8,  # microsoft/Phi-3.5-MoE-instruct config.json num_key_value_heads
                head_dim=128,  # microsoft/Phi-3.5-MoE-instruct config.json hidden_size/heads
                qkv_bias=True,  # microsoft/Phi-3.5-MoE-instruct config.json attention_bias
                o_bias=True,  # microsoft/Phi-3.5-MoE-instruct config.json attention_bias
            ),
            vocab_size=32064,  # microsoft/Phi-3.5-MoE-instruct config.json vocab_size
            tie_embeddings=False,  # microsoft/Phi-3.5-MoE-instruct config.json tie_word_embeddings
            norm_bias=True,  # microsoft/Phi-3.5-MoE-instruct (PhiMoE uses nn.LayerNorm)
            lm_head_bias=True,  # microsoft/Phi-3.5-MoE-instruct config.json lm_head_bias
            profile_shape="phi-3.5-moe",
        ),
    ]
    return {m.name: m for m in sorted(models, key=lambda m: m.name)}


def _switch(n_experts: int) -> MoEModel:
    """Switch Transformer base (T5 encoder-decoder); see the module docstring."""
    repo = f"google/switch-base-{n_experts}"
    return MoEModel(
        name=f"switch-base-{n_experts}",
        hf_repo=repo,
        # google/switch-base-N config.json num_layers 12 + num_decoder_layers 12
        n_layers=24,
        # google/switch-base-N config.json encoder_sparse_step 2, decoder_sparse_step 2:
        # every other FFN is sparse, so 6 + 6 of the 24 FFNs are dense
        n_dense_layers=12,
        d_ff_dense=3072,  # google/switch-base-N config.json d_ff
        d_model=768,  # google/switch-base-N config.json d_model
        d_ff_expert=3072,  # google/switch-base-N config.json d_ff
        gated=False,  # google/switch-base-N config.json feed_forward_proj relu (wi/wo)
        n_experts=n_experts,  # google/switch-base-N config.json num_experts
        top_k=1,  # Switch routing is top-1 (SwitchTransformersTop1Router)
        attention=AttentionConfig(
            n_heads=12,  # google/switch-base-N config.json num_heads
            n_kv_heads=12,  # google/switch-base-N config.json num_heads (MHA)
            head_dim=64,  # google/switch-base-N config.json d_kv
            relative_attention_num_buckets=32,  # google/switch-base-N config.json
        ),
        vocab_size=32128,  # google/switch-base-N config.json vocab_size
        tie_embeddings=True,  # google/switch-base-N config.json tie_word_embeddings (default)
        n_cross_attention_layers=12,  # google/switch-base-N config.json num_decoder_layers
        n_stacks=2,  # encoder + decoder
        profile_shape="switch-base",
    )


#: Read-only mapping from catalog name to model, in sorted name order.
CATALOG: Mapping[str, MoEModel] = types.MappingProxyType(_build_catalog())


def model_names() -> tuple[str, ...]:
    """Catalog names, sorted.

    Returns:
        The names accepted by :func:`get_model`.
    """
    return tuple(sorted(CATALOG))


def get_model(name: str) -> MoEModel:
    """Look up a catalogued model by name.

    Args:
        name: A catalog name such as ``"mixtral-8x7b"`` (exact, lower case).

    Returns:
        The frozen :class:`MoEModel`.

    Raises:
        ValueError: If ``name`` is not in the catalog; the message names the
            value and lists the known models.
    """
    if isinstance(name, str) and name in CATALOG:
        return CATALOG[name]
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
