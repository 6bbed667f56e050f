"""Headless Chromium and `appliance serve` for the browser tests: one launcher (the
Content-Security-Policy refusals it saw kept on the context) and one box in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import require_peer, wait_for

ROOT = Path(__file__).resolve().parents[1]
# Written to the build folder; scripts/screenshots copies them to docs/screenshots/.
SHOTS = ROOT / "build" / "screenshots"
PASSWORD = "a long admin passphrase"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(
    profile: Path, locale: str = "en-US", width: int = 1366, height: int = 768
) -> Iterator[Any]:
    """A persistent Chromium context (profile folder ``profile``) that accepts the box's
    self-signed certificate; ``context.csp_refusals`` lists what the page's CSP blocked."""
    exe = require_peer("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_ARGS,
            locale=locale,
            ignore_https_errors=True,  # the box's self-signed certificate
            viewport={"width": width, "height": height},
        )
        context.csp_refusals = []
        context.on("console", lambda msg: _note_csp(context, msg))
        try:
            yield context
        finally:
            context.close()


def _note_csp(context: Any, msg: Any) -> None:
    if "Content Security Policy" in msg.text:
        context.csp_refusals.append(f"{msg.page.url if msg.page else '?'}: {msg.text}")


class Box:
    """`appliance serve` in a subprocess; its stderr is read for the ports and setup token."""

    def __init__(self, data: Path, extra: str = "", env: dict[str, str] | None = None) -> None:
        """``extra``: more TOML for the configuration; ``env``: more environment (TZ)."""
        self.data_dir = data / "data"
        cfg = data / "appliance.toml"
        cfg.write_text(
            f'data_dir = "{data / "data"}"\n'
            '[dicom]\nhost = "127.0.0.1"\nport = 0\ntls_port = 0\n'
            '[web]\nhost = "127.0.0.1"\nport = 0\nhttp_port = 0\n' + extra
        )
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=data,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = wait_for(
            lambda: self._find(r"DICOM \S+ on port (\d+), web on https://[^:]+:(\d+)/"), 30
        )
        self.dicom_port, self.web_port = int(ready.group(1)), int(ready.group(2))
        self.setup_token = self._find(r"setup token: (\S+)").group(1)
        self.http_port = int(self._find(r"plain HTTP on port (\d+) redirects there").group(1))
        self.url = f"https://127.0.0.1:{self.web_port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _find(self, pattern: str) -> Any:
        for line in list(self.lines):
            m = re.search(pattern, line)
            if m:
                return m
        if self.proc.poll() is not None:
            raise AssertionError("appliance exited:\n" + "".join(self.lines))
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
