"""HL7 benchmark: orders per second from MLLP to queryable worklist item, and the MLLP
round trip (order sent to ACK received), on one connection, against the appliance in this
process (durable commits, the data directory in a temporary folder).

The ACK (AA) is sent only after the order is committed, so an acknowledged order is
queryable; at the end DCMTK findscu -W (an independent modality) counts the items.

    scripts/bench hl7 [--orders 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance import catalog  # noqa: E402
from appliance.catalog import Procedure  # noqa: E402
from appliance.server import Appliance  # noqa: E402
from tests.helpers import make_config  # noqa: E402
from tests.hl7peer import Ack, MllpPeer, orm  # noqa: E402


def findscu_count(app: Appliance) -> tuple[int, float]:
    """Items findscu -W receives for the day of the orders, and its wall time."""
    exe = shutil.which("findscu")
    if not exe:
        return -1, 0.0
    args = [exe, "-W", "-aet", "CT1", "-aec", "APPLIANCE", "-k", "PatientID",
            "-k", "(0040,0100)[0].ScheduledProcedureStepStartDate=20261224",
            "127.0.0.1", str(app.dicom_port)]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=300
    )
    wall = time.perf_counter() - t
    return len(re.findall(r"Find Response: \d+ \(Pending\)", proc.stdout + proc.stderr)), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = {
            "devices": [{"ae_title": "CT1", "max_results": 0}],
            "hl7": {"enabled": True, "host": "127.0.0.1", "port": 0,
                    "allowed_senders": ["RIS^HOSP"], "stations": {"CT": "CT1"}},
        }  # fmt: skip
        app = Appliance(make_config(Path(tmp) / "data", raw)).start()
        try:
            catalog.save(app.runtime.store, Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
            trips = []
            with MllpPeer(app.listener("hl7").port) as peer:
                started = time.perf_counter()
                for i in range(args.orders):
                    order = orm(f"B{i}", placer=f"PL{i:06d}", accession=f"A{i:06d}",
                                patient_id=f"P{i:06d}", sps_id="")  # fmt: skip
                    t = time.perf_counter()
                    ack = Ack.parse(peer.exchange(order))
                    trips.append((time.perf_counter() - t) * 1000)
                    assert ack.code == "AA", ack.text
                total = time.perf_counter() - started
            found, wall = findscu_count(app)
        finally:
            app.stop()
    trips.sort()
    print(f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores,")
    print(f"Python {platform.python_version()}.\n")
    print("| orders on one connection | orders/s (MLLP to committed, queryable item) | "
          "round trip median | p95 | max | findscu -W items found (wall) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    p95 = trips[int(len(trips) * 0.95) - 1]
    print(f"| {args.orders:,} | {args.orders / total:.0f} | {statistics.median(trips):.1f} ms "
          f"| {p95:.1f} ms | {trips[-1]:.1f} ms | {found:,} ({wall:.2f} s) |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
