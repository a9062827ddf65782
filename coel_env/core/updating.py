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

Each server is busy receiving for ``time_s``; the world reduces its serving
capacity in that epoch by the share of the epoch the migration takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coel_env.core.plan import ABSENT, GB, GPU, HOST, Plan, dense_gb, expert_gb_table


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
        if prev is mp and not (mp.location[:, :, down] != ABSENT).any():
            continue  # the same model plan, every holder present: nothing moves
        eb = expert_gb_table(name)[mp.bits] * GB  # [L, E] bytes at the new width
        new_loc = mp.location
        if prev is None:
            old_loc = np.zeros_like(new_loc)
            old_bits = np.zeros_like(mp.bits)
        else:
            old_loc, old_bits = prev.location, prev.bits
        held_new = new_loc != ABSENT
        held_old = (old_loc != ABSENT) & alive[None, None, :]
        enough = old_bits >= mp.bits  # an old copy can serve the new width
        local = held_old & enough[:, :, None]
        # 1) tier change on the same server: PCIe
        retier = held_new & local & (old_loc != new_loc)
        if retier.any():
            per_server = np.einsum("le,les->s", eb, retier.astype(float))
            pcie += float(per_server.sum())
            time_s += per_server / (pcie_gbps * 1e9)
            moved += int(retier.sum())
        # 2) copies from elsewhere: nearest holder with enough bits, else the store
        need = held_new & ~local
        if need.any():
            # nearest holder with enough bits per needed (expert, destination) only
            le, dst = np.nonzero(need.reshape(-1, n))
            holders = local.reshape(-1, n)[le]  # [k, src]
            cand = np.where(holders, latency_ms.T[dst], np.inf)
            src = cand.argmin(axis=1)
            src_ok = holders.any(axis=1)
            gbit = np.where(src_ok, bottleneck_gbit_s[src, dst], store_gbit_s)
            nbytes = eb.reshape(-1)[le]
            net += float(nbytes.sum())
            time_s += np.bincount(
                dst, weights=nbytes * 8 / (np.maximum(gbit, 1e-9) * 1e9), minlength=n
            )
            moved += int(le.size)
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


__all__ = ["GPU", "HOST", "MigrationReport", "migration_cost", "no_migration"]
