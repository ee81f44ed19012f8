"""The eye-count helper's pure parts: line pixels and the count table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trafficstream.bench.line_counts import count_table, line_pixels
from trafficstream.cameras import Calibration, Camera, CountingLine
from trafficstream.config import default_data_dir


def camera(line: CountingLine) -> Camera:
    return Camera(
        id="c",
        source=str(default_data_dir() / "videos" / "x.mp4"),
        speed_limit_kmh=100,
        calibration=Calibration(
            image_points=[(0, 0), (1280, 0), (1280, 720), (0, 720)],
            world_points=[(0, 72), (128, 72), (128, 0), (0, 0)],
        ),
        lines=[line],
    )


def test_line_pixels_follow_the_image_projection_one_pixel_apart() -> None:
    road = line_pixels(camera(CountingLine(id="l", space="road", points=[(10, 62), (20, 62)])), "l")
    assert road[0].tolist() == [100, 100] and road[-1].tolist() == [200, 100] and len(road) == 101
    image = line_pixels(camera(CountingLine(id="l", points=[(5, 5), (5, 45)])), "l")
    assert np.all(image[:, 0] == 5) and image[0, 1] == 5 and image[-1, 1] == 45


def test_count_table_by_line_direction_and_lane() -> None:
    rows = pd.DataFrame(
        {
            "line_id": ["a", "a", "a", "b"],
            "direction": ["in", "in", "out", "in"],
            "lane_id": ["l1", None, "l2", "l1"],
        }
    )
    table = count_table(rows)
    assert table["a"]["in"] == 2 and table["a"]["out"] == 1 and table["b"]["in"] == 1
    assert table["a"]["by_lane"]["in"] == {"l1": 1, "none": 1}
    assert count_table(pd.DataFrame()) == {}


def test_windowed_table_counts_trusted_speeds_and_ranks_tracks() -> None:
    import json

    from trafficstream.bench.line_counts import windowed_table

    def vehicle(track: int, kmh: float | None, flag: str | None = None) -> dict:
        return {"track_id": track, "speed_kmh": kmh, "speed_flag": flag}

    frames = [[vehicle(1, 40.0 + k), vehicle(2, 90.0 + k), vehicle(3, None)] for k in range(6)]
    frames[0].append(vehicle(2, 20.0, "insufficient_history"))
    frames[1].append(vehicle(4, None, "at_picture_edge"))
    out = pd.DataFrame(
        {"kind": ["frame"] * 6 + ["track"], "payload": [json.dumps({"vehicles": f}) for f in frames] + ["{}"]}
    )
    table = windowed_table(out)
    assert table["readings"] == 14 and table["trusted"] == 12  # speed-less first points are not readings
    assert table["flags"] == {"insufficient_history": 1, "at_picture_edge": 1}
    assert [t["track_id"] for t in table["slowest"]] == [1, 2] and table["fastest"][0]["track_id"] == 2
    assert table["slowest"][0]["median_kmh"] == 42.5 and table["fastest"][0]["max_kmh"] == 95.0
