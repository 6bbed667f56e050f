"""Forward benchmark: 300 CT images through the appliance against DCMTK and Orthanc.

One DCMTK storescu association sends the same 300 CT images (512x512, 16-bit, about
512 KB each) in each case, with TCP_NODELAY=1 for DCMTK and Orthanc:

- ingest: storescu -> DCMTK storescp (writes files, no fsync) against storescu -> the
  appliance (spools with fsync and rename, commits queue rows, then answers);
- completion: storescu straight to Orthanc (until storescu exits, every image stored)
  against storescu -> appliance -> Orthanc (until Orthanc counts all 300);
- the appliance's peak memory (VmHWM of its process).

Each round starts fresh peers and a fresh appliance; the medians and every round are
printed, as Markdown for docs/benchmarks.md.

With ``--drain`` only the sender is measured: storescu queues the images in a fresh
appliance whose PACS is not up yet, then Orthanc starts on the destination's port and
the time runs from its DICOM port listening until it counts every image (the sender
retries every 10-20 ms), against storescu straight to a fresh Orthanc in the same round.

With ``--journal``: ingest alone (no destination) with ``forward.spool = "files"`` and
``"journal"``, against storescp and against storescu -> Orthanc in the same round, and
the bytes written to the block device of the work folder per image (from
``/sys/dev/block/MAJ:MIN/stat`` before and after, with a sync at each end: the whole
device, so other writers on the machine count too) and by the receiving process
(``/proc/PID/io`` write_bytes); ``--one-core`` runs every process under ``taskset -c 0``.

With ``--mixed``: the many-syntax corpus (tests/forward_corpus.py) into an Orthanc that
takes only uncompressed data, through the appliance (which converts), against storescu
straight to an all-syntax Orthanc.

    scripts/bench forward [--images 300] [--repeat 3] [--drain | --mixed | --journal [--one-core]]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TCP_NODELAY": "1"}
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PREFIX: list[str] = []  # ["taskset", "-c", "0"] with --one-core


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred, timeout: float, what: str, interval: float = 0.01) -> float:  # type: ignore[no-untyped-def]
    """Poll pred() until true; returns the time.perf_counter() when it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.perf_counter()
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_images(directory: Path, count: int) -> int:
    """count CT images of one series; returns the total bytes."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    study, series = generate_uid(), generate_uid()
    total = 0
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^Patient", "BENCH1", "CT"
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
        path = directory / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def storescu(port: int, called: str, images: Path) -> float:
    """Send every image over one association; returns the wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*PREFIX, "storescu", "-aet", "BENCH", "-aec", called, "+sd", "127.0.0.1", str(port),
         str(images)],
        capture_output=True, text=True, env=ENV, timeout=900,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"storescu -> {called} failed: {proc.stderr[-800:]}")
    return elapsed


class Orthanc:
    def __init__(self, work: Path, dicom: int | None = None, **extra: Any) -> None:
        work.mkdir(parents=True)
        self.http, self.dicom = free_port(), dicom or free_port()
        config = {
            "Name": "bench", "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"),
            "StorageCompression": False, "HttpPort": self.http, "DicomPort": self.dicom,
            "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True, "Plugins": [], "SaveJobs": False, "StableAge": 3600,
            **extra,
        }  # fmt: skip
        (work / "orthanc.json").write_text(json.dumps(config))
        self.log = open(work / "orthanc.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*PREFIX, ORTHANC, str(work / "orthanc.json")],
            env=ENV,
            stdout=self.log,
            stderr=self.log,
        )
        wait_until(lambda: listening(self.dicom) and listening(self.http), 30, "Orthanc")

    def count(self) -> int:
        url = f"http://127.0.0.1:{self.http}/statistics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(json.loads(resp.read())["CountInstances"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def storescu_against(argv: list[str], port: int, called: str, images: Path) -> float:
    """Start a receiver process (listening on ``port``), time storescu into it, kill it."""
    proc = subprocess.Popen(
        [*PREFIX, *argv], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: listening(port), 30, called)
        return storescu(port, called, images)
    finally:
        proc.kill()
        proc.wait(10)


def round_storescp(images: Path, work: Path) -> float:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    argv = ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)]
    return storescu_against(argv, port, "STORESCP", images)


NOOP_SCP = """
import socket, sys
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
_config.STORE_RECV_CHUNKED_DATASET = True
ae = AE("NOOPSCP")
ae.maximum_pdu_size = 0
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
def nodelay(event):
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
handlers = [(evt.EVT_C_STORE, lambda event: 0x0000), (evt.EVT_CONN_OPEN, nodelay)]
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=handlers)
"""


def round_noop(images: Path) -> float:
    """The floor of any pynetdicom receiver: chunked receive, a handler that does nothing."""
    port = free_port()
    return storescu_against([sys.executable, "-c", NOOP_SCP, str(port)], port, "NOOPSCP", images)


def round_durable_floor(images: Path, work: Path) -> float:
    """The disk work alone of the issue's durability order, no network, no DICOM: each
    image's bytes (read beforehand) written to a new file, fdatasync, rename into another
    directory, fsync of that directory. What any receiver that answers Success only after
    that must spend per image on this disk, in the loop of a few system calls."""
    blobs = [p.read_bytes() for p in sorted(images.iterdir())]
    tmp, dst = work / "floor-tmp", work / "floor-objects"
    tmp.mkdir()
    dst.mkdir()
    dfd = os.open(dst, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for i, blob in enumerate(blobs):
            fd, name = tempfile.mkstemp(dir=tmp)
            os.write(fd, blob)
            os.fdatasync(fd)
            os.close(fd)
            os.rename(name, dst / f"{i:06d}.dcm")
            os.fsync(dfd)
        return time.perf_counter() - t0
    finally:
        os.close(dfd)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)


def round_device_floor(images: Path, work: Path) -> float:
    """The disk alone: each image's size (rounded up to 4 KiB) written synchronously
    (O_DIRECT | O_DSYNC) into a file allocated beforehand, no page cache, no metadata:
    the least time any receiver that keeps every image on this disk before answering can
    spend, whatever its design."""
    sizes = [(p.stat().st_size + 4095) // 4096 * 4096 for p in sorted(images.iterdir())]
    path = work / "device-floor"
    with open(path, "wb") as f:  # allocated and written once, outside the timing
        f.write(b"\0" * sum(sizes))
        f.flush()
        os.fsync(f.fileno())
    buf = mmap.mmap(-1, max(sizes))  # page-aligned, as O_DIRECT wants
    buf.write(os.urandom(max(sizes)))
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    try:
        t0 = time.perf_counter()
        offset = 0
        for size in sizes:
            os.pwritev(fd, [memoryview(buf)[:size]], offset)
            offset += size
        return time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()


def round_direct(images: Path, work: Path, count: int) -> float:
    pacs = Orthanc(work / "orthanc-direct")
    try:
        elapsed = storescu(pacs.dicom, "ORTHANC", images)
        if pacs.count() != count:
            raise RuntimeError("Orthanc did not store every image")
        return elapsed
    finally:
        pacs.stop()


def start_appliance(
    work: Path, name: str, pacs_port: int | None, forward: str = ""
) -> tuple[subprocess.Popen[bytes], int, Any]:
    """An appliance process (its DICOM port, its log file); sends to ``pacs_port`` if set."""
    data = work / name
    port = free_port()
    config = work / f"{name}.toml"
    dest = (
        f'[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
        f"port = {pacs_port}\n"
    )
    config.write_text(
        f'data_dir = "{data}"\n[dicom]\nhost = "127.0.0.1"\nport = {port}\ntls_port = 0\n'
        f'[web]\nhost = "127.0.0.1"\nport = {free_port()}\nhttp_port = 0\n[logging]\nlevel = "WARNING"\n'
        f"[forward]\n{forward}\n"
        '[[devices]]\nae_title = "BENCH"\n' + (dest if pacs_port else "")
    )
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115
    app = subprocess.Popen(
        [*PREFIX, sys.executable, "-m", "appliance", "serve", "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_until(lambda: listening(port), 60, "the appliance")
    except RuntimeError:
        stop_appliance(app, log)
        raise
    return app, port, log


def stop_appliance(app: subprocess.Popen[bytes], log: Any) -> None:
    app.terminate()
    app.wait(30)
    log.close()


def round_appliance(
    images: Path, work: Path, count: int, forward: bool = True
) -> tuple[float, float, float]:
    """(ingest time, time until all are in Orthanc, appliance peak memory in MB).

    With ``forward`` False the appliance has no destination: ingest alone.
    """
    pacs = Orthanc(work / f"orthanc-fwd{int(forward)}")
    app, port, log = start_appliance(
        work, f"appliance{int(forward)}", pacs.dicom if forward else None
    )
    try:
        t0 = time.perf_counter()
        ingest = storescu(port, "APPLIANCE", images)
        if not forward:
            return ingest, 0.0, vm_hwm_mb(app.pid)
        done = wait_until(lambda: pacs.count() >= count, 600, "Orthanc to hold every image")
        return ingest, done - t0, vm_hwm_mb(app.pid)
    finally:
        stop_appliance(app, log)
        pacs.stop()


def round_drain(images: Path, work: Path, count: int) -> float:
    """Seconds from the PACS coming up until it holds every image queued before."""
    pacs_port = free_port()
    # Retries 10-20 ms apart (each delay is drawn from 50-100 % of retry_max).
    retries = "retry_initial = 0.02\nretry_max = 0.02"
    app, port, log = start_appliance(work, "appliance-drain", pacs_port, retries)
    pacs = None
    try:
        storescu(port, "APPLIANCE", images)  # every image is queued once storescu exits
        pacs = Orthanc(work / "orthanc-drain", dicom=pacs_port)
        t0 = wait_until(lambda: listening(pacs_port), 30, "Orthanc", interval=0.001)
        done = wait_until(lambda: pacs.count() >= count, 600, "Orthanc to hold every image")
        return done - t0
    finally:
        stop_appliance(app, log)
        if pacs is not None:
            pacs.stop()


UNCOMPRESSED_ONLY = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]


def mixed(work: Path, repeat: int) -> int:
    """The --mixed rounds: the corpus of many SOP classes in every syntax DCMTK sends
    (tests/forward_corpus.py), storescu straight to an all-syntax Orthanc against
    storescu -> appliance -> an Orthanc taking only uncompressed data (the appliance
    converts), until that Orthanc holds every instance."""
    sys.path.insert(0, str(ROOT))
    from tests.forward_corpus import UNKNOWN_TO_DCMTK, build_corpus, storescu_profile

    entries = [e for e in build_corpus(work / "corpus") if e.syntax not in UNKNOWN_TO_DCMTK]
    profile = storescu_profile(work / "storescu.cfg", entries)
    paths = [str(e.path) for e in entries]
    syntaxes = len({e.syntax for e in entries})
    print(f"# mixed corpus: {len(entries)} instances, {syntaxes} syntaxes", file=sys.stderr)

    def send(port: int, called: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["storescu", "-aet", "BENCH", "-aec", called, "-xf", str(profile), "Corpus",
             "127.0.0.1", str(port), *paths],
            capture_output=True, text=True, env=ENV, timeout=600,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"storescu -> {called} failed: {proc.stderr[-800:]}")
        return time.perf_counter() - t0

    rounds = []
    for r in range(repeat):
        rw = work / f"mixed{r}"
        every = Orthanc(rw / "every")
        try:
            direct = send(every.dicom, "ORTHANC")
            if every.count() != len(entries):
                raise RuntimeError("the all-syntax Orthanc did not store every instance")
        finally:
            every.stop()
        plain = Orthanc(rw / "plain", AcceptedTransferSyntaxes=UNCOMPRESSED_ONLY)
        app, port, log = start_appliance(rw, "appliance-mixed", plain.dicom)
        try:
            t0 = time.perf_counter()
            send(port, "APPLIANCE")
            pacs = plain
            done = wait_until(lambda: pacs.count() >= len(entries), 300, "every instance")  # noqa: B023
            converted = done - t0
        finally:
            stop_appliance(app, log)
            plain.stop()
        rounds.append((direct, converted))
        print(f"round {r + 1}: storescu -> all-syntax Orthanc {direct:.2f} s, "
              f"storescu -> appliance -> uncompressed-only Orthanc {converted:.2f} s",
              file=sys.stderr)  # fmt: skip
    med = statistics.median
    direct, converted = med(r[0] for r in rounds), med(r[1] for r in rounds)
    print(f"\n{machine()}, {time.strftime('%Y-%m-%d')}\n")
    print(f"| mixed corpus ({len(entries)} instances, {syntaxes} syntaxes) | seconds | ratio |")
    print("|---|---|---|")
    print(f"| storescu straight to the all-syntax Orthanc | {direct:.2f} | 1.00 |")
    print(f"| storescu -> appliance -> uncompressed-only Orthanc, until it holds all | "
          f"{converted:.2f} | {converted / direct:.2f} |")  # fmt: skip
    return 0


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    dcmtk = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout
    orthanc = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True).stdout
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GB, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {dcmtk.splitlines()[0] if dcmtk else 'DCMTK'}, "
        f"{orthanc.splitlines()[0] if orthanc else 'Orthanc'}"
    )


def drain(images: Path, work: Path, count: int, repeat: int) -> int:
    """The --drain rounds and their table."""
    rounds = []
    for r in range(repeat):
        rw = work / f"drain{r}"
        rw.mkdir()
        direct = round_direct(images, rw, count)
        drained = round_drain(images, rw, count)
        rounds.append((direct, drained))
        print(
            f"round {r + 1}: storescu -> Orthanc {direct:.2f} s, "
            f"appliance queue -> Orthanc {drained:.2f} s, load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        shutil.rmtree(rw, ignore_errors=True)
    direct, drained = (statistics.median(r[i] for r in rounds) for i in range(2))
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the end.")
    print()
    print("| measure | appliance | storescu -> Orthanc | ratio (time) |")
    print("|---|---:|---:|---:|")
    print(
        f"| {count} queued images drained into Orthanc | {drained:.2f} s "
        f"({count / drained:.0f} img/s) | {direct:.2f} s ({count / direct:.0f} img/s) "
        f"| {drained / direct:.2f} |"
    )
    print()
    print(f"Medians of {len(rounds)} rounds; every round (s): storescu -> Orthanc / drain:")
    for d, q in rounds:
        print(f"- {d:.2f} / {q:.2f}")
    return 0


def device_stat(path: Path) -> Path:
    """The /sys stat file of the block device (or partition) holding ``path``."""
    dev = os.stat(path).st_dev
    return Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")


def device_written(stat: Path) -> int:
    """Bytes written to the device so far (field 7: sectors written, 512 bytes each)."""
    return int(stat.read_text().split()[6]) * 512


def process_written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def round_spool(images: Path, work: Path, spool: str) -> tuple[float, int, int, int]:
    """Ingest alone into an appliance whose spool is ``spool``: (seconds, bytes written
    to the device while storescu ran, bytes its process wrote meanwhile, bytes written
    to the device from before the start to after the stop).

    A fresh journal first zero-fills a spare segment (its blocks written, so a record's
    sync carries no extent conversion); storescu starts once it is ready, as on a box
    running for a while, whose spares are recycled segments written once already. The
    window starts after a sync once the appliance listens (and, for the journal, has its
    spare) and ends after a sync once storescu is done; the whole-life figure includes
    the start (and the journal's zeros) and the stop."""
    stat = device_stat(work)
    os.sync()
    before = device_written(stat)
    app, port, log = start_appliance(work, f"appliance-{spool}", None, f'spool = "{spool}"')
    try:
        if spool == "journal":
            journal = work / f"appliance-{spool}" / "spool" / "journal"
            wait_until(lambda: any(journal.glob("spare-*.seg")), 120, "a spare segment")
        os.sync()
        start, own0 = device_written(stat), process_written(app.pid)
        elapsed = storescu(port, "APPLIANCE", images)
        own = process_written(app.pid) - own0
        os.sync()
        ingest = device_written(stat) - start
    finally:
        stop_appliance(app, log)
    os.sync()
    return elapsed, ingest, own, device_written(stat) - before


def round_peer_bytes(run: Any, work: Path) -> tuple[float, int]:
    stat = device_stat(work)
    os.sync()
    before = device_written(stat)
    elapsed = run()
    os.sync()
    return elapsed, device_written(stat) - before


def journal_bench(images: Path, work: Path, count: int, size: int, repeat: int) -> int:
    """The --journal rounds and their table."""
    rounds = []
    life: list[tuple[int, int]] = []
    for r in range(repeat):
        rw = work / f"journal{r}"
        rw.mkdir()
        scp, scp_dev = round_peer_bytes(lambda: round_storescp(images, rw), rw)  # noqa: B023
        orth, orth_dev = round_peer_bytes(lambda: round_direct(images, rw, count), rw)  # noqa: B023
        files, files_dev, files_own, files_life = round_spool(images, rw, "files")
        jour, jour_dev, jour_own, jour_life = round_spool(images, rw, "journal")
        life.append((files_life, jour_life))
        rounds.append((scp, orth, files, jour, scp_dev, orth_dev, files_dev, jour_dev,
                       files_own, jour_own))  # fmt: skip
        print(
            f"round {r + 1}: storescp {scp:.2f} s, Orthanc {orth:.2f} s, appliance files "
            f"{files:.2f} s, journal {jour:.2f} s; device bytes/image: storescp "
            f"{scp_dev / count:.0f}, Orthanc {orth_dev / count:.0f}, files "
            f"{files_dev / count:.0f}, journal {jour_dev / count:.0f}; load "
            f"{os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        shutil.rmtree(rw, ignore_errors=True)
    med = statistics.median
    cols = [med(r[i] for r in rounds) for i in range(10)]
    scp, orth, files, jour, scp_dev, orth_dev, files_dev, jour_dev, files_own, jour_own = cols
    per = size / count
    core = "one core (taskset -c 0)" if PREFIX else "all cores"
    print(f"Machine: {machine()}; {core}; load average {os.getloadavg()[0]:.2f} at the end.")
    print()
    print(
        f"{count} images of {per / 1024:.0f} KiB on average, one storescu association per receiver."
    )
    print()
    print("| receiver | time | speed vs storescp | device bytes / image | per byte received "
          "| process bytes / byte |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, t, dev, own in (
        ("storescp (no sync)", scp, scp_dev, None),
        ("Orthanc (syncs each file)", orth, orth_dev, None),
        ("appliance, spool = files", files, files_dev, files_own),
        ("appliance, spool = journal", jour, jour_dev, jour_own),
    ):
        own_txt = f"{own / size:.2f}" if own is not None else ""
        print(
            f"| {name} | {t:.2f} s ({count / t:.0f} img/s) | {scp / t:.2f} | "
            f"{dev / count:.0f} | {dev / size:.2f} | {own_txt} |"
        )
    print()
    print(
        "Device bytes are those written while storescu ran (after a sync at each end; "
        "the journal's first spare segment was zero-filled before). From before the "
        "start to after the stop, per byte received (files / journal, every round): "
        + "; ".join(f"{f / size:.2f} / {j / size:.2f}" for f, j in life)
        + "."
    )
    print()
    print(
        f"Medians of {len(rounds)} rounds; every round (s): storescp / Orthanc / files / "
        "journal, device bytes per byte received (files / journal):"
    )
    for r in rounds:
        print(
            f"- {r[0]:.2f} / {r[1]:.2f} / {r[2]:.2f} / {r[3]:.2f}, "
            f"{r[6] / size:.2f} / {r[7] / size:.2f}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--drain", action="store_true", help="only the sender: drain a queue into Orthanc"
    )
    parser.add_argument(
        "--mixed", action="store_true",
        help="the many-syntax corpus into an uncompressed-only Orthanc (conversion)",
    )  # fmt: skip
    parser.add_argument(
        "--journal", action="store_true",
        help="ingest alone, spool = files and journal, against storescp and Orthanc, "
        "with bytes written to the device",
    )  # fmt: skip
    parser.add_argument("--one-core", action="store_true", help="every process under taskset -c 0")
    args = parser.parse_args()
    if args.one_core:
        PREFIX[:] = ["taskset", "-c", "0"]
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            print(f"{tool} is missing (apt-get install dcmtk)", file=sys.stderr)
            return 2
    if not Path(ORTHANC).exists():
        print("Orthanc is missing (apt-get install orthanc)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-fwd-"))
    rounds = []
    try:
        if args.mixed:
            return mixed(work, args.repeat)
        images = work / "images"
        size = make_images(images, args.images)
        print(f"# {args.images} images, {size / 2**20:.0f} MB", file=sys.stderr)
        if args.drain:
            return drain(images, work, args.images, args.repeat)
        if args.journal:
            return journal_bench(images, work, args.images, size, args.repeat)
        for r in range(args.repeat):
            rw = work / f"round{r}"
            rw.mkdir()
            scp = round_storescp(images, rw)
            floor = round_durable_floor(images, rw)
            device = round_device_floor(images, rw)
            noop = round_noop(images)
            direct = round_direct(images, rw, args.images)
            alone, _, _ = round_appliance(images, rw, args.images, forward=False)
            ingest, complete, mem = round_appliance(images, rw, args.images)
            rounds.append((scp, ingest, direct, complete, mem, noop, alone, floor, device))
            print(
                f"round {r + 1}: storescp {scp:.2f} s, durable-write floor {floor:.2f} s, "
                f"device floor {device:.2f} s, "
                f"no-op pynetdicom {noop:.2f} s, "
                f"appliance ingest alone {alone:.2f} s, while forwarding {ingest:.2f} s, "
                f"Orthanc direct {direct:.2f} s, via appliance {complete:.2f} s, peak {mem:.0f} MB",
                file=sys.stderr,
            )
            shutil.rmtree(rw, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    scp, ingest, direct, complete = (med(r[i] for r in rounds) for i in range(4))
    noop = med(r[5] for r in rounds)
    alone = med(r[6] for r in rounds)
    floor = med(r[7] for r in rounds)
    device = med(r[8] for r in rounds)
    mem = max(r[4] for r in rounds)
    n = args.images
    print(f"Machine: {machine()}.")
    print()
    print("| measure | appliance | peer | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| ingest, {n} images over one association, forwarding at the same time "
        f"| {ingest:.2f} s ({n / ingest:.0f} img/s) "
        f"| storescp {scp:.2f} s ({n / scp:.0f} img/s) | {scp / ingest:.2f} (speed) | >= 0.7 |"
    )
    print(
        f"| ingest alone (no destination) | {alone:.2f} s ({n / alone:.0f} img/s) "
        f"| storescp | {scp / alone:.2f} (speed) | |"
    )
    print(
        f"| durable-write floor: the same files written, fdatasync, rename, fsync dir, "
        f"no network | {floor:.2f} s | storescp | {scp / floor:.2f} (speed) | |"
    )
    print(
        f"| bound: storescp's own time plus the durable-write floor | {scp + floor:.2f} s "
        f"| storescp | {scp / (scp + floor):.2f} (speed) | |"
    )
    print(
        f"| device floor: the same bytes written O_DIRECT + O_DSYNC into a file allocated "
        f"beforehand | {device:.2f} s | storescp | {scp / device:.2f} (speed) | |"
    )
    print(
        f"| bound: storescp's own time plus the device floor | {scp + device:.2f} s "
        f"| storescp | {scp / (scp + device):.2f} (speed) | |"
    )
    print(
        f"| pynetdicom SCP whose C-STORE handler does nothing (not used) | {noop:.2f} s "
        f"({n / noop:.0f} img/s) | storescp | {scp / noop:.2f} (speed) | |"
    )
    print(
        f"| modality to PACS, until all in Orthanc | {complete:.2f} s | storescu -> Orthanc "
        f"{direct:.2f} s | {complete / direct:.2f} (time) | <= 1.3 |"
    )
    print(f"| appliance peak memory (VmHWM) | {mem:.0f} MB | | | < 150 MB |")
    print()
    print(
        f"Medians of {len(rounds)} rounds; every round (s): storescp / durable-write floor / "
        "device floor / no-op pynetdicom / "
        "ingest alone / ingest while forwarding / storescu -> Orthanc / via appliance:"
    )
    for scp_r, ing_r, dir_r, com_r, mem_r, noop_r, alone_r, floor_r, dev_r in rounds:
        print(
            f"- {scp_r:.2f} / {floor_r:.2f} / {dev_r:.2f} / {noop_r:.2f} / {alone_r:.2f} / "
            f"{ing_r:.2f} / "
            f"{dir_r:.2f} / "
            f"{com_r:.2f}, "
            f"peak {mem_r:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
