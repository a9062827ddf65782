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

from coel_env.core.kernels.migration import (
    consume_kernel,
    copy_list_kernel,
    max_min_kernel,
    migration_kernel,
    stream_left_kernel,
    streams_kernel,
)
from coel_env.core.plan import ABSENT, GB, GPU, HOST, ModelPlan, Plan, dense_gb, expert_gb_table

#: ``updating.migration`` values (the first is the default).
MIGRATIONS = ("durable", "one_epoch")
#: ``updating.departed`` values (the first is the default).
DEPARTED = ("strip", "refuse")


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
        departed: what becomes of a new plan that names a server which leaves in the
            epoch it is sent (the controller decided while the server was present):
            ``strip`` (the default: it is deployed without that server's part, as the
            plan in force is when a server leaves) or ``refuse`` (the world before: the
            whole plan is refused and the plan in force stays). A plan that names a
            server which was already absent is refused either way.
    """

    migration: str = "durable"
    departed: str = "strip"

    def __post_init__(self) -> None:
        if self.migration not in MIGRATIONS:
            raise ValueError(
                f"updating.migration={self.migration!r} is not allowed; allowed: {MIGRATIONS}"
            )
        if self.departed not in DEPARTED:
            raise ValueError(
                f"updating.departed={self.departed!r} is not allowed; allowed: {DEPARTED}"
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

#: Layer and expert of a dense part among the copies in flight (:class:`Moves`; a copy is
#: known by its model, layer, expert and destination, see :func:`_copy_keys`).
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
        self._index: dict[str, int] = {}  # model name -> index in the copies' model column
        self._names: list[str] = []
        self.reset(None)

    def reset(self, plan: Plan | None) -> None:
        """Nothing in flight; ``plan`` is in force."""
        self.base = plan
        self.target = plan
        # the copies in flight, in the order they were asked for (one entry per copy):
        # model (index into ``_names``), layer, expert (both -1 for a dense part),
        # destination, source (-1: the store; the destination: a tier change), bytes,
        # bytes sent
        self._c = _no_copies()
        self.started_s = 0.0
        self._effective = plan

    @property
    def in_flight(self) -> int:
        """Copies under way."""
        return int(self._c["size"].size)

    @property
    def bytes_left(self) -> float:
        """Bytes still to send (summed copy by copy, in order)."""
        c = self._c
        if not c["size"].size:
            return 0.0
        return float(np.add.accumulate(c["size"] - c["sent"])[-1])

    def _model_index(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            i = self._index[name] = len(self._names)
            self._names.append(name)
        return i

    def retarget(
        self, current: Plan, target: Plan, latency_ms: np.ndarray, up: np.ndarray, t_s: float
    ) -> None:
        """Move from ``current`` (the plan serving now) to ``target``: the copies it
        needs, their sources chosen as :func:`migration_cost` chooses them; a copy that
        was already under way to the same place keeps the bytes it has sent."""
        alive = np.asarray(up, bool)
        down = ~alive
        old = self._c
        parts = []
        for name, mp in target.models.items():
            prev = current.models.get(name)
            if prev is mp and not (down.any() and (mp.location[:, :, down] != ABSENT).any()):
                continue
            m = self._model_index(name)
            old_homes = [h for h in prev.home if alive[h]] if prev is not None else []
            d_dst, d_src = [], []
            for h in mp.home:  # the dense part first: a new home serves once it lands
                if prev is not None and h in prev.home:
                    continue
                d_dst.append(h)
                d_src.append(min(old_homes, key=lambda o: latency_ms[o, h]) if old_homes else -1)
            if d_dst:
                k = len(d_dst)
                minus = np.full(k, _DENSE, np.int64)
                dense = np.full(k, dense_gb(name) * GB)
                parts.append((np.full(k, m, np.int64), minus, minus, np.array(d_dst, np.int64),
                              np.array(d_src, np.int64), dense))  # fmt: skip
            eb = expert_gb_table(name)[mp.bits] * GB
            if prev is None:
                old_loc = np.zeros_like(mp.location)
                old_bits = np.zeros_like(mp.bits)
            else:
                old_loc, old_bits = prev.location, prev.bits
            lay, exp, dst, src, size = copy_list_kernel(
                mp.location, mp.bits, old_loc, old_bits, alive, eb, latency_ms
            )
            if lay.size:
                parts.append((np.full(lay.size, m, np.int64), lay, exp, dst, src, size))
        if parts:
            cols = [np.concatenate(col) for col in zip(*parts, strict=True)]
            c = dict(zip(_FIELDS, cols, strict=True))
            c["sent"] = np.zeros(c["size"].size)
            if old["size"].size:  # a copy already under way keeps what it has sent
                k_old = _copy_keys(old)
                order = np.argsort(k_old, kind="stable")
                k_sorted = k_old[order]
                k_new = _copy_keys(c)
                pos = np.minimum(np.searchsorted(k_sorted, k_new), k_sorted.size - 1)
                was = order[pos]
                hit = (k_sorted[pos] == k_new) & (old["size"][was] == c["size"])
                c["sent"] = np.where(hit, np.minimum(old["sent"][was], c["size"]), 0.0)
        else:
            c = _no_copies()
        if not old["size"].size:
            self.started_s = t_s
        self.base = current
        self.target = target
        self._c = c
        if not c["size"].size:
            self.base = target
        self._effective = None

    def effective(self) -> Plan:
        """The plan serving now: the target, except that what has not landed is still
        served from where it was (see the module docstring)."""
        if self._effective is not None:
            return self._effective
        c = self._c
        if not c["size"].size:
            self._effective = self.target
            return self.target
        out = {}
        for name, mp in self.target.models.items():
            m = self._index.get(name)
            sel = c["model"] == m if m is not None else None
            if sel is None or not sel.any():
                out[name] = mp
                continue
            prev = self.base.models.get(name)
            lay, exp, dst = c["layer"][sel], c["expert"][sel], c["dst"][sel]
            is_dense = lay == _DENSE
            dense = set(dst[is_dense].tolist())
            li, ei, di = lay[~is_dense], exp[~is_dense], dst[~is_dense]
            loc = np.array(mp.location)
            bits = np.array(mp.bits)
            if li.size:
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
        c = self._c
        if not c["size"].size:
            return MoveStep(0.0, 0.0, np.zeros(n), 0.0, 0, 0, 0.0, None)
        # one stream per (source, destination, model), in the order of its first copy;
        # a stream sends its copies one after the other, in order
        heads, starts, members = streams_kernel(c["src"], c["dst"], c["model"], n,
                                                len(self._names))  # fmt: skip
        s_src, s_dst = c["src"][heads], c["dst"][heads]
        n_e = len(self._edge_gbit_s)
        cap = np.concatenate(
            (
                np.repeat(self._edge_gbit_s * link_scale * link_up, 2),  # both directions
                [self._store_gbit_s],
                np.where(np.isfinite(self._pcie_gbps), self._pcie_gbps * 8.0, np.inf),
            )
        )
        uses = []
        for src, dst in zip(s_src.tolist(), s_dst.tolist(), strict=True):
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
        use_starts, use_idx, movable = _uses_csr(uses)
        size, sent, dst_c = c["size"], c["sent"], c["dst"]
        is_pcie = s_src == s_dst
        done = np.zeros(size.size, bool)
        left = stream_left_kernel(starts, members, size, sent)
        t = 0.0
        live = left > 0
        while t < dt and live.any():
            rate = max_min_kernel(use_starts, use_idx, movable, cap, live) * 1e9 / 8.0  # B/s
            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.where(live & (rate > 0), left / rate, np.inf)
                step = min(float(need.min()), dt - t)
                if not np.isfinite(step):
                    break  # every stream waits
                sent_now = np.where(live, np.minimum(rate * step, left), 0.0)
            sent_now = np.where(np.isinf(rate) & live, left, sent_now)
            left = left - sent_now
            left[np.abs(left) < 1e-6] = 0.0
            net, pcie, k = consume_kernel(
                sent_now, is_pcie, starts, members, size, sent, done, dst_c, load_bytes,
                net, pcie,
            )  # fmt: skip
            landed += k
            t += step
            live = left > 0
        if landed:
            keep = ~done
            self._c = {key: col[keep] for key, col in c.items()}
            self._effective = None
        done_s = None
        if not self.in_flight:
            self.base = self.target
            done_s = t_s + t - self.started_s
        with np.errstate(invalid="ignore"):
            load_s = np.where(
                np.isfinite(self._pcie_gbps), load_bytes / (self._pcie_gbps * 1e9), 0.0
            )
        return MoveStep(net, pcie, load_s, t, landed, self.in_flight, self.bytes_left, done_s)


#: The columns of the copies in flight (:class:`Moves`), ``sent`` last.
_FIELDS = ("model", "layer", "expert", "dst", "src", "size")


def _no_copies() -> dict:
    ints = {k: np.zeros(0, np.int64) for k in _FIELDS[:-1]}
    return {**ints, "size": np.zeros(0), "sent": np.zeros(0)}


def _copy_keys(c: dict) -> np.ndarray:
    """One int64 per copy from (model, layer, expert, destination) (unique per copy)."""
    return (((c["model"] << 14) + (c["layer"] + 1)) << 18 | (c["expert"] + 1)) << 16 | c["dst"]


def _uses_csr(uses: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The streams' resource lists (None: the stream cannot move) as (starts, indices,
    movable) for :func:`max_min_kernel`."""
    movable = np.array([u is not None for u in uses], bool)
    starts = np.concatenate(([0], np.cumsum([0 if u is None else u.size for u in uses])))
    idx = np.concatenate([u for u in uses if u is not None] + [np.zeros(0, np.int64)])
    return starts.astype(np.int64), idx.astype(np.int64), movable


def _max_min(uses: list, cap: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Max-min fair rates of the live streams (progressive filling): each stream uses the
    resources listed in ``uses`` (None: it cannot move); a resource's capacity is shared
    equally by the unfrozen streams on it, the tightest resource first. A stream whose
    resources all have infinite capacity gets an infinite rate [Gbit/s] (compiled:
    :func:`max_min_kernel`)."""
    return max_min_kernel(*_uses_csr(uses), np.asarray(cap, float), np.asarray(live, bool))


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
