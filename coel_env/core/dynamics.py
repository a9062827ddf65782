"""Dynamics: the seeded processes that change the world between epochs.

Each process can be switched off. Each draws from its own generator, spawned
from the world's generator at reset, so the same seed gives the same
trajectory and switching one process off leaves the others' draws unchanged:

* background load per server: an Ornstein-Uhlenbeck process on the share of
  GPU time taken by other tenants, clipped to ``[0, background_max]``;
* link bandwidth: a log-space OU multiplier per link around 1, and failures
  (a link goes down with ``link_fail_prob`` per epoch and comes back with
  ``link_recover_prob``);
* servers leaving and joining (``server_leave_prob`` / ``server_join_prob``
  per epoch; the cloud never leaves); a server that leaves loses its experts;
* demand level: a log-space OU multiplier per server on its request rate;
* task mix: each server's mix over task types takes a multiplicative random
  step (log-normal) and is renormalised, so the hot experts change.

Each process draws its random numbers 64 epochs at a time (one call to its
generator instead of one per epoch; the draws are the same kind, so the
trajectories have the same law).

The OU update is the exact discretisation ``x' = mu + (x - mu) e^{-theta} +
sigma sqrt(1 - e^{-2 theta}) N(0, 1)`` with ``theta`` per epoch: the
stationary standard deviation is ``sigma``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from coel_env.core.kernels.dynamics import ou_step


@dataclass(frozen=True)
class DynamicsConfig:
    """Switches and rates of the world's processes (per epoch unless stated).

    Attributes:
        background: background load on/off.
        background_mean: mean share of GPU time used by others [0-1).
        background_sigma: stationary std of that share.
        background_max: cap on the share [0-1).
        links: link bandwidth variation on/off.
        link_sigma: stationary std of log bandwidth multiplier.
        link_fail_prob: probability a link fails in an epoch.
        link_recover_prob: probability a failed link recovers in an epoch.
        servers: servers leaving/joining on/off.
        server_leave_prob: probability a present server leaves in an epoch.
        server_join_prob: probability an absent server returns in an epoch.
        demand: demand-level variation on/off.
        demand_sigma: stationary std of the log demand multiplier.
        task_mix: task-mix drift on/off.
        task_mix_sigma: std of the log step of each task's weight.
        theta: mean reversion of the OU processes per epoch (0-1].
    """

    background: bool = True
    background_mean: float = 0.1
    background_sigma: float = 0.05
    background_max: float = 0.8
    links: bool = True
    link_sigma: float = 0.1
    link_fail_prob: float = 0.0
    link_recover_prob: float = 0.2
    servers: bool = False
    server_leave_prob: float = 0.0
    server_join_prob: float = 0.2
    demand: bool = True
    demand_sigma: float = 0.2
    task_mix: bool = True
    task_mix_sigma: float = 0.05
    theta: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(v, bool):
                    raise ValueError(f"dynamics.{f.name}={v!r} is not allowed; must be true/false")
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"dynamics.{f.name}={v!r} is not allowed; must be a number")
            if v < 0:
                raise ValueError(f"dynamics.{f.name}={v!r} is not allowed; must be >= 0")
        for name in ("background_mean", "background_max") + tuple(
            f.name for f in fields(self) if f.name.endswith("_prob")
        ):
            v = getattr(self, name)
            if v >= 1:
                raise ValueError(f"dynamics.{name}={v!r} is not allowed; must be in [0, 1)")
        if not 0 < self.theta <= 1:
            raise ValueError(f"dynamics.theta={self.theta!r} is not allowed; must be in (0, 1]")

    @classmethod
    def off(cls) -> DynamicsConfig:
        """Every process switched off: a static world."""
        return cls(background=False, links=False, servers=False, demand=False, task_mix=False)


@dataclass
class DynamicsState:
    """The mutable state of the processes (arrays, copied on step)."""

    background: np.ndarray  # [n] share of GPU time used by others
    link_scale: np.ndarray  # [n_links] bandwidth multiplier
    link_up: np.ndarray  # [n_links] bool
    server_up: np.ndarray  # [n] bool
    demand: np.ndarray  # [n] request-rate multiplier
    task_mix: np.ndarray  # [n, n_tasks] rows sum to 1

    def copy(self) -> DynamicsState:
        return DynamicsState(
            np.array(self.background),
            np.array(self.link_scale),
            np.array(self.link_up),
            np.array(self.server_up),
            np.array(self.demand),
            np.array(self.task_mix),
        )


class Dynamics:
    """Steps :class:`DynamicsState` forward, one epoch at a time."""

    def __init__(self, config: DynamicsConfig, n_servers: int, n_links: int, pinned: np.ndarray):
        """Args: ``pinned``: servers that never leave (the cloud)."""
        self.config = config
        self.n = n_servers
        self.n_links = n_links
        self.pinned = np.asarray(pinned, bool)

    PROCESSES = ("background", "links", "servers", "demand", "task_mix")

    def initial(self, task_mix: np.ndarray, rng: np.random.Generator) -> DynamicsState:
        """The state at reset; spawns one generator per process from ``rng``."""
        c = self.config
        self._rngs = dict(zip(self.PROCESSES, rng.spawn(len(self.PROCESSES)), strict=True))
        self._bufs: dict = {}
        return DynamicsState(
            background=np.full(self.n, c.background_mean if c.background else 0.0),
            link_scale=np.ones(self.n_links),
            link_up=np.ones(self.n_links, bool),
            server_up=np.ones(self.n, bool),
            demand=np.ones(self.n),
            task_mix=np.array(task_mix, float),
        )

    #: Epochs of draws taken from a process's generator at a time.
    CHUNK_EPOCHS = 64

    def _draw(self, process: str, kind: str, shape: tuple) -> np.ndarray:
        """The next epoch's standard normals (``kind="normal"``) or uniforms of one
        process, drawn :data:`CHUNK_EPOCHS` epochs at a time from its generator."""
        key = (process, kind)
        buf = self._bufs.get(key)
        if buf is None or buf[1] >= buf[0].shape[0]:
            rng = self._rngs[process]
            size = (self.CHUNK_EPOCHS, *shape)
            draws = rng.standard_normal(size) if kind == "normal" else rng.random(size)
            buf = self._bufs[key] = [draws, 0]
        buf[1] += 1
        return buf[0][buf[1] - 1]

    def _ou(
        self,
        x: np.ndarray,
        mu: float,
        sigma: float,
        process: str,
        low: float = -math.inf,
        high: float = math.inf,
    ) -> np.ndarray:
        """One exact Ornstein-Uhlenbeck step of ``x``, clipped to ``[low, high]``."""
        a = math.exp(-self.config.theta)
        noise = self._draw(process, "normal", x.shape)
        return ou_step(x, mu, a, sigma * math.sqrt(1 - a * a), noise, low, high)

    def step(self, s: DynamicsState) -> DynamicsState:
        """One epoch later (call :meth:`initial` first)."""
        c = self.config
        s = s.copy()
        if c.background:
            s.background = self._ou(
                s.background, c.background_mean, c.background_sigma, "background",
                0.0, c.background_max,
            )  # fmt: skip
        if c.links and self.n_links:
            s.link_scale = np.exp(self._ou(np.log(s.link_scale), 0.0, c.link_sigma, "links"))
            u = self._draw("links", "uniform", (self.n_links,))
            s.link_up = np.where(s.link_up, u >= c.link_fail_prob, u < c.link_recover_prob)
        if c.servers:
            u = self._draw("servers", "uniform", (self.n,))
            up = np.where(s.server_up, u >= c.server_leave_prob, u < c.server_join_prob)
            s.server_up = up | self.pinned
        if c.demand:
            s.demand = np.exp(self._ou(np.log(s.demand), 0.0, c.demand_sigma, "demand"))
        if c.task_mix:
            noise = self._draw("task_mix", "normal", s.task_mix.shape)
            w = s.task_mix * np.exp(c.task_mix_sigma * noise)
            s.task_mix = w / w.sum(axis=1, keepdims=True)
        return s
