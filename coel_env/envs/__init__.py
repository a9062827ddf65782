"""Gymnasium environments over the CoEL world (registered by ``import coel_env``)."""

from coel_env.envs.coel import (
    CoELEnv,
    CoELEnvV1,
    CoELEnvV2,
    InterDeviceEnv,
    InterDeviceEnvV1,
    IntraDeviceEnv,
)

__all__ = [
    "CoELEnv",
    "CoELEnvV1",
    "CoELEnvV2",
    "InterDeviceEnv",
    "InterDeviceEnvV1",
    "IntraDeviceEnv",
]
