"""Passage-speed scores against hand-built ground truth: vehicles driving at constant speeds over two road lines,
each with a box of its own (so a track's boxes say which vehicle it is); each test perturbs perfect pipeline
output in one known way and checks that exactly that is measured."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from trafficstream.bench.evaluate import MIN_HEIGHT_PX, add_to_camera, passage_geometry, passage_line_ys
from trafficstream.bench.passage_metrics import PASSAGE_COLUMNS, main, score_passages, true_passages
from trafficstream.bench.synthetic import PinholeCamera, SceneParams
from trafficstream.bench.synthetic.traffic import DIMENSIONS, SHAPES, Body, vehicle_box

FPS = 10.0
N_FRAMES = 40
LINES = [
    {"id": id_, "space": "road", "points": [[-1.0, y], [13.0, y]], "directions": ["towards_camera", "away_from_camera"]}
    for id_, y in (("near", 20.0), ("far", 40.0))
]
SECTIONS = [{"id": "S", "lines": ["far", "near"]}]
# vehicle id: (y at frame 0, metres per frame (-: towards the camera), box height px)
VEHICLES = {
    1: (50.5, -2.5, 60.0),  # 90 km/h: far line at frame 4.2, near line at 12.2
    2: (55.3, -2.0, 30.0),  # 72 km/h, too small to demand
    3: (60.7, -3.0, 80.0),  # 108 km/h
    4: (30.0, -2.0, 70.0),  # starts between the lines: crosses the near one only
    5: (10.2, 1.5, 70.0),  # 54 km/h the wrong way: near line first
}
TRUE_KMH = {1: 90.0, 2: 72.0, 3: 108.0, 5: 54.0}


def _box(vid: int) -> list[float]:
    h = VEHICLES[vid][2]
    return [100.0 * vid, 400.0 - h, 100.0 * vid + 60, 400.0]


def _ground_truth(with_geometry: bool = False) -> dict:
    frames = [
        {
            "frame_index": f,
            "pts_s": f / FPS,
            "vehicles": [
                {
                    "vehicle_id": vid,
                    "class_name": "car",
                    "box": _box(vid),
                    "full_box": _box(vid),
                    "visibility": 1.0,
                    "in_roi": True,
                    "world_x": 1.75,
                    "world_y": y0 + step * f,
                    "speed_kmh": abs(step) * FPS * 3.6,
                }
                for vid, (y0, step, _) in VEHICLES.items()
            ],
        }
        for f in range(N_FRAMES)
    ]
    raw = {"camera_id": "synthetic", "fps": FPS, "n_frames": N_FRAMES, "width": 1280, "height": 720}
    raw.update(frames=frames, vehicles=[])
    if with_geometry:
        raw["geometry"] = {"lines": LINES, "sections": SECTIONS, "lanes": [], "zones": [], "events": {}}
    return raw


GT = _ground_truth()


def _detections(tracks: dict[int, int] | None = None) -> pl.DataFrame:
    """Perfect tracking (vehicle v is track 10 v on every frame) unless ``tracks`` says otherwise."""
    tracks = tracks or {v: 10 * v for v in VEHICLES}
    rows = [
        {"camera_id": "synthetic", "frame_index": f["frame_index"], "track_id": tracks[v["vehicle_id"]],
         "x1": v["box"][0], "y1": v["box"][1], "x2": v["box"][2], "y2": v["box"][3]}
        for f in GT["frames"]
        for v in f["vehicles"]
        if v["vehicle_id"] in tracks
    ]  # fmt: skip
    return pl.DataFrame(rows)


def _tracks(rows: list[tuple[int, float | None, float | None]], section: str | None = "S") -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "camera_id": "synthetic",
                "track_id": t,
                "first_frame": 0,
                "last_frame": N_FRAMES - 1,
                "passage_speed_kmh": kmh,
                "passage_uncertainty_kmh": unc,
                "passage_section": section if kmh is not None else None,
            }
            for t, kmh, unc in rows
        ],  # fmt: skip
        schema={
            "camera_id": pl.String,
            "track_id": pl.Int64,
            "first_frame": pl.Int64,
            "last_frame": pl.Int64,
            "passage_speed_kmh": pl.Float64,
            "passage_uncertainty_kmh": pl.Float64,
            "passage_section": pl.String,
        },
    )


def _score(tracks: object, **kw: object) -> dict:
    kw.setdefault("detections", _detections())
    return score_passages(GT, tracks, lines=LINES, sections=SECTIONS, **kw)


def test_true_passages_are_distance_over_time_between_the_crossings() -> None:
    truth = {p["vehicle_id"]: p for p in true_passages(GT, LINES, SECTIONS)}
    assert set(truth) == {1, 2, 3, 5}  # 4 never crosses the far line
    for vid, kmh in TRUE_KMH.items():
        assert truth[vid]["true_speed_kmh"] == pytest.approx(kmh, abs=1e-3)
        assert truth[vid]["distance_m"] == pytest.approx(20.0)
    assert truth[1]["t_start_s"] == pytest.approx(0.42) and truth[1]["t_end_s"] == pytest.approx(1.22)
    assert truth[1]["first_line"] == "far" and truth[5]["first_line"] == "near"  # wrong way: either order
    assert {v for v, p in truth.items() if p["eligible"]} == {1, 3, 5}
    assert truth[2]["height_px"] == [30.0, 30.0]
    lower = true_passages(GT, LINES, SECTIONS, min_height_px=25)  # 30 px is enough when the bar is lower
    assert {p["vehicle_id"] for p in lower if p["eligible"]} == {1, 2, 3, 5}


def test_perfect_passage_speeds_score_zero_error() -> None:
    rows = [(10 * v, kmh, 1.0) for v, kmh in TRUE_KMH.items()] + [(40, None, None)]
    result = _score(_tracks(rows))
    assert result["missing_columns"] == [] and result["scored"] is True
    assert (result["true_passages"], result["eligible_vehicles"], result["measured"]) == (4, 3, 3)
    assert result["share_with_passage_speed"] == 1.0
    assert result["mean_abs_error_kmh"] == pytest.approx(0.0, abs=1e-3)
    assert result["max_abs_error_kmh"] == pytest.approx(0.0, abs=1e-3)
    assert result["share_within_2kmh"] == 1.0
    assert result["uncertainty_coverage"] == 1.0 and result["mean_uncertainty_kmh"] == 1.0
    assert result["passage_rows"] == 4  # vehicle 2's passage too: measured, but not demanded
    assert (result["ignored"], result["spurious"], result["duplicates"]) == (1, 0, 0)
    assert result["missed_vehicles"] == []
    assert result["mean_true_speed_kmh"] == pytest.approx(84.0, abs=1e-3)
    per = {p["vehicle_id"]: p for p in result["per_vehicle"]}
    assert per[1]["track_ids"] == ["10"] and per[1]["covered"] is True
    assert per[2]["eligible"] is False and per[2]["passage_speed_kmh"] == pytest.approx(72.0)
    assert result["params"]["window"] == "track_life"


def test_errors_coverage_and_misses() -> None:
    rows = [(10, 91.5, 1.0), (30, 105.0, 4.0), (50, None, None)]  # +1.5 (outside +-1), -3 (inside +-4), none
    result = _score(_tracks(rows))
    assert result["measured"] == 2 and result["share_with_passage_speed"] == pytest.approx(2 / 3)
    assert result["mean_abs_error_kmh"] == pytest.approx(2.25, abs=1e-3)
    assert result["mean_error_kmh"] == pytest.approx(-0.75, abs=1e-3)
    assert result["max_abs_error_kmh"] == pytest.approx(3.0, abs=1e-3)
    assert result["median_abs_error_kmh"] == pytest.approx(2.25, abs=1e-3)
    assert result["share_within_2kmh"] == 0.5
    assert result["uncertainty_coverage"] == 0.5
    assert result["mean_uncertainty_kmh"] == pytest.approx(2.5)
    assert result["missed_vehicles"] == [5]
    per = {p["vehicle_id"]: p for p in result["per_vehicle"]}
    assert per[1]["error_kmh"] == pytest.approx(1.5, abs=1e-3) and per[1]["covered"] is False
    assert per[3]["covered"] is True and per[5]["passage_speed_kmh"] is None


def test_duplicates_and_spurious_passages() -> None:
    # vehicle 1 is track 10 until frame 19, then track 11 (an id switch after its passage); both report one
    dets = _detections()
    switched = dets.with_columns(
        pl.when((pl.col("track_id") == 10) & (pl.col("frame_index") >= 20)).then(11).otherwise(pl.col("track_id"))
        .alias("track_id")
    )  # fmt: skip
    tracks = _tracks([(10, 90.0, 1.0), (11, 95.0, 1.0), (30, 108.0, 1.0), (50, 54.0, 1.0), (99, 70.0, 1.0)])
    tracks = tracks.with_columns(
        pl.when(pl.col("track_id") == 11).then(20).otherwise(pl.col("first_frame")).alias("first_frame")
    )
    result = _score(tracks, detections=switched)
    assert result["duplicates"] == 1  # track 11's: the first track's speed (10) is the one scored
    assert result["mean_abs_error_kmh"] == pytest.approx(0.0, abs=1e-3)
    assert result["spurious"] == 1 and result["spurious_tracks"] == ["99"]  # no box of any vehicle
    per = {p["vehicle_id"]: p for p in result["per_vehicle"]}
    assert per[1]["track_ids"] == ["10", "11"]


def test_a_tracks_vehicle_is_decided_over_its_passage_when_crossings_say_when() -> None:
    # track 77 is on vehicle 4's box for frames 0-29 and on vehicle 3's for 30-39; its crossings put its passage
    # at frames 31-36: with them the passage is vehicle 3's, without, vehicle 4's (most frames of its life)
    dets = _detections({1: 10, 2: 20, 5: 50}).vstack(
        pl.DataFrame(
            [
                {"camera_id": "synthetic", "frame_index": f, "track_id": 77,
                 "x1": _box(v)[0], "y1": _box(v)[1], "x2": _box(v)[2], "y2": _box(v)[3]}
                for f in range(N_FRAMES)
                for v in ([4] if f < 30 else [3])
            ]
        )
    )  # fmt: skip
    tracks = _tracks([(77, 108.0, 1.0)])
    crossings = pl.DataFrame(
        [
            {"camera_id": "synthetic", "line_id": "far", "track_id": 77, "direction": "towards_camera",
             "crossing_pts_s": 3.1},
            {"camera_id": "synthetic", "line_id": "near", "track_id": 77, "direction": "towards_camera",
             "crossing_pts_s": 3.5},
        ]
    )  # fmt: skip
    with_crossings = _score(tracks, detections=dets, crossings=crossings)
    assert with_crossings["measured"] == 1 and with_crossings["spurious"] == 0
    assert with_crossings["params"]["window"] == "crossings"
    without = _score(tracks, detections=dets)
    assert without["measured"] == 0 and without["spurious"] == 1  # vehicle 4 did not pass the section


@pytest.mark.parametrize("tracks", [None, pl.DataFrame(), pl.DataFrame({"track_id": [10], "first_frame": [0]})])
def test_a_tracks_table_without_passage_columns_is_reported_not_scored(tracks: object) -> None:
    result = _score(tracks)
    assert result["missing_columns"] == list(PASSAGE_COLUMNS)
    assert result["scored"] is False
    assert result["eligible_vehicles"] == 3  # the truth side is still there
    for key in ("measured", "share_with_passage_speed", "mean_abs_error_kmh", "uncertainty_coverage"):
        assert result[key] is None
    json.dumps(result)


def test_one_section_needs_no_section_column_and_uncertainty_is_optional() -> None:
    tracks = _tracks([(10, 91.0, None), (30, 108.0, None)]).drop("passage_section", "passage_uncertainty_kmh")
    result = _score(tracks)
    assert result["missing_columns"] == ["passage_uncertainty_kmh", "passage_section"]
    assert result["scored"] is True and result["measured"] == 2
    assert result["mean_abs_error_kmh"] == pytest.approx(0.5, abs=1e-3)
    assert result["uncertainty_coverage"] is None and result["mean_uncertainty_kmh"] is None


def test_passage_speeds_need_the_detections() -> None:
    with pytest.raises(ValueError, match="detections"):
        score_passages(GT, _tracks([(10, 90.0, 1.0)]), lines=LINES, sections=SECTIONS)


def test_geometry_comes_from_the_ground_truth_and_the_command_line(tmp_path: Path, capsys) -> None:
    gt = _ground_truth(with_geometry=True)
    assert score_passages(gt, _tracks([(10, 90.0, 1.0)]), detections=_detections())["measured"] == 1
    with pytest.raises(ValueError, match="no line"):
        score_passages(gt, None, sections=[{"id": "X", "lines": ["far", "nowhere"]}])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    _tracks([(10, 90.0, 1.0), (30, 110.0, 3.0)]).write_parquet(tmp_path / "tracks.parquet")
    _detections().write_parquet(tmp_path / "dets.parquet")
    assert main(["--ground-truth", str(tmp_path / "gt.json"), "--tracks", str(tmp_path / "tracks.parquet"),
                 "--detections", str(tmp_path / "dets.parquet")]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["measured"] == 2 and out["max_abs_error_kmh"] == pytest.approx(2.0, abs=1e-3)


# -- the speed scenario's section (bench/evaluate.py) -------------------------------------------------------------
def test_the_speed_scenarios_section_spans_the_well_resolved_stretch() -> None:
    scene = SceneParams()
    near, far = passage_line_ys(scene)
    assert (near, far) == (18.0, 40.0)
    camera = PinholeCamera.looking_down_road(scene)
    assert near > camera.ground_distance_at_row(scene.height) + 1.0  # confirmable in the picture
    (length, _), (width, _), (height, _) = DIMENSIONS["car"]
    smallest = Body(length, width, height, *SHAPES["car"])
    for y in (near, far):
        box = vehicle_box(camera, scene.camera_x, y, smallest)
        assert box is not None and box[3] - box[1] >= MIN_HEIGHT_PX
    geo = passage_geometry(scene)
    assert [line["points"][0][1] for line in geo["lines"]] == [near, far]
    assert geo["sections"] == [{"id": "section_0", "lines": ["line_1", "line_0"]}]


def test_the_section_is_added_to_the_clip_camera(tmp_path: Path) -> None:
    from trafficstream.bench.synthetic.clip import deployment_config, region_of_interest
    from trafficstream.cameras import Camera

    scene = SceneParams()
    camera = PinholeCamera.looking_down_road(scene)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    config = deployment_config(video, camera, scene, region_of_interest(camera, scene))
    path = tmp_path / "camera.yaml"
    path.write_text("# header\n" + yaml.safe_dump(config, sort_keys=False))
    add_to_camera(path, passage_geometry(scene))
    text = path.read_text()
    assert text.startswith("# header\n")
    cam = Camera.model_validate(yaml.safe_load(text)["cameras"][0])
    assert [line.id for line in cam.lines] == ["line_0", "line_1"]
    assert [(s.id, tuple(s.lines)) for s in cam.sections] == [("section_0", ("line_1", "line_0"))]
