"""Worklist benchmark: the same findscu queries against the appliance and DCMTK wlmscpfs.

For each size (stored items) both servers hold the same items: the appliance in its
SQLite database, wlmscpfs as .wl files. Each query runs several times through DCMTK
findscu (TCP_NODELAY=1); the medians, the ratios and the appliance's peak memory
(VmHWM of its process) are printed as a Markdown table.

    scripts/bench worklist [--sizes 1000,10000,100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.app import open_store  # noqa: E402
from appliance.worklist.matching import item_dataset  # noqa: E402
from appliance.worklist.model import Code, StepRequest  # noqa: E402
from appliance.worklist.repo import Narrowing, WorklistRepo, row_to_item  # noqa: E402

STATIONS = [f"CT{i}" for i in range(1, 9)]
PER_STATION_DAY = 25
DAY0 = datetime(2026, 1, 1)
ENV = {**os.environ, "TCP_NODELAY": "1"}
LOG_FILE = Path(tempfile.gettempdir()) / "bench-findscu-log.cfg"
KEYS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyInstanceUID",
    "RequestedProcedureID", "RequestedProcedureDescription",
    "(0040,0100)[0].ScheduledStationAETitle", "(0040,0100)[0].ScheduledProcedureStepStartDate",
    "(0040,0100)[0].ScheduledProcedureStepStartTime", "(0040,0100)[0].Modality",
    "(0040,0100)[0].ScheduledProcedureStepID", "(0040,0100)[0].ScheduledProcedureStepDescription",
]  # fmt: skip


def item_plan(n: int) -> list[StepRequest]:
    """n steps: 8 stations x 25 a day, day after day."""
    out = []
    per_day = len(STATIONS) * PER_STATION_DAY
    for i in range(n):
        day, rest = divmod(i, per_day)
        station, slot = divmod(rest, PER_STATION_DAY)
        out.append(
            StepRequest(
                patient_id=f"P{i:07d}", patient_name=f"Patient{i % 997}^Given{i % 101}", station_ae=STATIONS[station],
                modality="CT", start=DAY0 + timedelta(days=day, hours=7, minutes=20 * slot),
                birth_date="19700101", sex="MF"[i % 2], accession_number=f"ACC{i:08d}",
                requested_procedure_description="CT Chest", sps_description="Chest",
                requested_procedure_code=Code("CTCH", "LOCAL", "CT Chest"),
                protocol_codes=(Code("P1", "LOCAL", "Chest routine"),),
            )
        )  # fmt: skip
    return out


def build(n: int, work: Path) -> tuple[Path, Path]:
    """The appliance data dir and the wlmscpfs directory, holding the same n items."""
    data = work / f"data{n}"
    wl = work / f"wl{n}"
    ae_dir = wl / "APPLIANCE"
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    store = open_store(data)
    repo = WorklistRepo(store)
    with store.write():
        for req in item_plan(n):
            repo.schedule(req, actor="bench")
    for i, row in enumerate(repo.candidates(Narrowing())):
        ds = item_dataset({k: v for k, v in row_to_item(row).items() if v not in ("", [], None)})
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.save_as(ae_dir / f"{i:07d}.wl", implicit_vr=False, little_endian=True)
    store.close()
    return data, wl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


LOG_CONFIG = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%Q} %m%n
"""


def _stamp(line: str) -> float:
    hms, ms, us = line.split(" ", 1)[0].rsplit(".", 2)
    h, m, sec = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + sec + int(ms) / 1e3 + int(us) / 1e6


def findscu(port: int, extra: list[str]) -> tuple[float, float, int]:
    """Run one query; returns (wall time, time from C-FIND-RQ to final response, matches)."""
    args = ["findscu", "-W", "-aet", "CT1", "-aec", "APPLIANCE", "-lc", str(LOG_FILE)]
    keys = {k.split("=")[0]: k for k in KEYS}
    for e in extra:
        keys[e.split("=")[0]] = e
    for k in keys.values():
        args += ["-k", k]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*args, "127.0.0.1", str(port)], capture_output=True, text=True, env=ENV, timeout=600
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-500:])
    log = (proc.stdout + proc.stderr).splitlines()
    sent = next(_stamp(x) for x in log if "Sending Find Request" in x)
    done = next(_stamp(x) for x in log if "Received Final Find Response" in x)
    count = sum(1 for x in log if "Find Response:" in x)
    return elapsed, done - sent, count


def queries(n: int) -> dict[str, list[str]]:
    sps = "(0040,0100)[0]."
    mid_day = (n // (len(STATIONS) * PER_STATION_DAY)) // 2
    day = (DAY0 + timedelta(days=mid_day)).strftime("%Y%m%d")
    next_day = (DAY0 + timedelta(days=mid_day + 2)).strftime("%Y%m%d")
    out = {
        "station day list (25)": [f"{sps}ScheduledStationAETitle=CT3", f"{sps}ScheduledProcedureStepStartDate={day}"],
        "date range (~500)": [f"{sps}ScheduledProcedureStepStartDate={day}-{next_day}",
                             f"{sps}ScheduledProcedureStepStartTime=0700-1230"],
        "one accession number": [f"AccessionNumber=ACC{n // 2:08d}"],
    }  # fmt: skip
    if n >= 10000:
        last = (DAY0 + timedelta(days=24)).strftime("%Y%m%d")
        out["5000-item list"] = [f"{sps}ScheduledProcedureStepStartDate={DAY0:%Y%m%d}-{last}"]
    return out


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def run_size(n: int, repeat: int, work: Path) -> list[tuple]:
    t0 = time.perf_counter()
    data, wl = build(n, work)
    print(f"# {n} items prepared in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    port_a, port_w = free_port(), free_port()
    appliance = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--data-dir", str(data), "--host", "127.0.0.1",
         "--dicom-port", str(port_a), "--dicom-tls-port", "0", "--web-port", str(free_port()), "--http-port", "0", "--log-level", "WARNING"],
        env={**ENV, "APPLIANCE_CONFIG": str(work / "bench.toml")}, cwd=ROOT,
    )  # fmt: skip
    wlm = subprocess.Popen(["wlmscpfs", "-dfp", str(wl), str(port_w)], env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    rows = []
    try:
        wait_port(port_a)
        wait_port(port_w)
        for name, extra in queries(n).items():
            findscu(port_a, extra)  # warm up both
            findscu(port_w, extra)
            a_wall, a_query, w_wall, w_query = [], [], [], []
            counts = set()
            for _ in range(repeat):
                t, q, c = findscu(port_a, extra)
                a_wall.append(t)
                a_query.append(q)
                counts.add(("appliance", c))
                t, q, c = findscu(port_w, extra)
                w_wall.append(t)
                w_query.append(q)
                counts.add(("wlmscpfs", c))
            med = statistics.median
            a, w = med(a_query), med(w_query)
            found = sorted(counts)
            rows.append((n, name, found, a, w, med(a_wall), med(w_wall), vm_hwm(appliance.pid)))
            print(f"{n:>7} {name:<24} {found} appliance {a * 1000:8.1f} ms  wlmscpfs {w * 1000:8.1f} ms  "
                  f"ratio {w / a:6.2f}x", file=sys.stderr)  # fmt: skip
    finally:
        appliance.terminate()
        wlm.terminate()
        appliance.wait(10)
        wlm.wait(10)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for tool in ("findscu", "wlmscpfs"):
        if not shutil.which(tool):
            print(f"{tool} is missing (apt-get install dcmtk)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="bench-wl-"))
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOG_FILE.write_text(LOG_CONFIG)
    (work / "bench.toml").write_text('[[devices]]\nae_title = "CT1"\nhide_completed = false\n')
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            rows += run_size(n, args.repeat, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "Query time: C-FIND-RQ sent to final C-FIND-RSP received, from findscu's log; wall: the whole"
    )
    print("findscu process (start, association, query, release). Medians.")
    print()
    print(
        "| stored items | query | matches | appliance query | wlmscpfs query | wlmscpfs / appliance "
        "| appliance wall | wlmscpfs wall | appliance peak RSS |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, name, found, a, w, aw, ww, mem in rows:
        matches = "/".join(sorted({str(c) for _, c in found}))
        print(
            f"| {n:,} | {name} | {matches} | {a * 1000:.1f} ms | {w * 1000:.1f} ms | {w / a:.1f}x "
            f"| {aw * 1000:.0f} ms | {ww * 1000:.0f} ms | {mem} MB |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
