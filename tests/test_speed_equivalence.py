"""The speed paths give exactly the results of the code they replace."""

from __future__ import annotations

import numpy as np
import pytest

from coel_env.core.kernels import activity_kernel, cost_kernel, p50_p95, table_kernel
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


def _p50_p95_python(x: np.ndarray) -> tuple[float, float]:
    """The percentiles as the world computed them in Python (numpy's formula)."""
    n = x.size
    s = np.sort(x).tolist()
    out = []
    for q in (0.5, 0.95):
        v = q * (n - 1)
        i = int(v)
        g = v - i
        a, b = s[i], s[min(i + 1, n - 1)]
        d = b - a
        out.append(b - d * (1 - g) if g >= 0.5 else a + d * g)
    return out[0], out[1]


def test_compiled_percentiles_equal_the_python_ones():
    rng = np.random.default_rng(0)
    for n in [*range(1, 40), 100, 1001]:
        x = rng.lognormal(5.0, 2.0, n)
        got = p50_p95(x)
        assert got == _p50_p95_python(x)
        assert got == tuple(np.percentile(x, (50, 95)).tolist())
