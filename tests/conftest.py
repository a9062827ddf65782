"""Fixtures shared by the test modules."""

import os
from pathlib import Path

import pytest

# The public data sets sit in ../shared/data beside a checkout of this repository (CI
# lays them there); the package reads them only through COEL_DATA, as a user's does.
os.environ.setdefault("COEL_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def _has_avx512() -> bool:
    try:
        return " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


# Tests that compare outputs bit for bit (tests/data/episode_digests*.json, the published
# policies' committed returns) were recorded with OpenBLAS's SkylakeX kernels (its own
# choice on an Intel CPU with AVX-512). Other kernels round sums differently and change
# every digest: OpenBLAS's Zen kernels on an AMD CPU, or a kernel forced by the machine's
# environment (OPENBLAS_CORETYPE=Haswell, seen on a development machine). Pin the
# recorded kernels wherever the CPU runs them; OpenBLAS reads this when numpy first loads
# it, which nothing has done yet here. CPUs without AVX-512 keep what they are given.
if _has_avx512():
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(n)``: Ctrl-C (KeyboardInterrupt) when the harness starts its ``n``-th
    episode from now on (calling it again starts the count anew)."""
    from agents import harness

    real = harness.run_episode

    def arm(n: int) -> None:
        calls = []

        def episode(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(harness, "run_episode", episode)

    return arm


@pytest.fixture
def clean_user_registry():
    """The test starts and ends with the user-profile registry as it found it."""
    from coel_env import profiles

    saved = dict(profiles._USER)
    yield
    profiles._USER.clear()
    profiles._USER.update(saved)
