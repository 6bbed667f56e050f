"""The web application: a Flask app factory over the appliance's runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify


def create_app(
    runtime: Any,
    health: Callable[[], dict[str, Any]] | None = None,
    test_config: dict[str, Any] | None = None,
) -> Flask:
    """Build the Flask app for this runtime (config, store, access)."""
    app = Flask(__name__)
    app.config.update(test_config or {})
    app.extensions["appliance"] = runtime

    @app.get("/healthz")
    def healthz() -> Any:
        report = health() if health is not None else {"status": "ok", "services": {}}
        code = 200 if report["status"] == "ok" else 503
        return jsonify(report), code

    return app
