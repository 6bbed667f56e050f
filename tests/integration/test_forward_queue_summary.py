"""``queue.summary`` reads index ranges and kept counts, not the queue table, and says
what a count over the whole table says: after any mix of the queue's writes, and on a
database that had delivered rows before the counts were kept."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import migrations
from appliance.app import MIGRATIONS, open_store
from appliance.db import Store
from appliance.forward import queue

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
DESTS = ("a", "b", "c")

# What summary answered when it counted the whole table (the ties of the last error
# ordered by id, which it left to the index it happened to use).
FULL_SCAN = """SELECT q.destination,
      SUM(q.state = 'delivered' AND q.delivered_at > :since) AS delivered_last_minute,
      SUM(q.state = 'waiting') AS waiting, SUM(q.state = 'dead') AS dead,
      SUM(q.state = 'delivered') AS delivered,
      MIN(CASE WHEN q.state = 'waiting' THEN q.queued_at END) AS oldest_waiting_at,
      MIN(CASE WHEN q.state = 'waiting' THEN q.next_attempt END) AS next_attempt_at,
      MAX(q.delivered_at) AS last_delivered_at,
      SUM(q.state = 'waiting' AND q.attempts > 0) AS held
    FROM forward_queue q GROUP BY q.destination ORDER BY q.destination"""
LAST_ERROR = """SELECT last_error, updated_at FROM forward_queue
    WHERE destination = ? AND last_error != '' AND state != 'delivered'
    ORDER BY updated_at DESC, id DESC LIMIT 1"""
EMPTY = {"waiting": 0, "dead": 0, "delivered": 0, "delivered_last_minute": 0,
         "oldest_waiting_at": None, "next_attempt_at": None, "last_delivered_at": None,
         "held": 0, "stalled_s": None}  # fmt: skip


def full_scan(store: Store, configured: list[str], now: float) -> list[dict[str, Any]]:
    by_name = {r["destination"]: r for r in store.query(FULL_SCAN, {"since": now - 60.0})}
    out = []
    for name in dict.fromkeys([*configured, *by_name]):
        r = {**EMPTY, **by_name.get(name, {}), "destination": name}
        for k in ("waiting", "dead", "delivered", "delivered_last_minute", "held"):
            r[k] = r[k] or 0
        last = store.query(LAST_ERROR, (name,))
        r["last_error"] = last[0]["last_error"] if last else ""
        r["last_error_at"] = last[0]["updated_at"] if last else None
        out.append(r)
    return out


def _info(uid: str) -> queue.InstanceInfo:
    return queue.InstanceInfo(uid, CT, ELE, "CT", "CT1")


# One write of the queue: (what, a small number, destinations, another small number).
OPS = st.tuples(
    st.sampled_from(["receive", "deliver", "retry", "dead", "defer", "retry_now", "resend"]),
    st.integers(0, 7),
    st.lists(st.sampled_from(DESTS), min_size=1, max_size=3, unique=True),
    st.integers(0, 3),
)


def _apply(store: Store, op: tuple[str, int, list[str], int], now: float) -> None:
    what, n, dests, k = op
    dest = dests[0]
    if what == "receive":  # new, duplicate or a new version (another digest)
        queue.record_instance(store, _info(f"1.2.{n}"), f"f{n}.{k}", f"d{n}.{k % 2}", 1, dests,
                              now=now, durable=False)  # fmt: skip
        return
    if what == "defer":
        queue.defer_destination(store, dest, now + 30 * k, f"no association {k}", now=now)
        return
    if what == "retry_now":
        queue.retry_now(store, dest if k else None, now=now)
        return
    if what == "resend":
        ids = [r["id"] for r in store.query("SELECT id FROM forward_queue WHERE state != "
                                            "'waiting' ORDER BY id LIMIT ?", (n,))]  # fmt: skip
        queue.resend(store, ids, now=now)
        return
    items = queue.claim(store, dest, n + 1, now=now + 100)
    if what == "deliver":
        queue.mark_delivered(store, [(i, 0) for i in items], now=now)
    elif what == "retry":
        queue.mark_retry(store, items, f"error {k}", lambda a: 10.0 * a, max_attempts=3,
                         status_code=0xA700, now=now)  # fmt: skip
    else:
        queue.mark_dead(store, items[0], "refused", 0xC000, now=now) if items else None


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(OPS, max_size=40), configured=st.lists(st.sampled_from([*DESTS, "z"])))
def test_summary_says_what_counting_the_whole_table_says(
    ops: list[tuple[str, int, list[str], int]], configured: list[str]
) -> None:
    store = open_store(Path(tempfile.mkdtemp()))
    now = 1000.0
    start = [("receive", n, list(DESTS), 0) for n in range(4)] + [("deliver", 1, ["a"], 0)]
    for op in [*start, *ops]:
        now += 7.0  # a minute holds some of the writes, not all
        _apply(store, op, now)
        assert queue.summary(store, configured, now) == full_scan(store, configured, now)
    store.close()


def test_counts_start_from_the_rows_a_database_already_has(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for n in range(5):
        queue.record_instance(store, _info(f"1.3.{n}"), f"f{n}", f"d{n}", 1, ["a", "b"], now=10)
    queue.mark_delivered(store, [(i, 0) for i in queue.claim(store, "a", 3, now=20)], now=20)
    # As the database was before 0004: no counts, the rows there.
    with store.write() as db:
        for name in ("insert", "update", "delete"):
            db.execute(f"DROP TRIGGER forward_delivered_{name}")
        db.execute("DROP TABLE forward_delivered_counts")
        db.execute("DROP INDEX forward_queue_delivered_dest")
        db.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_delivered_counts'")
    assert migrations.migrate(store.db, MIGRATIONS) == ["forward:0004_delivered_counts"]
    assert queue.summary(store, [], now=30) == full_scan(store, [], now=30)
    assert [r["delivered"] for r in queue.summary(store, [], now=30)] == [3, 0]
    store.close()


def test_no_query_of_summary_reads_the_queue_table_through(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    queue.record_instance(store, _info("1.4"), "f", "d", 1, ["a"], now=10)
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    queue.summary(store, ["a", "b"], now=30)
    store.db.conn.set_trace_callback(None)
    plans = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            # (traced with the parameters' values written in)
            plans.extend(r[3] for r in store.db.conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert len(statements) >= 5 and len(plans) >= 5
    scans = [p for p in plans if p.startswith("SCAN forward_queue")]
    # Whole scans only of the partial indexes (waiting and dead rows).
    assert all("forward_queue_waiting" in p or "forward_queue_dead_dest" in p for p in scans)
    assert any("forward_delivered_counts" in p for p in plans)
    store.close()
