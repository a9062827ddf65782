"""Action encodings: factored discrete spaces decoded into deployment plans.

Experts are handled in *popularity groups*: in every MoE layer the experts are
ranked by the controller's popularity estimate and cut into ``n_groups``
groups of equal size (group 0 the most popular). A decision about a group
applies to its experts in every layer.

Three encodings, one per environment (each a ``MultiDiscrete``; fields per
model, models in scenario order):

* :class:`IntraDeviceAction` (one server): ``[resident, bits_0..bits_{G-1},
  host_policy]``: ``resident`` in 0..8 keeps the top ``resident/8`` of each
  layer's experts (by popularity) in GPU memory and the rest in host memory;
  ``bits_g`` indexes :data:`BITS`; ``host_policy`` runs host-memory experts on
  the host CPU (0) or fetches them over PCIe (1).
* :class:`InterDeviceAction` (several servers): ``[home, spread, place_0..,
  replicate, bits_0.., keep, host_policy]``: the dense part runs on ``home``;
  ``spread`` 0 keeps every group on the home, 1 puts group ``g`` on the
  ``place_g``-th nearest server to the home (0 = the home itself);
  ``replicate`` 1 also keeps a copy of every remote group on the home; ``keep``
  indexes :data:`~coel_env.core.plan.KEEP_RATIOS`. On every server, experts
  fill GPU memory in popularity order, the rest go to host memory.
* :class:`CoELAction`: ``[update]`` + the inter-device fields; ``update`` 0
  keeps the plan in force (nothing else is read), 1 adjusts it (bits, keep
  ratio and host policy change, placement stays), 2 redeploys it.
* :class:`HomeSetAction` (version 1 of the inter-device envs): as
  :class:`InterDeviceAction` but ``home`` is replaced by one flag per server,
  ``[home_0..home_{n-1}, spread, place_0.., replicate, bits_0.., keep,
  host_policy]``: every flagged server runs the dense part (requests go to the
  nearest one, as the world routes them) and ``spread``/``place``/``replicate``
  apply to each home in turn. An empty set of homes is an invalid action.
* :class:`CoELSetAction` (``CoEL-v1``): ``[update]`` + the home-set fields.

A decoded plan that does not fit (checked against the *true* capacities by
the world) is an invalid action: see the environments' docstrings.
``mask()`` returns the sb3-contrib ``action_masks()`` layout: one boolean per
choice of every field, concatenated; masked choices cannot fit whatever the
other fields say. ``names()`` names every field (``model[olmoe-1b-7b].bits[g1]``)
and ``choice_names()`` every choice of each field, in the mask's order.
"""

from __future__ import annotations

import numpy as np

from coel_env.catalog import BITS
from coel_env.core.groups import groups_of_estimate, popularity_order
from coel_env.core.kernels.placement import fill_tiers, place_homes
from coel_env.core.plan import (
    GB,
    GPU,
    HOST,
    KEEP_RATIOS,
    InfeasibilityReport,
    ModelPlan,
    Plan,
    Violation,
    dense_gb,
    expert_gb_table,
)

RESIDENT_LEVELS = 9  # resident share 0/8 .. 8/8
N_NEAREST = 4  # placement choices: the home and its 3 nearest servers
#: Labels of ``host_policy``'s choices: run host-memory experts on the host CPU (0) or
#: copy them to the GPU over PCIe (1).
HOST_POLICIES = ("cpu", "fetch")


def _no_home(name: str) -> InfeasibilityReport:
    return InfeasibilityReport(
        (Violation("no_home", None, name, f"{name}: no server is chosen as a home"),)
    )


class _Base:
    """Shared pieces: sizes of models and the world's capacities."""

    def __init__(self, world, n_groups: int, controller: int = 0) -> None:
        self.world = world
        self.n_groups = n_groups
        self.controller = controller  # whose view of the paths ranks "nearest" servers
        self.n = world.n
        self.models = world.models
        self.specs = world.specs

    def field_specs(self) -> list[tuple[str, list[str]]]:
        """(name, a label per choice) of each field of one model, in the order and with
        the sizes of :meth:`fields`."""
        raise NotImplementedError

    def names(self) -> list[str]:
        """The name of every action field, ``model[<model>].<field>``, in order."""
        specs = self.field_specs()
        return [f"model[{m}].{name}" for m in self.models for name, _ in specs]

    def choice_names(self) -> list[list[str]]:
        """Per action field, a label for each of its choices (flattened: the layout of
        ``mask()``)."""
        specs = self.field_specs()
        return [list(labels) for _ in self.models for _, labels in specs]

    def _group_specs(self, field: str, labels: list[str]) -> list[tuple[str, list[str]]]:
        return [(f"{field}[g{g}]", labels) for g in range(self.n_groups)]

    def _dense_gb(self, i: int) -> float:
        return dense_gb(self.models[i]) + self.world.kv_reserve_gb[self.models[i]]

    def _expert_gb(self, i: int, bits: int) -> float:
        return self.specs[i].expert_bytes(bits) / GB


class IntraDeviceAction(_Base):
    """One server: GPU residency by popularity, bits per group, host policy."""

    def fields(self) -> list[int]:
        return [RESIDENT_LEVELS] + [len(BITS)] * self.n_groups + [2]

    def field_specs(self) -> list[tuple[str, list[str]]]:
        resident = [f"{k}/{RESIDENT_LEVELS - 1}" for k in range(RESIDENT_LEVELS)]
        return (
            [("resident", resident)]
            + self._group_specs("bits", [str(b) for b in BITS])
            + [("host_policy", list(HOST_POLICIES))]
        )

    def space_nvec(self) -> np.ndarray:
        return np.array(self.fields() * len(self.models), np.int64)

    def decode(self, action: np.ndarray, prev: Plan, popularity: dict) -> Plan:
        w = self.world
        k = len(self.fields())
        out = {}
        for i, name in enumerate(self.models):
            a = action[i * k : (i + 1) * k]
            m = self.specs[i]
            pop = popularity[name]
            groups = groups_of_estimate(pop, self.n_groups)
            bits = np.asarray(BITS)[a[1 : 1 + self.n_groups]][groups].astype(np.int8)
            rank_share = (np.argsort(np.argsort(-pop, axis=1), axis=1) + 0.5) / m.n_experts
            resident = rank_share < a[0] / (RESIDENT_LEVELS - 1)
            loc = np.zeros((m.n_moe_layers, m.n_experts, self.n), np.int8)
            loc[:, :, 0] = np.where(resident, GPU, HOST)
            if w.unified[0]:
                loc[:, :, 0] = GPU
            policy = np.full(m.n_moe_layers, a[-1], np.int8)
            out[name] = ModelPlan(name, loc, bits, (0,), policy)
        return Plan(out)

    def mask(self) -> np.ndarray:
        """Residency levels whose GPU share cannot fit even at 2 bits are masked."""
        w = self.world
        parts = []
        free = w.gpu_capacity_gb[0] - sum(self._dense_gb(i) for i in range(len(self.models)))
        for i in range(len(self.models)):
            m = self.specs[i]
            min_gb = m.n_moe_layers * m.n_experts * self._expert_gb(i, 2)
            levels = np.arange(RESIDENT_LEVELS) / (RESIDENT_LEVELS - 1)
            ok = levels * min_gb <= free + 1e-9
            ok[0] = True
            parts += [ok] + [np.ones(len(BITS), bool)] * self.n_groups + [np.ones(2, bool)]
        return np.concatenate(parts)


class InterDeviceAction(_Base):
    """Several servers: home, spread, group placement, replication, bits, keep ratio."""

    def fields(self) -> list[int]:
        g = self.n_groups
        return [self.n, 2] + [N_NEAREST] * g + [2] + [len(BITS)] * g + [len(KEEP_RATIOS), 2]

    def field_specs(self) -> list[tuple[str, list[str]]]:
        place = ["home"] + [f"nearest[{k}]" for k in range(1, N_NEAREST)]
        return (
            [("home", [f"server[{s}]" for s in range(self.n)]), ("spread", ["home", "spread"])]
            + self._group_specs("place", place)
            + [("replicate", ["no", "yes"])]
            + self._group_specs("bits", [str(b) for b in BITS])
            + [("keep", [str(r) for r in KEEP_RATIOS]), ("host_policy", list(HOST_POLICIES))]
        )

    def space_nvec(self) -> np.ndarray:
        return np.array(self.fields() * len(self.models), np.int64)

    def _nearest(self) -> np.ndarray:
        """Per home, its ``N_NEAREST`` nearest servers by path latency as the controller
        knows it (:meth:`World.view_paths <coel_env.core.world.World.view_paths>`: the
        paths in force, or as broadcast under ``perception.sampling: sub_epoch``)."""
        paths = self.world.view_paths(self.controller)
        hit = self.__dict__.get("_near")
        if hit is not None and hit[0] is paths:
            return hit[1]
        order = np.argsort(paths.latency_ms, axis=1, kind="stable")  # self first (latency 0)
        idx = np.minimum(np.arange(N_NEAREST), self.n - 1)
        self._near = (paths, order[:, idx])
        return self._near[1]

    def decode_model(
        self, i: int, a: np.ndarray, popularity: np.ndarray, free: np.ndarray
    ) -> ModelPlan:
        return self._deploy(i, (int(a[0]),), a[1:], popularity, free)

    def _deploy(
        self, i: int, homes, rest: np.ndarray, popularity: np.ndarray, free: np.ndarray
    ) -> ModelPlan:
        """Model ``i`` with its dense part on each of ``homes``, from the fields after
        ``home``: ``[spread, place x n_groups, replicate, bits x n_groups, keep,
        host_policy]`` (placement relative to each home); takes its GPU memory off
        ``free``."""
        g = self.n_groups
        name, m = self.models[i], self.specs[i]
        spread = int(rest[0])
        place = rest[1 : 1 + g]
        replicate = int(rest[1 + g])
        bit_idx = rest[2 + g : 2 + 2 * g]
        keep = KEEP_RATIOS[int(rest[2 + 2 * g])]
        policy = int(rest[3 + 2 * g])
        groups = groups_of_estimate(popularity, g)
        bits = np.asarray(BITS)[bit_idx][groups].astype(np.int8)
        loc = np.zeros((m.n_moe_layers, m.n_experts, self.n), np.int8)
        home_arr = np.asarray(homes, np.int64)
        place_homes(
            loc, groups, self._nearest(), np.asarray(place, np.int64), home_arr, spread, replicate
        )
        free[home_arr] -= self._dense_gb(i)  # homes are distinct: one subtraction each
        self._fill_tiers(loc, bits, popularity, free, i)
        pol = np.full(m.n_moe_layers, policy, np.int8)
        return ModelPlan(name, loc, bits, tuple(int(h) for h in homes), pol, keep)

    def _fill_tiers(self, loc, bits, popularity, free, i) -> None:
        """On each server holding experts: GPU in popularity order while it fits, then host."""
        layers, experts = popularity_order(popularity)
        fill_tiers(
            loc, bits, layers, experts, expert_gb_table(self.models[i]), free, self.world.unified
        )

    def decode(self, action: np.ndarray, prev: Plan, popularity: dict) -> Plan:
        k = len(self.fields())
        free = self.world.gpu_capacity_gb.copy()
        out = {}
        for i, name in enumerate(self.models):
            a = np.asarray(action[i * k : (i + 1) * k])
            out[name] = self.decode_model(i, a, popularity[name], free)
        return Plan(out)

    def mask(self) -> np.ndarray:
        """Homes that cannot hold the model's dense part are masked."""
        w = self.world
        parts = []
        for i in range(len(self.models)):
            ok_home = (w.gpu_capacity_gb >= self._dense_gb(i)) & ~w.is_cloud | w.is_cloud
            ok_home &= w.dyn.server_up
            if not ok_home.any():
                ok_home[:] = True
            parts.append(ok_home)
            parts.append(self._open_tail())
        return np.concatenate(parts)

    def _open_tail(self) -> np.ndarray:
        """All-allowed flags of the inter-device fields after ``home`` (constant)."""
        tail = self.__dict__.get("_tail")
        if tail is None:
            tail = self._tail = np.ones(sum(InterDeviceAction.fields(self)[1:]), bool)
        return tail


class _WithUpdate:
    """``[update]`` (keep / adjust / redeploy) in front of each model's fields of the
    encoding it is mixed into; shared by :class:`CoELAction` and :class:`CoELSetAction`."""

    KEEP, ADJUST, REDEPLOY = 0, 1, 2

    def fields(self) -> list[int]:
        return [3] + super().fields()

    def field_specs(self) -> list[tuple[str, list[str]]]:
        return [("update", ["keep", "adjust", "redeploy"])] + super().field_specs()

    def _adjusted(
        self, i: int, old: ModelPlan, rest: np.ndarray, popularity, homes=None
    ) -> ModelPlan:
        """``old`` with the bits, keep ratio and host policy of ``rest`` (the fields after
        ``update``; they start at :meth:`_adjust_at` as ``[bits x n_groups, keep,
        host_policy]``); the placement stays, and so do the homes unless ``homes``."""
        g = self.n_groups
        tail = rest[self._adjust_at() :]
        groups = groups_of_estimate(popularity, g)
        bits = np.asarray(BITS)[tail[:g]][groups].astype(np.int8)
        keep = KEEP_RATIOS[int(tail[g])]
        pol = np.full(self.specs[i].n_moe_layers, int(tail[g + 1]), np.int8)
        home = old.home if homes is None else homes
        return ModelPlan(old.model, old.location, bits, home, pol, keep)

    def _adjust_at(self) -> int:
        """Where ``[bits x n_groups, keep, host_policy]`` start after ``update``."""
        raise NotImplementedError

    def decode(self, action: np.ndarray, prev: Plan, popularity: dict):
        """Per model: ``keep`` the plan in force, ``adjust`` it, or ``redeploy`` (the
        encoding's own ``decode_model``); an :class:`InfeasibilityReport` when a
        redeploy decodes to no plan at all."""
        k = len(self.fields())
        free = self.world.gpu_capacity_gb.copy()
        out = {}
        for i, name in enumerate(self.models):
            a = np.asarray(action[i * k : (i + 1) * k])
            update, rest = int(a[0]), a[1:]
            old = prev.models.get(name)
            if update == self.KEEP and old is not None:
                out[name] = old
                continue
            if update == self.ADJUST and old is not None:
                mp = self._adjusted(i, old, rest, popularity[name])
                if isinstance(mp, InfeasibilityReport):
                    return mp
                out[name] = mp
                continue
            mp = self.decode_model(i, rest, popularity[name], free)
            if isinstance(mp, InfeasibilityReport):
                return mp
            out[name] = mp
        return Plan(out)

    def mask(self) -> np.ndarray:
        inner = super().mask()
        k = int(np.sum(super().fields()))
        parts = []
        for i in range(len(self.models)):
            has = self.models[i] in self.world.plan.models
            parts.append(np.array([has, has, True]))
            parts.append(inner[i * k : (i + 1) * k])
        return np.concatenate(parts)


class CoELAction(_WithUpdate, InterDeviceAction):
    """``[update]`` (keep / adjust / redeploy) followed by the inter-device fields."""

    def _adjust_at(self) -> int:
        return 3 + self.n_groups  # home, spread, place x G, replicate


class HomeSetAction(InterDeviceAction):
    """Several servers: a *set* of homes (one flag per server), then as
    :class:`InterDeviceAction` for each home."""

    def fields(self) -> list[int]:
        return [2] * self.n + InterDeviceAction.fields(self)[1:]

    def field_specs(self) -> list[tuple[str, list[str]]]:
        flags = [(f"home[{s}]", ["no", "yes"]) for s in range(self.n)]
        return flags + InterDeviceAction.field_specs(self)[1:]

    def decode_model(
        self, i: int, a: np.ndarray, popularity: np.ndarray, free: np.ndarray
    ) -> ModelPlan | InfeasibilityReport:
        n, name = self.n, self.models[i]
        homes = np.flatnonzero(a[:n])
        if homes.size == 0:
            return _no_home(name)
        return self._deploy(i, homes, a[n:], popularity, free)

    def encode(self, plan: Plan | None, prev: Plan, popularity: dict) -> np.ndarray:
        """The action whose decoding comes closest to ``plan`` (None: the plan in force,
        ``prev``), model by model with :meth:`encode_model`."""
        out = []
        for name in self.models:
            mp = (plan.models.get(name) if plan is not None else None) or prev.models[name]
            out.append(self.encode_model(mp, popularity[name]))
        return np.concatenate(out)

    def decode(self, action: np.ndarray, prev: Plan, popularity: dict):
        k = len(self.fields())
        free = self.world.gpu_capacity_gb.copy()
        out = {}
        for i, name in enumerate(self.models):
            mp = self.decode_model(
                i, np.asarray(action[i * k : (i + 1) * k]), popularity[name], free
            )
            if isinstance(mp, InfeasibilityReport):
                return mp
            out[name] = mp
        return Plan(out)

    def encode_model(self, mp: ModelPlan, popularity: np.ndarray) -> np.ndarray:
        """The home-set fields whose decoding comes closest to ``mp`` (for imitation of
        plans made by other policies): its homes; ``spread`` when some home lacks a
        group or another server holds some, each group then placed on the server (by
        nearness rank to the first home) holding most of it, ``replicate`` when the
        homes hold everything as well;
        per group the most common bit width (by this popularity estimate's groups);
        the keep ratio nearest to the plan's; the most common host policy."""
        n, g = self.n, self.n_groups
        groups = groups_of_estimate(popularity, g)
        held = mp.location > 0  # [L, E, n]
        a = np.zeros(len(HomeSetAction.fields(self)), np.int64)
        a[list(mp.home)] = 1
        rest = a[n:]
        whole = all(bool(held[:, :, h].all()) for h in mp.home)
        others = np.ones(n, bool)
        others[list(mp.home)] = False
        if not whole or held[:, :, others].any():  # some group lives off a home
            rest[0] = 1
            rest[1 + g] = int(whole)  # homes keep everything: the rest are replicas
            near = self._nearest()[mp.home[0]]
            for grp in range(g):
                on = held[groups == grp].sum(axis=0).astype(float)  # its experts per server
                on_near = on[near]
                if whole:
                    on_near[0] = -1.0  # the home's own copy is the replica
                rest[1 + grp] = int(np.argmax(on_near)) if on_near.max() > 0 else 0
        bits = np.asarray(BITS)
        for grp in range(g):
            vals, counts = np.unique(mp.bits[groups == grp], return_counts=True)
            rest[2 + g + grp] = int(np.flatnonzero(bits == vals[np.argmax(counts)])[0])
        rest[2 + 2 * g] = int(np.argmin(np.abs(np.asarray(KEEP_RATIOS) - mp.keep_ratio)))
        rest[3 + 2 * g] = int(np.bincount(mp.host_policy.astype(np.int64), minlength=2).argmax())
        return a

    def mask(self) -> np.ndarray:
        """Servers that cannot hold the model's dense part (or are absent) cannot be
        homes (the flag's "1" is masked)."""
        inner = InterDeviceAction.mask(self)
        k = int(np.sum(InterDeviceAction.fields(self)))
        parts = []
        for i in range(len(self.models)):
            ok_home = inner[i * k : i * k + self.n]
            flags = np.ones((self.n, 2), bool)
            flags[:, 1] = ok_home
            parts.append(flags.ravel())
            parts.append(inner[i * k + self.n : (i + 1) * k])
        return np.concatenate(parts)


class CoELSetAction(_WithUpdate, HomeSetAction):
    """``[update]`` (keep / adjust / redeploy) followed by the home-set fields."""

    def _adjust_at(self) -> int:
        return self.n + 2 + self.n_groups  # home flags, spread, place x G, replicate

    def encode(self, plan: Plan | None, prev: Plan, popularity: dict) -> np.ndarray:
        """The action that comes closest to moving from ``prev`` to ``plan`` (None: keep
        everything): ``keep`` for a model whose plan does not change, else ``redeploy``
        with :meth:`HomeSetAction.encode_model`'s fields.

        After ``keep`` (which reads nothing else) the fields describe the plan in force,
        as a redeploy of it would: so in demonstrations the fields always name the plan
        that should be in force, and only ``update`` says whether to deploy it (a clone
        then learns one meaning per field instead of "zeros when keeping")."""
        out = []
        for name in self.models:
            new = None if plan is None else plan.models.get(name)
            old = prev.models.get(name)
            if new is None or (old is not None and (old is new or old == new)):
                fields = (
                    self.encode_model(old, popularity[name])
                    if old is not None
                    else np.zeros(len(self.fields()) - 1, np.int64)
                )
                out.append(np.r_[self.KEEP, fields])
                continue
            out.append(np.r_[self.REDEPLOY, self.encode_model(new, popularity[name])])
        return np.concatenate(out)


class CoELSetActionV2(CoELSetAction):
    """``CoEL-v2``: :class:`CoELSetAction` whose ``adjust`` also sets the *homes* from
    the home flags: the flagged servers run the dense part (a new home receives it),
    every expert copy stays where it is, and bits, keep ratio and host policy change
    as in version 1. A home without a copy of some expert uses the nearest server
    that has one, as for a spread placement. An empty set of homes is an invalid
    action, as for a redeploy. So a home on a server that becomes loaded can be
    dropped (and later taken back) without moving experts, which a version-1
    redeploy (placement derived anew from the homes and the popularity) cannot do."""

    def _adjusted(
        self, i: int, old: ModelPlan, rest: np.ndarray, popularity, homes=None
    ) -> ModelPlan | InfeasibilityReport:
        flagged = np.flatnonzero(rest[: self.n])
        if flagged.size == 0:
            return _no_home(self.models[i])
        return super()._adjusted(i, old, rest, popularity, tuple(int(h) for h in flagged))

    def encode(self, plan: Plan | None, prev: Plan, popularity: dict) -> np.ndarray:
        """As :meth:`CoELSetAction.encode`, except that a change which keeps the
        placement (every copy on the same server and tier: only homes, bits, keep
        ratio or host policy change) is an ``adjust``."""
        out = super().encode(plan, prev, popularity)
        k = len(self.fields())
        for i, name in enumerate(self.models):
            new = None if plan is None else plan.models.get(name)
            old = prev.models.get(name)
            if out[i * k] != self.REDEPLOY or new is None or old is None:
                continue
            if np.array_equal(new.location, old.location):
                out[i * k] = self.ADJUST
        return out
