"""Start-up check of the cameras against their videos: allowed roots (symlinks resolved), the frame size from
the video header, one ConfigError naming every bad field."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trafficstream.config import DEFAULT_CONFIG, check_cameras_against_sources, load_settings
from trafficstream.errors import ConfigError

CLIP = "highway_640x360.mp4"  # 640 x 360


def _settings(
    tmp_path: Path,
    data_dir: Path,
    camera_extra: str = "",
    source: str = "{data_dir}/videos/" + CLIP,
    roots: str = '["{data_dir}"]',
):
    config = tmp_path / "deploy.yaml"
    config.write_text(f"""
storage:
  allowed_roots: {roots}
cameras:
  - id: cam-1
    source: "{source}"
    speed_limit_kmh: 100
{camera_extra}""")
    return load_settings(config, [f"storage.data_dir={data_dir}"], environ={})


def _problems(settings, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        check_cameras_against_sources(settings, **kw)
    return str(err.value)


def test_demo_cameras_pass(data_dir):
    settings = load_settings(DEFAULT_CONFIG, [f"storage.data_dir={data_dir}"], environ={})
    sizes = check_cameras_against_sources(settings)
    assert sizes == {"motorway-overpass": (1280, 720), "dual-carriageway": (640, 360)}


def test_rois_tiles_and_calibration_outside_the_frame(tmp_path, data_dir):
    extra = """    roi: [[0, 0], [640, 0], [641, 360], [0, 360]]
    detect_tiles: [[0, 0, 640, 360], [320, 0, 704, 128]]
    calibration:
      image_points: [[10, 10], [600, 10], [600, 350], [10, 400]]
      world_points: [[0, 0], [3.5, 0], [3.5, 20], [0, 20]]
      reference_frame: 100000
"""
    msg = _problems(_settings(tmp_path, data_dir, extra))
    assert "\n  cameras[0].roi: vertices [2] (first [641, 360]) lie outside the 640x360 frame of " + CLIP in msg
    assert "\n  cameras[0].detect_tiles[1]: [320, 0, 704, 128] reaches outside the 640x360 frame" in msg
    assert "detect_tiles[0]" not in msg  # the whole frame is fine
    assert "\n  cameras[0].calibration.image_points: points [3] (first [10, 400]) lie outside" in msg
    assert "\n  cameras[0].calibration.reference_frame: 100000 is past the last frame" in msg


def test_source_outside_the_allowed_roots(tmp_path, data_dir):
    msg = _problems(_settings(tmp_path, data_dir, roots=f'["{tmp_path / "elsewhere"}"]'))
    assert f"cameras[0].source: {(data_dir / 'videos' / CLIP).resolve()} is outside storage.allowed_roots" in msg


def test_symlinks_are_resolved_before_the_roots_check(tmp_path, data_dir):
    inside = tmp_path / "videos"
    inside.mkdir()
    (inside / "link.mp4").symlink_to(data_dir / "videos" / CLIP)  # points outside the only root
    settings = _settings(tmp_path, data_dir, source=str(inside / "link.mp4"), roots=f'["{inside}"]')
    assert "cameras[0].source: " in _problems(settings)
    # A symlinked root is fine: the real paths are compared on both sides.
    (tmp_path / "root-link").symlink_to(data_dir / "videos")
    ok = _settings(tmp_path, data_dir, source=str(tmp_path / "root-link" / CLIP), roots=f'["{tmp_path / "root-link"}"]')
    assert check_cameras_against_sources(ok) == {"cam-1": (640, 360)}


def test_unreadable_sources(tmp_path, data_dir, caplog):
    settings = _settings(tmp_path, data_dir, source="{data_dir}/videos/missing.mp4")
    assert "cameras[0].source: cannot read the video header of" in _problems(settings)
    caplog.set_level(logging.WARNING)
    assert check_cameras_against_sources(settings, require_sources=False) == {}  # the Spark driver: executors read
    assert "missing.mp4" in caplog.text
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    settings = _settings(tmp_path, data_dir, source=str(broken), roots=f'["{tmp_path}"]')
    assert "cameras[0].source: cannot read the video header" in _problems(settings)
