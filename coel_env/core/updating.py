"""Updating: what it costs to move from one deployment plan to the next.

When the plan changes, weights move:

* an expert that a server did not hold (or held at fewer bits: a lower-bit
  copy cannot be turned back into a higher-bit one) is copied over the network
  from the nearest server that holds it at enough bits in the old plan, or from
  the model store when none does (the cloud over its WAN link if there is one,
  else a store at ``store_gbit_s``);
* an expert that only changes tier on the same server crosses its PCIe link
  (none on unified memory);
* an expert kept at fewer bits is re-quantized in place (no transfer; the
  compute is small next to the copies and is not charged);
* a new home server receives the model's dense part (non-expert weights).

How long the copies take is ``updating.migration`` (:class:`UpdatingConfig`):

* ``one_epoch`` (the world before the fidelity round): each server is busy receiving for ``time_s``;
  the world reduces its serving capacity in that epoch by the share of the epoch the migration takes
  (at most the whole epoch), and the new plan serves at once;
* ``durable`` (the default; :class:`Moves`): the copies run until they are done, over as many
  epochs as they take; the copies of one model from one source to one destination
  form a stream that sends them one after the other (the dense part first), and the
  streams under way share the bandwidth of every link direction on their paths, of
  the model store and of the PCIe links (max-min fair shares, recomputed whenever a
  stream finishes). Until a copy lands, the expert is
  served from where it was: its old copies stay in memory and in service (at the old
  bit width) and a new home takes requests only once its dense part has landed (the old
  homes serve meanwhile); an expert whose old copies were all on servers that left is
  unavailable until its copy lands (its model's requests are dropped). The price is
  that serving: remote experts' activation traffic and latency, the old copies' memory
  (not checked against capacity while in flight), drops; and each server loses the
  share of the epoch its PCIe link spends writing what lands (tier changes included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coel_env.core.kernels.migration import copy_list_kernel, migration_kernel
from coel_env.core.plan import ABSENT, GB, GPU, HOST, ModelPlan, Plan, dense_gb, expert_gb_table

#: ``updating.migration`` values (the first is the default).
MIGRATIONS = ("durable", "one_epoch")


@dataclass(frozen=True)
class UpdatingConfig:
    """How plan changes are carried out.

    Attributes:
        migration: ``durable`` (the default: a move runs
            until its bytes are through, sharing link, store and PCIe bandwidth with the
            other moves, while the moved experts serve from their old place; see
            :mod:`coel_env.core.updating`) or ``one_epoch`` (the world before the
            fidelity round: a move costs at most one epoch of serving capacity and the new
            plan serves at once).
    """

    migration: str = "durable"

    def __post_init__(self) -> None:
        if self.migration not in MIGRATIONS:
            raise ValueError(
                f"updating.migration={self.migration!r} is not allowed; allowed: {MIGRATIONS}"
            )


@dataclass(frozen=True)
class MigrationReport:
    """Cost of one plan change.

    Attributes:
        network_bytes: bytes sent between servers (and from the store).
        pcie_bytes: bytes moved between host and GPU memory within servers.
        time_s: seconds each server spends receiving weights [n_servers].
        experts_moved: expert copies created or re-tiered.
    """

    network_bytes: float
    pcie_bytes: float
    time_s: np.ndarray
    experts_moved: int

    @property
    def changed(self) -> bool:
        return self.experts_moved > 0 or self.network_bytes > 0


def no_migration(n_servers: int) -> MigrationReport:
    return MigrationReport(0.0, 0.0, np.zeros(n_servers), 0)


def migration_cost(
    old: Plan | None,
    new: Plan,
    *,
    latency_ms: np.ndarray,
    bottleneck_gbit_s: np.ndarray,
    pcie_gbps: np.ndarray,
    store_gbit_s: float,
    up: np.ndarray | None = None,
) -> MigrationReport:
    """Bytes and time to move from ``old`` to ``new`` (``old=None``: initial deployment).

    Args:
        old: the plan in force (None: nothing deployed yet).
        new: the plan to deploy.
        latency_ms: path latency between servers [n, n] (chooses the nearest source).
        bottleneck_gbit_s: path bandwidth between servers [n, n] [Gbit/s].
        pcie_gbps: host->GPU bandwidth per server [GB/s]; inf on unified memory.
        store_gbit_s: bandwidth from the model store to any server [Gbit/s].
        up: present servers; an absent server is no source.

    Returns:
        A :class:`MigrationReport`.
    """
    n = latency_ms.shape[0]
    alive = np.ones(n, bool) if up is None else np.asarray(up, bool)
    time_s = np.zeros(n)
    net = pcie = 0.0
    moved = 0
    down = ~alive
    for name, mp in new.models.items():
        prev = old.models.get(name) if old is not None else None
        if prev is mp and not (down.any() and (mp.location[:, :, down] != ABSENT).any()):
            continue  # the same model plan, every holder present: nothing moves
        eb = expert_gb_table(name)[mp.bits] * GB  # [L, E] bytes at the new width
        if prev is None:
            old_loc = np.zeros_like(mp.location)
            old_bits = np.zeros_like(mp.bits)
        else:
            old_loc, old_bits = prev.location, prev.bits
        # 1) tier change on the same server: PCIe; 2) copies from elsewhere: the nearest
        # present holder with enough bits, else the store (one compiled loop)
        p_bytes, n_bytes, k = migration_kernel(
            mp.location, mp.bits, old_loc, old_bits, alive, eb, latency_ms,
            bottleneck_gbit_s, np.asarray(pcie_gbps, float), float(store_gbit_s), time_s,
        )  # fmt: skip
        pcie += p_bytes
        net += n_bytes
        moved += k
        # 3) dense part on new homes
        old_homes = set(prev.home) if prev is not None else set()
        dense = dense_gb(name) * GB
        for h in mp.home:
            if h in old_homes:
                continue
            srcs = [o for o in old_homes if alive[o]]
            if srcs:
                src = min(srcs, key=lambda o: latency_ms[o, h])
                gbit = bottleneck_gbit_s[src, h]
            else:
                gbit = store_gbit_s
            net += dense
            time_s[h] += dense * 8 / (max(gbit, 1e-9) * 1e9)
    return MigrationReport(net, pcie, time_s, moved)


# --------------------------------------------------------------------- durable migration

#: Key of a copy in flight: (model, layer, expert, destination); a dense part has layer
#: and expert -1.
_DENSE = -1


@dataclass(frozen=True)
class MoveStep:
    """What one epoch of :meth:`Moves.advance` moved.

    Attributes:
        network_bytes: bytes sent between servers and from the store in the epoch.
        pcie_bytes: bytes of tier changes moved over PCIe in the epoch.
        load_s: seconds each server's PCIe link spent writing what landed [n] (serving
            capacity the move takes).
        active_s: how long copies were under way in the epoch [s].
        landed: copies that landed in the epoch.
        in_flight: copies still under way at the epoch's end.
        bytes_left: their bytes still to send.
        done_s: when the last copies of a move landed in this epoch: how long the move
            took since it was requested [s] (None otherwise).
    """

    network_bytes: float
    pcie_bytes: float
    load_s: np.ndarray
    active_s: float
    landed: int
    in_flight: int
    bytes_left: float
    done_s: float | None


class Moves:
    """Copies in flight between plans (``updating.migration: durable``; see the module
    docstring).

    Args:
        n: servers.
        edges: the topology's links ``(u, v)``, ``u < v``, in its order.
        edge_gbit_s: each link's bandwidth [Gbit/s].
        pcie_gbps: host-to-GPU bandwidth per server [GB/s] (inf on unified memory).
        store_gbit_s: the model store's bandwidth, shared by all its downloads [Gbit/s].
    """

    def __init__(
        self,
        n: int,
        edges,
        edge_gbit_s: np.ndarray,
        pcie_gbps: np.ndarray,
        store_gbit_s: float,
    ) -> None:
        self.n = n
        self._edge = {(int(u), int(v)): i for i, (u, v) in enumerate(edges)}
        self._edge_gbit_s = np.asarray(edge_gbit_s, float)
        self._pcie_gbps = np.asarray(pcie_gbps, float)
        self._store_gbit_s = float(store_gbit_s)
        self.reset(None)

    def reset(self, plan: Plan | None) -> None:
        """Nothing in flight; ``plan`` is in force."""
        self.base = plan
        self.target = plan
        self.copies: dict = {}  # key -> [source, destination, bytes, bytes sent]
        self.started_s = 0.0
        self._effective = plan

    @property
    def in_flight(self) -> int:
        """Copies under way."""
        return len(self.copies)

    @property
    def bytes_left(self) -> float:
        """Bytes still to send."""
        return float(sum(c[2] - c[3] for c in self.copies.values()))

    def retarget(
        self, current: Plan, target: Plan, latency_ms: np.ndarray, up: np.ndarray, t_s: float
    ) -> None:
        """Move from ``current`` (the plan serving now) to ``target``: the copies it
        needs, their sources chosen as :func:`migration_cost` chooses them; a copy that
        was already under way to the same place keeps the bytes it has sent."""
        alive = np.asarray(up, bool)
        down = ~alive
        old = self.copies
        copies: dict = {}
        for name, mp in target.models.items():
            prev = current.models.get(name)
            if prev is mp and not (down.any() and (mp.location[:, :, down] != ABSENT).any()):
                continue
            old_homes = [h for h in prev.home if alive[h]] if prev is not None else []
            for h in mp.home:  # the dense part first: a new home serves once it lands
                if prev is not None and h in prev.home:
                    continue
                src = min(old_homes, key=lambda o: latency_ms[o, h]) if old_homes else -1
                self._add(copies, old, (name, _DENSE, _DENSE, h), src, h, dense_gb(name) * GB)
            eb = expert_gb_table(name)[mp.bits] * GB
            if prev is None:
                old_loc = np.zeros_like(mp.location)
                old_bits = np.zeros_like(mp.bits)
            else:
                old_loc, old_bits = prev.location, prev.bits
            lay, exp, dst, src, size = copy_list_kernel(
                mp.location, mp.bits, old_loc, old_bits, alive, eb, latency_ms
            )
            for k in range(lay.size):
                key = (name, int(lay[k]), int(exp[k]), int(dst[k]))
                self._add(copies, old, key, int(src[k]), int(dst[k]), float(size[k]))
        if not old:
            self.started_s = t_s
        self.base = current
        self.target = target
        self.copies = copies
        if not copies:
            self.base = target
        self._effective = None

    @staticmethod
    def _add(copies: dict, old: dict, key: tuple, src: int, dst: int, size: float) -> None:
        was = old.get(key)
        sent = min(was[3], size) if was is not None and was[2] == size else 0.0
        copies[key] = [src, dst, size, sent]

    def effective(self) -> Plan:
        """The plan serving now: the target, except that what has not landed is still
        served from where it was (see the module docstring)."""
        if self._effective is not None:
            return self._effective
        if not self.copies:
            self._effective = self.target
            return self.target
        pend: dict = {}
        for name, lay, exp, dst in self.copies:
            pend.setdefault(name, []).append((lay, exp, dst))
        out = {}
        for name, mp in self.target.models.items():
            keys = pend.get(name)
            if not keys:
                out[name] = mp
                continue
            prev = self.base.models.get(name)
            dense = {d for lay, _, d in keys if lay == _DENSE}
            exp_keys = np.array([k for k in keys if k[0] != _DENSE], np.int64).reshape(-1, 3)
            loc = np.array(mp.location)
            bits = np.array(mp.bits)
            if exp_keys.size:
                li, ei, di = exp_keys.T
                loc[li, ei, di] = prev.location[li, ei, di] if prev is not None else ABSENT
                if prev is not None:  # the old copies serve until the new ones land
                    moving = np.zeros(bits.shape, bool)
                    moving[li, ei] = True
                    old = prev.location
                    keep = moving[:, :, None] & (loc == ABSENT) & (old != ABSENT)
                    loc = np.where(keep, old, loc)
                    bits = np.where(moving & (old != ABSENT).any(axis=2), prev.bits, bits)
            homes = [h for h in mp.home if h not in dense]
            if dense and prev is not None:  # the old homes serve until the new ones land
                homes += [h for h in prev.home if h not in mp.home]
            if homes:
                out[name] = ModelPlan(name, loc, bits, tuple(homes), mp.host_policy, mp.keep_ratio)
        self._effective = Plan(out)
        return self._effective

    def advance(self, dt: float, paths, link_scale: np.ndarray, link_up: np.ndarray,
                t_s: float) -> MoveStep:  # fmt: skip
        """Send for ``dt`` seconds over ``paths`` (the routing in force, with the links'
        bandwidth multipliers and state): max-min fair rates over link directions, the
        store and PCIe links, recomputed whenever a stream finishes; ``t_s``: the
        epoch's start."""
        n = self.n
        load_bytes = np.zeros(n)
        net = pcie = 0.0
        landed = 0
        if not self.copies:
            return MoveStep(0.0, 0.0, np.zeros(n), 0.0, 0, 0, 0.0, None)
        streams: dict = {}  # one stream per (source, destination, model)
        for key, c in self.copies.items():
            streams.setdefault((c[0], c[1], key[0]), []).append(key)
        keys = list(streams)
        n_e = len(self._edge_gbit_s)
        cap = np.concatenate(
            (
                np.repeat(self._edge_gbit_s * link_scale * link_up, 2),  # both directions
                [self._store_gbit_s],
                np.where(np.isfinite(self._pcie_gbps), self._pcie_gbps * 8.0, np.inf),
            )
        )
        uses = []
        for src, dst, _ in keys:
            if src == dst:  # a tier change: the server's PCIe link
                uses.append(np.array([2 * n_e + 1 + dst], np.int64))
            elif src < 0:
                uses.append(np.array([2 * n_e], np.int64))
            else:
                hops = paths.path(src, dst)
                if not hops:  # unreachable: the stream waits
                    uses.append(None)
                    continue
                res = [2 * self._edge[(min(u, v), max(u, v))] + (u > v)
                       for u, v in zip(hops[:-1], hops[1:], strict=True)]  # fmt: skip
                uses.append(np.array(res, np.int64))
        left = np.array([sum(self.copies[k][2] - self.copies[k][3] for k in streams[s])
                         for s in keys])  # fmt: skip
        t = 0.0
        live = left > 0
        while t < dt and live.any():
            rate = _max_min(uses, cap, live) * 1e9 / 8.0  # bytes/s
            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.where(live & (rate > 0), left / rate, np.inf)
                step = min(float(need.min()), dt - t)
                if not np.isfinite(step):
                    break  # every stream waits
                sent = np.where(live, np.minimum(rate * step, left), 0.0)
            sent = np.where(np.isinf(rate) & live, left, sent)
            left = left - sent
            left[np.abs(left) < 1e-6] = 0.0
            for j in np.flatnonzero(sent > 0):
                src, dst, _ = keys[j]
                amount = float(sent[j])
                if src == dst:
                    pcie += amount
                else:
                    net += amount
                for key in streams[keys[j]]:  # the stream's copies, one after the other
                    c = self.copies.get(key)
                    if c is None:
                        continue
                    take = min(amount, c[2] - c[3])
                    c[3] += take
                    amount -= take
                    if c[2] - c[3] <= 1e-6:
                        load_bytes[dst] += c[2]
                        del self.copies[key]
                        landed += 1
                    if amount <= 0:
                        break
            t += step
            live = left > 0
        if landed:
            self._effective = None
        done_s = None
        if not self.copies:
            self.base = self.target
            done_s = t_s + t - self.started_s
        with np.errstate(invalid="ignore"):
            load_s = np.where(
                np.isfinite(self._pcie_gbps), load_bytes / (self._pcie_gbps * 1e9), 0.0
            )
        return MoveStep(net, pcie, load_s, t, landed, len(self.copies), self.bytes_left, done_s)


def _max_min(uses: list, cap: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Max-min fair rates of the live streams (progressive filling): each stream uses the
    resources listed in ``uses`` (None: it cannot move); a resource's capacity is shared
    equally by the unfrozen streams on it, the tightest resource first. A stream whose
    resources all have infinite capacity gets an infinite rate [Gbit/s]."""
    k = len(uses)
    rate = np.zeros(k)
    free = cap.astype(float).copy()
    todo = [j for j in range(k) if live[j] and uses[j] is not None]
    while todo:
        count = np.zeros(free.size)
        for j in todo:
            count[uses[j]] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(count > 0, free / count, np.inf)
        r = int(np.argmin(share))
        s = float(share[r])
        if not np.isfinite(s):  # only unlimited resources left
            for j in todo:
                rate[j] = np.inf
            break
        s = max(s, 0.0)
        rest = []
        for j in todo:
            if r in uses[j]:
                rate[j] = s
                free[uses[j]] -= s
            else:
                rest.append(j)
        todo = rest
    return rate


__all__ = [
    "GPU",
    "HOST",
    "MIGRATIONS",
    "MigrationReport",
    "MoveStep",
    "Moves",
    "UpdatingConfig",
    "migration_cost",
    "no_migration",
]
