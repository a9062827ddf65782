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

from coel_env.core.kernels.migration import migration_kernel
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


__all__ = ["GPU", "HOST", "MigrationReport", "migration_cost", "no_migration"]
