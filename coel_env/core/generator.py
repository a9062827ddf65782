"""Random scenario instances for training (domain randomisation).

:func:`generate_overrides` draws, from a ``numpy`` Generator, the dotted scenario
overrides of one instance over the ``default`` preset: a random geometric or Waxman
topology of ``n_servers`` edge servers, a random device mix, a random subset of the
models, a request rate, a daily cycle, perception losses and which dynamic processes run
(link failures, servers that leave and join), optionally a cloud node.
:class:`GeneratorConfig` holds the ranges; every key has a default, so ``{}`` is a valid
generator config. The same Generator state gives the same instance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from coel_env.catalog import model_names
from coel_env.profiles import device_names


@dataclass(frozen=True)
class GeneratorConfig:
    """Ranges of the generated instances.

    Attributes:
        n_servers: least and most edge servers (both included).
        kinds: topology generators to draw from (``random_geometric``, ``waxman``).
        devices: GPU profiles a server may get (each instance draws a mix over a subset).
        models: catalog models an instance may serve.
        n_models: least and most models per instance.
        area_km: range of the side of the square the servers sit in [km].
        rate_per_s: range of the mean request rate per edge server [1/s] (log-uniform;
            around the presets' loads under the current serving defaults: 0.06 on
            ``large``, 0.24 on ``default``; it was 0.02-0.15 before the fidelity round).
        diurnal_amplitude: range of the daily cycle's amplitude.
        loss_prob: range of the broadcast loss probability.
        link_fail_prob: chance that an instance has link failures (at 1% per epoch).
        churn_prob: chance that an instance has servers that leave and join.
        cloud_prob: chance that an instance has a cloud node.
    """

    n_servers: tuple[int, int] = (3, 16)
    kinds: tuple[str, ...] = ("random_geometric", "waxman")
    devices: tuple[str, ...] = (
        "jetson-orin-nano-8gb", "jetson-agx-orin-64gb", "l4", "rtx-4090", "a100-80gb",
    )  # fmt: skip
    models: tuple[str, ...] = (
        "olmoe-1b-7b", "qwen1.5-moe-a2.7b", "deepseek-v2-lite", "mixtral-8x7b",
    )  # fmt: skip
    n_models: tuple[int, int] = (1, 4)
    area_km: tuple[float, float] = (10.0, 60.0)
    rate_per_s: tuple[float, float] = (0.06, 0.6)
    diurnal_amplitude: tuple[float, float] = (0.0, 0.3)
    loss_prob: tuple[float, float] = (0.0, 0.03)
    link_fail_prob: float = 0.3
    churn_prob: float = 0.3
    cloud_prob: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = self.n_servers
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(
                f"generator.n_servers={self.n_servers!r} is not allowed; two integers "
                "1 <= least <= most"
            )
        for k in self.kinds:
            if k not in ("random_geometric", "waxman"):
                raise ValueError(
                    f"generator.kinds: {k!r} is not allowed; allowed: random_geometric, waxman"
                )
        known = device_names()
        for d in self.devices:
            if d not in known:
                raise ValueError(f"generator.devices: {d!r} is not allowed; known: {known}")
        for m in self.models:
            if m not in model_names():
                raise ValueError(f"generator.models: {m!r} is not allowed; known: {model_names()}")
        lo_m, hi_m = self.n_models
        if not (1 <= lo_m <= hi_m <= len(self.models)):
            raise ValueError(
                f"generator.n_models={self.n_models!r} is not allowed; need 1 <= least <= "
                f"most <= {len(self.models)} (the models listed)"
            )
        for name in ("area_km", "rate_per_s", "diurnal_amplitude", "loss_prob"):
            a, b = getattr(self, name)
            if not (math.isfinite(a) and math.isfinite(b) and 0 <= a <= b):
                raise ValueError(
                    f"generator.{name}={(a, b)!r} is not allowed; two numbers 0 <= low <= high"
                )
        if self.rate_per_s[0] <= 0:
            raise ValueError(f"generator.rate_per_s={self.rate_per_s!r}: the low end must be > 0")
        for name in ("link_fail_prob", "churn_prob", "cloud_prob"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValueError(f"generator.{name}={p!r} is not allowed; must be in [0, 1]")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> GeneratorConfig:
        """A config from a mapping (a YAML or env config entry); lists become tuples."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"generator={data!r} is not allowed; must be a mapping of keys")
        valid = [f.name for f in dataclasses.fields(cls)]
        kw = {}
        for key, value in data.items():
            if key not in valid:
                raise ValueError(f"unknown generator key {key!r}; valid keys: {', '.join(valid)}")
            kw[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kw)


def generate_overrides(rng: np.random.Generator, cfg: GeneratorConfig) -> dict[str, Any]:
    """The dotted scenario overrides (over the ``default`` preset) of one instance."""
    n = int(rng.integers(cfg.n_servers[0], cfg.n_servers[1] + 1))
    kind = str(cfg.kinds[int(rng.integers(len(cfg.kinds)))])
    k_dev = int(rng.integers(1, len(cfg.devices) + 1))
    devices = rng.choice(len(cfg.devices), size=k_dev, replace=False)
    weights = rng.dirichlet(np.ones(k_dev))
    mix = {cfg.devices[int(d)]: float(w) for d, w in zip(devices, weights, strict=True)}
    k_mod = int(rng.integers(cfg.n_models[0], cfg.n_models[1] + 1))
    picked = sorted(rng.choice(len(cfg.models), size=k_mod, replace=False).tolist())
    lo, hi = cfg.rate_per_s
    rate = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    churn = bool(rng.random() < cfg.churn_prob)
    return {
        "name": "generated",
        "instance_seed": int(rng.integers(2**31 - 1)),
        "models": [cfg.models[i] for i in picked],
        "topology.kind": kind,
        "topology.n_servers": n,
        "topology.area_km": float(rng.uniform(*cfg.area_km)),
        "topology.device_mix": mix,
        "cloud.enabled": bool(rng.random() < cfg.cloud_prob),
        "workload.rate_per_s": rate,
        "workload.diurnal_amplitude": float(rng.uniform(*cfg.diurnal_amplitude)),
        "perception.loss_prob": float(rng.uniform(*cfg.loss_prob)),
        "dynamics.link_fail_prob": 0.01 if rng.random() < cfg.link_fail_prob else 0.0,
        "dynamics.servers": churn,
        "dynamics.server_leave_prob": 0.005 if churn else 0.0,
    }
