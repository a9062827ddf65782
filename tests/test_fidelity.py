"""experiments/fidelity.py: a quick run writes one table per policy with every key's row."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fidelity_quick(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from experiments import fidelity
    finally:
        sys.path.remove(str(ROOT))
    out = tmp_path / "fidelity.md"
    assert fidelity.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Command: `python experiments/fidelity.py --quick --out" in text
    for policy in ("naive", "greedy"):
        assert f"## default, {policy}" in text
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| setting"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], []).append(cells[1:])
    assert len(rows) == 2 + len(fidelity.KEYS)  # before, each key, the defaults
    assert all(len(v) == 2 for v in rows.values())  # naive and greedy
    base, cont = rows["before"][0], rows["serving.batching=continuous"][0]
    assert base[0] == cont[0] and base[2:4] != cont[2:4]  # same requests, other latencies
    head = next(ln for ln in text.splitlines() if ln.startswith("| setting"))
    mae = [c.strip() for c in head.strip("|").split("|")].index("view MAE") - 1
    assert float(rows["perception.sampling=sub_epoch"][0][mae]) > 0  # the view's error
    assert float(rows["the defaults"][0][mae]) > 0  # default's view differs from the truth
    assert rows["the defaults"][0][1:] != rows["before"][0][1:]


def test_every_key_on_together_conserves_requests_and_a_pickled_world_continues_alike():
    import pickle

    from agents.base import observe
    from agents.registry import make_policy
    from coel_env.core.world import World

    sys.path.insert(0, str(ROOT))
    try:
        from experiments.fidelity import KEYS
    finally:
        sys.path.remove(str(ROOT))
    w = World("large", dict(KEYS))
    w.reset(3)
    pol = make_policy("greedy")
    pol.reset(w, 3)
    for _ in range(3):
        r = w.step(pol.act(w, observe(pol, w)))
        assert r.requests_served + r.requests_dropped == r.requests_arrived
    clone = pickle.loads(pickle.dumps(w))
    a = [w.step().as_dict() for _ in range(4)]
    assert a == [clone.step().as_dict() for _ in range(4)]
    assert all(r["requests_served"] + r["requests_dropped"] == r["requests_arrived"] for r in a)
    assert all(r["moves_in_flight"] > 0 and r["view_mae"] > 0 for r in a)
