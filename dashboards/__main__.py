"""``python -m dashboards --config FILE [--set dashboard.port=8051]``."""
import sys

from dashboards.app import main

sys.exit(main())
