"""Optional HTTP basic auth for every route of the dashboard (pages, callbacks, video, snapshots).

Basic auth sends the password in every request: put the dashboard behind TLS (a reverse proxy) when it
leaves localhost.
"""

from __future__ import annotations

import hmac
import logging

import flask

from trafficstream.config import Settings
from trafficstream.errors import ConfigError
from trafficstream.secrets import reveal

log = logging.getLogger(__name__)
REALM = "trafficstream"


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))  # constant time


def install_basic_auth(server: flask.Flask, user: str, password: str) -> None:
    """Require ``user`` / ``password`` on every request to ``server``."""

    @server.before_request
    def _require_basic_auth() -> flask.Response | None:
        auth = flask.request.authorization
        # Evaluate both comparisons (no short-circuit) so timing does not reveal which part was wrong.
        ok = False
        if auth is not None and auth.type == "basic":
            user_ok = _equal(auth.username or "", user)
            password_ok = _equal(auth.password or "", password)
            ok = user_ok and password_ok
        if ok:
            return None
        return flask.Response(
            "authentication required\n",
            401,
            {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            mimetype="text/plain",
        )


def configure_auth(server: flask.Flask, settings: Settings) -> bool:
    """Install basic auth when both dashboard.basic_auth_user and _password are set; True if installed."""
    user, password = settings.dashboard.basic_auth_user, reveal(settings.dashboard.basic_auth_password)
    if not user and not password:
        return False
    if not user or not password:
        raise ConfigError("dashboard.basic_auth_user and dashboard.basic_auth_password must be set together")
    install_basic_auth(server, user, password)
    log.info("dashboard requires HTTP basic auth (user %r)", user)
    return True
