"""``python -m trafficstream.dashboards --config FILE [--set dashboard.port=8051]``."""

import sys

from trafficstream.dashboards.app import main

sys.exit(main())
