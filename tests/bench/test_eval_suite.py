"""The scene-family evaluation suite's bookkeeping: one deployment from many clips' configs, errors pooled
reading by reading (not averaged clip by clip), targets judged on the pooled figures, families reported apart.
The pipeline run itself is `make eval`; here the per-clip results are built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from trafficstream.bench.error_budget import LINKS
from trafficstream.bench.eval_suite import camera_id, merged_config, pooled, pooled_budget, report, target_check
from trafficstream.bench.synthetic import SyntheticClip
from trafficstream.bench.synthetic.families import EVAL_SEEDS, FAMILIES, TEST_SEEDS
from trafficstream.config import load_settings


def _clip(root: Path, name: str, x_offset: float) -> SyntheticClip:
    folder = root / name
    folder.mkdir()
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "spark": {"max_offsets_per_trigger": 96},
        "storage": {"allowed_roots": ["{data_dir}", str(folder)]},
        "cameras": [
            {
                "id": "synthetic",
                "name": "synthetic road",
                "source": str(folder / "clip.mp4"),
                "speed_limit_kmh": 100.0,
                "calibration": {
                    "image_points": [[100 + x_offset, 700], [1100, 700], [800, 300], [400, 300]],
                    "world_points": [[0, 10], [10, 10], [10, 50], [0, 50]],
                },
            }
        ],
    }
    (folder / "camera.yaml").write_text(yaml.safe_dump(config))
    return SyntheticClip(folder / "clip.mp4", folder / "ground_truth.json", folder / "camera.yaml")


def test_merged_config_is_one_valid_deployment_with_every_clip_as_its_own_camera(tmp_path: Path) -> None:
    clips = {camera_id("motorway", 5): _clip(tmp_path, "a", 0.0), camera_id("night", 5): _clip(tmp_path, "b", 7.0)}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(merged_config(clips)))
    settings = load_settings(path, environ={})
    assert [c.id for c in settings.cameras] == ["motorway-5", "night-5"]
    assert settings.cameras[1].calibration is not None
    assert tuple(settings.cameras[1].calibration.image_points[0]) == (107.0, 700.0)  # each camera keeps its own
    roots = {str(r) for r in settings.storage.allowed_roots}
    assert {str(tmp_path / "a"), str(tmp_path / "b")} <= roots


def test_merged_config_needs_clips() -> None:
    with pytest.raises(ValueError, match="no clips"):
        merged_config({})


def _result(errors: list[float], vehicles: int = 3, one_id: int = 3, switches: int = 0, passage=None) -> dict:
    return {
        "speed_errors_kmh": errors,
        "speed_coverage": 0.9,
        "true_vehicles": vehicles,
        "vehicles_with_one_id": one_id,
        "id_switches": switches,
        "idf1": 0.95,
        "recall": 0.9,
        "passage": passage,
    }


def test_errors_are_pooled_reading_by_reading() -> None:
    # A clip with many small errors and a clip with few large ones: the pooled mean weighs readings, not clips.
    small, large = [0.5] * 90, [-5.0] * 10
    s = pooled([_result(small), _result(large)])
    assert s["speed_samples"] == 100
    assert s["mean_abs_speed_error_kmh"] == pytest.approx(np.mean(np.abs(small + large)))
    assert s["mean_speed_error_kmh"] == pytest.approx(np.mean(small + large))
    assert s["median_abs_speed_error_kmh"] == pytest.approx(0.5)
    assert s["share_within_3kmh"] == pytest.approx(0.9)
    assert s["true_vehicles"] == 6 and s["vehicles_with_one_id"] == 6


def test_passages_pooled_and_targets_judged() -> None:
    passage = {"eligible_vehicles": 3, "per_vehicle": [{"error_kmh": 0.5}, {"error_kmh": -2.5}, {"error_kmh": None}]}
    s = pooled([_result([0.2, -0.2, 0.4], passage=passage), _result([0.1], vehicles=4, one_id=3, switches=1)])
    assert s["passage_eligible_vehicles"] == 3 and s["passage_measured_vehicles"] == 2
    assert s["passage_share_measured"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["passage_max_abs_error_kmh"] == pytest.approx(2.5)
    checks = target_check(s)
    assert checks["mean_abs_le_1.0"] is True
    assert checks["signed_within_0.3"] is True
    assert checks["every_passage_within_2kmh"] is False  # one passage is 2.5 km/h off
    assert checks["every_vehicle_one_id"] is False  # a switch in the second clip


def test_report_keeps_families_apart_and_pools_all_for_overall() -> None:
    per_clip = {
        camera_id("motorway", 1): _result([0.1, 0.1]),
        camera_id("motorway", 2): _result([0.3]),
        camera_id("night", 1): _result([4.0, -4.0]),
        camera_id("night", 2): _result([]),
    }
    r = report(per_clip, ["motorway", "night"], [1, 2])
    assert r["families"]["motorway"]["speed_samples"] == 3
    assert r["families"]["motorway"]["targets"]["within_3kmh_ge_95pct"] is True
    assert r["families"]["night"]["share_within_3kmh"] == 0.0
    assert r["overall"]["speed_samples"] == 5 and r["overall"]["clips"] == 4


def test_families_and_seeds_declared_once_reported_and_tested_seeds_apart() -> None:
    assert "motorway" in FAMILIES and len(FAMILIES) >= 6
    assert not set(EVAL_SEEDS) & set(TEST_SEEDS)


def test_error_budget_links_pooled_by_readings() -> None:
    def budget(n: int, box: float) -> dict:
        links = {name: {"n": n, "mean": 0.0, "mean_abs": 0.1} for name in LINKS}
        links["box_bottom"] = {"n": n, "mean": box, "mean_abs": abs(box)}
        return {"links": links}

    pooled_links = pooled_budget([budget(300, 0.6), budget(100, -0.2), None])
    assert pooled_links["box_bottom"]["n"] == 400
    assert pooled_links["box_bottom"]["mean"] == pytest.approx((300 * 0.6 - 100 * 0.2) / 400)
    assert pooled_links["homography"]["mean_abs"] == pytest.approx(0.1)
    assert pooled_budget([])["box_bottom"] == {"n": 0, "mean": None, "mean_abs": None}
