"""What a policy knows when it decides: the controller's broadcast view of the world
(:meth:`Observation.from_view`, stale and lossy) or the true state
(:meth:`Observation.from_truth`, an oracle), as structured arrays. The baselines, the
MILP and learned policies decide from it (``agents.base.Policy.act(world, obs)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coel_env.core.plan import Plan
from coel_env.core.world import STATUS_FIELDS, World


@dataclass(frozen=True)
class Observation:
    """What a policy knows when it decides (arrays indexed by server / model).

    Attributes:
        up: servers believed present [n] (bool).
        gpu_capacity_gb: GPU memory per server [n] (static, known to all).
        host_capacity_gb: host memory per server [n] (static).
        unified: servers whose GPU and host share memory [n] (static).
        background: believed background load per server [n] (0-1).
        demand_per_s: believed request rate per (server, model) [n, M] [1/s].
        popularity: popularity estimate per model [L, E] (mean over servers).
        latency_ms: path latency between servers [n, n] (current routing).
        bandwidth_gbit_s: path bottleneck bandwidth [n, n].
        age_s: age of the news per server [n] (0 for the oracle).
        plan: the plan in force.
        epoch: the epoch about to run.
    """

    up: np.ndarray
    gpu_capacity_gb: np.ndarray
    host_capacity_gb: np.ndarray
    unified: np.ndarray
    background: np.ndarray
    demand_per_s: np.ndarray
    popularity: dict[str, np.ndarray]
    latency_ms: np.ndarray
    bandwidth_gbit_s: np.ndarray
    age_s: np.ndarray
    plan: Plan
    epoch: int

    @classmethod
    def from_truth(cls, world: World) -> Observation:
        """The true state (an oracle)."""
        status = world.true_status()
        return cls._build(world, status, np.zeros(world.n))

    @classmethod
    def from_view(cls, world: World, controller: int = 0) -> Observation:
        """What ``controller`` last heard by broadcast (stale, lossy; unknown servers are
        taken as absent); with ``perception.sampling: sub_epoch`` the paths and the
        popularity too are as broadcast (:meth:`World.view_network
        <coel_env.core.world.World.view_network>`)."""
        status, age = world.view(controller)
        status = status.copy()
        unknown = ~np.isfinite(age)
        status[unknown, STATUS_FIELDS.index("up")] = 0.0
        network = None
        if world.scenario.perception.sampling != "epoch_end":
            network = world.view_network(controller)
        return cls._build(world, status, np.where(unknown, np.inf, age), network)

    @classmethod
    def _build(
        cls, world: World, status: np.ndarray, age: np.ndarray, network: tuple | None = None
    ) -> Observation:
        """``network``: (latency, bandwidth, popularity) as known; None: the truth."""
        if network is None:
            network = (
                world.paths.latency_ms,
                world.paths.bottleneck_gbit_s,
                world.popularity_estimate(),
            )
        latency, bandwidth, popularity = network
        base = len(STATUS_FIELDS)
        rates = np.maximum(world.base_rates_per_s, 0.0)[:, None]
        demand = status[:, base:] * np.where(rates > 0, rates, world.scenario.workload.rate_per_s)
        return cls(
            up=status[:, STATUS_FIELDS.index("up")] > 0.5,
            gpu_capacity_gb=world.gpu_capacity_gb.copy(),
            host_capacity_gb=world.host_capacity_gb.copy(),
            unified=world.unified.copy(),
            background=status[:, STATUS_FIELDS.index("background")].copy(),
            demand_per_s=demand,
            popularity=dict(popularity),
            latency_ms=np.array(latency),
            bandwidth_gbit_s=np.array(bandwidth),
            age_s=age,
            plan=world.plan,
            epoch=world.epoch,
        )
