"""Interop fixtures: Orthanc as the PACS, started by the test on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.orthanc import Orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A running Orthanc with its own storage in tmp_path; stopped at teardown."""
    pacs = Orthanc(tmp_path / "orthanc").start()
    yield pacs
    pacs.kill()
