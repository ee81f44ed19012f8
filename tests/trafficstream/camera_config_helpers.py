"""Load a deployment config written inline by a test; shared by the camera-config test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficstream.config import Settings, load_settings
from trafficstream.errors import ConfigError


def load_config(tmp_path: Path, text: str) -> Settings:
    p = tmp_path / "deploy.yaml"
    p.write_text(text)
    return load_settings(p, environ={})


def config_error(tmp_path: Path, text: str) -> str:
    """The message of the ConfigError that loading ``text`` must raise."""
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, text)
    return str(err.value)
