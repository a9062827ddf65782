"""Fixtures shared by the test modules."""

import pytest


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
