"""The clinic's clock on every page: times shown in one zone, named once, and the box's
own clock in the footer (web/static/clock.js warns when the browser's clock is far off).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, current_app

from appliance.clock import Clock

# The browser's clock may differ from the box's by this much before the page warns.
SKEW_WARN_S = 120


def install(app: Flask, runtime: Any) -> None:
    """Register the clinic's clock, its filters and the footer's values on ``app``."""
    config = getattr(runtime, "config", None)
    setting = config.clinic.time_zone if config is not None else ""
    app.extensions["clock"] = Clock(setting)
    app.jinja_env.filters["epoch"] = lambda s: clinic().from_epoch(s)
    app.jinja_env.filters["when"] = lambda s: clinic().from_stored(s)

    @app.context_processor
    def _clock() -> dict[str, Any]:
        c = clinic()
        return {
            "clinic_zone": c.label(),
            "box_now": c.now().strftime("%H:%M"),
            "box_epoch_ms": int(time.time() * 1000),
            "box_offset_min": c.offset_minutes(),
            "skew_warn_s": SKEW_WARN_S,
        }


def clinic() -> Clock:
    """This app's clinic clock."""
    clock: Clock = current_app.extensions["clock"]
    return clock
