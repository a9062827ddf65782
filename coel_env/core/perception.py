"""Perception: servers broadcast their status to neighbours and keep stale views.

Every ``period_s`` each present server sends a status message (a vector of
resource figures: free GPU and host memory, utilisation, queue, link state,
hosted experts, demand per model, and each model's requirements) to every
present server within ``hops`` hops. A message arrives after the path's
latency and is lost with probability ``loss_prob``; each observer keeps, per
source, the newest status it has received and the time it was sent. The age of
what observer ``o`` knows about ``s`` is ``now - sent_time``: without losses it
never exceeds ``period_s`` plus the path latency (tested).

What a message carries is ``sampling`` (:class:`PerceptionConfig`): ``epoch_end``
(the default) gives every message sent in an epoch the status at the epoch's end, so a
view is stale only by losses and messages in flight; ``sub_epoch`` gives a message the
sender's status at the moment it was sent, taken between the status at the end of the
last epoch and at the end of this one (linear in the time within the epoch: the status
figures are epoch aggregates), so the newest message of an epoch, sent before its end,
already differs from the truth.

Bytes are counted on links: a message of ``message_bytes`` crossing ``k`` hops
loads ``k`` links, so a round costs ``message_bytes * sum(hops)`` link-bytes.

All arrays are dense ``[observer, source]`` numpy arrays, walked epoch by epoch
in one compiled loop (:func:`coel_env.core.kernels.perception.broadcast_rounds`); messages
still in flight at the end of an epoch
are kept (one slot per pair; a newer message supersedes an older one still in
flight, which would otherwise arrive later than it and carry older news).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coel_env.core.kernels.perception import broadcast_rounds

#: ``perception.sampling`` values (the first is the default).
SAMPLING = ("sub_epoch", "epoch_end")


@dataclass(frozen=True)
class PerceptionConfig:
    """Broadcast settings.

    Attributes:
        period_s: time between two broadcasts of a server [s].
        hops: radius of a broadcast [network hops], >= 1.
        loss_prob: probability that one message is lost, in [0, 1).
        header_bytes: bytes of a message besides its fields (IP/UDP headers: 28,
            plus an 8-byte timestamp and 4-byte sender id; our framing).
        sampling: what a message carries: ``sub_epoch`` (the default: the status at the moment it is
            sent, interpolated within the epoch) or ``epoch_end`` (the world before the fidelity
            round: the status at the end of the epoch it is sent in); with ``sub_epoch`` a policy
            deciding from a view also sees the path latency, bandwidth and expert popularity as of
            its news (``World.view_network``), not the truth.
        timeout_periods: a heartbeat failure detector: a server not heard from for more
            than this many broadcast periods (``timeout_periods * period_s`` seconds) is
            believed absent in the views (:meth:`World.view
            <coel_env.core.world.World.view>`), though its last message is kept. Our
            choice of 5: about Kubernetes' default node grace period (40 s over 10 s
            status updates, 4 periods), and with 1-2% loss five messages in a row are
            lost about once in 10^8-10^10 periods. ``None``: never (the world before,
            where a server that left stayed "up" in every view that had heard of it).
    """

    period_s: float = 1.0
    hops: int = 2
    loss_prob: float = 0.0
    header_bytes: int = 40
    sampling: str = "sub_epoch"
    timeout_periods: float | None = 5.0

    def __post_init__(self) -> None:
        if not (isinstance(self.period_s, int | float) and math.isfinite(self.period_s)):
            raise ValueError(f"period_s={self.period_s!r} is not allowed; must be a number > 0")
        if self.period_s <= 0:
            raise ValueError(f"period_s={self.period_s!r} is not allowed; must be > 0")
        if isinstance(self.hops, bool) or not isinstance(self.hops, int) or self.hops < 1:
            raise ValueError(f"hops={self.hops!r} is not allowed; must be an integer >= 1")
        if not (0.0 <= self.loss_prob < 1.0):
            raise ValueError(f"loss_prob={self.loss_prob!r} is not allowed; must be in [0, 1)")
        if self.header_bytes < 0:
            raise ValueError(f"header_bytes={self.header_bytes!r} is not allowed; must be >= 0")
        if self.sampling not in SAMPLING:
            raise ValueError(
                f"perception.sampling={self.sampling!r} is not allowed; allowed: {SAMPLING}"
            )
        t = self.timeout_periods
        if t is not None and not (
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) and t >= 1
        ):
            raise ValueError(
                f"perception.timeout_periods={t!r} is not allowed; must be a number >= 1 "
                "(broadcast periods) or null (never time out)"
            )

    @property
    def timeout_s(self) -> float:
        """Seconds of silence after which a server is believed absent (inf: never)."""
        return math.inf if self.timeout_periods is None else self.timeout_periods * self.period_s


class Perception:
    """Broadcast views of ``n`` servers over fixed path latencies and hop counts.

    Args:
        config: broadcast settings.
        latency_ms: one-way path latency [n, n] (inf where unreachable).
        hops: hop counts [n, n].
        n_fields: length of a status vector.
        field_bytes: bytes of the status fields of one message.
    """

    def __init__(
        self,
        config: PerceptionConfig,
        latency_ms: np.ndarray,
        hops: np.ndarray,
        n_fields: int,
        field_bytes: int,
    ) -> None:
        lat = np.asarray(latency_ms, float)
        hp = np.asarray(hops, float)
        if lat.ndim != 2 or lat.shape[0] != lat.shape[1] or hp.shape != lat.shape:
            raise ValueError(f"latency_ms {lat.shape} and hops {hp.shape} must be equal [n, n]")
        self.config = config
        self.n = lat.shape[0]
        self.n_fields = int(n_fields)
        self.message_bytes = int(config.header_bytes + field_bytes)
        self.set_paths(lat, hp)
        self.reset()

    def set_paths(self, latency_ms: np.ndarray, hops: np.ndarray) -> None:
        """New path latencies and hop counts (links degraded, failed or recovered)."""
        self._lat_s = np.asarray(latency_ms, float) / 1000.0
        self._hops = np.asarray(hops, float)
        reach = (self._hops <= self.config.hops) & np.isfinite(self._lat_s)
        np.fill_diagonal(reach, False)
        self._reach = reach  # [observer, source] (paths are symmetric)

    def reset(self) -> None:
        """Forget everything: each server knows only itself."""
        n, f = self.n, self.n_fields
        self.status = np.zeros((n, n, f))
        self.sent_s = np.full((n, n), -np.inf)
        self._fl_status = np.zeros((n, n, f))
        self._fl_sent = np.full((n, n), -np.inf)
        self._fl_arrive = np.full((n, n), np.inf)
        self._next_round_s = 0.0
        self._last_truth = None  # the status at the end of the last epoch (sub_epoch)
        self._last_t = 0.0

    def advance(
        self, t1_s: float, truth: np.ndarray, rng: np.random.Generator, up: np.ndarray | None = None
    ) -> float:
        """Run every broadcast round up to ``t1_s`` and deliver what has arrived.

        Args:
            t1_s: end of the epoch [s].
            truth: the true status vectors [n, n_fields] during this epoch.
            rng: random generator for message loss.
            up: which servers are present (absent ones neither send nor receive).

        Returns:
            Link-bytes of the broadcasts sent in this epoch.
        """
        truth = np.asarray(truth, float)
        if truth.shape != (self.n, self.n_fields):
            raise ValueError(f"truth has shape {truth.shape}; expected {(self.n, self.n_fields)}")
        alive = np.ones(self.n, bool) if up is None else np.asarray(up, bool)
        period = self.config.period_s
        times = []
        t = self._next_round_s
        while t < t1_s:
            times.append(t)
            t += period
        self._next_round_s = t
        rounds = np.asarray(times, float)
        truth0, weight = truth, np.zeros(0)
        if self.config.sampling == "sub_epoch":
            if self._last_truth is not None and t1_s > self._last_t:
                truth0 = self._last_truth
                weight = np.clip((rounds - self._last_t) / (t1_s - self._last_t), 0.0, 1.0)
            self._last_truth = truth.copy()
            self._last_t = t1_s
        lost = np.zeros((0, self.n, self.n), bool)
        if times and self.config.loss_prob > 0:  # same draws as one (n, n) draw per round
            lost = rng.random((len(times), self.n, self.n)) < self.config.loss_prob
        # messages still in flight from earlier epochs are older than any sent now
        msgs = broadcast_rounds(
            rounds, t1_s, self._reach, alive, self._lat_s, self._hops, lost, truth, truth0,
            weight, self.status, self.sent_s, self._fl_status, self._fl_sent, self._fl_arrive,
        )  # fmt: skip
        link_bytes = self.message_bytes * msgs
        return link_bytes

    def age_s(self, now_s: float) -> np.ndarray:
        """Age of each observer's knowledge of each source [n, n] (inf: never heard)."""
        return now_s - self.sent_s

    def view_error(self, observer: int, truth: np.ndarray) -> float:
        """Mean absolute error of what ``observer`` believes against ``truth`` [n,
        n_fields], over the fields of every other server it has heard from (0 when it
        has heard from none)."""
        known = np.isfinite(self.sent_s[observer])
        known[observer] = False
        if not known.any():
            return 0.0
        return float(np.abs(self.status[observer, known] - truth[known]).mean())

    def view(self, observer: int, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """What ``observer`` believes: status [n, n_fields] and age [n] (inf: unknown)."""
        return self.status[observer], now_s - self.sent_s[observer]
