"""Orthanc as the PACS in tests: its own process on loopback, its own storage, free ports."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import peer_env, require_peer, wait_for


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (Orthanc cannot bind port 0 and report it).

    Drawn below the kernel's ephemeral range (32768-60999 on Linux): a port taken from
    that range and closed again may be handed to any outgoing connection (the hostile
    tests open thousands) before Orthanc binds it."""
    low, _high = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


class Orthanc:
    """One Orthanc process; start, stop (or kill) and start again on the same ports."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", **extra: Any) -> None:
        # Debian installs it in /usr/sbin, which a non-root PATH may lack.
        sbin = Path("/usr/sbin/Orthanc")
        self.binary = str(sbin) if sbin.exists() else require_peer("Orthanc")
        self.workdir = workdir
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "appliance-test",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "DicomScpTimeout": 30,
            "Plugins": [],
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpTimeout": 10,
            "StableAge": 3600,
            **extra,
        }
        self.config_path.write_text(json.dumps(config, indent=1))

    # -- process -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Orthanc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(
            [self.binary, str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=peer_env(),
            cwd=self.workdir,
        )
        log.close()
        wait_for(self._ready, timeout, interval=0.05)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {self.log_path.read_text()[-2000:]}")
        try:
            self.get("/system")
        except (urllib.error.URLError, OSError):
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.dicom_port)) == 0

    def kill(self) -> None:
        """SIGKILL: the PACS goes away at once (and tests tear down fast)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    # -- REST ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=10) as resp:
            return json.loads(resp.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=30) as resp:
            return bytes(resp.read())

    def send(self, method: str, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """List a DICOM peer (e.g. the appliance, for storage commitment reports)."""
        self.send("PUT", f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})

    def instance_uids(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc instance ID for every stored instance."""
        out = {}
        for inst in self.get("/instances?expand"):
            out[inst["MainDicomTags"]["SOPInstanceUID"]] = inst["ID"]
        return out

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get_bytes(f"/instances/{orthanc_id}/file")
