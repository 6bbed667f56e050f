"""The Studies page's listing (appliance.qr.studies.study_page) at N held studies of 3
images each: python scripts/bench_studies.py N (docs/benchmarks.md)."""

import sys
import tempfile
import time
from pathlib import Path

from appliance import paging
from appliance.app import open_store
from appliance.forward import queue
from appliance.qr import studies

d = Path(tempfile.mkdtemp())
store = open_store(d)
N = int(sys.argv[1])
PER = 3
t0 = time.time()
n = 0
for s in range(N):
    for i in range(PER):
        info = queue.InstanceInfo(
            f"1.2.9.{s}.{i}", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "CT", "CT1"
        )
        idx = {
            "study_uid": f"1.2.3.{s}",
            "series_uid": f"1.2.3.{s}.1",
            "sop_instance_uid": info.sop_instance_uid,
            "patient_name": f"Name{s}^X",
            "patient_id": f"P{s}",
            "study_date": f"2026{1 + s % 12:02d}{1 + s % 28:02d}",
            "study_time": "101010",
            "modality": "CT",
            "accession_number": f"A{s}",
        }
        queue.record_instance(
            store, info, f"f{n}", f"d{n}", 1, ["pacs"], now=100, durable=False, indexed=idx
        )
        n += 1
print("filled", n, "instances in", round(time.time() - t0, 1), "s")
for label, flt, req in [
    ("first page", studies.StudyFilter(), paging.PageRequest(100)),
    ("by patient ID", studies.StudyFilter(patient_id="P77"), paging.PageRequest(100)),
    ("by name part", studies.StudyFilter(patient_name="name77"), paging.PageRequest(100)),
    ("by date", studies.StudyFilter(study_date="20260505"), paging.PageRequest(100)),
    ("last page", studies.StudyFilter(), paging.PageRequest(100, before="end")),
]:
    t = time.perf_counter()
    for _ in range(5):
        page = studies.study_page(store, flt, req)
    ms = (time.perf_counter() - t) / 5 * 1000
    t = time.perf_counter()
    studies.deliveries(store, [r["study_uid"] for r in page.rows])
    dms = (time.perf_counter() - t) * 1000
    print(
        f"{label:14} {len(page.rows):4} rows of {page.total:6}: {ms:7.1f} ms (+ deliveries {dms:.1f} ms)"
    )
