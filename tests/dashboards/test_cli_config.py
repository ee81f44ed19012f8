"""The dashboard CLI refuses a deployment whose cameras do not fit their videos, naming the field."""

from __future__ import annotations

import pytest

from trafficstream.dashboards.app import main


def test_cli_exits_naming_the_roi_outside_the_frame(tmp_path, data_dir, capsys):
    config = tmp_path / "deploy.yaml"
    config.write_text(f"""
storage:
  data_dir: {data_dir}
cameras:
  - id: cam-1
    source: "{{data_dir}}/videos/highway_640x360.mp4"
    speed_limit_kmh: 100
    roi: [[0, 0], [700, 0], [700, 300], [0, 300]]
""")
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--set", "kafka.bootstrap_servers=127.0.0.1:9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cameras[0].roi: vertices [1, 2] (first [700, 0]) lie outside the 640x360 frame" in err
