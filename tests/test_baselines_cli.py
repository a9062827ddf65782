"""`coel baselines`: the table, the JSON list, the CSV and bad input."""

import json

import pytest

from agents.registry import make_policy, policy_names
from coel_env.cli import main


def test_json_list_has_one_object_per_policy_with_the_documented_keys(tmp_path, capsys):
    out = tmp_path / "b.csv"
    argv = ["baselines", "--policies", "naive,greedy", "--seeds", "2", "--epochs", "4",
            "--json", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in rows] == ["naive", "greedy"]
    for r in rows:
        for k in (
            "policy",
            "return_mean",
            "return_ci95",
            "slo_attainment_mean",
            "decision_ms_mean",
        ):
            assert k in r
    lines = out.read_text().splitlines()
    assert lines[0].startswith("policy,sees,seed,epochs,return") and len(lines) == 1 + 2 * 2


def test_same_seeds_same_numbers(tmp_path, capsys):
    args = ["baselines", "--policies", "greedy", "--seeds", "2", "--epochs", "3", "--json"]
    main([*args, "--out", str(tmp_path / "a.csv")])
    a = json.loads(capsys.readouterr().out)
    main([*args, "--out", str(tmp_path / "b.csv")])
    b = json.loads(capsys.readouterr().out)
    for x, y in zip(a, b, strict=True):
        assert x["return_mean"] == y["return_mean"]
        assert x["slo_attainment_mean"] == y["slo_attainment_mean"]


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    rc = main(["baselines", "--policies", "naive", "--seeds", "1", "--epochs", "2",
               "--out", str(out)])  # fmt: skip
    assert rc == 2 and out.read_text() == "precious\n"
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--policies", "nope"], "unknown policy 'nope'; known policies: fiddler, greedy"),
        (["--env", "CartPole-v9"], "--env 'CartPole-v9' is not a registered id"),
        (["--seeds", "0"], "--seeds 0 is not allowed"),
        (["--first-seed", "-1"], "--first-seed -1 is not allowed; must be an integer >= 0"),
    ],
)
def test_bad_input(tmp_path, capsys, argv, message):
    rc = main(["baselines", *argv, "--out", str(tmp_path / "x.csv")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_registry_names_build_policies_with_those_names():
    for name in policy_names():
        p = make_policy(name)
        assert p.name == name
        oracle = name.endswith("oracle") or name.startswith("static")
        assert p.sees == ("oracle" if oracle else "view")


def test_first_seed_runs_the_held_out_seeds(tmp_path, capsys):
    """``--first-seed 100 --seeds 2`` runs seeds 100 and 101: the same episodes as the
    harness gives for those seeds, and not those of seeds 0 and 1."""
    from agents import harness

    out = tmp_path / "held.csv"
    argv = ["baselines", "--policies", "greedy", "--seeds", "2", "--first-seed", "100",
            "--epochs", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "2 seeds (100-101) x 3 epochs" in capsys.readouterr().out
    rows = out.read_text().splitlines()[1:]
    assert [r.split(",")[2] for r in rows] == ["100", "101"]
    want = harness.run_episode(make_policy("greedy"), "default", 101, 3).metrics["return"]
    assert float(rows[1].split(",")[4]) == pytest.approx(want, rel=0, abs=0)
    first = harness.run_episode(make_policy("greedy"), "default", 0, 3).metrics["return"]
    assert float(rows[0].split(",")[4]) != first
    assert harness.seed_list(3, 7) == [7, 8, 9]
