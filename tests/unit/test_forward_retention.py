"""Retention: only confirmed deliveries are deleted, after the window or over the budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from appliance.app import open_store
from appliance.forward import commitment, queue
from appliance.forward.retention import sweep, sweep_orphans
from appliance.forward.spool import Spool

CT = "1.2.840.10008.5.1.4.1.1.2"
HOUR = 3600.0


@pytest.fixture
def env(tmp_path: Path):
    store = open_store(tmp_path / "db")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    yield store, spool
    store.close()


def _receive(store, spool: Spool, uid: str, size: int, dests: list[str], now: float) -> str:
    src = spool.tmp / "rx.dcm"
    src.write_bytes(uid.encode() * size)
    sf = spool.place(src)
    info = queue.InstanceInfo(uid, CT, "1.2.840.10008.1.2.1", "CT", "CT1")
    queue.record_instance(store, info, sf.rel, sf.token, sf.size, dests, now=now)
    return sf.rel


def _deliver(store, dest: str, now: float) -> None:
    items = queue.claim(store, dest, 100, now=now)
    queue.mark_delivered(store, [(i, 0) for i in items], now=now)


def test_only_delivered_files_go_after_the_window(env) -> None:
    store, spool = env
    done = _receive(store, spool, "1.1", 10, ["a"], now=0)
    half = _receive(store, spool, "1.2", 10, ["a", "b"], now=0)
    nowhere = _receive(store, spool, "1.3", 10, [], now=0)
    _deliver(store, "a", now=10)  # 1.2 still waits for b
    size = spool.path(done).stat().st_size
    assert sweep(store, spool, retention_s=HOUR, now=10 + HOUR - 1) == (0, 0)
    n, freed = sweep(store, spool, retention_s=HOUR, now=10 + HOUR)
    assert (n, freed) == (1, size)
    assert not spool.path(done).exists()
    assert spool.path(half).exists() and spool.path(nowhere).exists()
    removed = store.query(
        "SELECT sop_instance_uid FROM forward_instances WHERE removed_at IS NOT NULL"
    )
    assert removed == [{"sop_instance_uid": "1.1"}]
    # A removed file cannot be resent; the row says so by not moving.
    [row] = store.query(
        "SELECT q.id FROM forward_queue q JOIN forward_instances i ON i.id = q.instance_id WHERE i.sop_instance_uid = '1.1'"
    )
    assert queue.resend(store, [row["id"]]) == 0


def test_budget_removes_oldest_deliveries_first(env) -> None:
    store, spool = env
    files = [_receive(store, spool, f"2.{n}", 100, ["a"], now=n) for n in range(4)]
    for n in range(4):
        items = [i for i in queue.claim(store, "a", 10, now=100) if i.sop_instance_uid == f"2.{n}"]
        queue.mark_delivered(store, [(items[0], 0)], now=100 + n)
    # each file is 300 bytes; a 700-byte budget keeps the two newest deliveries
    n, _ = sweep(store, spool, retention_s=10 * HOUR, budget_bytes=700, now=200)
    assert n == 2
    assert [spool.path(f).exists() for f in files] == [False, False, True, True]


def test_pending_commitment_keeps_the_file(env) -> None:
    store, spool = env
    rel = _receive(store, spool, "3.1", 10, ["a"], now=0)
    _deliver(store, "a", now=1)
    commitment.record_request(store, "CT1", "9.9", [commitment.Ref(CT, "3.1")], timeout=60, now=1)
    assert sweep(store, spool, retention_s=0, now=100) == (0, 0)
    commitment.evaluate(store, {"a": "delivery"}, now=2)
    assert sweep(store, spool, retention_s=0, now=100)[0] == 1
    assert not spool.path(rel).exists()


def test_orphan_files_are_swept_but_not_fresh_ones(env) -> None:
    store, spool = env
    kept = _receive(store, spool, "4.1", 10, ["a"], now=0)
    src = spool.tmp / "rx.dcm"
    src.write_bytes(b"no row points at me")
    orphan = spool.place(src).rel
    src.write_bytes(b"being received right now")
    fresh = spool.place(src).rel
    old = time.time() - 2 * HOUR
    os.utime(spool.path(orphan), (old, old))
    os.utime(spool.path(kept), (old, old))
    assert sweep_orphans(store, spool, min_age_s=HOUR) == 1
    assert not spool.path(orphan).exists()
    assert spool.path(kept).exists() and spool.path(fresh).exists()


def test_unanswered_pacs_requests_are_asked_again(env) -> None:
    store, spool = env
    _receive(store, spool, "5.1", 10, ["a"], now=0)
    _deliver(store, "a", now=1)
    commitment.record_request(store, "CT1", "9.8", [commitment.Ref(CT, "5.1")], timeout=600, now=1)
    [row] = commitment.needing_pacs_commit(store, "a")
    commitment.record_pacs_request(store, "a", "7.7", [row["queue_id"]], now=2)
    assert commitment.needing_pacs_commit(store, "a", ask_again_before=2) == []  # asked at 2
    assert len(commitment.needing_pacs_commit(store, "a", ask_again_before=3)) == 1
    commitment.apply_pacs_report(store, "7.7", [commitment.Ref(CT, "5.1")], [], 1, now=3)
    assert commitment.needing_pacs_commit(store, "a", ask_again_before=10**10) == []
