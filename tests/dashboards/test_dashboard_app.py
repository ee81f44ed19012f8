"""The app over HTTP without Kafka: pages, callbacks (through Dash's own endpoint), video, snapshots, auth, CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import cv2
import numpy as np
import polars as pl
import pytest
from deltalake import write_deltalake
from synthetic_results import synthetic_messages
from werkzeug.exceptions import NotFound

from trafficstream import tables
from trafficstream.config import PROJECT_ROOT
from trafficstream.dashboards import layout as L
from trafficstream.dashboards.app import create_app, get_context, serve_in_thread
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.video import resolve_snapshot, snapshot_url
from trafficstream.errors import ConfigError
from trafficstream.results import crossing_message, event_message

MOTORWAY = "motorway-overpass"


@pytest.fixture
def filled(demo_settings) -> LiveBuffers:
    """Buffers holding the last 4 s of synthetic results for the real clips (as if just processed)."""
    buffers = LiveBuffers.from_settings(demo_settings)
    for msg in synthetic_messages(demo_settings, n_frames=120, capture_start=time.time() - 4.5):
        buffers.add(msg)
    return buffers


@pytest.fixture
def flowing(demo_settings):
    """Buffers receiving synthetic results in real time (micro-batches every 0.25 s, 0.4 s processing delay)."""
    buffers = LiveBuffers.from_settings(demo_settings)
    start = time.time()
    messages = sorted(
        synthetic_messages(demo_settings, n_frames=300, capture_start=start - 1.0, evidence=False),
        key=lambda m: m["capture_ts"],
    )
    stop = threading.Event()

    def run() -> None:
        i = 0
        while not stop.is_set() and i < len(messages):
            cutoff = time.time() - 0.4
            while i < len(messages) and messages[i]["capture_ts"] <= cutoff:
                buffers.add(messages[i])
                i += 1
            stop.wait(0.25)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield buffers
    stop.set()
    thread.join()


@pytest.fixture
def app(demo_settings, filled):
    app = create_app(demo_settings, buffers=filled, start_consumer=False)
    yield app
    get_context(app).close()


def dash_call(
    app, client, output: str, inputs: dict[str, Any], state: dict[str, Any] | None = None, changed: str | None = None
):
    """POST one callback the way the Dash renderer does; returns (status, response json or None)."""
    spec = app.callback_map[output]
    outputs = [{"id": i, "property": p} for i, p in re.findall(r"([\w-]+)\.(\w+)", output)]
    body = {
        "output": output,
        "outputs": outputs if output.startswith("..") else outputs[0],
        "inputs": [{**i, "value": inputs.get(f"{i['id']}.{i['property']}")} for i in spec["inputs"]],
        "state": [{**s, "value": (state or {}).get(f"{s['id']}.{s['property']}")} for s in spec["state"]],
        "changedPropIds": [changed or next(iter(inputs))],
    }
    resp = client.post("/_dash-update-component", json=body)
    return resp.status_code, (resp.get_json() if resp.status_code == 200 else None)


def key_of(*ids_props: str) -> str:
    """Dash's key of a multi-output callback: ..a.prop...b.prop.."""
    return ".." + "...".join(ids_props) + ".."


def test_page_and_layout(app, demo_settings):
    client = app.server.test_client()
    page = client.get("/")
    assert page.status_code == 200 and b"TrafficStream" in page.data
    layout = client.get("/_dash-layout").get_data(as_text=True)
    for cam in demo_settings.cameras:
        assert cam.id in layout
    status, out = dash_call(app, client, "live-video.src", {"camera.value": MOTORWAY})
    assert status == 200 and out["response"]["live-video"]["src"] == f"/video/{MOTORWAY}.mjpg"


def test_kpi_callback(app, filled):
    client = app.server.test_client()
    output = key_of(
        *[f"{L.kpi_value_id(k)}.children" for k in L.KPI_KEYS], *[f"{L.kpi_sub_id(k)}.children" for k in L.KPI_KEYS]
    )
    inputs = {"tick.n_intervals": 1, "camera.value": MOTORWAY, "kpi-window.value": 5}
    newest = filled.latest_frame(MOTORWAY).capture_ts
    before = time.time()
    status, out = dash_call(app, client, output, inputs)
    after = time.time()
    assert status == 200
    values = {k: out["response"][L.kpi_value_id(k)]["children"] for k in L.KPI_KEYS}
    assert int(values["counted"]) > 0
    assert values["mean"].endswith("km/h") and values["p85"].endswith("km/h")
    lag = float(values["lag"].split()[0])
    # now - capture time of the newest result, "now" being the callback's (shown to 0.1 s).
    assert round(before - newest, 1) - 0.05 <= lag <= round(after - newest, 1) + 0.05, (before - newest, lag)


def test_charts_only_redraw_when_data_changed(app, filled, demo_settings):
    client = app.server.test_client()
    output = "..speed-histogram.figure...flow-chart.figure...charts-state.data.."
    inputs = {"tick.n_intervals": 1, "camera.value": MOTORWAY, "kpi-window.value": 5}
    status, out = dash_call(app, client, output, inputs)
    assert status == 200
    hist = out["response"]["speed-histogram"]["figure"]
    assert hist["data"] and hist["data"][0]["type"] == "histogram"
    state = out["response"]["charts-state"]["data"]
    # Next tick with no new results: no update at all (the graphs are left alone in the browser).
    status, _ = dash_call(app, client, output, {**inputs, "tick.n_intervals": 2}, {"charts-state.data": state})
    assert status == 204
    latest = filled.latest_frame(MOTORWAY)
    filled.add(
        {
            "v": 1,
            "type": "frame",
            "camera_id": MOTORWAY,
            "frame_index": latest.frame_index + 1,
            "pts_s": latest.pts_s + 0.033,
            "capture_ts": latest.capture_ts + 0.033,
            "vehicles": [],
        }
    )
    # New data, but redrawn less than CHART_REFRESH_S ago: still left alone; a moment later it is redrawn.
    status, _ = dash_call(app, client, output, {**inputs, "tick.n_intervals": 3}, {"charts-state.data": state})
    assert status == 204
    earlier = {**state, "at": state["at"] - 2.5}
    status, out = dash_call(app, client, output, {**inputs, "tick.n_intervals": 4}, {"charts-state.data": earlier})
    assert status == 200 and out["response"]["charts-state"]["data"]["version"] > state["version"]


def test_violations_are_prepended_with_a_patch(app, filled):
    client = app.server.test_client()
    output = "..violations-log.children...violations-state.data.."
    inputs = {"tick.n_intervals": 1, "camera.value": MOTORWAY}
    status, out = dash_call(app, client, output, inputs)
    assert status == 200
    rows = out["response"]["violations-log"]["children"]
    state = out["response"]["violations-state"]["data"]
    assert state["count"] == len(filled.violations(MOTORWAY)) > 0
    assert "/snapshot/" in str(rows[0])  # thumbnail link to the evidence JPEG
    status, _ = dash_call(app, client, output, {**inputs, "tick.n_intervals": 2}, {"violations-state.data": state})
    assert status == 204
    newest = filled.violations(MOTORWAY)[0]
    filled.add({**newest, "v": 1, "type": "violation", "track_id": 999, "capture_ts": newest["capture_ts"] + 1})
    status, out = dash_call(app, client, output, {**inputs, "tick.n_intervals": 3}, {"violations-state.data": state})
    assert status == 200
    patch = out["response"]["violations-log"]["children"]
    assert patch["__dash_patch_update"] == "__dash_patch_update"
    assert [op["operation"] for op in patch["operations"]] == ["Prepend"]
    assert "#999" in str(patch["operations"][0]["params"])
    assert out["response"]["violations-state"]["data"]["count"] == state["count"] + 1


def test_history_callback_without_tables_says_no_data_yet(app):
    client = app.server.test_client()
    output = "..history-summary.children...history-flow.figure...history-speeds.figure.."
    today = time.strftime("%Y-%m-%d")
    inputs = {
        "history-load.n_clicks": 1,
        "tabs.value": "history",
        "camera.value": MOTORWAY,
        "history-dates.start_date": today,
        "history-dates.end_date": today,
        "history-start-time.value": "00:00",
        "history-end-time.value": "23:59",
    }
    status, out = dash_call(app, client, output, inputs, state=inputs)
    assert status == 200
    assert "No data yet" in str(out["response"]["history-summary"]["children"])
    status, _ = dash_call(app, client, output, {**inputs, "tabs.value": "live"}, state=inputs)
    assert status == 204  # no Delta reads while nobody looks at the history tab
    status, out = dash_call(app, client, output, inputs, state={**inputs, "history-start-time.value": "7am"})
    assert "Invalid range" in str(out["response"]["history-summary"]["children"])


def _read_parts(url: str, seconds: float, auth: str | None = None) -> list[tuple[dict[str, str], bytes]]:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    data = b""
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            data += resp.read1(1 << 16)
    parts = []
    for chunk in data.split(b"--frame\r\n")[1:]:
        head, sep, body = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        if sep and len(body) >= int(headers["Content-Length"]):
            parts.append((headers, body[: int(headers["Content-Length"])]))
    return parts


def test_mjpeg_stream_plays_processed_frames_live(demo_settings, flowing, test_output):
    with serve_in_thread(demo_settings, port=0, buffers=flowing, start_consumer=False) as handle:
        url = f"{handle.url}/video/{MOTORWAY}.mjpg"
        deadline = time.monotonic() + 10
        while not flowing.frames_after(MOTORWAY, None):  # the feed's first micro-batch
            assert time.monotonic() < deadline, "no results reached the buffers"
            time.sleep(0.05)
        oldest = flowing.frames_after(MOTORWAY, None)[0].frame_index
        parts = _read_parts(url, 3.0)
        frames = [(h, body) for h, body in parts if "X-Frame-Index" in h]
        indices = [int(h["X-Frame-Index"]) for h, _ in frames]
        assert len(frames) >= 5, "the video does not play"
        assert indices == sorted(indices) and len(set(indices)) == len(indices)
        # Paced at the source rate (29.8 fps) from capture time + playout delay: never faster.
        assert len(frames) / 3.0 <= 32, len(frames)
        # Live: it starts at the newest due frame, not by replaying the buffer from its start.
        assert indices[0] > oldest, (oldest, indices[:5])
        delays = [time.time() - float(h["X-Capture-Ts"]) for h, _ in frames[-5:]]
        # Rate and delay are measurements (make bench reports them), not pass/fail criteria on a shared machine.
        (test_output / "dashboard-mjpeg.json").write_text(
            json.dumps({"stream_fps": round(len(frames) / 3.0, 1), "delay_s_max_last5": round(max(delays), 3)})
        )
        image = cv2.imdecode(np.frombuffer(frames[-1][1], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (540, 960, 3)  # scaled to about the size the page shows it at

        # A second viewer shares the camera's renderer: same frames, no second decoder.
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda _: _read_parts(url, 2.0), range(2))
        shared = {h["X-Frame-Index"] for h, _ in a} & {h["X-Frame-Index"] for h, _ in b}
        assert len(shared) >= 20
        assert len(handle.context.streamer._renderers) == 1

        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{handle.url}/video/nope.mjpg", timeout=5)
        assert err.value.code == 404


def test_stop_ends_open_streams(demo_settings, flowing):
    handle = serve_in_thread(demo_settings, port=0, buffers=flowing, start_consumer=False)
    resp = urllib.request.urlopen(f"{handle.url}/video/{MOTORWAY}.mjpg", timeout=10)
    resp.read1(1000)
    handle.stop()
    assert not handle.thread.is_alive()
    deadline = time.monotonic() + 5
    while resp.read1(1 << 16):  # the stream ends instead of hanging
        assert time.monotonic() < deadline
    assert not handle.context.streamer.active_streams()


def test_snapshot_route_serves_only_evidence(app, demo_settings, tmp_path):
    client = app.server.test_client()
    root = demo_settings.evidence_root
    violation = next(v for v in get_context(app).buffers.violations(MOTORWAY))
    url = snapshot_url(violation["evidence_uri"], root)
    assert url and url.startswith(f"/snapshot/{MOTORWAY}/")
    resp = client.get(url)
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(resp.data, np.uint8), cv2.IMREAD_COLOR).shape == (720, 1280, 3)

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not for you")
    (root / "link.jpg").symlink_to(secret)
    (root / "notes.txt").write_text("x")
    for bad in [
        "/snapshot/../secret.jpg",
        "/snapshot/%2e%2e/secret.jpg",
        f"/snapshot/{secret}",
        "/snapshot//etc/passwd",
        "/snapshot/link.jpg",
        "/snapshot/notes.txt",
        "/snapshot/missing.jpg",
        "/snapshot/" + "..%2f" * 8 + "etc/passwd",
    ]:
        resp = client.get(bad)
        # 404 from the route, or Dash's own catch-all page for URLs the route does not match (//...).
        assert resp.status_code == 404 or resp.mimetype == "text/html", bad
        assert b"not for you" not in resp.data and b"root:" not in resp.data, bad
    assert snapshot_url(secret.as_uri(), root) is None
    assert snapshot_url(None, root) is None
    with pytest.raises(NotFound):
        resolve_snapshot("../secret.jpg", root)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_protects_every_route(demo_settings, filled):
    settings = demo_settings.model_copy(
        update={
            "dashboard": demo_settings.dashboard.model_copy(
                update={"basic_auth_user": "staff", "basic_auth_password": "s3cret"}
            )
        }
    )
    app = create_app(settings, buffers=filled, start_consumer=False)
    try:
        client = app.server.test_client()
        for path in ["/", "/_dash-layout", f"/video/{MOTORWAY}.mjpg", "/snapshot/x.jpg"]:
            resp = client.get(path)
            assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get("/", headers={"Authorization": _basic("staff", "wrong")}).status_code == 401
        assert client.get("/", headers={"Authorization": _basic("other", "s3cret")}).status_code == 401
        assert client.get("/", headers={"Authorization": _basic("staff", "s3cret")}).status_code == 200
    finally:
        get_context(app).close()
    half = demo_settings.model_copy(
        update={"dashboard": demo_settings.dashboard.model_copy(update={"basic_auth_user": "staff"})}
    )
    with pytest.raises(ConfigError, match="together"):
        create_app(half, start_consumer=False)


def test_cli_serves_without_a_broker_and_stops_on_sigterm(demo_settings, tmp_path):
    from trafficstream.infra.local_kafka import free_port

    port = free_port()
    env = {**os.environ, "TRAFFICSTREAM_STORAGE__VAR_DIR": str(tmp_path / "var")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trafficstream.dashboards",
            "--config",
            str(PROJECT_ROOT / "infra/config/demo.yaml"),
            "--set",
            f"dashboard.port={port}",
            "--set",
            "kafka.bootstrap_servers=127.0.0.1:9",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "dashboard did not come up"
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read().decode()
    assert f"dashboard on http://127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_cli_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dashboard: {port: 0}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "trafficstream.dashboards", "--config", str(bad)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "dashboard.port" in proc.stderr


# -- counting lines and events -----------------------------------------------------------------------------
def _crossing(track_id: int, day_count: int, ts: float, line: str = "near", direction: str = "towards_camera"):
    return crossing_message(
        camera_id=MOTORWAY,
        line_id=line,
        track_id=track_id,
        direction=direction,
        ts=ts,
        frame_index=track_id,
        lane_id="lane-2",
        class_name="car",
        speed_kmh=97.0,
        day_count=day_count,
    )


def test_line_counts_callback_shows_todays_counts_and_redraws_only_on_change(app, filled):
    client = app.server.test_client()
    output = key_of(f"{L.LINE_COUNTS}.children", f"{L.COUNTS_STATE}.data")
    inputs = {"tick.n_intervals": 1, "camera.value": MOTORWAY}
    status, out = dash_call(app, client, output, inputs)
    assert status == 200
    text = json.dumps(out["response"][L.LINE_COUNTS]["children"])
    assert '"near"' in text and '"far"' in text and "towards_camera" in text and "away_from_camera" in text
    state = out["response"][L.COUNTS_STATE]["data"]
    status, _ = dash_call(app, client, output, {**inputs, "tick.n_intervals": 2}, {f"{L.COUNTS_STATE}.data": state})
    assert status == 204  # nothing crossed since
    now = time.time()
    filled.add(_crossing(17, 1234, now - 1))
    status, out = dash_call(app, client, output, {**inputs, "tick.n_intervals": 3}, {f"{L.COUNTS_STATE}.data": state})
    assert status == 200
    text = json.dumps(out["response"][L.LINE_COUNTS]["children"])
    assert '"1234"' in text and "#17 car 97 km/h (lane-2)" in text


def test_events_log_filters_by_type_and_camera(app, filled, demo_settings):
    client = app.server.test_client()
    output = key_of(f"{L.EVENTS}.children", f"{L.EVENTS_STATE}.data")
    now = time.time()
    other = demo_settings.cameras[1].id

    def event(event_id: str, event_type: str, camera_id: str, detect_ts: float, **kw) -> dict:
        return event_message(
            camera_id=camera_id,
            event_id=event_id,
            event_type=event_type,
            start_ts=detect_ts - 20,
            detect_ts=detect_ts,
            track_id=kw.pop("track_id", 7),
            lane_id="lane-1",
            **kw,
        )

    filled.add(event("a1", "stopped_vehicle", MOTORWAY, now - 30, duration_s=20.0))
    filled.add(event("b2", "speeding", MOTORWAY, now - 20, speed_kmh=131.0))
    filled.add(event("c3", "wrong_way", other, now - 10, distance_m=35.0))
    inputs = {"tick.n_intervals": 1, f"{L.EVENT_TYPE_FILTER}.value": list(L.DEFAULT_EVENT_TYPES)}
    inputs[f"{L.EVENT_CAMERA_FILTER}.value"] = []

    def rows(response: dict) -> list[str]:
        table = response[L.EVENTS]["children"][0]
        return [json.dumps(tr) for tr in table["props"]["children"][1]["props"]["children"]]

    status, out = dash_call(app, client, output, inputs)
    assert status == 200
    got = rows(out["response"])  # speeding has its own log: not shown by default; newest first
    assert len(got) == 2 and "Wrong way" in got[0] and "Stopped vehicle" in got[1] and "ongoing" in got[1]
    state = out["response"][L.EVENTS_STATE]["data"]
    status, _ = dash_call(app, client, output, {**inputs, "tick.n_intervals": 2}, {f"{L.EVENTS_STATE}.data": state})
    assert status == 204
    filled.add(event("a1", "stopped_vehicle", MOTORWAY, now - 30, end_ts=now - 2, duration_s=48.0))  # it ended
    status, out = dash_call(app, client, output, {**inputs, "tick.n_intervals": 3}, {f"{L.EVENTS_STATE}.data": state})
    got = rows(out["response"])
    assert status == 200 and "ongoing" not in got[1] and "lasted 48 s" in got[1]
    only = {**inputs, f"{L.EVENT_CAMERA_FILTER}.value": [MOTORWAY], f"{L.EVENT_TYPE_FILTER}.value": []}
    status, out = dash_call(app, client, output, only, changed=f"{L.EVENT_CAMERA_FILTER}.value")
    got = rows(out["response"])  # every type of that camera
    assert len(got) == 2 and "Speeding" in got[0] and "131 km/h" in got[0]
    none = {**inputs, f"{L.EVENT_TYPE_FILTER}.value": ["queue"]}
    status, out = dash_call(app, client, output, none, changed=f"{L.EVENT_TYPE_FILTER}.value")
    assert "No events" in json.dumps(out["response"][L.EVENTS]["children"])


def test_history_line_flows_from_the_crossings_table(app, demo_settings):
    client = app.server.test_client()
    output = key_of(f"{L.H_LINE_FLOW}.figure", f"{L.H_LANE_FLOW}.figure")
    today = time.strftime("%Y-%m-%d")
    inputs = {
        "history-load.n_clicks": 1,
        "tabs.value": "history",
        "camera.value": MOTORWAY,
        "history-dates.start_date": today,
        "history-dates.end_date": today,
        "history-start-time.value": "00:00",
        "history-end-time.value": "23:59",
    }
    status, out = dash_call(app, client, output, inputs, state=inputs)
    assert status == 200
    assert "crossings table missing" in json.dumps(out["response"][L.H_LINE_FLOW]["figure"])
    status, _ = dash_call(app, client, output, {**inputs, "tabs.value": "live"}, state=inputs)
    assert status == 204

    start = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)
    ts = [start + timedelta(minutes=m, seconds=5) for m in range(0, 60, 3)]
    rows = {
        "camera_id": [MOTORWAY] * 2 * len(ts),
        "line_id": ["near", "far"] * len(ts),
        "track_id": [i // 2 for i in range(2 * len(ts))],
        "direction": ["towards_camera"] * 2 * len(ts),
        "crossing_ts": [t for t in ts for _ in (0, 1)],
        "lane_id": ["lane-1", "lane-1"] * len(ts),
        "class_name": ["car"] * 2 * len(ts),
    }
    df = pl.DataFrame(rows, schema_overrides={"crossing_ts": pl.Datetime("us", "UTC")})
    df = df.with_columns(pl.col("crossing_ts").dt.date().alias("event_date"))
    write_deltalake(
        str(demo_settings.delta_root / tables.CROSSINGS), df.to_arrow(), partition_by=["camera_id", "event_date"]
    )
    status, out = dash_call(app, client, output, inputs, state=inputs)
    assert status == 200
    lines, lanes = out["response"][L.H_LINE_FLOW]["figure"], out["response"][L.H_LANE_FLOW]["figure"]
    names = [t["name"] for t in lines["data"]]
    assert names == ["near · towards_camera", "far · towards_camera"]  # configured order; no "away" crossings
    assert sum(sum(t["y"]) for t in lines["data"]) == 2 * len(ts)
    assert [t["name"] for t in lanes["data"]] == ["lane-1"] and sum(lanes["data"][0]["y"]) == len(ts)
    assert f"({len(ts)} vehicles)" in lanes["layout"]["title"]["text"]
