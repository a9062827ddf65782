"""Quality loss of compression: expert bit widths and token keep ratios.

Both are expressed as a relative degradation (a fraction: 0.0147 = 1.47%), so
they add up into one ``quality_loss`` that a request's quality floor bounds.
For bit widths it is the relative perplexity increase; for token pruning the
relative accuracy drop. They are different proxies of the same thing (worse
answers); the simulator adds them, and the README says so.

Sources (SPEC.md):

* Quantization of Mixtral-8x7B, perplexity increase against 8-bit (llama.cpp
  k-quants, stock / improved with an importance matrix): 5-bit +0.84% / +0.56%;
  4-bit +3.59% / +1.47%; 3-bit +7.66% / +4.47%; 2-bit +81.9% / +23.2%. 8 and 16
  bits are the reference (0). The default scheme is ``"improved"``: CoEL
  allocates bits by importance, which is what the importance-matrix quants do.
* Mixed precision across experts (MC-MoE, QuantMoE-Bench, MoEQuant): shared
  and frequently used experts are the most sensitive. Each expert's loss is
  weighted by how often tokens use it (its popularity), and shared experts,
  which every token uses, by :data:`SHARED_SENSITIVITY` on top. The
  weighting is normalised so that every expert at ``b`` bits gives exactly the
  published figure for ``b`` bits.
* Token merging / pruning of data sent between servers: keep 1.0 -> 0;
  ToMe, 2x throughput (keep 0.5) for 0.2-0.3% accuracy -> 0.25% at keep 0.5;
  LLMLingua, up to 20x prompt compression (keep 0.05) with task-dependent loss:
  GSM8K exact match 78.85 -> 77.33 at 20x (LLMLingua paper, Table 1), a 1.93%
  relative drop. Between the points: linear in log(keep) (our choice), and
  below keep 0.05 extrapolated with the same slope.
"""

from __future__ import annotations

import numpy as np

from coel_env.catalog import BITS

#: Relative perplexity increase of Mixtral-8x7B against 8-bit, llama.cpp k-quants (SPEC.md).
PPL_INCREASE = {
    "stock": {16: 0.0, 8: 0.0, 4: 0.0359, 3: 0.0766, 2: 0.819},
    "improved": {16: 0.0, 8: 0.0, 4: 0.0147, 3: 0.0447, 2: 0.232},
}
#: Extra weight of shared experts' quantization loss beyond their popularity (every token
#: uses them). QuantMoE-Bench / MoEQuant report them as the most sensitive without one
#: factor; 2.0 is our assumption, stated here.
SHARED_SENSITIVITY = 2.0

#: (keep ratio, relative accuracy drop) points for token pruning/fusion (see module doc).
_KEEP_POINTS = ((0.05, 0.0193), (0.5, 0.0025), (1.0, 0.0))


def _check_bits(bits: np.ndarray, field: str = "bits") -> None:
    bad = ~np.isin(bits, BITS)
    if bad.any():
        v = bits[bad].flat[0]
        raise ValueError(
            f"{field}={v!r} is not allowed; allowed bit widths: {', '.join(map(str, BITS))}"
        )


def bits_loss(bits, scheme: str = "improved") -> np.ndarray:
    """Relative perplexity increase of weights at ``bits`` (element-wise)."""
    if scheme not in PPL_INCREASE:
        raise ValueError(f"scheme={scheme!r} is not allowed; allowed: {sorted(PPL_INCREASE)}")
    b = np.asarray(bits)
    _check_bits(b)
    table = PPL_INCREASE[scheme]
    return np.select([b == k for k in BITS], [table[k] for k in BITS], 0.0)


def quantization_loss(
    expert_bits,
    popularity=None,
    *,
    shared_bits=None,
    shared_share: float = 0.0,
    scheme: str = "improved",
) -> float:
    """Quality loss of a per-expert bit-width assignment.

    Args:
        expert_bits: bit widths of the routed experts, shape ``[n_experts]`` or
            ``[n_layers, n_experts]``.
        popularity: share of routed tokens each expert gets, same shape
            (rows normalised here); uniform when None.
        shared_bits: bit width of the shared experts (per layer or one value).
        shared_share: weight of the shared experts against the routed ones
            before :data:`SHARED_SENSITIVITY` (e.g. ``n_shared / top_k``: one
            shared expert per token against ``top_k`` routed ones).
        scheme: ``"improved"`` (default) or ``"stock"`` k-quants.

    Returns:
        Relative perplexity increase (a fraction), averaged over layers.
    """
    b = np.atleast_2d(np.asarray(expert_bits))
    loss = bits_loss(b, scheme)
    if popularity is None:
        pop = np.ones(b.shape, dtype=float)
    else:
        pop = np.atleast_2d(np.asarray(popularity, dtype=float))
        if pop.shape != b.shape:
            raise ValueError(f"popularity shape {pop.shape} must match expert_bits shape {b.shape}")
        if not np.all(np.isfinite(pop)) or (pop < 0).any():
            raise ValueError("popularity must be finite and non-negative")
    tot = pop.sum(axis=1, keepdims=True)
    pop = np.where(tot > 0, pop / np.where(tot > 0, tot, 1.0), 1.0 / b.shape[1])
    routed = (pop * loss).sum(axis=1)
    if shared_bits is None or shared_share <= 0:
        return float(routed.mean())
    ws = SHARED_SENSITIVITY * shared_share
    shared = np.broadcast_to(bits_loss(np.asarray(shared_bits), scheme), routed.shape)
    return float(((routed + ws * shared) / (1.0 + ws)).mean())


def token_keep_loss(keep_ratio) -> np.ndarray:
    """Relative accuracy drop of keeping ``keep_ratio`` of the tokens sent between servers.

    Raises:
        ValueError: keep ratio outside (0, 1].
    """
    k = np.asarray(keep_ratio, dtype=float)
    bad = ~((k > 0) & (k <= 1))
    if bad.any():
        raise ValueError(f"keep_ratio={k[bad].flat[0]!r} is not allowed; must be in (0, 1]")
    xs = np.log([p[0] for p in _KEEP_POINTS])
    ys = np.array([p[1] for p in _KEEP_POINTS])
    lk = np.log(k)
    inner = np.interp(lk, xs, ys)
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    return np.where(lk < xs[0], ys[0] + slope * (lk - xs[0]), inner)
