"""The composition root (appliance.app): the lifecycle starts what the root lists, and a
listener of its own added there is one line (here a line echo server on a real socket)."""

from __future__ import annotations

import dataclasses
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

import pytest

from appliance import app, cli, statuskey
from appliance.config import Config
from appliance.parts import OwnListener
from appliance.runtime import Runtime
from appliance.server import Appliance
from tests.helpers import make_config
from tests.integration.test_server import echo, get_json


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


class LineEcho:
    """A listener of its own: answers each line with itself, on 127.0.0.1 port 0."""

    name = "line-echo"

    def __init__(self, runtime: Runtime) -> None:
        self.ae_title = runtime.config.dicom.ae_title
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> LineEcho:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def health(self) -> dict[str, Any]:
        return {"state": "running", "port": self.port, "for": self.ae_title}


def _enabled(config: Config) -> bool:
    return config.dicom.ae_title == "WITHECHO"


def test_a_listener_added_to_the_parts_is_started_reported_and_stopped(tmp_path: Path) -> None:
    parts = dataclasses.replace(
        app.PARTS, listeners=[*app.PARTS.listeners, OwnListener("line-echo", _enabled, LineEcho)]
    )
    box = Appliance(make_config(tmp_path / "d", {"dicom": {"ae_title": "WITHECHO"}}), parts=parts)
    box.start()
    try:
        port = box.listener("line-echo").port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"hello\n")
            assert s.makefile("rb").readline() == b"hello\n"
        assert box.health()["services"]["line-echo"] == {
            "state": "running", "port": port, "for": "WITHECHO",
        }  # fmt: skip
        assert echo(box.dicom_port, called="WITHECHO") == (True, 0)  # the services still run
    finally:
        box.stop()
    assert box.listener("line-echo") is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_listener_not_enabled_is_not_started(tmp_path: Path) -> None:
    parts = dataclasses.replace(app.PARTS, listeners=[OwnListener("line-echo", _enabled, LineEcho)])
    with Appliance(make_config(tmp_path / "d"), parts=parts) as box:
        assert box.listener("line-echo") is None
        assert "line-echo" not in box.health()["services"]


def test_the_root_lists_every_service_blueprint_and_command(tmp_path: Path) -> None:
    """What the box serves comes from the root's lists: its services in /healthz, its
    blueprints in the app's URL map, its commands in ``appliance --help``."""
    with Appliance(make_config(tmp_path / "d")) as box:
        services = {s.name for s in box.services}
        assert len(services) == len(app.SERVICES) == 4
        code, report = get_json(box.web_port, "/healthz", _status_key(tmp_path / "d"))
        assert code == 200 and services <= set(report["services"])
        flask_app = app.web_app(box.runtime)
        assert {name.split(".")[0] for name in flask_app.blueprints} == {
            bp.name for bp in app.BLUEPRINTS
        }  # nested ones (dicomweb.search) under their parent
    _parser, handlers = cli.build_parser()
    assert {
        "serve",
        "status",
        "config",
        "worklist",
        "users",
        "forward",
        "backup",
        "restore",
        "hl7",
    } == set(handlers)


def _status_key(data_dir: Path) -> str:
    return statuskey.read(data_dir)
