"""Every policy by name: the baselines and the MILP family.

``make_policy("greedy")``, ``make_policy("greedy-oracle")``,
``make_policy("milp-oracle")``, ``make_policy("milp-periodic")``,
``make_policy("static")``, ``make_policy("static-homes")``,
``make_policy("ma:RUN_DIR")`` (a ``coel train-ma``
run folder: the multi-agent policy); an unknown name raises ``ValueError`` listing the
known ones.
"""

from __future__ import annotations

from agents.base import Policy
from agents.baselines import POLICIES

MILP_POLICIES = ("milp-oracle", "milp-periodic", "static", "static-homes")
#: Epochs between re-solves of ``milp-periodic`` (it decides from the broadcast view).
PERIODIC_EVERY = 5


def policy_names() -> tuple[str, ...]:
    base = sorted(POLICIES) + sorted(f"{k}-oracle" for k in POLICIES)
    return tuple(base + list(MILP_POLICIES))


def make_policy(name: str, **kwargs) -> Policy:
    """The policy registered as ``name`` (see the module docstring)."""
    if name.startswith("ma:"):  # a `coel train-ma` run folder: the multi-agent policy
        from agents.multiagent import load_ma_policy

        return load_ma_policy(name[3:], **kwargs)
    if name in MILP_POLICIES:
        from agents import milp

        if name == "static":
            return milp.StaticPolicy(**kwargs)
        if name == "static-homes":
            return milp.StaticHomesPolicy(**kwargs)
        if name == "milp-periodic":
            kwargs.setdefault("every", PERIODIC_EVERY)
            return milp.MilpPolicy(name=name, sees="view", **kwargs)
        return milp.MilpPolicy(name=name, sees="oracle", every=1, **kwargs)
    from agents.baselines import make_policy as make_baseline

    try:
        return make_baseline(name, **kwargs)
    except ValueError:
        raise ValueError(
            f"unknown policy {name!r}; known policies: {', '.join(policy_names())}"
        ) from None
