"""The speed paths give exactly the results of the code they replace."""

from __future__ import annotations

import numpy as np
import pytest

from coel_env.core.kernels import activity_kernel, cost_kernel, table_kernel
from coel_env.core.world import World


@pytest.mark.parametrize("ns", [(1.0, 128.0, 2048.0), (2048.0, 3.0, 1.0, 100.5, 128.0), (4.0,)])
def test_cost_kernel_equals_activity_then_table(ns):
    world = World("default")
    world.reset(0)
    world.step()
    sm = world.serving
    for name, mp in world.plan.models.items():
        home = mp.home[0]
        paths = world.paths
        placed = sm._placement(mp, home, paths.latency_ms, world.dyn.server_up)
        q = sm.token_share(mp.spec, world._pop[name][home])
        k = np.asarray(ns)
        home_ms = np.linspace(1.0, 2.0, k.size)
        common = (
            mp.spec.n_moe_layers, sm._values, sm._slopes, placed.row, placed.fetch_ms,
            placed.server, home, world.n, 0.5 * mp.spec.d_model,
            paths.bottleneck_gbit_s[home], paths.latency_ms[home],
        )  # fmt: skip
        pa, ta, disp = activity_kernel(q, k, sm._values, sm._slopes, placed.disp_row)
        two_pass = (pa, ta, disp, *table_kernel(pa, ta, *common, disp, home_ms))
        fused = cost_kernel(
            q, k, sm._values, sm._slopes, placed.disp_row, *common[:1], *common[3:], home_ms
        )
        for a, b in zip(two_pass, fused, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
