"""A live RTSP camera through ingest into a real Kafka broker, with the camera dropping out and coming back.

GStreamer's RTSP server (infra/rtsp_server.py) serves a sample clip in a loop as ``rtsp://127.0.0.1:PORT/cam``;
ingest records it into segments and publishes frame references. Mid-run the server is killed and restarted:
ingest must reconnect by itself, report ``source_lost`` / ``source_restored`` on the results topic, and keep
the camera's frame_index strictly increasing across the gap. References decode with the job's FrameReader and
pass the job's stage 1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import yaml

from trafficstream.infra.rtsp_server import RtspServer, free_port, gst_available
from trafficstream.ingest.worker import run_ingest
from trafficstream.messages import FrameRef
from trafficstream.video import FrameReader, uri_to_path

pytestmark = pytest.mark.integration
CAMERA = "live-cam"


class _Consumer:
    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        from confluent_kafka import Consumer

        self.c = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
        self.c.subscribe(topics)
        self.messages: dict[str, list[tuple[bytes, int, int]]] = {t: [] for t in topics}

    def poll(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            msg = self.c.poll(0.2)
            if msg is not None and msg.error() is None:
                self.messages[msg.topic()].append((msg.value(), msg.partition(), msg.offset()))

    def wait(self, what, timeout_s: float) -> bool:
        end = time.time() + timeout_s
        while time.time() < end:
            if what():
                return True
            self.poll(0.5)
        return what()


def test_live_rtsp_camera_reconnects_and_frames_flow(settings_factory, data_dir, tmp_path) -> None:
    if not gst_available():
        pytest.fail("GStreamer's RTSP server is not importable by the system python3: run `make rtsp-deps`")
    port = free_port()
    config = tmp_path / "live.yaml"
    config.write_text(
        yaml.safe_dump({"cameras": [{"id": CAMERA, "source": f"rtsp://127.0.0.1:{port}/cam", "speed_limit_kmh": 112}]})
    )
    s = settings_factory(
        config,
        ["live.segment_seconds=1", "live.reconnect_initial_s=0.2", "live.reconnect_max_s=1", "live.open_timeout_s=3"],
        name="live",
    )
    k = s.kafka
    server = RtspServer(
        data_dir / "videos" / "highway_640x360.mp4", port=port, loop=True, log_path=tmp_path / "rtsp.log"
    )
    stop = threading.Event()
    result: dict = {}
    consumer = _Consumer(k.bootstrap_servers, [k.frames_topic, k.results_topic])
    t0 = time.time()
    with server:
        ingest = threading.Thread(target=lambda: result.update(stats=run_ingest(s, stop=stop)), name="ingest")
        ingest.start()
        try:
            frames = consumer.messages[k.frames_topic]
            events = consumer.messages[k.results_topic]
            assert consumer.wait(lambda: len(frames) >= 90, 30), f"only {len(frames)} references after 30 s"
            before = len(frames)
            server.kill()  # the camera vanishes without a TEARDOWN
            time.sleep(2.0)
            server.start()
            names = lambda: [json.loads(v)["event"] for v, _, _ in events]  # noqa: E731
            assert consumer.wait(lambda: "source_restored" in names(), 30), names()
            assert consumer.wait(lambda: len(frames) >= before + 60, 20), "no frames after the reconnect"
        finally:
            stop.set()
            ingest.join(30)
    assert not ingest.is_alive()
    consumer.poll(2.0)
    consumer.c.close()
    stats = result["stats"]
    assert not stats.errors and stats.frames[CAMERA] == len(consumer.messages[k.frames_topic])

    refs = [FrameRef.from_json(v) for v, _, _ in consumer.messages[k.frames_topic]]
    assert [r.frame_index for r in refs] == list(range(len(refs)))  # strictly increasing, nothing lost, across the gap
    assert all(b.pts_s > a.pts_s for a, b in zip(refs, refs[1:], strict=False))
    evs = [json.loads(v) for v, _, _ in consumer.messages[k.results_topic]]
    lost = [e for e in evs if e["event"] == "source_lost"]
    restored = [e for e in evs if e["event"] == "source_restored"]
    assert lost and lost[0]["cause"] in ("disconnected", "ended") and lost[0]["camera_id"] == CAMERA
    assert restored and restored[0]["gap_s"] > 1.5
    gap = max(b.pts_s - a.pts_s for a, b in zip(refs, refs[1:], strict=False))
    assert gap >= 1.5  # the camera's time went on while it was away
    delays = sorted(r.ingest_ts - r.capture_ts for r in refs)
    print(
        f"\nreference delay behind capture: median {delays[len(delays) // 2]:.2f} s, max {delays[-1]:.2f} s; "
        f"{len(refs)} refs in {time.time() - t0:.0f} s"
    )

    readers: dict = {}
    for r in refs:  # every reference decodes to exactly its frame
        path = uri_to_path(r.source_uri)
        assert path.parent == s.segment_dir(CAMERA).resolve()
        reader = readers.setdefault(path, FrameReader(path))
        assert reader.read(r.index_in_source, r.pts_in_source).shape == (r.height, r.width, 3)
    for reader in readers.values():
        reader.close()

    from trafficstream.config import settings_to_json
    from trafficstream.streaming_jobs.perception import perceive_one, runtime_for

    rt = runtime_for(settings_to_json(s))
    sample = consumer.messages[k.frames_topic][:: max(1, len(refs) // 8)]
    for value, partition, offset in sample:
        row = perceive_one(rt, value, k.frames_topic, partition, offset)
        assert row["status"] == "ok", row
