"""Plotly Dash app for traffic staff: live video with overlays, KPIs, charts, violations, pipeline health,
and a history view over the Delta tables. Entry points: :func:`dashboards.app.create_app`,
:func:`dashboards.app.serve_in_thread`, ``python -m trafficstream.dashboards``.
"""
