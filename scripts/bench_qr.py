"""Query/Retrieve benchmark: the appliance's Q/R SCP against Orthanc holding the same images.

Both hold the same images: one 300-image CT study (512x512, 16-bit, about 512 KB each)
and ``--studies`` small one-image studies of other patients. In the same run, with
TCP_NODELAY=1 for DCMTK and Orthanc:

- study list: ``findscu -S`` at STUDY level, universal match with the usual study-list
  keys (every study returned), each timed as a whole process, ``--queries`` times;
- one patient's studies: ``findscu -S`` with PatientID, same;
- C-MOVE of the 300-image study: ``movescu -S`` to a DCMTK ``storescp`` (fresh for
  each move), until movescu exits with every sub-operation done, ``--repeat`` times.

With ``--qido N``: N one-image studies held by both, then QIDO-RS study searches
(``/dicomweb/studies`` with a Bearer token against Orthanc's DICOMweb plugin,
``apt-get install orthanc-dicomweb``): one patient, a name prefix, a date, the first
100, each ``--queries`` times over one keep-alive HTTP connection per server.

Prints medians and a Markdown table for docs/benchmarks.md.

    scripts/bench qr [--studies 500] [--images 300] [--queries 20] [--repeat 3]
    scripts/bench qr --qido 10000 [--queries 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
from bench_forward import (
    ENV,
    ROOT,
    Orthanc,
    free_port,
    listening,
    machine,
    make_images,
    storescu,
    wait_until,
)
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from appliance import accounts
from appliance.app import open_store

CALLED = "APPLIANCE"
STUDY_KEYS = [
    "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "PatientID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
]  # fmt: skip


def make_small_studies(directory: Path, count: int) -> None:
    """count one-image studies (64x64), each its own patient, over 30 days."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientName, ds.PatientID = f"Small^{i:05d}", f"SMALL{i:05d}"
        ds.Modality, ds.StudyDate, ds.StudyTime = "CT", f"202611{1 + i % 30:02d}", "101500"
        ds.AccessionNumber, ds.StudyDescription = f"ACC{i:06d}", "Bench study"
        ds.InstanceNumber = 1
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, size=(64, 64), dtype=np.uint16).tobytes()
        ds.save_as(directory / f"s{i:05d}.dcm", enforce_file_format=True)


def start_appliance(
    work: Path, move_port: int, web_port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    data, port = work / "appliance-data", free_port()
    config = work / "appliance.toml"
    config.write_text(
        f'data_dir = "{data}"\n[dicom]\nae_title = "{CALLED}"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntls_port = 0\n[web]\nhost = "127.0.0.1"\nport = {web_port or free_port()}\nhttp_port = 0\n'
        '[logging]\nlevel = "WARNING"\n[[devices]]\nae_title = "BENCH"\n'
        f'[[devices]]\nae_title = "BENCHDEST"\nhost = "127.0.0.1"\nport = {move_port}\n'
    )
    log = open(work / "appliance.log", "wb")  # noqa: SIM115
    app = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=log,
    )  # fmt: skip
    wait_until(lambda: listening(port), 60, "the appliance")
    return app, port


def findscu(port: int, called: str, keys: list[str]) -> tuple[float, int]:
    """(wall time, number of matches) of one findscu -S run."""
    argv = ["findscu", "-S", "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port)]
    for key in keys:
        argv += ["-k", key]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=300)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"findscu -> {called} failed: {proc.stderr[-800:]}")
    return elapsed, proc.stderr.count("Find Response:") + proc.stdout.count("Find Response:")


def movescu(port: int, called: str, study: str, move_port: int, out: Path) -> tuple[float, int]:
    """(time until movescu exits, files the storescp wrote) for one study C-MOVE."""
    out.mkdir(parents=True)
    scp = subprocess.Popen(
        ["storescp", "-aet", "BENCHDEST", "-od", str(out), str(move_port)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: listening(move_port), 30, "storescp")
        argv = [
            "movescu", "-S", "-aet", "BENCH", "-aec", called, "-aem", "BENCHDEST",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(port),
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=900)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"movescu -> {called} failed: {proc.stderr[-800:]}")
        return elapsed, len(list(out.iterdir()))
    finally:
        scp.kill()
        scp.wait(10)


def held(app_port: int, count: int) -> None:
    """Wait until the appliance's study list holds every study (the index is written with
    the queue row; this is only the storescu runs' own lag)."""
    wait_until(
        lambda: findscu(app_port, CALLED, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])[1]
        >= count,
        120, "the appliance to index every study", interval=0.5,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=500, help="small one-image studies")
    parser.add_argument("--images", type=int, default=300, help="images of the moved study")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--qido", type=int, default=0, help="QIDO-RS at this many studies")
    args = parser.parse_args()
    if args.qido:
        return qido(args.qido, args.queries)
    for tool in ("storescu", "storescp", "findscu", "movescu"):
        if not shutil.which(tool):
            print(f"{tool} is missing (apt-get install dcmtk)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="bench-qr-"))
    move_port = free_port()
    try:
        big, small = work / "big", work / "small"
        make_images(big, args.images)
        make_small_studies(small, args.studies)
        study = study_uid(big)
        studies = args.studies + 1
        pacs = Orthanc(
            work / "orthanc",
            DicomModalities={"BENCHDEST": ["BENCHDEST", "127.0.0.1", move_port],
                             "BENCH": ["BENCH", "127.0.0.1", free_port()]},
        )  # fmt: skip
        app, port = start_appliance(work, move_port)
        try:
            for target, called in ((pacs.dicom, "ORTHANC"), (port, CALLED)):
                storescu(target, called, big)
                storescu(target, called, small)
            wait_until(lambda: pacs.count() >= args.images + args.studies, 120, "Orthanc")
            held(port, studies)
            results: dict[str, dict[str, list[float]]] = {"appliance": {}, "orthanc": {}}
            patient = f"PatientID=SMALL{args.studies // 2:05d}"
            for _ in range(args.queries):
                for name, target, called in (
                    ("orthanc", pacs.dicom, "ORTHANC"), ("appliance", port, CALLED)
                ):  # fmt: skip
                    t, n = findscu(target, called, STUDY_KEYS)
                    if n != studies:
                        raise RuntimeError(f"{name}: study list gave {n} of {studies}")
                    results[name].setdefault("list", []).append(t)
                    keys = [k for k in STUDY_KEYS if not k.startswith("PatientID")] + [patient]
                    t, n = findscu(target, called, keys)
                    if n != 1:
                        raise RuntimeError(f"{name}: one patient gave {n} studies")
                    results[name].setdefault("patient", []).append(t)
            for r in range(args.repeat):
                for name, target, called in (
                    ("orthanc", pacs.dicom, "ORTHANC"), ("appliance", port, CALLED)
                ):  # fmt: skip
                    t, files = movescu(target, called, study, move_port, work / f"mv-{name}{r}")
                    if files != args.images:
                        raise RuntimeError(f"{name}: C-MOVE delivered {files} of {args.images}")
                    results[name].setdefault("move", []).append(t)
                    print(f"round {r + 1}: {name} C-MOVE {t:.2f} s", file=sys.stderr)
        finally:
            app.terminate()
            app.wait(30)
            pacs.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    a, o = results["appliance"], results["orthanc"]
    print(f"Machine: {machine()}.")
    print()
    print("| measure | appliance | Orthanc | appliance / Orthanc (time) |")
    print("|---|---:|---:|---:|")
    rows = (
        ("list", f"C-FIND study list, {studies} studies returned (findscu, median of {args.queries})"),
        ("patient", f"C-FIND one patient's studies among {studies} (median of {args.queries})"),
        ("move", f"C-MOVE of a {args.images}-image study to storescp (median of {args.repeat})"),
    )  # fmt: skip
    for key, label in rows:
        am, om = med(a[key]), med(o[key])
        print(f"| {label} | {am * 1000:.0f} ms | {om * 1000:.0f} ms | {am / om:.2f} |")
    return 0


QIDO_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def api_token(data: Path) -> str:
    """A user and an API token made in the running appliance's database."""
    store = open_store(data)
    try:
        pk = accounts.create_user(store, "bench", "bench password 1234", accounts.ADMIN)
        return accounts.create_token(store, pk, "bench")
    finally:
        store.close()


def qido_times(url: str, queries: dict[str, str], repeat: int, headers: dict[str, str],
               expect: dict[str, int]) -> dict[str, float]:  # fmt: skip
    """Median seconds of each query over one keep-alive connection; counts checked."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":  # the box, with its own self-signed certificate
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=120, context=tls
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    times: dict[str, list[float]] = {name: [] for name in queries}
    try:
        for _ in range(repeat):
            for name, query in queries.items():
                t0 = time.perf_counter()
                conn.request("GET", f"{parts.path}/studies?{query}", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                times[name].append(time.perf_counter() - t0)
                if resp.status != 200:
                    raise RuntimeError(f"{url} {query}: HTTP {resp.status} {body[:300]!r}")
                found = len(json.loads(body))
                if found != expect[name]:
                    raise RuntimeError(f"{url} {query}: {found} studies, not {expect[name]}")
    finally:
        conn.close()
    return {name: statistics.median(t) for name, t in times.items()}


def qido(count: int, repeat: int) -> int:
    if not QIDO_PLUGIN.exists():
        print(f"{QIDO_PLUGIN} is missing (apt-get install orthanc-dicomweb)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-qido-"))
    try:
        small = work / "small"
        make_small_studies(small, count)
        pacs = Orthanc(work / "orthanc", Plugins=[str(QIDO_PLUGIN)],
                       DicomWeb={"Enable": True, "Root": "/dicom-web/"})  # fmt: skip
        web = free_port()
        app, port = start_appliance(work, free_port(), web_port=web)
        try:
            t0 = time.perf_counter()
            for target, called in ((pacs.dicom, "ORTHANC"), (port, CALLED)):
                storescu(target, called, small)
            print(f"# {count} studies stored in both, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)  # fmt: skip
            wait_until(lambda: pacs.count() >= count, 300, "Orthanc")
            held(port, count)
            token = api_token(work / "appliance-data")
            mid = count // 2
            queries = {
                "one patient (PatientID)": f"PatientID=SMALL{mid:05d}",
                "name prefix (PatientName=Small^0004*)": "PatientName=Small^0004*",
                "one day (StudyDate)": "StudyDate=20261115",
                "first 100 (limit=100)": "limit=100",
            }
            prefix = sum(1 for i in range(count) if f"{i:05d}".startswith("0004"))
            expect = {
                "one patient (PatientID)": 1,
                "name prefix (PatientName=Small^0004*)": prefix,
                "one day (StudyDate)": sum(1 for i in range(count) if 1 + i % 30 == 15),
                "first 100 (limit=100)": min(100, count),
            }
            accept = {"Accept": "application/dicom+json"}
            ours = qido_times(f"https://127.0.0.1:{web}/dicomweb", queries, repeat,
                              {**accept, "Authorization": f"Bearer {token}"}, expect)  # fmt: skip
            theirs = qido_times(f"http://127.0.0.1:{pacs.http}/dicom-web", queries, repeat,
                                accept, expect)  # fmt: skip
        finally:
            app.terminate()
            app.wait(30)
            pacs.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}.")
    print()
    print(f"| QIDO-RS study search, {count} held studies (median of {repeat}) "
          "| appliance | Orthanc DICOMweb plugin | appliance / Orthanc (time) |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for name in queries:
        print(f"| {name}, {expect[name]} found | {ours[name] * 1000:.0f} ms "
              f"| {theirs[name] * 1000:.0f} ms | {ours[name] / theirs[name]:.2f} |")  # fmt: skip
    return 0


def study_uid(directory: Path) -> str:
    first = next(iter(sorted(directory.iterdir())))
    return str(dcmread(first, stop_before_pixels=True).StudyInstanceUID)


if __name__ == "__main__":
    sys.exit(main())
