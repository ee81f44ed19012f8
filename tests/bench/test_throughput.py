"""bench/throughput.py: the pure helpers (summaries, ratios, targets) and a short real run of baselines A and B
on the first frames of the small ``dual-carriageway`` camera (real models, decoders and stage 2)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trafficstream.bench.throughput import (
    TARGETS,
    Clip,
    MemoryGroupState,
    SeekingFrameReader,
    check_targets,
    comparison,
    index_clip,
    machine_info,
    measure_baseline,
    ratio,
    summarise,
)
from trafficstream.config import PROJECT_ROOT, Settings, load_settings, settings_to_json
from trafficstream.streaming_jobs.perception import Runtime
from trafficstream.video import FrameReader

CAMERA = "dual-carriageway"
FRAMES = 6


# -- pure helpers ----------------------------------------------------------------------------------------------
def test_summarise_median_spread_and_count() -> None:
    assert summarise([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert summarise([1.0, 2.0, 4.0, 10.0]) == {"median": 3.0, "min": 1.0, "max": 10.0, "n": 4}
    assert summarise([1.234567], ndigits=3) == {"median": 1.235, "min": 1.235, "max": 1.235, "n": 1}


def test_summarise_leaves_out_missing_values() -> None:
    assert summarise([None, math.nan, 5.0, math.inf]) == {"median": 5.0, "min": 5.0, "max": 5.0, "n": 1}
    assert summarise([]) == {"median": None, "min": None, "max": None, "n": 0}
    assert summarise(x for x in [2.0, 4.0]) == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 2}


def test_ratio() -> None:
    assert ratio(12.0, 4.0) == 3.0
    assert ratio(1.0, 3.0) == 0.333
    assert ratio(None, 4.0) is None
    assert ratio(4.0, None) is None
    assert ratio(4.0, 0.0) is None


def test_targets_pass_fail_and_unmeasured() -> None:
    got = check_targets({"pipeline_over_A": 1.0, "pipeline_over_B": 2.99, "motorway_pipeline_fps": None})
    assert got["pipeline_over_A"] == {"value": 1.0, "target": 1.0, "pass": True}  # the bound itself passes
    assert got["pipeline_over_B"] == {"value": 2.99, "target": 3.0, "pass": False}
    assert got["motorway_pipeline_fps"] == {"value": None, "target": 8.0, "pass": None}
    assert set(got) == set(TARGETS)


def test_comparison_ratios_against_the_baselines() -> None:
    got = comparison(pipeline_fps=6.0, a_fps=5.0, b_fps=1.5, motorway_fps=8.5)
    assert got["pipeline_over_A"] == 1.2
    assert got["pipeline_over_B"] == 4.0
    assert all(t["pass"] for t in got["targets"].values())
    slow = comparison(pipeline_fps=4.0, a_fps=5.0, b_fps=None, motorway_fps=3.0)
    assert slow["pipeline_over_A"] == 0.8 and slow["pipeline_over_B"] is None
    assert [t["pass"] for t in slow["targets"].values()] == [False, None, False]


def test_memory_group_state() -> None:
    state = MemoryGroupState()
    assert not state.exists
    with pytest.raises(ValueError):
        _ = state.get
    state.update((3, b"blob"))
    assert state.exists and state.get == (3, b"blob")


def test_machine_info_names_cpu_memory_and_packages() -> None:
    info = machine_info()
    assert info["cpu_cores"] >= 1 and info["memory_gib"] > 0 and info["python"]
    assert info["packages"]["numpy"] == np.__version__
    assert set(info["packages"]) == {"onnxruntime", "pyspark", "delta-spark", "numpy", "av"}


# -- real components -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def settings(data_dir: Path) -> Settings:
    return load_settings(PROJECT_ROOT / "infra" / "config" / "demo.yaml", [f"storage.data_dir={data_dir}"])


@pytest.fixture(scope="module")
def clip(settings: Settings) -> Clip:
    return index_clip(settings.camera(CAMERA), FRAMES)


@pytest.fixture(scope="module")
def runtime(settings: Settings) -> Runtime:
    return Runtime(settings)


def test_index_clip_lists_frames_as_ingest_publishes_them(clip: Clip) -> None:
    assert [i for i, _ in clip.frames] == list(range(FRAMES))
    pts = [p for _, p in clip.frames]
    assert pts[0] == 0.0 and pts == sorted(set(pts))
    assert (clip.info.width, clip.info.height) == (640, 360)


def test_seeking_reader_returns_the_frames_the_sequential_reader_does(settings: Settings) -> None:
    camera = settings.camera(CAMERA)
    frames = index_clip(camera, 62).frames  # the clip's keyframes are 60 apart: 61 is past the second one
    sequential, seeking = FrameReader(camera.source_path()), SeekingFrameReader(camera.source_path())
    try:
        for i in (0, 5, 61):
            assert np.array_equal(seeking.read(*frames[i]), sequential.read(*frames[i]))
    finally:
        sequential.close()
    assert seeking.seeks == 3
    assert seeking.decoded == 1 + 6 + 2  # from keyframe 0 to frames 0 and 5, from keyframe 60 to 61


@pytest.mark.parametrize("seeking", [False, True], ids=["A-sequential", "B-seeking"])
def test_baseline_processes_frames_through_both_stages(
    runtime: Runtime, settings: Settings, clip: Clip, seeking: bool
) -> None:
    figures = measure_baseline(
        runtime, settings_to_json(settings), [clip], frames=FRAMES, seeking=seeking, reps=1, warmup_frames=1
    )
    assert figures["reps"] == 1 and figures["frames"] == FRAMES
    assert figures["fps"]["n"] == 1 and figures["fps"]["median"] > 0
    cam = figures["per_camera"][CAMERA]
    assert cam["frames"] == FRAMES
    assert cam["ok_rows"] == FRAMES
    assert cam["detected_rows"] == FRAMES  # every frame decoded, detected and embedded (none left to predict)
    assert cam["frame_results"] == FRAMES  # and turned into a stage-2 frame result
    assert cam["stage2_dead"] == 0
    assert cam["fps"]["median"] > 0
    ms = {k: v["median"] for k, v in cam["ms_per_frame"].items()}
    assert set(ms) == {"decode", "detect", "embed", "stage1_other", "arrow", "stage2"}
    assert ms["decode"] > 0 and ms["detect"] > 0 and ms["stage2"] > 0
    if seeking:
        assert cam["decoded_per_frame"] == (1 + FRAMES) / 2  # frame k of the first GOP decodes k + 1 frames
    else:
        assert cam["decoded_per_frame"] is None
