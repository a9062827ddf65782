"""Gymnasium environments over the CoEL world (registered by ``import coel_env``)."""

from coel_env.envs.coel import CoELEnv, InterDeviceEnv, IntraDeviceEnv

__all__ = ["CoELEnv", "InterDeviceEnv", "IntraDeviceEnv"]
