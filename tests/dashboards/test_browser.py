"""The dashboard in a real headless Chromium while results flow through a real broker.

Measures what a viewer gets: on-screen video frame rate (distinct images the <img> shows, sampled through
a canvas), the stream's own rate (multipart parts per second), and the end-to-end delay (send time minus
capture time of the frame shown). Writes var/test-output/dashboard.png, dashboard-history.png and
dashboard-metrics.json.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from synthetic_results import write_history_tables

from trafficstream.dashboards import layout as L
from trafficstream.dashboards.app import serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.integration]
log = logging.getLogger(__name__)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MOTORWAY = "motorway-overpass"

# Count distinct images the <img> displays: draw it into a small canvas every 10 ms and hash the pixels
# (frames last 33 ms at the clips' 30 fps, so none is missed; sampling faster only steals the page's CPU).
ON_SCREEN_FPS_JS = """
const [durationMs, done] = [arguments[0], arguments[arguments.length - 1]];
const img = document.getElementById('live-video');
const canvas = document.createElement('canvas');
canvas.width = 96; canvas.height = 54;
const g = canvas.getContext('2d', {willReadFrequently: true});
let last = null, changes = -1, samples = 0;
const t0 = performance.now();
function tick() {
  g.drawImage(img, 0, 0, 96, 54);
  const d = g.getImageData(0, 0, 96, 54).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 4) { h = (Math.imul(h, 31) + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) | 0; }
  samples++;
  if (h !== last) { changes++; last = h; }
  const ms = performance.now() - t0;
  if (ms < durationMs) { setTimeout(tick, 10); } else { done({changes: changes, samples: samples, ms: ms}); }
}
tick();
"""


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium is not installed ({CHROMIUM}); `make browser-deps` installs it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1600,1750",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):  # page still rendering / re-rendered
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


# Width in px of the widest bar drawn in a graph (0 when none).
BAR_WIDTH_JS = """
const paths = document.querySelectorAll('#' + arguments[0] + ' .js-plotly-plot g.point path');
return Math.max(0, ...Array.from(paths, p => p.getBoundingClientRect().width));
"""


def count_stream_parts(url: str, seconds: float) -> int:
    with urllib.request.urlopen(url, timeout=10) as resp:
        data, t_end = b"", time.monotonic() + seconds
        while time.monotonic() < t_end:
            data += resp.read1(1 << 16)
    return data.count(b"--frame\r\n")


def open_history(driver) -> None:
    wait_for(
        lambda: (
            driver.find_element("xpath", "//*[contains(@class,'tab') and normalize-space()='History']").click() or True
        ),
        20,
        "the History tab",
    )
    wait_for(lambda: driver.find_element("id", L.H_LOAD).is_displayed(), 10, "the history tab")
    driver.find_element("id", L.H_LOAD).click()


def kpi_texts(driver) -> dict[str, str]:
    def text(element_id: str) -> str:
        return driver.find_element("id", element_id).text

    return {k: f"{text(L.kpi_value_id(k))} | {text(L.kpi_sub_id(k))}" for k in L.KPI_KEYS}


def shown_frame(driver) -> int:
    """The frame index the KPIs were computed at (subtitle of "vehicles in region now": "frame N")."""
    sub = kpi_texts(driver)["in_roi"].split(" | ")[1]
    return int(sub.removeprefix("frame ")) if sub.startswith("frame ") else -1


def wait_for_newer_frame(driver, timeout_s: float) -> tuple[dict[str, str], dict[str, str]]:
    """The KPIs change because newer results arrived (the lag KPI alone changes on every tick).
    Returns the KPI texts before and after."""
    before, first = kpi_texts(driver), shown_frame(driver)
    wait_for(lambda: shown_frame(driver) not in (first, -1), timeout_s, "the KPIs to show a newer frame")
    after = kpi_texts(driver)
    assert after != before
    return before, after


def test_dashboard_live_in_a_browser(results_feed, browser, test_output):
    settings = results_feed.settings
    with serve_in_thread(settings, port=0) as handle:
        ctx = handle.context
        assert ctx.consumer is not None and ctx.consumer.wait_assigned(60)
        wait_for(lambda: ctx.buffers.latest_frame(MOTORWAY), 30, "results reaching the dashboard")

        browser.get(handle.url)
        wait_for(
            lambda: browser.find_element("id", L.kpi_value_id("counted")).text not in ("", "–", "0"),
            30,
            "the KPIs to fill",
        )
        before, after = wait_for_newer_frame(browser, 15)

        # Live video: the MJPEG <img> has decoded frames.
        src = browser.find_element("id", L.VIDEO).get_attribute("src")
        assert src.endswith(f"/video/{MOTORWAY}.mjpg")
        wait_for(
            lambda: browser.execute_script(f"return document.getElementById('{L.VIDEO}').naturalWidth") > 0,
            20,
            "the video to show a frame",
        )
        natural_width = browser.execute_script(f"return document.getElementById('{L.VIDEO}').naturalWidth")
        assert natural_width == 960  # scaled to about the size it is shown at

        # On-screen frame rate and the delay of what the browser's stream shows (it is the only stream now).
        on_screen = browser.execute_async_script(ON_SCREEN_FPS_JS, 5000)
        on_screen_fps = on_screen["changes"] / (on_screen["ms"] / 1000)
        streams = ctx.streamer.active_streams()
        assert [s.camera_id for s in streams] == [MOTORWAY]
        delays = list(streams[0].recent_delay_s)[-100:]
        stream_fps = streams[0].fps(window_s=5)
        playout_delay_s = streams[0].playout_delay_s
        # What the viewer reads under the video: how far behind capture the frame on screen is, against the
        # camera's budget; and how many shown frames had predicted (dashed) boxes or no image.
        lag_badge = browser.find_element("id", L.VIDEO_LAG).text
        shown = {k: getattr(streams[0], k) for k in ("frames_sent", "predicted_sent", "no_image", "skipped")}
        # The stream itself as any client sees it: multipart boundaries in 2 s.
        parts_per_s = count_stream_parts(handle.url + src[len(handle.url) :], 2.0) / 2.0

        # Violations log: appended live, thumbnails load, a click opens the snapshot.
        def first_violation() -> tuple[int, str] | None:
            rows = browser.find_elements("css selector", f"#{L.VIOLATIONS} .violation")
            if not rows:
                return None
            thumb = rows[0].find_element("css selector", "img.thumb")
            loaded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb)
            return (len(rows), rows[0].text) if loaded else None

        n_rows, text = wait_for(first_violation, 40, "a violation with its thumbnail in the log")
        assert "km/h" in text and "limit 100" in text
        main_window = browser.current_window_handle
        wait_for(
            lambda: browser.find_element("css selector", f"#{L.VIOLATIONS} .violation a").click() or True,
            10,
            "a click on the newest thumbnail",
        )
        wait_for(lambda: len(browser.window_handles) == 2, 10, "the snapshot to open")
        browser.switch_to.window([h for h in browser.window_handles if h != main_window][0])
        assert "/snapshot/" + MOTORWAY in browser.current_url
        wait_for(
            lambda: browser.execute_script("return document.images[0] && document.images[0].naturalWidth"),
            10,
            "the snapshot image",
        )
        browser.close()
        browser.switch_to.window(main_window)
        wait_for(
            lambda: len(browser.find_elements("css selector", f"#{L.VIOLATIONS} .violation")) > n_rows,
            40,
            "another violation to be appended live",
        )

        health = browser.find_element("id", L.HEALTH).text
        assert "frames/s" in health and MOTORWAY in health
        assert browser.find_element("id", L.STREAM_STATUS).text == "live"
        # The live charts draw bars people can see (the flow chart holds only the current minute or two).
        for graph in (L.FLOW, L.SPEED_HIST):
            widest = wait_for(lambda g=graph: browser.execute_script(BAR_WIDTH_JS, g), 10, f"bars in {graph}")
            assert widest >= 5, f"{graph}: bars {widest:.1f} px wide"
        time.sleep(1.5)  # let the charts catch the newest data before the picture
        screenshot = test_output / "dashboard.png"
        assert browser.save_screenshot(str(screenshot))

        # History tab: no Delta tables in this run -> a clear "no data yet".
        open_history(browser)
        wait_for(lambda: "No data yet" in browser.find_element("id", L.H_SUMMARY).text, 20, "the history summary")

    metrics = {
        "on_screen_fps": round(on_screen_fps, 1),
        "on_screen_samples": on_screen["samples"],
        "server_stream_fps": round(stream_fps, 1),
        "stream_parts_per_s": round(parts_per_s, 1),
        "delay_s_median": round(statistics.median(delays), 3),
        "delay_s_p95": round(sorted(delays)[int(0.95 * (len(delays) - 1))], 3),
        "delay_s_max": round(max(delays), 3),
        "playout_delay_s": round(playout_delay_s, 3),
        "budget_s": settings.budget_s(settings.camera(MOTORWAY)),
        "lag_badge": lag_badge,
        "video_frames": shown,
        "feed": {
            k: getattr(results_feed, k, None)
            for k in ("batch_interval_s", "processing_delay_s", "stride", "frames_published", "violations_published")
        },
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),  # shared machines vary a lot
        "kpis_before": before,
        "kpis_after": after,
        "screenshot": str(screenshot),
    }
    (test_output / "dashboard-metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("dashboard metrics: %s", json.dumps(metrics))
    # Rates and delays are measurements (recorded above, reported by make bench), not pass/fail criteria on a
    # shared 2-core machine; the behaviour asserted is that the video really plays.
    assert on_screen["changes"] >= 5, metrics
    assert parts_per_s > 0, metrics


def test_history_tab_in_a_browser(browser, demo_settings, test_output):
    """Flows and speed distributions from real Delta tables (written here with delta-rs), today's range."""
    camera = demo_settings.camera(MOTORWAY)
    today = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    start = max(today, datetime.now().astimezone() - timedelta(hours=3))  # within today, local time
    n = write_history_tables(demo_settings.delta_root, camera, start, minutes=90)
    with serve_in_thread(demo_settings, port=0, start_consumer=False) as handle:
        browser.get(handle.url)
        open_history(browser)
        summary = wait_for(
            lambda: (t := browser.find_element("id", L.H_SUMMARY).text) and "vehicles counted" in t and t,
            30,
            "the history summary",
        )
        assert f"{n} vehicles counted" in summary and f"{n} with speeds" in summary
        traces = wait_for(
            lambda: browser.execute_script(
                f"const g = document.querySelector('#{L.H_FLOW} .js-plotly-plot'); return g && g.data && g.data.length"
            ),
            20,
            "the flow chart",
        )
        assert traces >= 2  # several classes stacked
        speed_traces = browser.execute_script(
            f"return document.querySelector('#{L.H_SPEEDS} .js-plotly-plot').data.map(t => t.type)"
        )
        assert set(speed_traces) == {"histogram"}
        time.sleep(0.5)
        assert browser.save_screenshot(str(test_output / "dashboard-history.png"))


def test_dashboard_on_the_real_pipeline(pipeline_feed, browser, test_output):
    """The same page fed by the real job (Kafka -> Spark -> results topic) on the motorway clip replayed as a
    live camera with load shedding on. Records what a viewer gets (on-screen fps, capture -> shown delay, the
    lag badge) in dashboard-real-pipeline-metrics.json; those are measurements, not pass/fail criteria."""
    settings = pipeline_feed.settings
    with serve_in_thread(settings, port=0) as handle:
        ctx = handle.context
        assert ctx.consumer is not None and ctx.consumer.wait_assigned(60)
        pipeline_feed.start()
        wait_for(lambda: ctx.buffers.latest_frame(MOTORWAY), 240, "the pipeline's first results")
        browser.get(handle.url)
        wait_for(
            lambda: browser.find_element("id", L.kpi_value_id("counted")).text not in ("", "–", "0"),
            60,
            "the KPIs to fill",
        )
        wait_for_newer_frame(browser, 60)
        wait_for(
            lambda: browser.execute_script(f"return document.getElementById('{L.VIDEO}').naturalWidth") > 0,
            30,
            "the video to show a frame",
        )
        # The CPU pipeline delivers frames in micro-batch bursts: sample long enough to span a batch.
        browser.set_script_timeout(40)
        on_screen = browser.execute_async_script(ON_SCREEN_FPS_JS, 15000)
        streams = ctx.streamer.active_streams()
        delays = sorted(list(streams[0].recent_delay_s)[-100:]) if streams else []
        stream_fps = streams[0].fps(window_s=5) if streams else None
        lag_badge = browser.find_element("id", L.VIDEO_LAG).text
        wait_for(
            lambda: browser.find_elements("css selector", f"#{L.VIOLATIONS} .violation"),
            240,
            "a violation from the real pipeline",
        )
        text = browser.find_elements("css selector", f"#{L.VIOLATIONS} .violation")[0].text
        assert "km/h" in text and f"limit {pipeline_feed.limit_kmh}" in text
        health = wait_for(
            lambda: (
                "frames/s" in browser.find_element("id", L.HEALTH).text and browser.find_element("id", L.HEALTH).text
            ),
            60,
            "pipeline health",
        )
        assert MOTORWAY in health
        time.sleep(1.5)
        screenshot = test_output / "dashboard-real-pipeline.png"
        assert browser.save_screenshot(str(screenshot))
    metrics = {
        "on_screen_fps": round(on_screen["changes"] / (on_screen["ms"] / 1000), 1),
        "delay_s_median": round(statistics.median(delays), 3) if delays else None,
        "delay_s_p95": round(delays[int(0.95 * (len(delays) - 1))], 3) if delays else None,
        "delay_s_max": round(delays[-1], 3) if delays else None,
        "server_stream_fps": None if stream_fps is None else round(stream_fps, 1),
        "lag_badge": lag_badge,
        "camera": "motorway clip replayed as a live 30 fps camera (looped), load shedding on",
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
        "screenshot": str(screenshot),
    }
    (test_output / "dashboard-real-pipeline-metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("dashboard on the real pipeline: %s", json.dumps(metrics))
    assert on_screen["changes"] >= 1, metrics
