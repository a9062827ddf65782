"""Observation encoding: the controller's broadcast view, popularity estimates, the plan.

A flat ``Box(0, 1, (dim,), float32)``, every entry normalised and finite:

1. per server ``s`` (``n`` blocks of ``len(STATUS_FIELDS) + n_models + 3``),
   as the controller last heard it (stale, possibly lost; its own entry is
   fresh): free GPU and host memory shares, utilisation, dropped share,
   background load, present, mean link bandwidth multiplier / 2, demand per
   model / (5 x the base rate), then the age of that news / (5 broadcast
   periods), a "heard at all" flag and an "is the controller" flag; values are
   clipped to [0, 1];
2. per model: the share of routed tokens each popularity group gets (mean over
   layers and servers, ``n_groups`` values), then the plan in force: a one-hot
   of its home (first home), per group the mean bit width / 16, the share on
   the GPU and the share away from the home (``3 x n_groups`` values), its
   token keep ratio and a "deployed" flag;
3. the episode's progress (epoch / ``max_steps``).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from coel_env.core.plan import ABSENT, GPU
from coel_env.core.world import STATUS_FIELDS, World
from coel_env.envs.actions import group_of

AGE_PERIODS = 5.0  # ages are normalised by this many broadcast periods
DEMAND_SCALE = 5.0  # demand is normalised by this multiple of the base rate


class ViewObservation:
    """Builds the observation vector of one controller server (layout: module doc)."""

    def __init__(self, world: World, controller: int, n_groups: int, max_steps: int) -> None:
        self.world = world
        self.controller = controller
        self.n_groups = n_groups
        self.max_steps = max(1, max_steps)
        n, m = world.n, len(world.models)
        self.per_server = len(STATUS_FIELDS) + m + 3
        self.per_model = n_groups + n + 3 * n_groups + 2
        self.dim = n * self.per_server + m * self.per_model + 1
        self._period = world.scenario.perception.period_s
        base = len(STATUS_FIELDS)
        self._scale = np.ones(base + m)
        self._scale[STATUS_FIELDS.index("link_scale")] = 2.0
        self._scale[base:] = DEMAND_SCALE

    def space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.dim,), np.float32)

    def popularity(self) -> dict[str, np.ndarray]:
        """The controller's popularity estimate per model [L, E] (mean over servers)."""
        return {name: pop.mean(axis=0) for name, pop in self.world._pop.items()}

    def observe(self, popularity: dict[str, np.ndarray]) -> np.ndarray:
        w = self.world
        status, age = w.view(self.controller)
        heard = np.isfinite(age)
        age_n = np.where(heard, np.clip(age / (AGE_PERIODS * self._period), 0.0, 1.0), 1.0)
        srv = np.clip(status / self._scale, 0.0, 1.0)
        ctrl = np.zeros(w.n)
        ctrl[self.controller] = 1.0
        parts = [np.column_stack([srv, age_n, heard, ctrl]).ravel()]
        g = self.n_groups
        for name, m in zip(w.models, w.specs, strict=True):
            pop = popularity[name]
            groups = group_of(pop, g)
            share = np.array([pop[groups == k].sum() for k in range(g)]) / m.n_moe_layers
            mp = w.plan.models.get(name)
            home = np.zeros(w.n)
            bits = np.zeros(g)
            on_gpu = np.zeros(g)
            away = np.zeros(g)
            keep, deployed = 0.0, 0.0
            if mp is not None:
                h = mp.home[0]
                home[h] = 1.0
                held = mp.location != ABSENT
                for k in range(g):
                    sel = groups == k
                    bits[k] = mp.bits[sel].mean() / 16.0
                    on_gpu[k] = (mp.location[sel] == GPU).any(axis=1).mean()
                    away[k] = (~held[sel][:, h]).mean()
                keep, deployed = mp.keep_ratio, 1.0
            parts.append(np.concatenate([share, home, bits, on_gpu, away, [keep, deployed]]))
        parts.append([min(w.epoch / self.max_steps, 1.0)])
        obs = np.concatenate(parts).astype(np.float32)
        return np.clip(np.nan_to_num(obs, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
