"""Evidence snapshots show number plates: behind basic auth no cache may keep them (Flask test client)."""

from __future__ import annotations

import base64
import logging

import cv2
import numpy as np
import pytest

from trafficstream.config import DEFAULT_CONFIG, load_settings
from trafficstream.dashboards.app import create_app, get_context

PASSWORD = "pl4te-s3cret"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def evidence_settings(tmp_path, data_dir):
    def make(*overrides: str):
        settings = load_settings(
            DEFAULT_CONFIG,
            [
                f"storage.var_dir={tmp_path / 'var'}",
                f"storage.data_dir={data_dir}",
                "kafka.bootstrap_servers=127.0.0.1:9",
                *overrides,
            ],
            environ={},
        )
        snap = settings.evidence_root / "motorway-overpass" / "3_40.jpg"
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
        return settings

    return make


def test_snapshots_are_not_cached_behind_auth(evidence_settings, tmp_path, caplog):
    secret_file = tmp_path / "dashboard_password"
    secret_file.write_text(PASSWORD + "\n")
    settings = evidence_settings("dashboard.basic_auth_user=staff", f"dashboard.basic_auth_password=file:{secret_file}")
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    caplog.set_level(logging.DEBUG)
    app = create_app(settings, start_consumer=False)
    try:
        client = app.server.test_client()
        assert client.get("/snapshot/motorway-overpass/3_40.jpg").status_code == 401
        resp = client.get("/snapshot/motorway-overpass/3_40.jpg", headers=_basic("staff", PASSWORD))
        assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
        assert resp.headers["Cache-Control"] == "private, no-store"
        assert "ETag" not in resp.headers and "public" not in resp.headers["Cache-Control"]
        video = client.get("/video/nope.mjpg", headers=_basic("staff", PASSWORD))
        assert video.status_code == 404
    finally:
        get_context(app).close()
    assert PASSWORD not in caplog.text


def test_snapshots_may_be_cached_publicly_without_auth(evidence_settings):
    app = create_app(evidence_settings(), start_consumer=False)
    try:
        resp = app.server.test_client().get("/snapshot/motorway-overpass/3_40.jpg")
        assert resp.status_code == 200
        assert "public" in resp.headers["Cache-Control"] and "max-age=3600" in resp.headers["Cache-Control"]
    finally:
        get_context(app).close()
