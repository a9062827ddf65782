"""Tests of ``coel profile`` (coel_env.profiler): a tiny CPU run and bad input."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

import coel_env
from coel_env import cli, profiler

SWITCH = profiler.EXPERT_SHAPES["switch-base"]  # 768 x 3072, ReLU, 2 matrices


@pytest.fixture(autouse=True)
def _cost_cli_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.build_parser also registers ``coel cost`` from coel_env.cost_cli, which is
    written separately; until that module exists, stand in for it so that
    ``coel profile`` can be tested on its own. Inert once the real module exists."""
    if importlib.util.find_spec("coel_env.cost_cli") is None:
        stub = types.ModuleType("coel_env.cost_cli")
        stub.add_arguments = lambda parser: None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "coel_env.cost_cli", stub)
        monkeypatch.setattr(coel_env, "cost_cli", stub, raising=False)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _skipped_kinds(stderr: str) -> set[str]:
    return {
        line.split("warning: ", 1)[1].split()[0]
        for line in stderr.splitlines()
        if "coel profile: warning:" in line and " skipped" in line
    }


def test_tiny_cpu_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.csv"
    argv = ["profile", "--device", "cpu", "--models", "switch-base", "--tokens", "1", "4"]
    argv += ["--dtypes", "fp32", "w8", "w4", "--min-time-s", "0.02", "--repeats", "1"]
    rc = cli.main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err

    skipped = _skipped_kinds(captured.err)
    assert "fp32" not in skipped
    kinds = [k for k in ("fp32", "w8", "w4") if k not in skipped]

    columns, rows = _read_csv(out)
    assert tuple(columns) == profiler.EXPERT_COLUMNS
    assert len(rows) == 2 * len(kinds)
    assert [(r["dtype"], int(r["tokens"])) for r in rows] == [(k, t) for k in kinds for t in (1, 4)]

    expected_bytes = {
        "fp32": 2 * 768 * 3072 * 4,
        # int8 weights + bf16 per-channel scales
        "w8": 2 * 768 * 3072 + (3072 + 768) * 2,
        # packed nibbles + bf16 (scale, zero) per group of 128 inputs
        "w4": 2 * 768 * 3072 // 2 + 2 * (768 // 128 * 3072 + 3072 // 128 * 768) * 2,
    }
    for r in rows:
        assert r["device"] == "cpu" and r["model"] == "switch-base" and r["mode"] == "eager"
        assert (int(r["d_model"]), int(r["d_ff"]), int(r["gated"])) == (768, 3072, 0)
        med, p10, p90 = float(r["median_ms"]), float(r["p10_ms"]), float(r["p90_ms"])
        assert math.isfinite(med) and med > 0
        assert p10 <= med <= p90
        tokens = int(r["tokens"])
        flops = 2 * tokens * 2 * SWITCH.d_model * SWITCH.d_ff
        assert int(r["flops"]) == flops == profiler.expert_flops(SWITCH, tokens)
        assert int(r["weight_bytes"]) == expected_bytes[r["dtype"]]
        assert float(r["tflops"]) == pytest.approx(flops / (med * 1e-3) / 1e12, rel=1e-4)
        gbps = int(r["weight_bytes"]) / (med * 1e-3) / 1e9
        assert float(r["weight_gbps"]) == pytest.approx(gbps, rel=1e-4)

    info = json.loads(profiler.machine_path(out).read_text())
    for key in ("python", "torch", "machine", "cpu_threads", "cpu_model", "gpu", "cuda", "date"):
        assert key in info
    assert info["args"]["tokens"] == [1, 4]
    assert not profiler.copies_path(out).exists()  # no copies measured on cpu
    assert "median_ms" in captured.out and "switch-base" in captured.out


def test_force_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    stale = profiler.copies_path(out)
    stale.write_text("stale copies\n")
    argv = ["profile", "--models", "switch-base", "--tokens", "2", "--dtypes", "bf16"]
    argv += ["--min-time-s", "0.01", "--repeats", "1", "--out", str(out), "--force"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    columns, rows = _read_csv(out)
    assert tuple(columns) == profiler.EXPERT_COLUMNS and len(rows) == 1
    assert not stale.exists()


@pytest.mark.parametrize("dtype,rel_tol", [("w8", 0.03), ("w4", 0.2), ("bf16", 0.02)])
def test_expert_matches_fp32_reference(dtype: str, rel_tol: float) -> None:
    import torch

    for shape in (profiler.ExpertShape(256, 512, True), profiler.ExpertShape(128, 384, False)):
        ref_calls, ref_bytes = profiler._build_expert(shape, "fp32", "cpu", copies=1)
        try:
            calls, nbytes = profiler._build_expert(shape, dtype, "cpu", copies=2)
        except RuntimeError as exc:  # kernel missing from this torch build
            pytest.skip(f"{dtype} unsupported on cpu: {exc}")
        assert len(calls) == 2 and nbytes < ref_bytes
        x = torch.randn(3, shape.d_model)
        with torch.inference_mode():
            ref = ref_calls[0](x)
            got = calls[1](x.to(torch.bfloat16)).float()
        rel = (got - ref).norm() / ref.norm()
        assert rel < rel_tol, (dtype, shape, float(rel))


def test_profile_api() -> None:
    rows, copy_rows = profiler.profile(
        "cpu", ["olmoe-1b-7b"], [2], ["bf16"], repeats=3, min_time_s=0.01, progress=False
    )
    assert copy_rows == []
    assert len(rows) == 1 and set(rows[0]) == set(profiler.EXPERT_COLUMNS)
    assert rows[0]["weight_bytes"] == 3 * 2048 * 1024 * 2 and rows[0]["gated"] == 1


def test_sibling_paths() -> None:
    out = Path("/x/run.h200.csv")
    assert profiler.copies_path(out) == Path("/x/run.h200.copies.csv")
    assert profiler.machine_path(out) == Path("/x/run.h200.machine.json")
    assert len(profiler.EXPERT_COLUMNS) == 15 and profiler.EXPERT_COLUMNS[6] == "mode"
    assert ",".join(profiler.COPY_COLUMNS) == "direction,pinned,bytes,median_ms,p10_ms,p90_ms,gbps"


def test_import_is_cheap() -> None:
    code = "import sys, coel_env.profiler; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ---------------------------------------------------------------------- bad input


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = cli.main(["profile", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("coel profile: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize(
    "argv,needles",
    [
        (
            ["--models", "gpt-9"],
            ["'gpt-9'", "--models", "switch-base (768x3072 relu)", "olmoe-1b-7b"],
        ),
        (["--dtypes", "fp32", "int3"], ["'int3'", "--dtypes", "fp32, fp16, bf16, w8, w4"]),
        (["--tokens", "0"], ["'0'", "--tokens", ">= 1"]),
        (["--tokens", "4", "-3"], ["'-3'", "--tokens", ">= 1"]),
        (["--tokens", "2.5"], ["'2.5'", "--tokens", ">= 1"]),
        (["--tokens", "many"], ["'many'", "--tokens", ">= 1"]),
        (["--repeats", "0"], ["--repeats 0", ">= 1"]),
        (["--min-time-s", "0"], ["--min-time-s 0", "> 0"]),
        (["--device", "tpu"], ["'tpu'", "--device", "cpu, cuda"]),
    ],
)
def test_bad_input(
    argv: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.csv"
    err = _fails([*argv, "--out", str(out)], capsys)
    for needle in needles:
        assert needle in err
    assert list(tmp_path.iterdir()) == []


def test_cuda_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _fails(["--device", "cuda", "--out", str(tmp_path / "p.csv")], capsys)
    assert "--device cuda: no CUDA device is available; allowed here: cpu" in err


def test_out_folder_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nope" / "p.csv"
    err = _fails(["--out", str(out)], capsys)
    assert str(out) in err and "does not exist" in err
    assert not out.parent.exists()


def test_out_not_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["--out", str(tmp_path / "p.txt")], capsys)
    assert "p.txt" in err and ".csv" in err


@pytest.mark.parametrize("existing", ["p.csv", "p.machine.json", "p.copies.csv"])
def test_out_exists_is_not_touched(
    existing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / existing
    target.write_text("precious,data\n1,2\n")
    before = target.stat().st_mtime_ns
    err = _fails(["--models", "switch-base", "--out", str(tmp_path / "p.csv")], capsys)
    assert existing in err and "--force" in err
    assert target.read_text() == "precious,data\n1,2\n"
    assert target.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == [existing]
