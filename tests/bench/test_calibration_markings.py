"""The markings calibration bench: every straight family's camera calibrated four ways; markings help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trafficstream.bench.calibration_markings import METHODS, calibrations, main, run
from trafficstream.bench.synthetic.families import FAMILIES


def test_without_noise_every_method_recovers_the_camera() -> None:
    params = FAMILIES["low_wide"].params  # through its barrel lens
    planes, to_px = calibrations(params, np.random.default_rng(0), noise_px=0.0)
    assert set(planes) == set(METHODS)
    world = np.array([[1.0, 20.0], [5.0, 45.0], [8.0, 30.0]])
    for name, plane in planes.items():
        np.testing.assert_allclose(plane.to_world(to_px(world)), world, atol=1e-4, err_msg=name)


def test_markings_cut_the_scale_error_and_shared_cameras_are_not_repeated(tmp_path: Path) -> None:
    out = tmp_path / "markings.json"
    assert main(["--draws", "12", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == run(12, 1.0, 1)  # deterministic for a seed
    assert "grade_curve" not in result["families"]  # a bent road has no straight lane lines
    assert result["families"]["night"] == {"same_camera_as": "motorway"}
    pooled = result["pooled"]
    assert pooled["pairs_6+markings"]["p95_abs_kmh"] < pooled["pairs_6"]["p95_abs_kmh"]
    assert pooled["pairs_2+markings"]["rms_kmh"] < pooled["pairs_4"]["rms_kmh"]
