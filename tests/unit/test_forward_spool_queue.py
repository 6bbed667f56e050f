"""The spool (durable files) and the queue (SQL states) on real files and SQLite."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from appliance.db import open_store
from appliance.forward import queue
from appliance.forward.spool import Spool

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    s.prepare()
    return s


@pytest.fixture
def store(tmp_path: Path):
    st = open_store(tmp_path / "db")
    yield st
    st.close()


def _received(spool: Spool, content: bytes) -> Path:
    src = spool.tmp / f"rx{len(list(spool.tmp.iterdir()))}.dcm"
    src.write_bytes(content)
    return src


def test_place_renames_into_a_random_name(spool: Spool) -> None:
    src = _received(spool, b"x" * 1000)
    sf = spool.place(src)
    assert not src.exists()
    assert spool.path(sf.rel).read_bytes() == b"x" * 1000
    assert sf.size == 1000 and len(sf.token) == 32
    assert sf.rel == f"objects/{sf.token[:2]}/{sf.token}.dcm"
    again = spool.place(_received(spool, b"x" * 1000))
    assert again.rel != sf.rel  # names never come from the content or the UIDs
    assert sorted(spool.spooled()) == sorted([sf.rel, again.rel])


def test_same_bytes_compares_whole_files(spool: Spool) -> None:
    kept = spool.place(_received(spool, b"same" * 1000))
    assert spool.same_bytes(kept.rel, _received(spool, b"same" * 1000))
    assert not spool.same_bytes(kept.rel, _received(spool, b"same" * 999 + b"diff"))
    assert not spool.same_bytes("objects/00/missing.dcm", _received(spool, b"same"))


def test_place_copies_across_file_systems(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    real_rename = os.rename

    def cross_device(src: str, dst: str) -> None:
        if str(src).endswith(".part"):
            return real_rename(src, dst)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    src = _received(spool, b"elsewhere")
    sf = spool.place(src)
    assert spool.path(sf.rel).read_bytes() == b"elsewhere"
    assert not src.exists()
    assert [p for p in spool.tmp.iterdir() if p.suffix == ".part"] == []


def test_prepare_removes_leftovers_of_a_crash(spool: Spool) -> None:
    (spool.tmp / "half-received.dcm").write_bytes(b"partial")
    spool.prepare()
    assert list(spool.tmp.iterdir()) == []


def _info(uid: str = "1.2.3.4", modality: str = "CT") -> queue.InstanceInfo:
    return queue.InstanceInfo(uid, CT, ELE, modality, "CT1")


def test_record_new_duplicate_and_replaced(store) -> None:
    first = queue.record_instance(store, _info(), "f1", "d1", 10, ["a", "b"], now=100)
    assert first.outcome == "new"
    dup = queue.record_instance(store, _info(), "f1", "d1", 10, ["a", "b", "c"], now=101)
    assert dup.outcome == "duplicate" and dup.instance_id == first.instance_id
    rows = store.query("SELECT destination FROM forward_queue ORDER BY destination")
    assert [r["destination"] for r in rows] == ["a", "b", "c"]  # a new route is added
    rep = queue.record_instance(store, _info(), "f2", "d2", 11, ["a"], now=102)
    assert rep.outcome == "replaced" and rep.old_file == "f1"
    gens = {r["generation"] for r in store.query("SELECT generation FROM forward_queue")}
    assert gens == {1}


def test_claim_order_and_generation_guard(store) -> None:
    for n in range(3):
        queue.record_instance(store, _info(f"1.2.{n}"), f"f{n}", f"d{n}", 1, ["a"], now=100 + n)
    items = queue.claim(store, "a", 2, now=200)
    assert [i.sop_instance_uid for i in items] == ["1.2.0", "1.2.1"]
    assert queue.claim(store, "a", 10, now=50) == []  # nothing due yet
    # A new version arrives while the old one is being sent: the stale send changes nothing.
    queue.record_instance(store, _info("1.2.0"), "g0", "e0", 1, ["a"], now=201)
    assert queue.mark_delivered(store, [(items[0], 0), (items[1], 0)], now=202) == 1
    [again] = [i for i in queue.claim(store, "a", 10, now=300) if i.sop_instance_uid == "1.2.0"]
    assert again.file == "g0" and again.generation == 1


def test_retry_backs_off_then_dead_at_max_attempts(store) -> None:
    queue.record_instance(store, _info(), "f", "d", 1, ["a"], now=100)
    [item] = queue.claim(store, "a", 1, now=100)
    queue.mark_retry(store, [item], "out of resources", lambda n: 10.0 * n, 3, now=100)
    assert queue.claim(store, "a", 1, now=105) == []
    [item] = queue.claim(store, "a", 1, now=111)
    assert item.attempts == 1
    queue.mark_retry(store, [item], "out of resources", lambda n: 10.0 * n, 3, now=111)
    [item] = queue.claim(store, "a", 1, now=200)
    queue.mark_retry(store, [item], "out of resources", lambda n: 10.0 * n, 3, now=200)
    [dead] = queue.dead_letters(store)
    assert dead["reason"] == "gave up after 3 attempts: out of resources"


def test_page_functions(store) -> None:
    queue.record_instance(store, _info("1.1"), "f1", "d1", 1, ["a", "b"], now=100)
    queue.record_instance(store, _info("1.2"), "f2", "d2", 1, ["a"], now=110)
    assert queue.defer_destination(store, "a", until=500, error="PACS down", now=120) == 2
    [it] = queue.claim(store, "b", 1, now=120)
    queue.mark_dead(store, it, "cannot understand 0xC000", 0xC000, now=121)
    summary = {s["destination"]: s for s in queue.summary(store, ["a", "b", "z"])}
    assert summary["a"]["waiting"] == 2 and summary["a"]["oldest_waiting_at"] == 100
    assert summary["a"]["next_attempt_at"] == 500 and summary["a"]["last_error"] == "PACS down"
    assert summary["b"]["dead"] == 1 and summary["b"]["waiting"] == 0
    assert summary["z"]["waiting"] == 0 and summary["z"]["last_error"] == ""
    waiting = queue.waiting_items(store, "a")
    # Not tried yet: said so, with the destination's error they wait behind.
    assert [(w["why"], w["waits_for"], w["held"]) for w in waiting] == [
        ("not tried yet", "PACS down", False)
    ] * 2
    assert queue.retry_now(store, "a", now=130) == 2
    assert len(queue.claim(store, "a", 10, now=130)) == 2
    [dead] = queue.dead_letters(store, "b")
    assert queue.resend(store, [dead["id"]], now=140) == 1
    assert queue.dead_letters(store) == []
    assert queue.claim(store, "b", 1, now=140)[0].sop_instance_uid == "1.1"


def test_a_held_row_keeps_its_own_error_when_the_destination_backs_off(store) -> None:
    queue.record_instance(store, _info("1.1"), "f1", "d1", 1, ["a"], now=100)
    queue.record_instance(store, _info("1.2"), "f2", "d2", 1, ["a"], now=101)
    first, _ = queue.claim(store, "a", 2, now=110)
    queue.mark_retry(store, [first], "no decoder for JPEG Extended", lambda n: 0.0, now=110)
    assert queue.defer_destination(store, "a", until=500, error="PACS down", now=120) == 2
    held, fresh = queue.waiting_items(store, "a")
    assert (held["held"], held["why"], held["attempts"]) == (
        True,
        "no decoder for JPEG Extended",
        1,
    )
    assert (fresh["held"], fresh["waits_for"]) == (False, "PACS down")
    [row] = queue.summary(store, ["a"], now=130)
    assert row["held"] == 1 and row["stalled_s"] is None


def test_a_destination_without_progress_is_stalled(store) -> None:
    queue.record_instance(store, _info("1.1"), "f1", "d1", 1, ["a"], now=100)
    [row] = queue.summary(store, ["a"], now=100 + 899, stall_after=900)
    assert row["stalled_s"] is None
    [row] = queue.summary(store, ["a"], now=100 + 901, stall_after=900)
    assert row["stalled_s"] == 901
    [it] = queue.claim(store, "a", 1, now=1001)
    queue.mark_delivered(store, [(it, 0)], now=1002)
    [row] = queue.summary(store, ["a"], now=5000, stall_after=900)
    assert row["stalled_s"] is None  # nothing waits
