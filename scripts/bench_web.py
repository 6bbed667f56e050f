"""Web page benchmark: page views of a busy box, over HTTP to the running appliance.

The box holds --steps scheduled steps (8 CT rooms x 25 a day, today among them: the board
shows 200), --queue forward queue rows (two destinations, both down: --waiting of them
waiting, 2 % dead, the rest delivered, each image with its Q/R index row), --jobs print
jobs and the audit rows the scheduling wrote. The appliance runs as `appliance serve`
does (cheroot over HTTPS, its DICOM services, the senders retrying the dead PACS in the
background); an admin signs in and every main page is requested --repeat times after two
warm-up views. Prints a Markdown table (median and slowest per page) for
docs/benchmarks.md; the target is under 300 ms.

    scripts/bench web [--steps 10000] [--queue 10000] [--jobs 2000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import re
import socket
import ssl
import statistics
import sys
import tempfile
import time
import urllib.parse
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance import accounts  # noqa: E402
from appliance import config as config_mod  # noqa: E402
from appliance.app import open_store  # noqa: E402
from appliance.qr import index as qr_index  # noqa: E402
from appliance.server import Appliance  # noqa: E402
from appliance.worklist.model import Code, StepRequest  # noqa: E402
from appliance.worklist.repo import WorklistRepo  # noqa: E402

STATIONS = [f"CT{i}" for i in range(1, 9)]
PER_STATION_DAY = 25
CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
PASSWORD = "a long benchmark passphrase"
TARGET_MS = 300.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(data: Path) -> config_mod.Config:
    down = _closed_port()
    raw = {
        "dicom": {"host": "127.0.0.1", "port": 0, "tls_port": 0},
        "web": {"host": "127.0.0.1", "port": 0, "http_port": 0},  # HTTPS, as served
        "logging": {"level": "WARNING"},
        "devices": [{"ae_title": ae, "modality": "CT"} for ae in STATIONS],
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": down},
            {"name": "offsite", "ae_title": "FAR", "host": "127.0.0.1", "port": down},
        ],
    }
    return dataclasses.replace(config_mod.from_mapping(raw), data_dir=data)


def fill_steps(data: Path, n: int) -> None:
    """n steps, 200 a day, the days around today (today in the middle)."""
    store = open_store(data)
    repo = WorklistRepo(store)
    per_day = len(STATIONS) * PER_STATION_DAY
    day0 = datetime.combine(date.today(), datetime.min.time()) - timedelta(days=n // per_day // 2)
    with store.write(durable=False):
        for i in range(n):
            day, rest = divmod(i, per_day)
            station, slot = divmod(rest, PER_STATION_DAY)
            repo.schedule(
                StepRequest(
                    patient_id=f"P{i:07d}", patient_name=f"Patient{i % 997}^Given{i % 101}",
                    station_ae=STATIONS[station], modality="CT",
                    start=day0 + timedelta(days=day, hours=7, minutes=20 * slot),
                    birth_date="19700101", sex="MF"[i % 2], accession_number=f"ACC{i:08d}",
                    requested_procedure_description="CT Chest", sps_description="Chest",
                    requested_procedure_code=Code("CTCH", "LOCAL", "CT Chest"),
                ),
                actor="bench",
            )  # fmt: skip
    store.close()


def fill_queue(data: Path, rows: int, waiting: int) -> None:
    """rows queue rows over two destinations; ``waiting`` waiting, 2 % dead, the rest
    delivered; each image with its Q/R index row (patient, accession, study)."""
    store = open_store(data)
    now = time.time()
    images = rows // 2
    with store.write(durable=False) as db:
        for n in range(images):
            t = now - 7 * 86400 + n * (7 * 86400 / images)
            cur = db.execute(
                "INSERT INTO forward_instances (sop_instance_uid, sop_class_uid, "
                "transfer_syntax, modality, calling_ae, file, digest, size, received_at) "
                "VALUES (?, ?, ?, 'CT', ?, ?, ?, 1, ?)",
                (f"1.2.3.{n}", CT, ELE, STATIONS[n % 8], f"f{n}", f"d{n}", t),
            )
            qr_index.record(db, int(cur.lastrowid or 0), {
                "patient_name": f"Patient{n % 997}^Given{n % 101}", "patient_id": f"P{n:07d}",
                "accession_number": f"ACC{n:08d}", "study_description": "CT Chest",
                "study_date": time.strftime("%Y%m%d", time.gmtime(t)), "modality": "CT",
                "study_uid": f"1.2.9.{n // 50}", "series_uid": f"1.2.8.{n // 50}",
                "sop_instance_uid": f"1.2.3.{n}", "sop_class_uid": CT,
            })  # fmt: skip
            for k, dest in enumerate(("pacs", "offsite")):
                i = 2 * n + k
                if i % 50 == 0:
                    state, delivered, error = "dead", None, "refused: 0xC000"
                elif i >= rows - waiting:
                    state, delivered, error = "waiting", None, "no association"
                else:
                    state, delivered, error = "delivered", t + 1, ""
                db.execute(
                    "INSERT INTO forward_queue (instance_id, destination, state, next_attempt, "
                    "last_error, queued_at, updated_at, delivered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (cur.lastrowid, dest, state, now + 3600, error, t, t + 1, delivered),
                )
    store.close()


def fill_jobs(data: Path, n: int) -> None:
    """n finished print jobs over the last 30 days, each with its patient."""
    store = open_store(data)
    now = time.time()
    spec = json.dumps({"films": [], "session": {}, "profile": {}})
    with store.write(durable=False) as db:
        for i in range(n):
            when = time.strftime(
                "%Y-%m-%dT%H:%M:%S.00Z", time.gmtime(now - 30 * 86400 + i * 30 * 86400 / n)
            )
            db.execute(
                "INSERT INTO print_jobs (uid, calling_ae, called_ae, label, printer, spec, "
                "state, films, pages, created_at, finished_at, patient_name, patient_id, "
                "accession_number) VALUES (?, ?, 'APPLIANCE', ?, 'folder', ?, 'DONE', 1, 1, "
                "?, ?, ?, ?, ?)",
                (f"1.2.826.0.1.3680043.10.1338.{i}", STATIONS[i % 8], f"CHEST {i}", spec,
                 when, when, f"Patient{i % 997}^Given{i % 101}", f"P{i:07d}", f"ACC{i:08d}"),
            )  # fmt: skip
    store.close()


class Client:
    """A cookie-keeping HTTP/1.1 client on one kept-alive connection, as a browser is."""

    def __init__(self, port: int) -> None:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the box's own, self-signed
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=tls)
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        for cookie in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return resp.status, text

    def sign_in(self) -> None:
        _st, page = self.request("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "no CSRF field on /login"
        st, _ = self.request("POST", "/login", {"csrf_token": token.group(1),
                                                "username": "admin", "password": PASSWORD})  # fmt: skip
        assert st == 302, f"sign-in answered {st}"


def pages(search: str) -> list[tuple[str, str]]:
    return [
        ("board (today, 200 steps)", "/"),
        ("schedule list (name search, first 100 rows)", f"/?q={search}"),
        ("queues overview", "/admin/destinations"),
        ("queue: waiting images of pacs", "/admin/destinations/pacs/waiting"),
        ("queue: dead letters", "/admin/destinations/dead"),
        ("print history", "/prints"),
        ("print history, patient search", f"/prints?patient={search}"),
        ("audit log", "/admin/audit"),
        ("printers", "/printers"),
        ("studies held (100 studies of 50 images)", "/studies"),
        ("studies held, name search", f"/studies?name={search}"),
    ]


def measure(client: Client, path: str, repeat: int) -> tuple[float, float, int]:
    """(median ms, slowest ms, bytes) of ``repeat`` views after two warm-up views."""
    for _ in range(2):
        st, _text = client.request("GET", path)
        assert st == 200, f"{path} answered {st}"
    times, size = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        st, text = client.request("GET", path)
        times.append((time.perf_counter() - t) * 1000)
        assert st == 200, f"{path} answered {st}"
        size = len(text.encode())
    return statistics.median(times), max(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--queue", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=3_000)
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        data = Path(tmp) / "data"
        cfg = make_config(data)
        started = time.perf_counter()
        fill_steps(data, args.steps)
        fill_queue(data, args.queue, args.waiting)
        fill_jobs(data, args.jobs)
        store = open_store(data)
        accounts.create_user(store, "admin", PASSWORD, accounts.ADMIN)
        audit_rows = store.query("SELECT count(*) AS n FROM audit")[0]["n"]
        store.close()
        filled = time.perf_counter() - started
        app = Appliance(cfg).start()
        try:
            client = Client(app.web_port)
            client.sign_in()
            results = [(name, path, *measure(client, path, args.repeat))
                       for name, path in pages("Patient12")]  # fmt: skip
        finally:
            app.stop()
    load = os.getloadavg()
    print(f"{date.today().isoformat()}, {platform.node()}: {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end; "
          f"Python {platform.python_version()}")  # fmt: skip
    print(f"box: {args.steps:,} steps, {args.queue:,} queue rows ({args.waiting:,} waiting), "
          f"{args.jobs:,} print jobs, {audit_rows:,} audit rows (filled in {filled:.0f} s); "
          f"{args.repeat} views per page after 2 warm-up views, one kept-alive connection\n")  # fmt: skip
    print("| page | URL | median ms | slowest ms | KiB | under 300 ms |")
    print("|---|---|---:|---:|---:|---|")
    worst = 0.0
    for name, path, med, slowest, size in results:
        worst = max(worst, slowest)
        ok = "yes" if slowest < TARGET_MS else ("median only" if med < TARGET_MS else "NO")
        print(f"| {name} | `{path}` | {med:.0f} | {slowest:.0f} | {size / 1024:.0f} | {ok} |")
    return 0 if all(med < TARGET_MS for _n, _p, med, _s, _b in results) else 1


if __name__ == "__main__":
    sys.exit(main())
