"""An instance of the MILP: every coefficient of one epoch (:class:`Instance`, one
:class:`ModelInstance` per model), the decisions it takes (:class:`Decision`), and the
waiting cost's tangents (:func:`queue_cuts`). Built from a world by
:func:`agents.milp.from_world.build_instance`, or drawn by
:func:`agents.milp.formula.random_instance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Executions of a used copy: on the server's GPU, on its host CPU, fetched over PCIe.
E_GPU, E_CPU, E_FETCH = 0, 1, 2
#: Tiers of a placed copy (``x``): GPU memory, host memory.
T_GPU, T_HOST = 0, 1
_TIER_OF_EXEC = np.array([T_GPU, T_HOST, T_HOST])


@dataclass
class ModelInstance:
    """The linear model of one MoE model: every coefficient the MILP uses.

    Shapes: ``S`` servers (origins are servers too), ``G`` groups, ``B`` bit widths, ``K``
    keep ratios, 3 executions (GPU, host CPU, fetch), 2 tiers (GPU, host). Costs are
    request-ms equivalents per request unless said otherwise; ``*_w`` are the same
    pieces as work on the home's queue (ms of the home's time, not slowed down).
    """

    name: str
    bits: tuple[int, ...]
    keeps: tuple[float, ...]
    policies: tuple[int, ...]  # (0,) host CPU only, or (0, 1) with PCIe fetch
    home_gb: float  # dense part + KV reserve on a home's GPU
    group_gb: np.ndarray  # [G, B] GB of a group's experts (all layers) at each width
    cand: np.ndarray  # [S] bool: may be a home
    order: tuple[np.ndarray, ...]  # per home: the servers it may use, home first, nearest first
    origin_order: tuple[np.ndarray, ...]  # per origin: candidate homes it reaches, nearest first
    demand: np.ndarray  # [S] expected requests per origin in the epoch
    rtt: np.ndarray  # [S, S] origin -> home round trip (ms per request)
    base: np.ndarray  # [S] per request at home h, whatever the placement
    use: np.ndarray  # [S, G, S, 3, B] per request: home h uses group g on s, execution, bits
    xfer: np.ndarray  # [S, G, S] activations of g to s and back at keep 1 (0 for s == h)
    remote: np.ndarray  # [S, S] fixed charge of using server s from home h (path latency)
    base_w: np.ndarray
    use_w: np.ndarray
    xfer_w: np.ndarray
    remote_w: np.ndarray
    qbits: np.ndarray  # [G, B] quality loss contribution of each group's width
    qkeep: np.ndarray  # [K] quality loss of each keep ratio (homes lacking a group)
    quality_ms: float  # request-ms per unit of quality loss per request
    mig_x: np.ndarray  # [G, S, 2, B] cost of the bytes sent to place g on s, tier t, width b
    mig_home: np.ndarray  # [S] cost of the bytes sent to a new home (dense part)
    groups: np.ndarray | None = None  # [L, E] group of every expert (for plans)
    batch: np.ndarray | None = None  # [S] decode batch each home was costed at
    mig_x_s: np.ndarray | None = None  # [G, S, 2, B] seconds s spends receiving a copy
    mig_home_s: np.ndarray | None = None  # [S] seconds a new home spends receiving
    #: ``serving.pruning: prompt``: the keep ratio prunes prompt tokens. Every home of the
    #: model pays ``qkeep``, ``xfer`` is not thinned by it, and the prefill's part that
    #: grows with the prompt (``p*``: the prefill line's slope times the mean prompt, per
    #: piece, as ``base``/``use``/``xfer``/``remote``) is cut by ``1 - keep``.
    prune_prompt: bool = False
    pbase: np.ndarray | None = None  # [S]
    puse: np.ndarray | None = None  # [S, G, S, 3, B]
    pxfer: np.ndarray | None = None  # [S, G, S]
    premote: np.ndarray | None = None  # [S, S]
    pbase_w: np.ndarray | None = None
    puse_w: np.ndarray | None = None
    pxfer_w: np.ndarray | None = None
    premote_w: np.ndarray | None = None

    @property
    def G(self) -> int:
        return int(self.group_gb.shape[0])

    @property
    def B(self) -> int:
        return len(self.bits)

    @property
    def K(self) -> int:
        return len(self.keeps)

    @property
    def near(self) -> np.ndarray:
        """[S, S] bool: home h may use copies on s."""
        S = len(self.cand)
        out = np.zeros((S, S), bool)
        for h, srv in enumerate(self.order):
            out[h, srv] = True
        out[~self.cand] = False
        return out


@dataclass
class Instance:
    """One epoch's deployment problem: models and the servers they share."""

    models: list[ModelInstance]
    gpu_gb: np.ndarray  # [S] GPU (unified: whole pool) capacity
    host_gb: np.ndarray  # [S]
    host_ok: np.ndarray  # [S] bool: a separate host tier exists (present, not unified)
    up: np.ndarray  # [S] bool
    cap_ms: np.ndarray  # [S] work the server can do in the epoch [ms]
    queue_slope: np.ndarray  # [S, P] tangents of the waiting cost of the server's work
    queue_icpt: np.ndarray  # [S, P]
    overflow_ms: np.ndarray  # [S] price per ms of work beyond cap_ms
    quality_floor: float
    server_names: tuple[str, ...] = ()
    #: price of a server losing the whole epoch to receiving weights; the world takes
    #: ``min(1, receive time / epoch)`` of its capacity: ``mig_price * min(1, T / epoch)``
    mig_price: np.ndarray | None = None  # [S]
    epoch_s: float = 10.0

    @property
    def n(self) -> int:
        return len(self.gpu_gb)


@dataclass
class Decision:
    """One model's decision (what a plan says, at group level).

    Attributes:
        homes: [S] bool.
        place: [G, S] int8: 0 absent, 1 GPU memory, 2 host memory.
        bits: [G] index into ``ModelInstance.bits``.
        keep: index into ``ModelInstance.keeps``.
        policy: 0 host CPU, 1 PCIe fetch.
    """

    homes: np.ndarray
    place: np.ndarray
    bits: np.ndarray
    keep: int = 0
    policy: int = 0


def queue_cuts(
    cap_ms: np.ndarray,
    kq: float,
    slow: np.ndarray,
    points: Sequence[float],
    max_slope: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tangents of the waiting cost ``slow * kq * W^2 / (2 (cap - W))`` at ``W = rho * cap``.

    With ``max_slope`` (per server), tangents stop where the marginal waiting cost reaches
    it (a saturated queue drops requests instead of making them wait longer), and the last
    one is taken exactly there. Unused tangents repeat the last one.

    Returns:
        (slope [S, P], intercept [S, P]).
    """
    cap = np.asarray(cap_ms, float)[:, None]
    s = np.asarray(slow, float)[:, None]
    rho = np.broadcast_to(np.asarray(points, float)[None, :], (cap.shape[0], len(points)))
    if max_slope is not None:
        k = 2.0 * np.broadcast_to(np.asarray(max_slope, float), cap.shape[:1])[:, None]
        k = k / (kq * s)
        star = 1.0 - 1.0 / np.sqrt(1.0 + k)  # df(star * cap) == max_slope
        rho = np.concatenate([np.minimum(rho, star), star], axis=1)
    x = rho * cap
    f = kq * x**2 / (2.0 * (cap - x))
    df = kq * x * (2.0 * cap - x) / (2.0 * (cap - x) ** 2)
    return s * df, s * (f - df * x)
