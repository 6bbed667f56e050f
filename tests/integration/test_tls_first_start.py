"""The self-signed pair made at the first start: two processes starting together (the
systemd unit's `serve --only web` beside `serve --only dicom`) end with one pair."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from appliance.dicom import tls

# Each process waits for the same instant, makes (or finds) the pair, then proves the key
# belongs to the certificate (load_cert_chain refuses a mismatch) and prints the fingerprint.
RACER = """
import ssl, sys, time
from pathlib import Path
from appliance.dicom import tls
start = float(sys.argv[2])
while time.time() < start:
    pass
cert, key = tls.self_signed(Path(sys.argv[1]))
ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
print(tls.fingerprint(cert))
"""


def test_processes_starting_together_share_one_self_signed_pair(tmp_path: Path) -> None:
    for round_ in range(2):
        directory = tmp_path / f"tls{round_}"
        start = time.time() + 1.5  # every racer imported and spinning by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(directory), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(6)
        ]
        results = [p.communicate(timeout=60) for p in procs]
        errors = [err for p, (_, err) in zip(procs, results, strict=True) if p.returncode]
        assert not errors, errors[0]
        prints = {out.strip() for out, _ in results}
        assert prints == {tls.fingerprint(directory / "appliance.crt")}, prints
