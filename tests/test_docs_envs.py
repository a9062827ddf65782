"""Env documentation: every registered env class (and the multi-agent env) documents
itself in Gymnasium's docstring sections, and CITATION.cff cites the CoEL paper."""

from __future__ import annotations

import importlib
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import coel_env
from coel_env.envs.multiagent import CoELParallelEnv

ROOT = Path(__file__).resolve().parents[1]
#: Gymnasium's env docstring sections, in their order.
SECTIONS = (
    "## Description",
    "## Action Space",
    "## Observation Space",
    "## Rewards",
    "## Starting State",
    "## Episode End",
    "## Arguments",
    "## Version History",
)


def _env_class(env_id: str) -> type:
    module, name = gym.spec(env_id).entry_point.split(":")
    return getattr(importlib.import_module(module), name)


def _missing_sections(cls: type) -> list[str]:
    """The sections absent from the class's *own* docstring (an inherited one does
    not count: a subclass would silently show its parent's spec), or out of order."""
    doc = cls.__dict__.get("__doc__") or ""
    missing = [s for s in SECTIONS if s not in doc]
    if missing:
        return missing
    at = [doc.index(s) for s in SECTIONS]
    return [] if at == sorted(at) else ["sections out of order"]


@pytest.mark.parametrize("env_id", [env_id for env_id, _, _ in coel_env.ENV_IDS])
def test_registered_env_class_has_gymnasium_sections(env_id):
    cls = _env_class(env_id)
    assert _missing_sections(cls) == [], f"{env_id} ({cls.__name__})"
    assert env_id in cls.__doc__, f"{cls.__name__}'s docstring does not name {env_id}"


def test_multiagent_env_class_has_gymnasium_sections():
    assert _missing_sections(CoELParallelEnv) == []


def test_missing_sections_notices_inherited_and_partial_docstrings():
    class Child(_env_class("CoEL-v2")):
        pass

    class Partial:
        """## Description\n\n## Rewards\n"""

    assert _missing_sections(Child) == list(SECTIONS)
    assert "## Action Space" in _missing_sections(Partial)


def test_citation_cff_parses_and_cites_the_coel_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "CoEL-Gym"
    assert cff["version"] == coel_env.__version__
    assert cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert "2502.08381" in yaml.safe_dump(paper)
    assert paper["title"].startswith("The MoE-Empowered Edge LLMs Deployment")
