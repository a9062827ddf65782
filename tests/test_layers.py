"""Dependencies point one way: foundation <- core <- tools <- envs <- agents <- experiments.

Read from the source (every ``import`` and ``from ... import``, also those inside
functions, and ``importlib.import_module("...")`` with a literal name), so an import that
only runs in one code path still counts. The core stands alone: a subprocess blocks
gymnasium and runs a whole ``World`` episode.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coel_env", "agents", "experiments")

#: (layer, rank): a module may import modules of its own rank or lower only.
FOUNDATION = {f"coel_env.{m}" for m in ("utils", "catalog", "profiles", "quality", "cost")}
TOOLS = {"coel_env.cli", "coel_env.cost_cli", "coel_env.profiler"}
RANKS = {"foundation": 0, "core": 1, "tools": 2, "envs": 3, "agents": 4, "experiments": 5}
#: Modules of the lower layers may not import these third-party packages.
GYM_FREE = (
    "gymnasium",
    "torch",
    "stable_baselines3",
    "sb3_contrib",
    "pettingzoo",
    "supersuit",
    "ray",
)
#: Agents modules that decide from the core alone (no Gymnasium env class).
CORE_ONLY_AGENTS = ("agents.base", "agents.baselines", "agents.harness", "agents.registry")


def layer(module: str) -> str | None:
    """The layer of a project module, or None for a third-party one."""
    top = module.split(".")[0]
    if top == "agents":
        return "agents"
    if top == "experiments":
        return "experiments"
    if top != "coel_env":
        return None
    if module.startswith("coel_env.core"):
        return "core"
    if module in FOUNDATION or any(module.startswith(f + ".") for f in FOUNDATION):
        return "foundation"
    if module in TOOLS:
        return "tools"
    return "envs"  # coel_env itself (registers the envs), coel_env.envs.*, multiagent


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = modules()


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``path``, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in MODULES else base))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.partition(":")[0]  # "module" or an entry point "module:attr"
            if "." in name and name in MODULES and name != module:  # named for a lazy import
                out.append((node.lineno, name))
    return out


def test_the_reader_sees_imports_inside_functions_and_import_module(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import os\n"
        "def f():\n    from agents.registry import make_policy\n"
        "def g():\n    import importlib\n    importlib.import_module('agents.train')\n"
        "TABLE = (('sweep', 'agents.sweep', 'help'),)\n"
    )
    found = {m for _, m in imports("coel_env.m", src)}
    assert {"os", "agents.registry", "agents.train", "agents.sweep"} <= found


def test_imports_point_down_the_layers():
    bad = []
    for module, path in MODULES.items():
        mine = layer(module)
        for line, target in imports(module, path):
            theirs = layer(target)
            if theirs is not None and RANKS[theirs] > RANKS[mine]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target} ({theirs})")
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)


def test_core_and_foundation_import_no_rl_library():
    bad = []
    for module, path in MODULES.items():
        if layer(module) not in ("foundation", "core"):
            continue
        for line, target in imports(module, path):
            if target.split(".")[0] in GYM_FREE:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("prefix", ["agents.milp", *CORE_ONLY_AGENTS])
def test_baselines_milp_and_harness_use_the_core_not_the_envs(prefix):
    checked = [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]
    assert checked, f"no module {prefix}"
    bad = [
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
        for m in checked
        for line, target in imports(m, MODULES[m])
        if target.startswith("coel_env.envs") or target.split(".")[0] == "gymnasium"
    ]
    assert not bad, "\n".join(bad)


def test_no_module_outside_the_core_reads_private_world_state():
    """``world._x``, ``w._x``, ``self.world._x``, ``env.world._x``: the core's public
    API (``World`` properties and methods) is what others read."""
    names = {"world", "w", "_world"}
    bad = []
    for module, path in MODULES.items():
        if layer(module) == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
                continue
            if node.attr.startswith("__"):
                continue
            owner = node.value
            name = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else None
            )
            if name in names:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {name}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_a_world_episode_runs_without_gymnasium():
    code = (
        "import sys\n"
        "sys.modules['gymnasium'] = None\n"  # import gymnasium now raises ImportError
        "import coel_env\n"
        "from coel_env.core.world import World\n"
        "from coel_env.core.rewards import RewardConfig, reward_terms, total_reward\n"
        "w = World('default'); w.reset(0)\n"
        "cfg = RewardConfig().as_dict(); ret = 0.0\n"
        "for _ in range(20):\n"
        "    r = w.step(None); ret += total_reward(reward_terms(r, w, cfg, False), cfg)\n"
        "assert w.epoch == 20 and r.requests_arrived >= 0\n"
        "heavy = ('torch', 'stable_baselines3', 'sb3_contrib', 'agents')\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in heavy or m.startswith('coel_env.envs'))\n"
        "assert not bad, bad\n"
        "print('ret', round(ret, 6))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ret ")


def test_no_module_outside_the_core_imports_a_private_core_name():
    bad = []
    for module, path in MODULES.items():
        if layer(module) == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("coel_env.core"):
                bad += [
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert not bad, "\n".join(bad)
