"""Shared test helpers: polling with a deadline, peers, configurations on port 0."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance import config as config_mod


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; return its value or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def open_fds(path: Path) -> int:
    """This process's file descriptors open on the SQLite file ``path`` or its WAL."""
    names = {str(path), f"{path}-wal"}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") in names
    return count


def require_peer(name: str) -> str:
    """Path of an independent peer program; in CI a missing peer fails instead of skipping."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"peer program {name!r} is missing; .ci/run must install it")
    pytest.skip(f"peer program {name!r} is not installed")
    raise AssertionError("unreachable")


def peer_env() -> dict[str, str]:
    """Environment for DCMTK tools and Orthanc: TCP_NODELAY avoids Nagle's 40 ms delays."""
    return {**os.environ, "TCP_NODELAY": "1"}


def make_config(data_dir: Path, raw: dict[str, Any] | None = None) -> config_mod.Config:
    """A validated Config on 127.0.0.1, ports 0, data in ``data_dir``, plus ``raw`` TOML shapes."""
    raw = dict(raw or {})
    raw.setdefault("dicom", {})
    raw["dicom"] = {"host": "127.0.0.1", "port": 0, "tls_port": 0, **raw["dicom"]}
    raw["web"] = {"host": "127.0.0.1", "port": 0, "http_port": 0, **raw.get("web", {})}
    cfg = config_mod.from_mapping(raw)
    return dataclasses.replace(cfg, data_dir=data_dir)
