"""``make eval``: score speed and identity on a synthetic known-speed clip run through the REAL pipeline.

Generates a clip (bench/synthetic/) for a seed nobody tuned on, starts a Kafka broker on 127.0.0.1,
submits the vehicle job with ``spark-submit``, ingests the clip, waits until every frame is processed,
then compares the ``detections`` Delta table with the ground truth (bench/metrics.py). The last line of
output is one JSON object (mean/median absolute speed error, share within 3 km/h, identity metrics, ...)::

    python -m trafficstream.bench.evaluate --seed 11 [--vehicles 14 --duration 12 --out var/eval]

``--scenario events`` (issue 12) stages traffic events in the clip -- a wrong-way vehicle, a vehicle stopping
in its lane for ``--stop-duration`` seconds and ``--queue`` cars queueing behind it -- gives the camera two
counting lines across the road, one lane per traffic lane and a queue zone over the stopped vehicle's lane
(bench/synthetic/scenario.py), and adds to the same JSON ``crossings`` (per line and direction: true,
measured, double, missed, spurious) and ``events`` (per type: precision, recall, start / detection timing)
from the ``crossings`` and ``events`` tables (bench/events_metrics.py)::

    python -m trafficstream.bench.evaluate --scenario events --seed 11 [--vehicles 10 --duration 20 \
        --wrong-way 1 --queue 2 --stop-duration 9 --out var/eval-events]

(``make eval EVAL_ARGS="--scenario events"``.)

Passage (section) speeds (issue 10): the default ``speed`` scenario also gives the synthetic camera two road-space
counting lines across the road (carriageway and shoulders, drawn -x -> +x like the events scenario's) and one
section over them (:func:`passage_geometry`)::

    lines:    line_0 at y = 18 m (near), line_1 at y = 40 m (far)   # for the default scene
    sections: [{id: section_0, lines: [line_1, line_0]}]

They span most of the stretch where speeds are both trusted and well resolved: the near line as close as the
picture allows a crossing to be confirmed (the image bottom, ~12.5 m, + the 1 m line hysteresis + 3 frames of
travel at ``--max-kmh``; the calibrated area with its 10 m margin starts at 14 m), the far line the farthest
whole metre where the smallest car (4.2 x 1.75 x 1.4 m) still stands 15 % above ``MIN_HEIGHT_PX`` (40 px). The
output JSON gets a ``passage`` key (bench/passage_metrics.py): per true vehicle crossing both lines, eligible
when >= 40 px tall at both, the true passage speed (true distance between its crossing points / true time
between them) against the ``tracks`` table's ``passage_speed_kmh`` +- ``passage_uncertainty_kmh`` of the track
its boxes matched: ``eligible_vehicles``, ``share_with_passage_speed``, ``mean_abs_error_kmh``,
``mean_error_kmh`` (signed), ``max_abs_error_kmh``, ``share_within_2kmh``, ``uncertainty_coverage`` (true speed
within measured +- uncertainty), ``mean_uncertainty_kmh``, ``per_vehicle`` .. . A tracks table without the
passage columns (a job from before them) is reported in ``passage.missing_columns`` with those metrics None.
A camera without sections (the events scenario) gets no ``passage`` key.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from trafficstream import tables
from trafficstream.bench.events_metrics import evaluate_events, events_on_clip_timeline, ideal_pipeline, ideal_tracks
from trafficstream.bench.metrics import evaluate
from trafficstream.bench.passage_metrics import score_passages
from trafficstream.bench.synthetic import PinholeCamera, SceneParams, SyntheticClip, generate
from trafficstream.bench.synthetic.clip import CAMERA_ID
from trafficstream.bench.synthetic.scenario import camera_geometry
from trafficstream.bench.synthetic.traffic import DIMENSIONS, SHAPES, Body, vehicle_box
from trafficstream.config import PROJECT_ROOT, Settings, load_settings
from trafficstream.logs import setup_logging

log = logging.getLogger("trafficstream.bench.evaluate")
HEADLINE = (
    "mean_abs_speed_error_kmh",
    "median_abs_speed_error_kmh",
    "share_within_3kmh",
    "true_vehicles",
    "vehicles_with_one_id",
    "id_switches",
    "idf1",
)
SCENARIOS = ("speed", "events")
# Defaults per scenario: the events clip runs longer (a stop of 9 s, detected after 3 s, and the queue
# moving off), with fewer ordinary vehicles (two lanes are blocked for a while).
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "speed": {"vehicles": 14, "duration": 12.0, "out": "eval"},
    "events": {"vehicles": 10, "duration": 20.0, "out": "eval-events"},
}


# A true vehicle counts once it is this tall: the 384x640 detector input finds 99% of vehicles of >= 40 px
# in 1280x720 frames (measured on these clips, `recall_by_height` in the output), and a vehicle that is still
# a 20 px speck at the far end of the region when the clip ends has not crossed the region.
MIN_HEIGHT_PX = 40
# Passage section of the speed scenario (see the module docstring).
PASSAGE_SECTION_ID = "section_0"
PASSAGE_HEIGHT_MARGIN = 1.15  # the smallest car stands this much above MIN_HEIGHT_PX at the far line
PASSAGE_CONFIRM_FRAMES = 3  # frames of travel past the near line (beyond its hysteresis) still in the picture
LINE_HYSTERESIS_M = 1.0  # cameras.EventSettings.crossing_hysteresis_m (the default the speed scene keeps)


def passage_line_ys(scene: SceneParams, min_height_px: float = MIN_HEIGHT_PX) -> tuple[float, float]:
    """(near, far) y in metres of the speed scenario's two passage lines, from the scene's geometry: near, the
    first whole metre from which a vehicle at ``max_kmh`` is still in the picture ``PASSAGE_CONFIRM_FRAMES``
    frames after passing the line's hysteresis; far, the last whole metre (before ``roi_far_m``) at which the
    smallest car's box is ``PASSAGE_HEIGHT_MARGIN`` x ``min_height_px`` tall."""
    camera = PinholeCamera.looking_down_road(scene)
    bottom = camera.ground_distance_at_row(scene.height)
    near = math.ceil(bottom + LINE_HYSTERESIS_M + PASSAGE_CONFIRM_FRAMES * scene.max_kmh / 3.6 / scene.fps)
    (length, _), (width, _), (height, _) = DIMENSIONS["car"]
    smallest = Body(length, width, height, *SHAPES["car"])

    def tall_enough(y: float) -> bool:
        box = vehicle_box(camera, scene.camera_x, y, smallest)
        return box is not None and box[3] - box[1] >= PASSAGE_HEIGHT_MARGIN * min_height_px

    far = next((y for y in range(math.ceil(scene.roi_far_m) - 1, near, -1) if tall_enough(y)), None)
    if far is None or far - near < 5:
        raise ValueError(f"no passage section fits this scene: near line {near} m, far line {far} m")
    return float(near), float(far)


def passage_geometry(scene: SceneParams, min_height_px: float = MIN_HEIGHT_PX) -> dict[str, Any]:
    """The ``lines`` and ``sections`` the speed scenario adds to the synthetic camera: two road-space counting
    lines across the road at :func:`passage_line_ys` (``line_0`` near, ``line_1`` far; drawn as the events
    scenario draws its lines) and one section over them (in driving order: far line first)."""
    lines = camera_geometry(replace(scene, line_ys_m=passage_line_ys(scene, min_height_px)))["lines"]
    return {"lines": lines, "sections": [{"id": PASSAGE_SECTION_ID, "lines": [lines[1]["id"], lines[0]["id"]]}]}


def add_to_camera(
    config_path: Path, sections: dict[str, Any], camera_id: str = CAMERA_ID, note: str | None = None
) -> None:
    """Add config sections (``lines``, ``sections``, ..) to a camera of a clip's ``camera.yaml``, keeping its
    header comment (and adding ``note`` to it)."""
    text = config_path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    header += f"# {note}\n" if note else ""
    raw = yaml.safe_load(text)
    camera = next(c for c in raw["cameras"] if c["id"] == camera_id)
    camera.update(sections)
    config_path.write_text(header + yaml.safe_dump(raw, sort_keys=False))


def score(
    settings: Settings,
    clip: SyntheticClip,
    min_height_px: float = MIN_HEIGHT_PX,
    *,
    camera_id: str | None = None,
    keep_errors: bool = False,
    run_tables: Mapping[str, pl.DataFrame] | None = None,
) -> dict[str, Any]:
    """Metrics of a finished run: the job's detections table against the clip's ground truth.

    Speed errors are over the speeds the pipeline reports as trusted (``speed_flag`` null): a flagged speed
    (too little history, outside the calibrated area, ...) is shown as untrusted, never acted on;
    ``speed_coverage`` says which share of matched detections carried a trusted speed. ``camera_id``: the
    camera that played the clip (default: the ground truth's); ``run_tables``: the run's tables already read
    (:func:`read_run_tables`), for scoring many cameras of one run."""
    result = evaluate(
        clip.ground_truth_path,
        _table(settings, tables.DETECTIONS, run_tables),
        window_s=settings.tracker.speed_window_s,
        camera_id=camera_id,
        exclude_flagged=True,
        min_height_px=min_height_px,
        keep_errors=keep_errors,
    )
    result.pop("per_vehicle", None)
    return result


def read_run_tables(settings: Settings, names: Sequence[str]) -> dict[str, pl.DataFrame]:
    """The run's tables ``names``, each read once (empty when the job never created it)."""
    return {name: _read_table(settings, name) for name in names}


def _table(settings: Settings, name: str, run_tables: Mapping[str, pl.DataFrame] | None) -> pl.DataFrame:
    if run_tables is not None and name in run_tables:
        return run_tables[name]
    return pl.read_delta(settings.table_uri(name)) if name == tables.DETECTIONS else _read_table(settings, name)


def _read_table(settings: Settings, name: str) -> pl.DataFrame:
    """A Delta table of the run; empty (no columns) when the job never created it."""
    try:
        return pl.read_delta(settings.table_uri(name))
    except Exception as exc:  # deltalake's TableNotFoundError and kin: nothing was written
        log.warning("table %s not readable (%s): scored as empty", name, exc)
        return pl.DataFrame()


def score_events(settings: Settings, clip: SyntheticClip, min_height_px: float = MIN_HEIGHT_PX) -> dict[str, Any]:
    """Counting and event metrics of a finished run of an events scene: the ``crossings`` and ``events`` tables
    against the clip's true crossings and events, tracks told apart by the ``detections`` table's boxes.
    ``ideal``: the same scores for the camera's line counter and event detector fed perfect perception (true
    positions and speeds, one track per vehicle): where the run falls short and ``ideal`` does not, detection
    or tracking is at fault; where both do, the counting or event logic is."""
    crossings = _read_table(settings, tables.CROSSINGS)
    if crossings.is_empty():
        crossings = pl.DataFrame(
            schema={"line_id": pl.String, "track_id": pl.Int64, "direction": pl.String, "crossing_pts_s": pl.Float64}
        )
    events = _read_table(settings, tables.EVENTS)
    if events.is_empty():
        events = pl.DataFrame(
            schema={
                "event_type": pl.String,
                "track_id": pl.Int64,
                "lane_id": pl.String,
                "zone_id": pl.String,
                "start_s": pl.Float64,
                "detect_s": pl.Float64,
                "end_s": pl.Float64,
            }
        )
    else:
        events = events_on_clip_timeline(events, _read_table(settings, tables.FRAMES))
    gt = json.loads(clip.ground_truth_path.read_text())
    result = evaluate_events(
        gt,
        crossings,
        events,
        detections=pl.read_delta(settings.table_uri(tables.DETECTIONS)),
        min_height_px=min_height_px,
    )
    camera = next(c for c in settings.cameras if c.id == gt["camera_id"])
    ideal_crossings, ideal_events = ideal_pipeline(gt, camera)
    result["ideal"] = evaluate_events(
        gt, ideal_crossings, ideal_events, tracks=ideal_tracks(gt), min_height_px=min_height_px
    )
    return result


def score_passage(
    settings: Settings,
    clip: SyntheticClip,
    min_height_px: float = MIN_HEIGHT_PX,
    *,
    camera_id: str | None = None,
    run_tables: Mapping[str, pl.DataFrame] | None = None,
) -> dict[str, Any] | None:
    """Passage-speed metrics of a finished run (bench/passage_metrics.py): the ``tracks`` table's passage speeds
    against the true ones, tracks told apart by the ``detections`` table's boxes over their ``crossings``; None
    when the clip's camera has no sections. Columns the tracks table lacks are in ``missing_columns``."""
    gt = json.loads(clip.ground_truth_path.read_text())
    camera = next(c for c in settings.cameras if c.id == (camera_id or gt["camera_id"]))
    sections = list(getattr(camera, "sections", None) or [])
    if not sections:
        return None
    crossings = _table(settings, tables.CROSSINGS, run_tables)
    result = score_passages(
        gt,
        _table(settings, tables.TRACKS, run_tables),
        detections=_table(settings, tables.DETECTIONS, run_tables),
        crossings=crossings if crossings.height else None,
        lines=[line.model_dump(mode="json") for line in camera.lines],
        sections=[s.model_dump(mode="json") for s in sections],
        events=camera.events.model_dump(mode="json"),
        camera_id=camera.id,
        min_height_px=min_height_px,
    )
    return result


STOP_TIMEOUT_S = 900.0


def run_pipeline(
    config_path: Path, out: Path, overrides: list[str], *, detect_every: int | None = None
) -> tuple[Settings, int]:
    """Run a deployment config's cameras through the real pipeline once: a Kafka broker on 127.0.0.1, the job
    under ``spark-submit`` (its tables under ``out/run``), every camera ingested, and wait until each frame is
    processed. Returns the settings the job ran with and the number of frames ingested."""
    from trafficstream.infra.local_kafka import KafkaBroker
    from trafficstream.infra.pipeline import JobProcess, wait_processed
    from trafficstream.ingest.worker import run_ingest

    with KafkaBroker(out / "kafka") as broker:
        settings = load_settings(
            config_path,
            [f"kafka.bootstrap_servers={broker.bootstrap_servers}", f"storage.var_dir={out / 'run'}", *overrides],
        )
        if detect_every:
            cams = [c.model_copy(update={"detect_every": detect_every}) for c in settings.cameras]
            settings = settings.model_copy(update={"cameras": cams})
        k = settings.kafka
        broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
        job = JobProcess(settings, out).start()
        try:
            job.wait_started()
            ingested = run_ingest(settings).total
            wait_processed(settings, ingested, job)
            # A graceful stop commits what is spooled, violation evidence included: with every core busy until
            # the last frame, the clips of the last commit group can take minutes (264 s for 35 violations).
            if job.stop(timeout_s=STOP_TIMEOUT_S) != 0:
                raise RuntimeError(f"vehicle job failed:\n{job.log_tail()}")
        finally:
            job.kill()
    return settings, ingested


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="speed", help="speed (default) or events")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--vehicles", type=int, default=None, help="ordinary vehicles (default 14; events: 10)")
    parser.add_argument("--duration", type=float, default=None, help="clip seconds (default 12; events: 20)")
    parser.add_argument("--min-kmh", type=float, default=60.0)
    parser.add_argument("--max-kmh", type=float, default=130.0)
    parser.add_argument("--wrong-way", type=int, default=1, help="events: wrong-way vehicles")
    parser.add_argument("--queue", type=int, default=2, help="events: cars queueing behind the stopped one")
    parser.add_argument(
        "--stop-duration", type=float, default=9.0, help="events: seconds the vehicle stands (<= 0: to the end)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="wiped at start (default var/eval; events: var/eval-events)"
    )
    parser.add_argument(
        "--detect-every", type=int, default=None, metavar="K", help="detection stride of the camera (tracker between)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    t0 = time.time()
    defaults = SCENARIO_DEFAULTS[args.scenario]
    out = (args.out or PROJECT_ROOT / "var" / defaults["out"]).resolve()
    shutil.rmtree(out, ignore_errors=True)
    scene = SceneParams(
        n_vehicles=defaults["vehicles"] if args.vehicles is None else args.vehicles,
        duration_s=defaults["duration"] if args.duration is None else args.duration,
        min_kmh=args.min_kmh,
        max_kmh=args.max_kmh,
    )
    if args.scenario == "events":
        scene = replace(
            scene,
            wrong_way_vehicles=args.wrong_way,
            stopped_vehicles=1,
            queue_vehicles=args.queue,
            stop_duration_s=args.stop_duration if args.stop_duration > 0 else None,
        )
    clip = generate(out / "clip", scene, seed=args.seed)
    if args.scenario == "speed":
        add_to_camera(
            clip.config_path, passage_geometry(scene), note="passage lines and section: bench.evaluate (speed)"
        )
    log.info("synthetic clip %s (seed %d)", clip.video_path, args.seed)
    settings, ingested = run_pipeline(clip.config_path, out, args.overrides, detect_every=args.detect_every)
    result = score(settings, clip)
    passage = score_passage(settings, clip)
    if passage is not None:
        result["passage"] = passage
        _log_passage(passage)
    if args.scenario == "events":
        result.update(scenario="events", **score_events(settings, clip))
        _log_events(result)
    result.update(
        seed=args.seed,
        detect_every=args.detect_every or 1,
        frames=ingested,
        seconds=round(time.time() - t0, 1),
        ground_truth=str(clip.ground_truth_path),
    )
    for key in HEADLINE:
        log.info("%-28s %s", key, result.get(key))
    print(json.dumps(result, default=str))
    return 0


def _log_events(result: dict[str, Any]) -> None:
    c = result["crossings"]
    log.info(
        "crossings: %d true, %d measured, %d double, %d missed, %d spurious",
        c["true"],
        c["measured"],
        c["double"],
        c["missed"],
        c["spurious"],
    )
    for kind in ("wrong_way", "stopped_vehicle", "queue"):
        e = result["events"][kind]
        log.info(
            "%-16s true %d reported %d precision %s recall %s detect delay %s s",
            kind,
            e["true"],
            e["reported"],
            e["precision"],
            e["recall"],
            e["mean_detect_delay_s"],
        )


def _log_passage(p: dict[str, Any]) -> None:
    if p["missing_columns"]:
        log.warning("passage: the tracks table lacks %s", ", ".join(p["missing_columns"]))
    log.info(
        "passage: %d eligible, share with a passage speed %s, mean abs error %s km/h (signed %s, max %s), "
        "within 2 km/h %s, uncertainty coverage %s (mean +-%s km/h)",
        p["eligible_vehicles"],
        p["share_with_passage_speed"],
        p["mean_abs_error_kmh"],
        p["mean_error_kmh"],
        p["max_abs_error_kmh"],
        p["share_within_2kmh"],
        p["uncertainty_coverage"],
        p["mean_uncertainty_kmh"],
    )


if __name__ == "__main__":
    sys.exit(main())
