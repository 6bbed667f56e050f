"""Load benchmark: 40 modalities at once against the appliance, then against DCMTK.

For ``--duration`` seconds, ``--storers`` modalities each loop DCMTK storescu: one
association sending ``--images`` freshly generated 64x64 secondary capture images
(new SOP Instance UIDs every time); ``--queriers`` modalities each loop DCMTK findscu
worklist queries (their station's day, one whole day, a patient name wildcard). All
tools run with TCP_NODELAY=1 and connect from 127.0.0.1 (DCMTK cannot bind a source
address), so the appliance's ``dicom.max_associations`` and ``dicom.max_per_address``
are raised to 64 for the run (defaults 32 and 16).

1. The appliance (``appliance serve``) holds a few hundred scheduled steps and forwards
   every image to an Orthanc: every operation's latency and status is recorded, its
   VmRSS sampled every second; after the load, the time until Orthanc holds every
   acknowledged image is measured, and each acknowledged SOP Instance is looked up in
   Orthanc (lost = acknowledged, never arrived).
2. The same load against DCMTK storescp --fork (storing half) and wlmscpfs (querying
   half, the same steps as .wl files), for the ratio appliance / DCMTK per percentile.

An error is any non-success status, a refused association, a wrong number of matches
or a tool failure. Prints a Markdown table for docs/benchmarks.md.

    scripts/bench load [--duration 600] [--storers 20] [--queriers 20] [--images 5]
                       [--max-pending N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_forward import ENV, Orthanc, free_port, listening, machine, wait_until  # noqa: E402
from bench_worklist import KEYS, LOG_CONFIG, _stamp  # noqa: E402

from appliance.app import open_store  # noqa: E402
from appliance.worklist.matching import item_dataset  # noqa: E402
from appliance.worklist.model import Code, StepRequest  # noqa: E402
from appliance.worklist.repo import Narrowing, WorklistRepo, row_to_item  # noqa: E402

DAY0 = datetime(2026, 12, 1)
DAYS = 4
PER_STATION_DAY = 5
NAMES = 50  # distinct family names "Load0".."Load49"
SPS = "(0040,0100)[0]."
CALLED = "APPLIANCE"
LIMIT = 64  # dicom.max_associations and dicom.max_per_address for the run
TOOL_TIMEOUT = 300
START_LOAD = [0.0]  # load average before the run
KEPT_LOG = Path(tempfile.gettempdir()) / "bench-load-appliance.log"


@dataclass
class Op:
    """One storescu or findscu run: its wall time and what came back."""

    kind: str  # "store" or "query"
    latency: float
    ok: bool
    query_time: float = 0.0
    detail: str = ""
    reason: str = ""  # why it failed, without the peer's name, to count failures by kind


@dataclass
class Phase:
    """Everything one server's run recorded."""

    ops: list[Op] = field(default_factory=list)
    acked: list[tuple[str, str, str, str]] = field(default_factory=list)  # pid, study, series, sop
    lock: threading.Lock = field(default_factory=threading.Lock)
    rss: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    hwm: float = 0.0
    drain: float | None = None
    backlog: int = 0
    lost: int | None = None
    arrived: int = 0
    log_lines: list[str] = field(default_factory=list)
    load: float = 0.0
    wall: float = 0.0

    def add(self, op: Op, acked: Iterable[tuple[str, str, str, str]] = ()) -> None:
        with self.lock:
            self.ops.append(op)
            self.acked.extend(acked)

    def of(self, kind: str) -> list[Op]:
        return [o for o in self.ops if o.kind == kind]

    def errors(self) -> list[Op]:
        return [o for o in self.ops if not o.ok]


# -- the worklist both servers hold ---------------------------------------------------


def step_plan(stations: list[str]) -> list[StepRequest]:
    """PER_STATION_DAY steps a station a day for DAYS days."""
    out: list[StepRequest] = []
    for day in range(DAYS):
        for s, station in enumerate(stations):
            for slot in range(PER_STATION_DAY):
                i = len(out)
                out.append(
                    StepRequest(
                        patient_id=f"W{i:06d}", patient_name=f"Load{i % NAMES}^Patient{i}",
                        station_ae=station, modality="CT",
                        start=DAY0 + timedelta(days=day, hours=8, minutes=30 * slot + s),
                        birth_date="19700101", sex="MF"[i % 2], accession_number=f"L{i:08d}",
                        requested_procedure_description="CT Chest", sps_description="Chest",
                        requested_procedure_code=Code("CTCH", "LOCAL", "CT Chest"),
                        protocol_codes=(Code("P1", "LOCAL", "Chest routine"),),
                    )
                )  # fmt: skip
    return out


def seed(plan: list[StepRequest], data: Path, wl: Path) -> None:
    """The appliance's data dir and the wlmscpfs directory, holding the same steps."""
    ae_dir = wl / CALLED
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    store = open_store(data)
    repo = WorklistRepo(store)
    with store.write():
        for req in plan:
            repo.schedule(req, actor="bench")
    for i, row in enumerate(repo.candidates(Narrowing())):
        ds = item_dataset({k: v for k, v in row_to_item(row).items() if v not in ("", [], None)})
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.save_as(ae_dir / f"{i:07d}.wl", implicit_vr=False, little_endian=True)
    store.close()


def query_mix(station: str, index: int, plan: list[StepRequest]) -> list[tuple[list[str], int]]:
    """A querier's three queries (keys, expected matches), chosen from the plan."""
    day = DAY0 + timedelta(days=index % DAYS)
    ymd = f"{day:%Y%m%d}"
    name = f"Load{index % NAMES}"
    own_day = [
        f"{SPS}ScheduledStationAETitle={station}",
        f"{SPS}ScheduledProcedureStepStartDate={ymd}",
    ]
    whole_day = [f"{SPS}ScheduledProcedureStepStartDate={ymd}"]
    by_name = [f"PatientName={name}*"]
    return [
        (own_day, sum(1 for r in plan if r.station_ae == station and r.start.date() == day.date())),
        (whole_day, sum(1 for r in plan if r.start.date() == day.date())),
        (by_name, sum(1 for r in plan if r.patient_name.split("^")[0].startswith(name))),
    ]  # fmt: skip


# -- the modalities --------------------------------------------------------------------


def image_template(patient: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName, ds.PatientID, ds.Modality = f"Load^{patient}", patient, "OT"
    ds.ConversionType = "WSD"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = os.urandom(64 * 64)
    return ds


def storer(
    ae: str, port: int, called: str, count: int, end: float, work: Path, phase: Phase
) -> None:
    """Loop: write ``count`` new images, send them over one storescu association."""
    ds = image_template(ae)
    directory = work / ae
    directory.mkdir()
    while time.monotonic() < end:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        files, sent = [], []
        for i in range(count):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            path = directory / f"{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(str(path))
            sent.append((ae, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
        argv = ["storescu", "-v", "-aet", ae, "-aec", called, "127.0.0.1", str(port), *files]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=ENV, timeout=TOOL_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            phase.add(
                Op(
                    "store",
                    time.perf_counter() - t0,
                    False,
                    detail=f"{ae}: storescu timed out",
                    reason="storescu timed out",
                )
            )
            continue
        latency = time.perf_counter() - t0
        statuses = [
            line.split("Received Store Response", 1)[1].strip()
            for line in proc.stderr.splitlines()
            if "Received Store Response" in line
        ]
        acked = [s for s, status in zip(sent, statuses, strict=False) if status == "(Success)"]
        ok = proc.returncode == 0 and len(acked) == count
        detail = "" if ok else f"{ae}: rc {proc.returncode}, {statuses}, {_tail(proc.stderr)}"
        reason = ""
        if not ok:
            failed = [x for x in statuses if x != "(Success)"]
            reason = f"C-STORE {failed[0]}" if failed else _fatal(proc.stderr)
        phase.add(Op("store", latency, ok, detail=detail, reason=reason), acked)


def querier(
    ae: str, port: int, called: str, mix: list[tuple[list[str], int]], end: float, log_cfg: Path,
    phase: Phase,
) -> None:  # fmt: skip
    """Loop: one findscu -W worklist query per association, the three queries in turn."""
    n = 0
    while time.monotonic() < end:
        extra, expected = mix[n % len(mix)]
        n += 1
        keys = {k.split("=")[0]: k for k in KEYS}
        for e in extra:
            keys[e.split("=")[0]] = e
        argv = ["findscu", "-W", "-aet", ae, "-aec", called, "-lc", str(log_cfg)]
        for k in keys.values():
            argv += ["-k", k]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [*argv, "127.0.0.1", str(port)], capture_output=True, text=True, env=ENV,
                timeout=TOOL_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            phase.add(
                Op(
                    "query",
                    time.perf_counter() - t0,
                    False,
                    0.0,
                    f"{ae}: findscu timed out",
                    "findscu timed out",
                )
            )
            continue
        latency = time.perf_counter() - t0
        log = (proc.stdout + proc.stderr).splitlines()
        sent = [_stamp(x) for x in log if "Sending Find Request" in x]
        final = [x for x in log if "Received Final Find Response" in x]
        matches = sum(1 for x in log if "Find Response:" in x and "Final" not in x)
        ok = (
            proc.returncode == 0 and len(sent) == 1 and len(final) == 1
            and "(Success)" in final[0] and matches == expected
        )  # fmt: skip
        query_time = _stamp(final[0]) - sent[0] if sent and final else 0.0
        detail = "" if ok else (
            f"{ae} {extra}: rc {proc.returncode}, {matches}/{expected} matches, "
            f"{final[0] if final else 'no final response'}, {_tail(proc.stdout + proc.stderr)}"
        )  # fmt: skip
        reason = ""
        if not ok and final and "(Success)" not in final[0]:
            reason = "C-FIND " + final[0].split("Received Final Find Response", 1)[1].strip()
        elif not ok and final:
            reason = "wrong number of matches"
        elif not ok:
            reason = _fatal(proc.stdout + proc.stderr)
        phase.add(Op("query", latency, ok, query_time, detail, reason))


def _fatal(text: str) -> str:
    """The tool's fatal line (F: or 'Failed'), without its timestamp."""
    for line in text.splitlines():
        if line.startswith(("F: ", "E: ")) or "Failed" in line:
            return re.sub(r"^[\d:.]+ ", "", line).removeprefix("F: ").removeprefix("E: ")[:200]
    return "tool failed: " + _tail(text)[-200:]


def _tail(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("XMIT")]
    return " | ".join(lines[-3:])[-400:]


def run_load(args: argparse.Namespace, store_port: int, query_port: int,
             plan: list[StepRequest], work: Path, phase: Phase) -> None:  # fmt: skip
    """All the modalities at once for args.duration seconds; returns when all have stopped."""
    log_cfg = work / "findscu-log.cfg"
    log_cfg.write_text(LOG_CONFIG)
    images = work / "modalities"
    images.mkdir()
    end = time.monotonic() + args.duration
    threads = [
        threading.Thread(target=storer, args=(f"ST{i + 1:02d}", store_port, CALLED, args.images,
                                              end, images, phase))
        for i in range(args.storers)
    ] + [
        threading.Thread(target=querier, args=(q, query_port, CALLED, query_mix(q, i, plan), end,
                                               log_cfg, phase))
        for i, q in enumerate(querier_titles(args.queriers))
    ]  # fmt: skip
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    phase.load = os.getloadavg()[0]


def querier_titles(n: int) -> list[str]:
    return [f"QR{i + 1:02d}" for i in range(n)]


# -- the appliance ---------------------------------------------------------------------


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample_rss(pid: int, stop: threading.Event, phase: Phase) -> None:
    """VmRSS and the number of open file descriptors, every second."""
    while not stop.is_set():
        phase.rss.append(rss_mb(pid))
        phase.fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        stop.wait(1.0)


def appliance_config(
    work: Path, data: Path, port: int, pacs: int, args: argparse.Namespace
) -> Path:
    devices = "".join(
        f'[[devices]]\nae_title = "ST{i + 1:02d}"\n' for i in range(args.storers)
    ) + "".join(
        f'[[devices]]\nae_title = "{q}"\nhide_completed = false\n'
        for q in querier_titles(args.queriers)
    )  # fmt: skip
    config = work / "appliance.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        f'[dicom]\nae_title = "{CALLED}"\nhost = "127.0.0.1"\nport = {port}\n'
        f"max_associations = {LIMIT}\nmax_per_address = {LIMIT}\n"
        + (f"max_pending = {args.max_pending}\n" if args.max_pending else "")
        + f'[web]\nhost = "127.0.0.1"\nport = {free_port()}\nhttp_port = 0\n[logging]\nlevel = "WARNING"\n'
        f"{devices}"
        f'[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {pacs}\n'
    )
    return config


def orthanc_id(pid: str, study: str, series: str, sop: str) -> str:
    """Orthanc's identifier of an instance: SHA-1 of its four identifiers, in 5 groups."""
    h = hashlib.sha1(f"{pid}|{study}|{series}|{sop}".encode()).hexdigest()
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def orthanc_instances(pacs: Orthanc) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{pacs.http}/instances", timeout=600) as r:
        return set(json.loads(r.read()))


def check_delivery(pacs: Orthanc, phase: Phase, timeout: float) -> None:
    """Time until Orthanc counts every acknowledged image, then which never arrived."""
    wanted = len({a[3] for a in phase.acked})
    phase.backlog = max(0, wanted - pacs.count())
    t0 = time.perf_counter()
    try:
        phase.drain = wait_until(lambda: pacs.count() >= wanted, timeout, "Orthanc", 1.0) - t0
    except RuntimeError:
        print(f"# Orthanc holds {pacs.count()} of {wanted} after {timeout:.0f} s", file=sys.stderr)
    held = orthanc_instances(pacs)
    phase.arrived = len(held)
    phase.lost = sum(1 for a in phase.acked if orthanc_id(*a) not in held)
    if phase.lost and phase.lost == len(phase.acked) and held:
        print("# no acknowledged instance found by id: counting instead", file=sys.stderr)
        phase.lost = max(0, wanted - len(held))


def run_appliance(args: argparse.Namespace, plan: list[StepRequest], work: Path) -> Phase:
    phase = Phase()
    data, wl = work / "data", work / "wl-unused"
    seed(plan, data, wl)
    pacs = Orthanc(work / "orthanc")
    port = free_port()
    config = appliance_config(work, data, port, pacs.dicom, args)
    log_path = work / "appliance.log"
    log = open(log_path, "wb")  # noqa: SIM115
    app = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=log,
    )  # fmt: skip
    stop = threading.Event()
    try:
        wait_until(lambda: listening(port), 60, "the appliance", 0.05)
        sampler = threading.Thread(target=sample_rss, args=(app.pid, stop, phase))
        sampler.start()
        run_load(args, port, port, plan, work, phase)
        phase.hwm = rss_mb(app.pid, "VmHWM")
        check_delivery(pacs, phase, max(600.0, args.duration))
        phase.hwm = rss_mb(app.pid, "VmHWM")
        stop.set()
        sampler.join()
    finally:
        stop.set()
        app.terminate()
        app.wait(30)
        log.close()
        pacs.stop()
    phase.log_lines = [x for x in log_path.read_text(errors="replace").splitlines() if x.strip()]
    shutil.copy(log_path, KEPT_LOG)
    print(f"# the appliance's log: {KEPT_LOG}", file=sys.stderr)
    return phase


def run_dcmtk(args: argparse.Namespace, plan: list[StepRequest], work: Path) -> Phase:
    """The same load against storescp --fork and wlmscpfs (forks per association)."""
    phase = Phase()
    data, wl = work / "data-unused", work / "wl"
    seed(plan, data, wl)
    out = work / "storescp"
    out.mkdir()
    store_port, wl_port = free_port(), free_port()
    procs = [
        subprocess.Popen(["storescp", "--fork", "-aet", CALLED, "-od", str(out), str(store_port)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["wlmscpfs", "--fork", "-dfp", str(wl), str(wl_port)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        wait_until(lambda: listening(store_port) and listening(wl_port), 30, "DCMTK", 0.05)
        run_load(args, store_port, wl_port, plan, work, phase)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    stored = sum(1 for _ in out.iterdir())
    phase.arrived = stored
    phase.lost = max(0, len({a[3] for a in phase.acked}) - stored)
    return phase


# -- the report ------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max, in ms."""
    if len(values) < 2:
        v = values[0] * 1000 if values else 0.0
        return {"p50": v, "p95": v, "p99": v, "max": v}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": q[49] * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
        "max": max(values) * 1000,
    }


def latency_rows(app: Phase, peer: Phase, args: argparse.Namespace) -> list[str]:
    measures = [
        (f"store association ({args.images} images)", "store", lambda o: o.latency),
        ("query association (findscu run)", "query", lambda o: o.latency),
        ("query (C-FIND-RQ to final C-FIND-RSP)", "query", lambda o: o.query_time),
    ]
    rows = []
    for name, kind, get in measures:
        a = percentiles([get(o) for o in app.of(kind) if o.ok])
        d = percentiles([get(o) for o in peer.of(kind) if o.ok])
        for p in ("p50", "p95", "p99", "max"):
            ratio = a[p] / d[p] if d[p] else float("nan")
            rows.append(f"| {name} {p} | {a[p]:.0f} ms | {d[p]:.0f} ms | {ratio:.2f} |")
    return rows


def count_rows(app: Phase, peer: Phase, duration: float) -> list[str]:
    def line(name: str, get: Any) -> str:
        return f"| {name} | {get(app)} | {get(peer)} | |"

    def images(p: Phase) -> str:
        n = len({a[3] for a in p.acked})
        return f"{n:,} ({n / duration:.0f}/s)"

    return [
        line("store associations", lambda p: f"{len(p.of('store')):,}"),
        line("images acknowledged (Success)", images),
        line("queries", lambda p: f"{len(p.of('query')):,} ({len(p.of('query')) / duration:.0f}/s)"),
        line("errors (store / query)", lambda p: (
            f"{sum(1 for o in p.errors() if o.kind == 'store')} / "
            f"{sum(1 for o in p.errors() if o.kind == 'query')}")),
        line("lost (acknowledged, never arrived)", lambda p: "n/a" if p.lost is None else p.lost),
        line("load average (1 min) at the end of the load", lambda p: f"{p.load:.1f}"),
    ]  # fmt: skip


def report(app: Phase, peer: Phase, args: argparse.Namespace) -> None:
    print(
        f"{datetime.now():%Y-%m-%d %H:%M} UTC. Machine: {machine()}. Command: "
        f"`scripts/bench load --duration {args.duration:g} --storers {args.storers} "
        f"--queriers {args.queriers} --images {args.images}"
        + (f" --max-pending {args.max_pending}" if args.max_pending else "")
        + f"`; load average {START_LOAD[0]:.1f} before the run."
    )
    print()
    print("| measure | appliance | DCMTK storescp / wlmscpfs | appliance / DCMTK |")
    print("|---|---:|---:|---:|")
    for row in count_rows(app, peer, args.duration) + latency_rows(app, peer, args):
        print(row)
    rss = app.rss or [0.0]
    print()
    print(
        f"Appliance RSS (VmRSS every second, {len(app.rss)} samples): start {rss[0]:.0f} MB, "
        f"peak {max(rss):.0f} MB, end {rss[-1]:.0f} MB; VmHWM {app.hwm:.0f} MB."
    )
    drain = "never (timed out)" if app.drain is None else f"{app.drain:.1f} s"
    print(
        f"Forwarding: {app.backlog:,} acknowledged images not yet in Orthanc when the load "
        f"stopped; Orthanc held every one after {drain}; Orthanc holds {app.arrived:,} "
        f"instances; storescp wrote {peer.arrived:,} files."
    )
    minutes = ", ".join(f"{r:.0f}" for r in rss[::60])
    print(f"Appliance VmRSS each minute from the start (MB): {minutes}.")
    fds = app.fds or [0]
    print(
        f"Appliance open file descriptors: start {fds[0]}, peak {max(fds)}, end {fds[-1]}; "
        f"each minute: {', '.join(str(n) for n in fds[::60])}."
    )
    for name, phase in (("appliance", app), ("DCMTK", peer)):
        errs = phase.errors()
        if errs:
            print()
            print(f"{name} errors ({len(errs)}) by kind:")
            for (kind, reason), n in Counter((o.kind, o.reason) for o in errs).most_common():
                times = [o.latency for o in errs if (o.kind, o.reason) == (kind, reason)]
                print(
                    f"- {n} x {kind}: {reason} (after {min(times) * 1000:.0f}-"
                    f"{max(times) * 1000:.0f} ms)"
                )
            print("The first 5:")
            for o in errs[:5]:
                print(f"- {o.kind} after {o.latency * 1000:.0f} ms: {o.detail}")
    kinds = log_kinds(app.log_lines)
    print()
    print(f"Appliance log, WARNING and above: {sum(kinds.values())} lines.")
    for kind, n in kinds.most_common(12):
        print(f"- {n} x `{kind[:300]}`")


def log_kinds(lines: list[str]) -> Counter[str]:
    """The log's WARNING, ERROR and CRITICAL lines by message (times, AE titles and
    numbers left out)."""
    kinds: Counter[str] = Counter()
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in ("WARNING", "ERROR", "CRITICAL"):
            text = re.sub(r"\b(ST|QR)\d\d@", "<AE>@", f"{parts[2]} {parts[3]}")
            kinds[re.sub(r"\d+(\.\d+)*", "N", text)] += 1
        elif line.startswith(("Traceback", "Exception")):
            kinds[line] += 1
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load per server")
    parser.add_argument("--storers", type=int, default=20)
    parser.add_argument("--queriers", type=int, default=20)
    parser.add_argument("--images", type=int, default=5, help="images per store association")
    parser.add_argument(
        "--max-pending", type=int, default=0,
        help="the appliance's dicom.max_pending (0: its default)",
    )  # fmt: skip
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "findscu", "wlmscpfs"):
        if not shutil.which(tool):
            print(f"{tool} is missing (apt-get install dcmtk)", file=sys.stderr)
            return 2
    START_LOAD[0] = os.getloadavg()[0]
    plan = step_plan(querier_titles(args.queriers))
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    (work / "appliance").mkdir()
    (work / "dcmtk").mkdir()
    try:
        print(
            f"# {len(plan)} scheduled steps; the appliance for {args.duration:g} s", file=sys.stderr
        )
        app = run_appliance(args, plan, work / "appliance")
        summary(app, "appliance")
        print(f"# DCMTK for {args.duration:g} s", file=sys.stderr)
        peer = run_dcmtk(args, plan, work / "dcmtk")
        summary(peer, "DCMTK")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(app, peer, args)
    return 1 if app.errors() or app.lost else 0


def summary(phase: Phase, name: str) -> None:
    print(
        f"# {name}: {len(phase.of('store'))} store associations, {len(phase.acked)} images, "
        f"{len(phase.of('query'))} queries, {len(phase.errors())} errors, lost {phase.lost}, "
        f"load {phase.load:.1f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    raise SystemExit(main())
