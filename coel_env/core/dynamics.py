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
  step (log-normal) and is renormalised, so the hot experts change;
* demand hot spots (off by default): ``hotspot_count`` areas of extra demand,
  each centred on an edge server and spreading to the servers within about
  ``hotspot_radius_km`` of it, which jump to a new centre with
  ``hotspot_move_prob`` per epoch (a crowd gathers elsewhere); centres are drawn
  in proportion to the users attached to each server when the topology has
  users (EUA), else uniformly; a crowd also loads the edge GPUs around it with
  its other traffic (``hotspot_background``: a share of GPU time added to the
  background load there);
* task cycle (off by default): every server's task mix is multiplied by a daily
  profile in which each task in turn is the hot one (period ``task_cycle_epochs``),
  so the hot experts move with the hour.

The two processes that are off by default draw from generators spawned only when
they are on, so a scenario without them keeps every draw it had before they existed.

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
        hotspots: moving demand hot spots on/off.
        hotspot_count: hot spots at a time (an integer >= 1).
        hotspot_gain: extra demand at a hot spot's centre, as a multiple of the
            server's demand (the multiplier there is ``1 + gain``).
        hotspot_radius_km: a hot spot's reach: a server ``d`` km from its centre gets
            ``gain * exp(-(d / radius)^2)`` extra.
        hotspot_move_prob: probability a hot spot jumps to a new centre in an epoch
            (mean dwell ``1 / hotspot_move_prob`` epochs).
        hotspot_background: share of GPU time the crowd's other traffic takes at a hot
            spot's centre (times the same reach; added to the background load, capped
            at ``background_max``).
        task_cycle: the daily task cycle on/off.
        task_cycle_epochs: its period [epochs].
        task_cycle_strength: how hot the hot task is: task ``k`` of ``T`` gets the
            weight ``exp(strength * cos(2 pi (t / period - k / T)))`` at epoch ``t``.
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
    hotspots: bool = False
    hotspot_count: int = 1
    hotspot_gain: float = 4.0
    hotspot_radius_km: float = 1.0
    hotspot_move_prob: float = 0.05
    hotspot_background: float = 0.0
    task_cycle: bool = False
    task_cycle_epochs: float = 100.0
    task_cycle_strength: float = 1.0

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
        if not isinstance(self.hotspot_count, int) or self.hotspot_count < 1:
            raise ValueError(
                f"dynamics.hotspot_count={self.hotspot_count!r} is not allowed; "
                "must be an integer >= 1"
            )
        if self.hotspot_background >= 1:
            raise ValueError(
                f"dynamics.hotspot_background={self.hotspot_background!r} is not allowed; "
                "must be in [0, 1)"
            )
        for name in ("hotspot_radius_km", "task_cycle_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"dynamics.{name}={getattr(self, name)!r} is not allowed; must be > 0"
                )

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
    # with hot spots: the demand level and background load of the OU processes alone
    # (``demand`` and ``background`` add the hot spots) and the hot spots' centre
    # servers; None without them
    demand_level: np.ndarray | None = None
    hotspot_centres: np.ndarray | None = None
    background_level: np.ndarray | None = None

    def copy(self) -> DynamicsState:
        return DynamicsState(
            np.array(self.background),
            np.array(self.link_scale),
            np.array(self.link_up),
            np.array(self.server_up),
            np.array(self.demand),
            np.array(self.task_mix),
            None if self.demand_level is None else np.array(self.demand_level),
            None if self.hotspot_centres is None else np.array(self.hotspot_centres),
            None if self.background_level is None else np.array(self.background_level),
        )


class Dynamics:
    """Steps :class:`DynamicsState` forward, one epoch at a time."""

    def __init__(
        self,
        config: DynamicsConfig,
        n_servers: int,
        n_links: int,
        pinned: np.ndarray,
        distance_km: np.ndarray | None = None,
        site_weight: np.ndarray | None = None,
    ):
        """Args: ``pinned``: servers that never leave (the cloud); ``distance_km``: the
        servers' distances [n, n] (hot spots; None: every other server is far);
        ``site_weight``: how likely each server is a hot spot's centre (None: every
        edge server alike; the cloud never is)."""
        self.config = config
        self.n = n_servers
        self.n_links = n_links
        self.pinned = np.asarray(pinned, bool)
        self._hot_reach = None
        self._site_p = None
        if config.hotspots:
            d = np.full((n_servers, n_servers), np.inf) if distance_km is None else distance_km
            d = np.where(np.eye(n_servers, dtype=bool), 0.0, np.asarray(d, float))
            # reach[c, i]: the extra demand share of server i when a hot spot is at c
            self._hot_reach = np.exp(-((d / config.hotspot_radius_km) ** 2))
            w = np.ones(n_servers) if site_weight is None else np.asarray(site_weight, float)
            w = np.where(self.pinned, 0.0, w)
            if not w.sum() > 0:  # no users anywhere: every edge server alike
                w = np.where(self.pinned, 0.0, 1.0)
            self._site_p = w / w.sum()

    PROCESSES = ("background", "links", "servers", "demand", "task_mix")

    def initial(self, task_mix: np.ndarray, rng: np.random.Generator) -> DynamicsState:
        """The state at reset; spawns one generator per process from ``rng``."""
        c = self.config
        self._rngs = dict(zip(self.PROCESSES, rng.spawn(len(self.PROCESSES)), strict=True))
        self._bufs: dict = {}
        self._epoch = 0
        self._n_tasks = np.shape(task_mix)[1]
        state = DynamicsState(
            background=np.full(self.n, c.background_mean if c.background else 0.0),
            link_scale=np.ones(self.n_links),
            link_up=np.ones(self.n_links, bool),
            server_up=np.ones(self.n, bool),
            demand=np.ones(self.n),
            task_mix=np.array(task_mix, float),
        )
        if c.hotspots:  # spawned after the others: their generators stay as they were
            self._rngs["hotspots"] = rng.spawn(1)[0]
            centres = self._rngs["hotspots"].choice(self.n, c.hotspot_count, p=self._site_p)
            state.hotspot_centres = centres.astype(np.int64)
            state.demand_level = state.demand
            state.demand = state.demand_level * self._hotspot_factor(state.hotspot_centres)
            state.background_level = state.background
            state.background = self._crowd_load(state.background, state.hotspot_centres)
        if c.task_cycle:
            w = state.task_mix * self._cycle(0)
            state.task_mix = w / w.sum(axis=1, keepdims=True)
        return state

    def _hotspot_factor(self, centres: np.ndarray) -> np.ndarray:
        """The hot spots' demand multiplier per server [n] (1 at the cloud)."""
        extra = self._hot_reach[centres].sum(axis=0) * self.config.hotspot_gain
        return np.where(self.pinned, 1.0, 1.0 + extra)

    def _crowd_load(self, level: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """The background load with the crowds' other traffic added (capped)."""
        c = self.config
        if not c.hotspot_background:
            return level
        extra = self._hot_reach[centres].sum(axis=0) * c.hotspot_background
        return np.minimum(level + np.where(self.pinned, 0.0, extra), c.background_max)

    def _cycle(self, epoch: int) -> np.ndarray:
        """The task cycle's weight of each task at ``epoch`` [n_tasks] (the hot one first
        at epoch 0)."""
        c = self.config
        n_t = self._n_tasks
        phase = epoch / c.task_cycle_epochs - np.arange(n_t) / n_t
        return np.exp(c.task_cycle_strength * np.cos(2.0 * math.pi * phase))

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
        if c.hotspots:  # the OU process runs on the level without the crowds' load
            s.background = s.background_level
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
        if c.hotspots:
            level = s.demand_level
            if c.demand:
                level = np.exp(self._ou(np.log(level), 0.0, c.demand_sigma, "demand"))
            u = self._draw("hotspots", "uniform", (c.hotspot_count,))
            moved = u < c.hotspot_move_prob
            if moved.any():
                new = self._rngs["hotspots"].choice(self.n, int(moved.sum()), p=self._site_p)
                s.hotspot_centres[moved] = new
            s.demand_level = level
            s.demand = level * self._hotspot_factor(s.hotspot_centres)
            s.background_level = s.background
            s.background = self._crowd_load(s.background, s.hotspot_centres)
        elif c.demand:
            s.demand = np.exp(self._ou(np.log(s.demand), 0.0, c.demand_sigma, "demand"))
        if c.task_mix:
            noise = self._draw("task_mix", "normal", s.task_mix.shape)
            w = s.task_mix * np.exp(c.task_mix_sigma * noise)
            s.task_mix = w / w.sum(axis=1, keepdims=True)
        self._epoch += 1
        if c.task_cycle:  # the profile's step since the last epoch
            w = s.task_mix * (self._cycle(self._epoch) / self._cycle(self._epoch - 1))
            s.task_mix = w / w.sum(axis=1, keepdims=True)
        return s
