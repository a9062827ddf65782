"""The processes the suite scenarios add to the world (off by default): demand hot spots
with their crowds' GPU load, the daily task cycle, a compressed diurnal period, and data
paths under ${COEL_DATA}."""

import numpy as np
import pytest

from coel_env.core.dynamics import Dynamics, DynamicsConfig
from coel_env.core.scenario import load_scenario
from coel_env.core.world import World


def _dyn(**kw):
    cfg = DynamicsConfig(background=True, links=False, servers=False, demand=False,
                         task_mix=False, **kw)  # fmt: skip
    d = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 5.0], [5.0, 5.0, 0.0]])
    return Dynamics(cfg, 3, 0, np.zeros(3, bool), distance_km=d, site_weight=[0, 0, 1])


def test_a_hot_spot_multiplies_demand_around_its_centre_and_loads_its_gpus():
    dyn = _dyn(hotspots=True, hotspot_gain=4.0, hotspot_radius_km=1.0, hotspot_move_prob=0.0,
               hotspot_background=0.5, background_sigma=0.0)  # fmt: skip
    s = dyn.initial(np.full((3, 2), 0.5), np.random.default_rng(0))
    assert s.hotspot_centres.tolist() == [2]  # all users at server 2
    np.testing.assert_allclose(s.demand, [1, 1, 5], atol=1e-9)  # 1 + 4 * exp(-25) ~ 1
    for _ in range(3):
        s = dyn.step(s)
    assert s.hotspot_centres.tolist() == [2]  # never moves
    np.testing.assert_allclose(s.background[2], 0.1 + 0.5)  # OU level (sigma 0) + crowd
    np.testing.assert_allclose(s.background_level, 0.1)


def test_hot_spots_move_and_stay_in_the_weighted_sites():
    dyn = _dyn(hotspots=True, hotspot_move_prob=0.5, hotspot_count=2)
    dyn._site_p = np.array([0.5, 0.5, 0.0])
    s = dyn.initial(np.full((3, 2), 0.5), np.random.default_rng(1))
    seen = set()
    for _ in range(40):
        s = dyn.step(s)
        seen |= set(s.hotspot_centres.tolist())
    assert seen == {0, 1}


def test_the_task_cycle_makes_each_task_the_hot_one_in_turn():
    dyn = _dyn(task_cycle=True, task_cycle_epochs=8, task_cycle_strength=2.0)
    s = dyn.initial(np.full((3, 4), 0.25), np.random.default_rng(0))
    hot = [int(s.task_mix[0].argmax())]
    for _ in range(8):
        s = dyn.step(s)
        hot.append(int(s.task_mix[0].argmax()))
    assert hot[0] == 0 and hot[2] == 1 and hot[4] == 2 and hot[6] == 3 and hot[8] == 0
    np.testing.assert_allclose(s.task_mix.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "key, value, message",
    [("dynamics.hotspot_count", 0, "hotspot_count=0 is not allowed"),
     ("dynamics.hotspot_count", 1.5, "hotspot_count=1.5 is not allowed"),
     ("dynamics.hotspot_radius_km", 0, "hotspot_radius_km=0 is not allowed; must be > 0"),
     ("dynamics.hotspot_background", 1.0, "hotspot_background=1.0 is not allowed"),
     ("dynamics.task_cycle_epochs", 0, "task_cycle_epochs=0 is not allowed"),
     ("workload.diurnal_period_s", 0, "workload.diurnal_period_s=0 is not allowed"),
     ("workload.diurnal_phase_rad", "x", "workload.diurnal_phase_rad='x' is not allowed")],
)  # fmt: skip
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        load_scenario("default", {key: value})


def test_a_shorter_diurnal_period_reaches_the_peak_within_an_episode():
    over = {"workload.diurnal_amplitude": 0.8, "workload.diurnal_period_s": 200.0,
            "workload.diurnal_phase_rad": -np.pi / 2, "dynamics.demand": False}  # fmt: skip
    w = World("static", over)
    w.reset(0)
    arrived = [w.step(None).requests_arrived for _ in range(20)]
    assert sum(arrived[7:13]) > 3 * sum(arrived[:3] + arrived[-3:])  # peak vs troughs


def test_coel_data_expands_in_data_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("COEL_DATA", str(tmp_path))
    sc = load_scenario("default", {"routing.esft_dir": "${COEL_DATA}/routing/esft",
                                   "workload.tasks": ["a", "b"]})  # fmt: skip
    assert sc.routing.esft_dir == f"{tmp_path}/routing/esft"
    sc = load_scenario("default", {"routing.esft_dir": "COEL_DATA/x"})  # not a variable
    assert sc.routing.esft_dir == "COEL_DATA/x"


def test_a_preset_on_public_data_needs_coel_data(monkeypatch):
    """The package takes the data folder from the user (COEL_DATA), never from a path of
    its own."""
    monkeypatch.delenv("COEL_DATA", raising=False)
    with pytest.raises(ValueError, match="COEL_DATA is not set: set it to the folder"):
        load_scenario("mobility")
    load_scenario("default")  # presets that read no data need nothing
