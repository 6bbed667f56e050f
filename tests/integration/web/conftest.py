"""Fixtures for the web tests (helpers in tests/webclient.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from appliance import accounts, catalog
from appliance.app import open_store, web_app
from appliance.runtime import Runtime
from tests.helpers import make_config
from tests.webclient import DEVICES, PROCEDURES, Web
from web import start


@pytest.fixture
def web_bare(tmp_path: Path) -> Iterator[Web]:
    """The web app on a fresh database: no admin yet, devices from config, catalog empty."""
    cfg = make_config(tmp_path / "data", {"devices": DEVICES})
    store = open_store(cfg.data_dir)
    runtime = Runtime.create(cfg, store).sync()
    tokens: list[str] = []
    app = start(web_app(runtime, test_config={"TESTING": True}, announce=tokens.append))
    yield Web(app, store, runtime, tokens)
    store.close()


@pytest.fixture
def web(web_bare: Web) -> Web:
    """The web app with an admin ('admin'), three devices and a small catalog."""
    web_bare.user("admin", accounts.ADMIN)
    for entry in PROCEDURES:
        catalog.save(web_bare.store, entry)
    return web_bare


@pytest.fixture
def admin(web: Web) -> FlaskClient:
    return web.login("admin")


@pytest.fixture
def desk(web: Web) -> FlaskClient:
    return web.login("desk")
