"""Every code block of README.md and docs/*.md works as written.

``python`` blocks run, each in a fresh namespace in a temporary working directory.
``bash``/``console`` blocks are checked without running them: every ``coel ...``
command parses with the ``coel`` parser, every ``python experiments/NAME.py ...``
script exists and takes the flags given, and any other command must be one that the
docs are allowed to show (pip, git, venv, tensorboard, ray...). A block that cannot
run here is marked by an HTML comment right above it, ``<!-- no-test: reason -->``;
marks are counted and kept rare. Relative links must point to files that exist, and
the README's two setup commands must be the ones ``.ci/run`` runs.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")
#: At most this many blocks may be marked ``no-test``.
MAX_NO_TEST = 3
#: Commands that docs may show but that are not checked here (setup, other tools).
UNCHECKED = {"pip", "git", "python3", ".", "source", "cd", "tensorboard", "ray"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    no_test: str | None  # the reason, if marked

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one markdown file, with their ``no-test`` marks."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = NO_TEST.search(before)
        code = "\n".join(lines[start + 1 : end]) + "\n"
        out.append(Block(path, start + 1, lang, code, mark.group(1) if mark else None))
        i = end + 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]
PYTHON = [b for b in ALL if b.lang == "python"]
SHELL = [b for b in ALL if b.lang in ("bash", "console", "sh", "shell")]


def test_docs_have_blocks_of_each_kind():
    assert (ROOT / "docs").is_dir() and len(DOCS) > 1
    assert len(PYTHON) >= 5 and len(SHELL) >= 5
    assert not [b.id for b in ALL if b.lang == ""], "a block without a language"


def test_no_test_marks_are_rare_and_give_a_reason():
    marked = [(b.id, b.no_test) for b in ALL if b.no_test is not None]
    assert len(marked) <= MAX_NO_TEST, marked
    assert all(reason for _, reason in marked)


@pytest.fixture(scope="module")
def _one_torch_thread():
    """One torch thread, as ``coel train`` uses: the tiny training examples then run
    in seconds instead of fighting over the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trains(block: Block) -> bool:
    """Whether a block trains an agent (seconds of torch: marked slow, as training tests
    are; CI runs them)."""
    return bool(re.search(r"^\s*(from|import) (sb3_contrib|stable_baselines3)", block.code, re.M))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "block",
    [pytest.param(b, marks=[pytest.mark.slow] if _trains(b) else []) for b in PYTHON],
    ids=[b.id for b in PYTHON],
)
def test_python_block_runs(block, tmp_path, monkeypatch, _one_torch_thread):
    if block.no_test is not None:
        pytest.skip(f"marked no-test: {block.no_test}")
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, block.id, "exec"), {"__name__": "__docs__"})


# ------------------------------------------------------------------ shell blocks


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, each
    ``&&``-chained command apart, a leading ``$ `` prompt removed."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w == "&&":
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


@pytest.fixture(scope="module")
def coel_parser() -> argparse.ArgumentParser:
    from coel_env.cli import build_parser

    return build_parser()


def _parse(parser: argparse.ArgumentParser, argv: list[str], what: str) -> None:
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports the error on stderr and exits
        pytest.fail(f"{what}: does not parse (exit {exc.code})")


def check_command(cmd: list[str], parser: argparse.ArgumentParser, where: str) -> str:
    """Check one documented command; returns what was checked ("coel", "script" or
    "unchecked")."""
    what = f"{where}: {shlex.join(cmd)}"
    if cmd[0] == "coel":
        _parse(parser, cmd[1:], what)
        return "coel"
    if cmd[0] == "python" and cmd[1:2] == ["-m"]:
        assert cmd[2] == "pytest", what
        return "unchecked"
    if cmd[0] == "python":
        script = ROOT / cmd[1]
        assert script.is_file(), f"{what}: {cmd[1]} does not exist"
        source = script.read_text()
        if "\ndef add_arguments(" in source:  # the studies: parse with their own parser
            module = importlib.import_module(cmd[1].removesuffix(".py").replace("/", "."))
            p = argparse.ArgumentParser(prog=cmd[1])
            module.add_arguments(p)
            _parse(p, cmd[2:], what)
        else:  # the parser is built inside main() (benchmarks pin threads on import)
            for flag in (w.split("=")[0] for w in cmd[2:] if w.startswith("--")):
                assert f'"{flag}"' in source, f"{what}: {cmd[1]} has no {flag}"
        return "script"
    assert cmd[0] in UNCHECKED, f"{what}: {cmd[0]!r} is not a command the docs may show"
    return "unchecked"


@pytest.mark.parametrize("block", SHELL, ids=[b.id for b in SHELL])
def test_shell_block_commands_parse(block, coel_parser):
    if block.no_test is not None:
        pytest.skip(f"marked no-test: {block.no_test}")
    cmds = commands(block.code)
    assert cmds, f"{block.id}: an empty block"
    for cmd in cmds:
        check_command(cmd, coel_parser, block.id)


def test_command_check_catches_mistakes(coel_parser):
    ok = ["coel", "baselines", "--env", "CoEL-v2", "--seeds", "5"]
    assert check_command(ok, coel_parser, "t") == "coel"
    with pytest.raises(pytest.fail.Exception):
        check_command(["coel", "baselines", "--no-such-flag"], coel_parser, "t")
    with pytest.raises(pytest.fail.Exception):
        check_command(["coel", "no-such-command"], coel_parser, "t")
    with pytest.raises(AssertionError):
        check_command(["python", "experiments/no_such.py"], coel_parser, "t")
    with pytest.raises(AssertionError):
        check_command(["python", "experiments/bench_masks.py", "--nope"], coel_parser, "t")
    with pytest.raises(AssertionError):
        check_command(["cole", "train"], coel_parser, "t")
    got = commands("a b \\\n  c && d  # note\n$ coel x\n")
    assert got == [["a", "b", "c"], ["d"], ["coel", "x"]]


def test_blocks_finds_fences_and_marks(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("```python\nprint(1)\n```\n\n<!-- no-test: needs a GPU -->\n```bash\nls\n```\n")
    found = blocks(md)
    assert [(b.line, b.lang, b.no_test) for b in found] == [
        (1, "python", None),
        (6, "bash", "needs a GPU"),
    ]


# ------------------------------------------------------------------ links and setup


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_point_to_files(path):
    text = path.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = []
    for t in targets:
        if re.match(r"^[a-z]+://", t) or t.startswith("#"):
            continue
        file = (path.parent / t.split("#")[0]).resolve()
        if not file.exists():
            missing.append(t)
    assert not missing, f"{path.name}: links to missing files {missing}"


def _headings(path: Path) -> list[str]:
    return [line[3:].strip() for line in path.read_text().splitlines() if line[:3] == "## "]


def test_readme_setup_is_two_commands_that_ci_runs():
    readme = ROOT / "README.md"
    heads = [i + 1 for i, line in enumerate(readme.read_text().splitlines()) if line[:3] == "## "]
    start = next(h for h, line in zip(heads, _headings(readme), strict=True) if line == "Setup")
    end = min([h for h in heads if h > start], default=10**9)
    setup_blocks = [b for b in ALL if b.path == readme and start < b.line < end]
    assert [b.lang for b in setup_blocks] == ["bash", "bash"], "the setup is two commands"
    install, tests = (commands(b.code) for b in setup_blocks)
    ci = (ROOT / ".ci" / "run").read_text()
    assert ["pip", "install", "torch==2.13.0"] in install
    assert ["pip", "install", "-e", ".[dev]"] in install
    assert install.index(["pip", "install", "torch==2.13.0"]) < install.index(
        ["pip", "install", "-e", ".[dev]"]
    )
    assert install[-1][:2] == ["python", "experiments/headline.py"]
    assert ["python", "-m", "pytest", "-q"] in tests
    for line in ("pip install torch==2.13.0", 'pip install -e ".[dev]"', "python -m pytest -q"):
        assert line in ci, f".ci/run does not run {line!r}"


# ------------------------------------------------------------------ numbers in the README


def _table_rows(text: str, first_header: str) -> list[list[str]]:
    """The cells of each row of the markdown table whose header starts with
    ``first_header``."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[at + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_readme_env_table_has_the_real_sizes():
    import gymnasium as gym

    import coel_env

    rows = _table_rows((ROOT / "README.md").read_text(), "id")
    seen = set()
    for cells in rows:
        env_id = cells[0].strip("`")
        own_class = getattr(coel_env, "ENTRY_POINTS", {})
        if env_id not in {r[0] for r in coel_env.ENV_IDS} or env_id in own_class:
            continue  # not an id, or an id whose spaces are not one Box and MultiDiscrete
        env = gym.make(env_id)
        nvec = env.action_space.nvec
        assert cells[1] == f"`Box(0, 1, ({env.observation_space.shape[0]},))`", env_id
        assert cells[2] == f"{nvec.size} ({nvec.sum()})", env_id
        assert cells[3] == str(env.spec.max_episode_steps), env_id
        seen.add(env_id)
    assert seen == {"CoEL-v2", "CoEL-InterDevice-v1", "CoEL-IntraDevice-v0"}


def test_mask_numbers_in_the_docs_are_the_benchmark_s():
    bench = _table_rows((ROOT / "results" / "mask_benchmark.md").read_text(), "id")
    measured = {(r[0], r[1].split()[0]): r for r in bench}

    def pct(cell: str) -> float:
        return float(cell.strip().rstrip("%"))

    readme = _table_rows((ROOT / "README.md").read_text(), "id | scenario")
    envs = _table_rows((ROOT / "docs" / "envs.md").read_text(), "id | scenario")
    assert len(readme) >= 3 and len(envs) >= 3
    for cells in readme + envs:
        key = (cells[0].strip("`"), cells[1].strip("`"))
        row = measured[key]
        blocked, choices = re.split(r" of | / ", cells[2])
        assert row[5] == f"{float(blocked):.1f} / {choices}", key
        assert pct(cells[3]) == pytest.approx(pct(row[7])), key
        if len(cells) > 4:  # docs/envs.md also shows unmasked actions
            assert pct(cells[4]) == pytest.approx(pct(row[9])), key
