"""Fixtures: the appliance started in-process on port 0 with a temporary data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import accounts
from appliance.server import Appliance
from tests.forward_helpers import FakePacs
from tests.helpers import make_config

# The suite signs in about a thousand times: scrypt at n = 2**10 instead of werkzeug's
# 2**15 (0.1 s a hash). Appliances started as processes (serve, the installed unit)
# keep the shipped cost, which tests/integration/test_devices_accounts.py checks.
accounts.PASSWORD_METHOD = "scrypt:1024:8:1"


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


@pytest.fixture
def fake_pacs() -> Iterator[Callable[..., FakePacs]]:
    """Factory: a scripted pynetdicom Storage SCP (tests/forward_helpers.FakePacs) on port 0;
    closed at teardown."""
    started: list[FakePacs] = []

    def start(**kw: Any) -> FakePacs:
        pacs = FakePacs(**kw)
        started.append(pacs)
        return pacs

    yield start
    for pacs in started:
        pacs.close()


@pytest.fixture
def pacs(fake_pacs: Callable[..., FakePacs]) -> FakePacs:
    """One FakePacs with its defaults (a Storage SCP without Storage Commitment)."""
    return fake_pacs()
