"""Retention: spooled files are deleted only after confirmed delivery, then a window.

A file may go when its instance has at least one queue row, every row is delivered,
no modality still waits for a commitment on it, and either the last delivery is older
than ``forward.retention_hours`` or the delivered files kept exceed ``forward.budget_mb``
(then the oldest delivered go first). A file that was never delivered (waiting, dead,
or routed nowhere) is never deleted: the disk reserve refuses new images instead.
The row is marked removed before the file is unlinked, so a crash in between leaves
at worst an unreferenced file, never a row that points at nothing it thinks it has.

Journal records (``appliance/forward/journal.py``) are not deleted one by one: a sealed
segment no kept row points into any more is freed whole (``sweep_segments``), one sweep
after it was first seen empty, so a sender or retrieve that opened a record just before
never reads a reused segment. A sealed segment whose kept records are less than
``COMPACT_BELOW`` of the records written in it (a dead letter or an undelivered few
holding it back) is compacted: those records are copied into the open segment (same bytes, same serial),
their rows moved to the copies, and the segment is freed like an empty one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from appliance.db import Store
from appliance.forward import queue
from appliance.forward.spool import Spool
from appliance.worker import Worker

log = logging.getLogger(__name__)

SWEEP_EVERY = 60.0  # seconds between sweeps when nothing wakes the thread
MIN_GAP = 1.0  # at most one sweep per second however often deliveries wake it

_ELIGIBLE = """
    SELECT i.id, i.file, i.size, MAX(q.delivered_at) AS last_delivered
    FROM forward_instances i JOIN forward_queue q ON q.instance_id = i.id
    WHERE i.removed_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM forward_commitment_items ci
                      WHERE ci.sop_instance_uid = i.sop_instance_uid AND ci.result = 'pending')
    GROUP BY i.id
    HAVING SUM(q.state != 'delivered') = 0
    ORDER BY last_delivered, i.id
"""


def sweep(
    store: Store,
    spool: Spool,
    retention_s: float,
    budget_bytes: int = 0,
    now: float | None = None,
) -> tuple[int, int]:
    """Delete what may go; returns (files deleted, bytes freed)."""
    now = time.time() if now is None else now
    eligible = store.query(_ELIGIBLE)
    kept = sum(r["size"] for r in eligible)
    doomed = []
    for r in eligible:  # oldest delivery first
        expired = r["last_delivered"] is not None and r["last_delivered"] <= now - retention_s
        over_budget = budget_bytes > 0 and kept > budget_bytes
        if not (expired or over_budget):
            continue
        doomed.append(r)
        kept -= r["size"]
    if not doomed:
        return 0, 0
    marked = []
    with store.write() as db:
        for r in doomed:
            # Checked again in the write: a person may have queued it since the read
            # ("Send to" on the Studies page, a resend): then it stays.
            cur = db.execute(
                "UPDATE forward_instances SET removed_at = ? WHERE id = ? AND removed_at IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM forward_queue q WHERE q.instance_id = ? "
                "AND q.state != 'delivered')",
                (now, r["id"], r["id"]),
            )
            if cur.rowcount:
                marked.append(r)
    doomed = marked
    freed = 0
    for r in doomed:
        # The same bytes may back another instance row (never in practice: names are
        # content hashes of files that carry their SOP Instance UID), so check first.
        still_used = store.query(
            "SELECT 1 FROM forward_instances WHERE file = ? AND removed_at IS NULL LIMIT 1",
            (r["file"],),
        )
        if not still_used:
            freed += spool.delete(r["file"])
    log.info("retention: %d spooled files deleted, %d bytes freed", len(doomed), freed)
    return len(doomed), freed


def sweep_orphans(
    store: Store, spool: Spool, min_age_s: float = 3600.0, now: float | None = None
) -> int:
    """Delete spool files no kept instance points at (a crash between the unlink and the
    row, or between the spool and a failed queue commit); returns how many.

    Only files older than ``min_age_s`` go, so a file being received right now (spooled,
    its row not yet committed) is never touched.
    """
    now = time.time() if now is None else now
    kept = {
        r["file"]
        for r in store.query("SELECT file FROM forward_instances WHERE removed_at IS NULL")
    }
    removed = 0
    for path in spool.objects.glob("*/*.dcm"):
        rel = f"objects/{path.parent.name}/{path.name}"
        if rel in kept:
            continue
        try:
            if path.stat().st_mtime > now - min_age_s:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    if removed:
        log.warning("retention: %d spooled files no instance points at were deleted", removed)
    return removed


COMPACT_BELOW = 0.25  # of a sealed segment's size: kept records below it are moved out
GRACE = 60.0  # seconds a segment stays empty before it is freed


def sweep_segments(
    store: Store,
    spool: Spool,
    empty_since: dict[int, float],
    now: float | None = None,
    grace: float = GRACE,
) -> tuple[int, int, int]:
    """Free sealed journal segments no kept row points into (seen empty ``grace``
    seconds ago already) and compact those held back by a few kept records; returns
    (segments freed, bytes freed, records moved). ``empty_since`` is the caller's memory
    from one sweep to the next."""
    now = time.time() if now is None else now
    j = spool.journal
    active = j.active()
    freed = freed_bytes = moved = 0
    for seq in j.sequences():
        if seq in active:
            continue
        kept = queue.segment_rows(store, seq)
        if kept and _worth_compacting(store, seq, kept):
            moved += compact(store, spool, seq, kept)
            kept = queue.segment_rows(store, seq)
        if kept:
            empty_since.pop(seq, None)
            continue
        since = empty_since.setdefault(seq, now)
        if now - since < grace:
            continue
        queue.forget_segment(store, seq)
        freed_bytes += j.free(seq)
        empty_since.pop(seq, None)
        freed += 1
    if freed or moved:
        log.info(
            "retention: %d journal segments freed (%d bytes), %d records compacted",
            freed, freed_bytes, moved,
        )  # fmt: skip
    return freed, freed_bytes, moved


def _worth_compacting(store: Store, seq: int, kept: list[dict[str, Any]]) -> bool:
    """The kept records hold less than ``COMPACT_BELOW`` of what was written in the
    segment: the rest is records retention removed."""
    written = sum(int(r["size"]) for r in queue.segment_rows(store, seq, kept_only=False))
    return sum(int(r["size"]) for r in kept) < COMPACT_BELOW * written


def compact(store: Store, spool: Spool, seq: int, kept: list[dict[str, Any]]) -> int:
    """Copy the kept records of segment ``seq`` into the open segment and move their
    rows to the copies (each copy durable before its row moves); returns how many."""
    moved = 0
    for row in kept:
        old = str(row["file"])
        serial = _serial_of(str(row.get("digest", "")))
        append = spool.journal.begin(str(row["sop_instance_uid"]), serial)
        try:
            with spool.open(old) as f:
                while chunk := f.read(1 << 20):
                    append.write(chunk)
            new = append.commit().ref
            if queue.move_record(store, int(row["id"]), old, new):
                moved += 1
        finally:
            append.close()
    return moved


def _serial_of(version: str) -> int | None:
    try:
        return int(version[1:], 16) if version.startswith("j") else None
    except ValueError:
        return None


class Retention(Worker):
    """A thread that sweeps at start, every minute, and (short windows) after deliveries."""

    def __init__(self, store: Store, spool: Spool, retention_hours: float, budget_mb: int) -> None:
        self.store = store
        self.spool = spool
        self.retention_s = retention_hours * 3600.0
        self.budget_bytes = budget_mb * 1024 * 1024
        super().__init__()
        self.deleted = 0
        self.freed = 0
        self.segments_freed = 0
        self._empty_since: dict[int, float] = {}

    def thread_name(self) -> str:
        return "forward-retention"

    def wake(self, *_: Any) -> None:
        """A delivery happened: sweep soon, but only when the window is shorter than the
        regular sweep interval (a full sweep reads every kept instance)."""
        if self.retention_s < SWEEP_EVERY:
            self._wake.set()

    def _run(self) -> None:
        try:
            sweep_orphans(self.store, self.spool)
        except Exception:  # reported; the regular sweeps go on
            log.exception("orphan sweep failed")
        while not self._stop.is_set():
            try:
                n, freed = sweep(self.store, self.spool, self.retention_s, self.budget_bytes)
                segs, seg_bytes, _ = sweep_segments(self.store, self.spool, self._empty_since)
                self.deleted += n
                self.freed += freed + seg_bytes
                self.segments_freed += segs
            except Exception:  # a bug must not stop retention for good; logged, retried
                log.exception("retention sweep failed")
            if self._wake.wait(SWEEP_EVERY):
                self._wake.clear()
            self._stop.wait(MIN_GAP)

    def health(self) -> dict[str, Any]:
        return {
            "deleted_since_start": self.deleted,
            "freed_mb": self.freed // (1024 * 1024),
            "journal_segments_freed": self.segments_freed,
        }
