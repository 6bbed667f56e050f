"""Keyset paging of the Studies page's list (``appliance.qr.studies``) on a real index:
every held study once, newest study date and time first, forward and back, however
many images each has, and studies received between two page loads never shift a page."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import paging
from appliance.app import open_store
from appliance.db import Store
from appliance.forward import queue
from appliance.qr import studies

CT = "1.2.840.10008.5.1.4.1.1.2"
_uids = itertools.count(1)


def _receive(store: Store, study: str, date: str, images: int) -> None:
    for _ in range(images):
        n = next(_uids)
        info = queue.InstanceInfo(f"1.2.9.{n}", CT, "1.2.840.10008.1.2.1", "CT", "CT1")
        indexed = {"study_uid": study, "study_date": date, "study_time": "080000",
                   "series_uid": f"{study}.1", "sop_instance_uid": info.sop_instance_uid}  # fmt: skip
        queue.record_instance(store, info, f"f{n}", f"d{n}", 1, [], durable=False, indexed=indexed)


def _expected(held: dict[str, str]) -> list[str]:
    return [u for u, _ in sorted(held.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


STUDIES = st.lists(st.tuples(st.integers(1, 5), st.integers(1, 3)), min_size=0, max_size=25)


@settings(max_examples=25, deadline=None)
@given(held=STUDIES, size=st.integers(1, 7))
def test_every_study_once_forward_and_back(held: list[tuple[int, int]], size: int) -> None:
    store = open_store(Path(tempfile.mkdtemp()))
    dates = {}
    for i, (day, images) in enumerate(held):  # few days: many ties on the date
        uid, dates[f"1.2.3.{i}"] = f"1.2.3.{i}", f"2026120{day}"
        _receive(store, uid, dates[uid], images)
    expected = _expected(dates)
    pages, req = [], paging.PageRequest(size)
    while True:
        page = studies.study_page(store, studies.StudyFilter(), req)
        assert page.total == len(expected) and page.start == sum(map(len, pages))
        pages.append([r["study_uid"] for r in page.rows])
        if not page.has_next:
            break
        req = paging.PageRequest(size, after=page.last)
    assert [u for p in pages for u in p] == expected
    back, req = [], paging.PageRequest(size, before=paging.END)
    while True:
        page = studies.study_page(store, studies.StudyFilter(), req)
        back.insert(0, [r["study_uid"] for r in page.rows])
        if not page.has_previous:
            break
        req = paging.PageRequest(size, before=page.first)
    assert [u for p in back for u in p] == expected
    store.close()


def test_studies_received_between_pages_do_not_shift_the_next_page() -> None:
    store = open_store(Path(tempfile.mkdtemp()))
    for i in range(6):
        _receive(store, f"1.2.4.{i}", f"2026110{i + 1}", 2)
    first = studies.study_page(store, studies.StudyFilter(), paging.PageRequest(3))
    assert [r["study_uid"] for r in first.rows] == ["1.2.4.5", "1.2.4.4", "1.2.4.3"]
    _receive(store, "1.2.4.9", "20261209", 1)  # today's study arrives: it goes on top
    _receive(store, "1.2.4.3", "20261104", 1)  # one more image of a study already shown
    nxt = studies.study_page(store, studies.StudyFilter(), paging.PageRequest(3, after=first.last))
    assert [r["study_uid"] for r in nxt.rows] == ["1.2.4.2", "1.2.4.1", "1.2.4.0"]
    assert nxt.total == 7 and nxt.start == 4
    top = studies.study_page(store, studies.StudyFilter(), paging.PageRequest(3))
    assert top.rows[0]["study_uid"] == "1.2.4.9"
    assert top.rows[3 - 1]["study_uid"] == "1.2.4.4"
    assert [r["instance_count"] for r in top.rows] == [1, 2, 2]
    store.close()
