"""Fixtures: the appliance started in-process on port 0 with a temporary data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.server import Appliance
from tests.helpers import make_config


@pytest.fixture
def start_appliance(tmp_path: Path) -> Iterator[Callable[..., Appliance]]:
    """Factory: start an appliance with optional TOML-shaped settings; stopped at teardown."""
    started: list[Appliance] = []

    def start(raw: dict[str, Any] | None = None, data_dir: Path | None = None) -> Appliance:
        cfg = make_config(data_dir or tmp_path / "data", raw)
        app = Appliance(cfg).start()
        started.append(app)
        return app

    yield start
    for app in reversed(started):
        app.stop()


@pytest.fixture
def appliance(start_appliance: Callable[..., Appliance]) -> Appliance:
    """An appliance on the embedded defaults (ports 0, temporary data directory)."""
    return start_appliance()
