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

:meth:`ViewObservation.names` names every entry in this order (e.g.
``server[2].free_gpu_share``, ``model[olmoe-1b-7b].group[0].token_share``,
``progress``).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from coel_env.core.groups import groups_of_estimate
from coel_env.core.kernels.summaries import group_summary, unit_float32
from coel_env.core.world import STATUS_FIELDS, World

AGE_PERIODS = 5.0  # ages are normalised by this many broadcast periods
DEMAND_SCALE = 5.0  # demand is normalised by this multiple of the base rate
#: The name of each broadcast status field in :meth:`ViewObservation.names` (the world's
#: ``STATUS_FIELDS`` are internal; these say what the normalised value is).
STATUS_NAMES = {
    "free_gpu_frac": "free_gpu_share",
    "free_host_frac": "free_host_share",
    "utilisation": "utilisation",
    "dropped_frac": "dropped_share",
    "background": "background_load",
    "up": "present",
    "link_scale": "link_bandwidth",  # mean link bandwidth multiplier / 2
}


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
        self._out = np.zeros(self.dim)
        self._parts: dict = {}

    def space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.dim,), np.float32)

    def names(self) -> list[str]:
        """The name of every observation entry, in order (``len == dim``).

        Per server ``s``: ``server[s].<status>`` for each broadcast status field
        (:data:`STATUS_NAMES`), ``server[s].demand[<model>]``, ``server[s].age``,
        ``server[s].heard``, ``server[s].is_controller``. Per model ``M``:
        ``model[M].group[g].token_share``, ``model[M].home[s]``,
        ``model[M].group[g].mean_bits`` (mean bit width / 16),
        ``model[M].group[g].gpu_share``, ``model[M].group[g].away_share`` (share not
        held by the first home), ``model[M].keep_ratio``, ``model[M].deployed``. Last,
        ``progress``.
        """
        w = self.world
        status = [STATUS_NAMES[f] for f in STATUS_FIELDS]
        per_server = status + [f"demand[{m}]" for m in w.models] + ["age", "heard"]
        per_server.append("is_controller")
        out = [f"server[{s}].{f}" for s in range(w.n) for f in per_server]
        groups = range(self.n_groups)
        for m in w.models:
            p = f"model[{m}]"
            out += [f"{p}.group[{g}].token_share" for g in groups]
            out += [f"{p}.home[{s}]" for s in range(w.n)]
            for what in ("mean_bits", "gpu_share", "away_share"):  # group_summary's rows
                out += [f"{p}.group[{g}].{what}" for g in groups]
            out += [f"{p}.keep_ratio", f"{p}.deployed"]
        out.append("progress")
        return out

    def popularity(self) -> dict[str, np.ndarray]:
        """The controller's popularity estimate per model [L, E] (mean over servers): the
        world's estimate, or as broadcast under ``perception.sampling: sub_epoch``
        (:meth:`World.view_network <coel_env.core.world.World.view_network>`)."""
        return self.world.view_network(self.controller)[2]

    def observe(self, popularity: dict[str, np.ndarray]) -> np.ndarray:
        w = self.world
        n, per = w.n, self.per_server
        out = self._out
        status, age = w.view(self.controller)
        heard = np.isfinite(age)
        srv = out[: n * per].reshape(n, per)
        np.divide(status, self._scale, out=srv[:, : per - 3])
        srv[:, per - 3] = np.where(
            heard, np.clip(age / (AGE_PERIODS * self._period), 0.0, 1.0), 1.0
        )
        srv[:, per - 2] = heard
        srv[:, per - 1] = 0.0
        srv[self.controller, per - 1] = 1.0
        at = n * per
        for name in w.models:
            out[at : at + self.per_model] = self._model_part(name, popularity[name])
            at += self.per_model
        out[at] = min(w.epoch / self.max_steps, 1.0)
        return unit_float32(out)  # finite, in [0, 1]

    def _model_part(self, name: str, pop: np.ndarray) -> np.ndarray:
        """Popularity shares per group and the plan in force (cached while both are the
        same objects: plans are immutable and the popularity estimate is replaced, not
        changed, when it moves)."""
        w = self.world
        mp = w.plan.models.get(name)
        hit = self._parts.get(name)
        if hit is not None and hit[0] is pop and hit[1] is mp:
            return hit[2]
        g = self.n_groups
        groups = groups_of_estimate(pop, g)
        part = np.zeros(self.per_model)
        if mp is None:
            n_layers = pop.shape[0]
            part[:g] = np.bincount(groups.ravel(), weights=pop.ravel(), minlength=g) / n_layers
        else:
            h = mp.home[0]
            summary = group_summary(groups, pop, mp.bits, mp.location, h, g)
            part[:g] = summary[0]
            part[g + h] = 1.0
            at = g + w.n
            part[at : at + 3 * g] = summary[1:].ravel()
            part[-2:] = (mp.keep_ratio, 1.0)
        self._parts[name] = (pop, mp, part)
        return part


class HomeSetObservation(ViewObservation):
    """:class:`ViewObservation` whose plan part flags *every* home of a model (the
    version-1 envs, whose actions choose a set of homes), not only the first."""

    def _model_part(self, name: str, pop: np.ndarray) -> np.ndarray:
        part = super()._model_part(name, pop)
        mp = self.world.plan.models.get(name)
        if mp is None or len(mp.home) == 1:
            return part
        homes = self.__dict__.setdefault("_homes", {})
        hit = homes.get(name)
        if hit is not None and hit[0] is part:  # the parent's cache entry is unchanged
            return hit[1]
        flagged = part.copy()  # the parent's cached array stays as it is
        flagged[self.n_groups + np.asarray(mp.home)] = 1.0
        homes[name] = (part, flagged)
        return flagged
