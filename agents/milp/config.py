"""Options of the MILP (:class:`MilpConfig`), how reward terms are priced
(:class:`Weights`, from the reward weights of :class:`~coel_env.core.rewards.RewardConfig`)
and its errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coel_env.core.plan import KEEP_RATIOS
from coel_env.core.rewards import RewardConfig


class MilpError(ValueError):
    """The MILP could not produce a plan (the message says why)."""


class MilpInfeasible(MilpError):
    """The instance has no feasible plan; the message starts with ``infeasible because``."""


@dataclass(frozen=True)
class Weights:
    """How reward terms are priced against latency (reward units).

    Attributes:
        per_ms: reward lost per ms of mean request latency:
            ``latency_reward * p95_over_mean / latency_ref_ms + slo_reward / slo_budget_ms``.
        quality: per unit of mean quality loss, ``quality_reward / (2 * floor)``.
        drop: per dropped request share, ``slo_reward + dropped_reward``.
        migration_per_gb: per GB sent between servers, ``migration_reward / migration_ref_gb``.
    """

    per_ms: float
    quality: float
    drop: float
    migration_per_gb: float

    @classmethod
    def from_reward(
        cls,
        reward: Mapping | None,
        *,
        slo_budget_ms: float,
        floor: float,
        p95_over_mean: float = 2.0,
    ) -> Weights:
        r = {**RewardConfig().as_dict(), **(reward or {})}
        per_ms = r["latency_reward"] * p95_over_mean / r["latency_ref_ms"]
        per_ms += r["slo_reward"] / max(slo_budget_ms, 1.0)
        return cls(
            per_ms=max(per_ms, 1e-12),
            quality=r["quality_reward"] / (2.0 * max(floor, 1e-9)),
            drop=r["slo_reward"] + r["dropped_reward"],
            migration_per_gb=r["migration_reward"] / max(r["migration_ref_gb"], 1e-9),
        )


@dataclass(frozen=True)
class MilpConfig:
    """Options of the MILP (see the package docstring, :mod:`agents.milp`).

    Attributes:
        n_groups: popularity groups per model.
        bits: bit widths a group may take (highest first).
        keep_ratios: token keep ratios for activations sent between servers.
        host_policy: choose host CPU vs PCIe fetch per model (False: host CPU).
        near: a home uses copies on its ``near`` nearest servers (itself included).
        remote: which homes may use copies on other servers: ``"auto"`` those that cannot
            hold the whole model (dense part and every group at the lowest width) in
            their own memory, ``"always"`` every home, ``"never"`` none.
        home_near: an origin's requests go to one of its ``home_near`` nearest candidate
            homes (some of them must be open).
        allow_cloud_home: a cloud server may run a dense part.
        time_limit_s: HiGHS time limit per solve.
        gap: relative MIP gap at which HiGHS stops.
        refine: re-solves with the batch sizes implied by the solution.
        p95_over_mean: assumed ratio of p95 to mean latency (prices ``latency_reward``).
        queue_points: utilisations at which the waiting cost is linearised.
        migration: price moving from the plan in force.
        migration_horizon: epochs a migration is amortised over (its bytes and lost
            capacity are paid once, its benefit lasts while the plan stays; 1: myopic).
        reward: reward weights (``CoELEnv.default_config()`` keys); None: the defaults.
        highs_options: extra HiGHS options. By default the sub-MIP heuristics (RINS,
            RENS) are off for models under 2000 binaries, where they cost more time than
            they save (the greedy and the previous plan give incumbents).
        node_limit: a deterministic limit on each solve: HiGHS stops after this many
            branch-and-bound nodes (``mip_max_nodes``) with its incumbent, so the plan does
            not depend on how fast the machine is, as long as ``time_limit_s`` (kept as a
            backstop) does not bind first (it can depend on the kind of CPU: numpy's
            ``exp``/``log``/``power`` kernels differ in the last bit between instruction
            sets, and the branch and bound follows such differences); None: only the
            wall-clock limit. A solve that stops at it has the status ``"node_limit"``,
            one stopped by the clock ``"time_limit"``.
    """

    n_groups: int = 4
    bits: tuple[int, ...] = (16, 8, 4)
    keep_ratios: tuple[float, ...] = KEEP_RATIOS
    host_policy: bool = True
    near: int = 3
    remote: str = "auto"
    home_near: int = 8
    allow_cloud_home: bool = True
    time_limit_s: float = 10.0
    gap: float = 1e-4
    refine: int = 1
    p95_over_mean: float = 2.0
    queue_points: tuple[float, ...] = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
    migration: bool = True
    migration_horizon: float = 5.0
    reward: Mapping | None = None
    highs_options: Mapping | None = None
    node_limit: int | None = None

    def __post_init__(self) -> None:
        if self.n_groups < 1:
            raise ValueError(f"n_groups={self.n_groups} is not allowed; it must be >= 1")
        if not self.bits or any(b not in (16, 8, 4, 3, 2) for b in self.bits):
            raise ValueError(f"bits={self.bits} is not allowed; use widths from 16, 8, 4, 3, 2")
        if not self.keep_ratios or any(k not in KEEP_RATIOS for k in self.keep_ratios):
            raise ValueError(f"keep_ratios={self.keep_ratios} must be taken from {KEEP_RATIOS}")
        if self.near < 1:
            raise ValueError(f"near={self.near} is not allowed; it must be >= 1")
        if self.remote not in ("auto", "always", "never"):
            raise ValueError(f"remote={self.remote!r}; allowed: 'auto', 'always', 'never'")
        if self.home_near < 1:
            raise ValueError(f"home_near={self.home_near} is not allowed; it must be >= 1")
        if self.migration_horizon < 1:
            raise ValueError(f"migration_horizon={self.migration_horizon} must be >= 1")
        if self.time_limit_s <= 0 or self.gap < 0:
            raise ValueError("time_limit_s must be > 0 and gap >= 0")
        nl = self.node_limit
        if nl is not None and (isinstance(nl, bool) or not isinstance(nl, int) or nl < 1):
            raise ValueError(f"node_limit={nl!r} is not allowed; must be None or an integer >= 1")

    def solver_options(self) -> dict:
        """The HiGHS options of a solve: ``highs_options``, with ``mip_max_nodes`` from
        ``node_limit`` when it is set (an explicit ``mip_max_nodes`` wins)."""
        opts = dict(self.highs_options or {})
        if self.node_limit is not None:
            opts.setdefault("mip_max_nodes", int(self.node_limit))
        return opts
