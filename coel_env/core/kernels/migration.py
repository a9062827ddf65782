"""Migration kernel (numba): the expert copies of one model plan change
(:mod:`coel_env.core.updating`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def migration_kernel(
    new_loc, new_bits, old_loc, old_bits, alive, expert_bytes, latency_ms, bottleneck_gbit_s,
    pcie_gbps, store_gbit_s, time_s,
):  # fmt: skip
    """Expert copies of one model plan change (see :func:`coel_env.core.updating.migration_cost`).

    An expert whose old copy on a present server has enough bits only changes tier
    there (PCIe); any other new copy comes from the nearest present holder with enough
    bits, else from the store. Adds each server's receiving time to ``time_s``.

    Returns:
        (PCIe bytes, network bytes, copies moved).
    """
    n_l, n_e, n = new_loc.shape
    pcie = np.zeros(n)
    net = 0.0
    moved = 0
    for layer in range(n_l):
        for e in range(n_e):
            b_new = new_bits[layer, e]
            enough = old_bits[layer, e] >= b_new
            w = expert_bytes[layer, e]
            for dst in range(n):
                if new_loc[layer, e, dst] == 0:
                    continue
                if enough and alive[dst] and old_loc[layer, e, dst] != 0:
                    if old_loc[layer, e, dst] != new_loc[layer, e, dst]:
                        pcie[dst] += w
                        moved += 1
                    continue
                src = -1
                best = np.inf
                if enough:
                    for s in range(n):
                        if old_loc[layer, e, s] != 0 and alive[s] and latency_ms[s, dst] < best:
                            best = latency_ms[s, dst]
                            src = s
                    if src < 0:  # a holder at infinite latency is still a holder
                        for s in range(n):
                            if old_loc[layer, e, s] != 0 and alive[s]:
                                src = s
                                break
                gbit = bottleneck_gbit_s[src, dst] if src >= 0 else store_gbit_s
                net += w
                time_s[dst] += w * 8 / (max(gbit, 1e-9) * 1e9)
                moved += 1
    total_pcie = 0.0
    for s in range(n):
        if pcie[s] > 0:
            total_pcie += pcie[s]
            time_s[s] += pcie[s] / (pcie_gbps[s] * 1e9)
    return total_pcie, net, moved
