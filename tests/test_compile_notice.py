"""The first-run notice: printed once while numba compiles the kernels, not when their
on-disk cache is warm, and not for other code's numba functions."""

import os
import subprocess
import sys

import pytest

from coel_env.core.compile_notice import NOTICE

# two kernels (two compiles, one notice), then a numba function that is not the package's
CODE = """
import numpy as np
from numba import njit
from coel_env.core.kernels.dynamics import ou_step
from coel_env.core.kernels.summaries import p50_p95

x = np.zeros(3)
ou_step(x, 0.0, 0.9, 0.1, x, -1.0, 1.0)
p50_p95(np.arange(5.0))
print("kernels ran", flush=True)


@njit
def other(v):
    return v + 1


other(1)
"""


def _run(cache_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_notice_once_with_a_cold_cache_and_never_with_a_warm_one(tmp_path):
    cold = _run(tmp_path)
    assert cold.returncode == 0, cold.stderr[-3000:]
    assert cold.stderr.count(NOTICE) == 1, cold.stderr
    assert "kernels ran" in cold.stdout
    assert any(tmp_path.rglob("*.nbi"))  # the kernels were cached where we pointed numba
    warm = _run(tmp_path)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert NOTICE not in warm.stderr, warm.stderr
