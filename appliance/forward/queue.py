"""The forward queue in SQLite: one row per (instance, destination) with its state.

States: ``waiting`` (to be sent; ``next_attempt`` says when, ``last_error`` says why it
still waits), ``delivered`` (the PACS answered Success or a warning), ``dead`` (refused
for good; ``last_error`` gives the reason; a person may resend). Every write is a
short ``BEGIN IMMEDIATE`` transaction through ``Store.write()``.
The functions at the end (``summary``, ``waiting_items`` and ``dead_letters`` with
keyset paging, ``retry_now``, ``resend``) are what the queue pages need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import audit, paging
from appliance.db import Store
from appliance.qr import index as qr_index

WAITING = "waiting"
DELIVERED = "delivered"
DEAD = "dead"

migrations = Migrations("forward")


@migrations(name="0001_queue")
def _m0001(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE forward_instances (
            id INTEGER PRIMARY KEY,
            sop_instance_uid TEXT NOT NULL UNIQUE,
            sop_class_uid TEXT NOT NULL,
            transfer_syntax TEXT NOT NULL,
            modality TEXT NOT NULL DEFAULT '',
            calling_ae TEXT NOT NULL DEFAULT '',
            file TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            received_at REAL NOT NULL,
            removed_at REAL
        )"""
    )
    db.execute("CREATE INDEX forward_instances_removed ON forward_instances(removed_at)")
    db.execute(
        """CREATE TABLE forward_queue (
            id INTEGER PRIMARY KEY,
            instance_id INTEGER NOT NULL REFERENCES forward_instances(id),
            destination TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'waiting',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            last_status INTEGER,
            generation INTEGER NOT NULL DEFAULT 0,
            queued_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            delivered_at REAL,
            UNIQUE (instance_id, destination)
        )"""
    )
    db.execute(
        "CREATE INDEX forward_queue_ready ON forward_queue(destination, state, next_attempt)"
    )
    db.execute("CREATE INDEX forward_queue_delivered ON forward_queue(state, delivered_at)")


@migrations(name="0002_commitment")
def _m0002(db: sqlite_utils.Database) -> None:
    # Storage Commitment toward the PACS, per queue row (PS3.4 J).
    db.execute("ALTER TABLE forward_queue ADD COLUMN commit_requested_at REAL")
    db.execute("ALTER TABLE forward_queue ADD COLUMN committed_at REAL")
    db.execute("ALTER TABLE forward_queue ADD COLUMN commit_error TEXT NOT NULL DEFAULT ''")
    # Requests from modalities, answered by N-EVENT-REPORT once every item is resolved.
    db.execute(
        """CREATE TABLE forward_commitments (
            id INTEGER PRIMARY KEY,
            transaction_uid TEXT NOT NULL,
            calling_ae TEXT NOT NULL,
            requested_at REAL NOT NULL,
            deadline REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            event_type INTEGER,
            report_attempts INTEGER NOT NULL DEFAULT 0,
            next_report REAL,
            last_error TEXT NOT NULL DEFAULT '',
            reported_at REAL,
            UNIQUE (calling_ae, transaction_uid)
        )"""
    )
    db.execute("CREATE INDEX forward_commitments_state ON forward_commitments(state)")
    db.execute(
        """CREATE TABLE forward_commitment_items (
            id INTEGER PRIMARY KEY,
            commitment_id INTEGER NOT NULL REFERENCES forward_commitments(id),
            sop_class_uid TEXT NOT NULL,
            sop_instance_uid TEXT NOT NULL,
            result TEXT NOT NULL DEFAULT 'pending',
            failure_reason INTEGER,
            detail TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX forward_commitment_items_c ON forward_commitment_items(commitment_id)")
    db.execute(
        "CREATE INDEX forward_commitment_items_uid ON forward_commitment_items(sop_instance_uid, result)"
    )
    db.execute("CREATE INDEX forward_commitment_items_result ON forward_commitment_items(result)")
    # Our own requests to a PACS: one Transaction UID each, its queue rows.
    db.execute(
        """CREATE TABLE forward_pacs_requests (
            id INTEGER PRIMARY KEY,
            transaction_uid TEXT NOT NULL UNIQUE,
            destination TEXT NOT NULL,
            sent_at REAL NOT NULL,
            answered_at REAL,
            event_type INTEGER
        )"""
    )
    db.execute(
        """CREATE TABLE forward_pacs_request_items (
            request_id INTEGER NOT NULL REFERENCES forward_pacs_requests(id),
            queue_id INTEGER NOT NULL REFERENCES forward_queue(id)
        )"""
    )
    db.execute(
        "CREATE INDEX forward_pacs_request_items_r ON forward_pacs_request_items(request_id)"
    )


@migrations(name="0003_page_indexes")
def _m0003(db: sqlite_utils.Database) -> None:
    # The queue pages: waiting items oldest first and dead letters newest first, a page
    # at a time. Partial indexes hold only those rows, so delivered rows cost nothing.
    db.execute(
        "CREATE INDEX forward_queue_waiting ON forward_queue(destination, state, queued_at) "
        "WHERE state = 'waiting'"
    )
    db.execute(
        "CREATE INDEX forward_queue_dead ON forward_queue(state, updated_at) WHERE state = 'dead'"
    )
    db.execute(
        "CREATE INDEX forward_queue_dead_dest ON forward_queue(destination, updated_at) "
        "WHERE state = 'dead'"
    )


@migrations(name="0004_delivered_counts")
def _m0004(db: sqlite_utils.Database) -> None:
    # The queue overview and /healthz: delivered rows are never deleted, so counting them
    # would read more each day. Triggers keep a count per destination in the statement
    # that moves a row in or out of 'delivered' (batched with the deliveries: a received
    # image's own commit does not touch it). Waiting and dead rows stay few and are
    # counted from their partial indexes (0003).
    db.execute(
        """CREATE TABLE forward_delivered_counts (
            destination TEXT PRIMARY KEY,
            n INTEGER NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute(
        "INSERT INTO forward_delivered_counts (destination, n) SELECT destination, COUNT(*) "
        "FROM forward_queue WHERE state = 'delivered' GROUP BY destination"
    )
    add = (
        "INSERT INTO forward_delivered_counts (destination, n) SELECT new.destination, 1 "
        "WHERE new.state = 'delivered' ON CONFLICT (destination) DO UPDATE SET n = n + 1;"
    )
    remove = (
        "UPDATE forward_delivered_counts SET n = n - 1 "
        "WHERE old.state = 'delivered' AND destination = old.destination;"
    )
    db.execute(
        "CREATE TRIGGER forward_delivered_insert AFTER INSERT ON forward_queue "
        f"WHEN new.state = 'delivered' BEGIN {add} END"
    )
    db.execute(
        "CREATE TRIGGER forward_delivered_update AFTER UPDATE OF state, destination "
        "ON forward_queue WHEN (old.state = 'delivered' OR new.state = 'delivered') "
        "AND (old.state IS NOT new.state OR old.destination IS NOT new.destination) "
        f"BEGIN {remove} {add} END"
    )
    db.execute(
        "CREATE TRIGGER forward_delivered_delete AFTER DELETE ON forward_queue "
        f"WHEN old.state = 'delivered' BEGIN {remove} END"
    )
    # The last delivery and the last minute's deliveries of one destination.
    db.execute(
        "CREATE INDEX forward_queue_delivered_dest ON forward_queue(destination, delivered_at) "
        "WHERE state = 'delivered'"
    )


@migrations(name="0005_journal_segments")
def _m0005(db: sqlite_utils.Database) -> None:
    # The journal spool (appliance/forward/journal.py): per segment, the offset before
    # which every record has its instance row (recovery scans from there), written in
    # the same database as the rows, so a power cut that takes rows back takes the
    # checkpoint that covered them too. Rows of one segment are found by their file's
    # prefix ("journal/NNNNNNNN.seg@"), hence the index.
    db.execute(
        """CREATE TABLE forward_journal_segments (
            seq INTEGER PRIMARY KEY,
            checkpoint INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX forward_instances_file ON forward_instances(file)")


@dataclass(frozen=True)
class InstanceInfo:
    """What the receiver learned about one instance (from the command and the header)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    modality: str
    calling_ae: str


@dataclass(frozen=True)
class Recorded:
    """Outcome of recording a received instance: new, duplicate or replaced."""

    instance_id: int
    outcome: str
    old_file: str | None = None


@dataclass(frozen=True)
class Item:
    """A queue row claimed by a sender, with what it needs to send the file."""

    id: int
    generation: int
    attempts: int
    file: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


# What one received version of an instance sets, in this order (new or replacing).
_VERSION_COLUMNS = (
    "sop_class_uid", "transfer_syntax", "modality", "calling_ae", "file", "digest", "size",
    "received_at",
)  # fmt: skip


_FIND_INSTANCE = "SELECT id, digest, file FROM forward_instances WHERE sop_instance_uid = ?"
_INSERT_INSTANCE = (
    f"INSERT INTO forward_instances (sop_instance_uid, {', '.join(_VERSION_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' * len(_VERSION_COLUMNS))})"
)
_REPLACE_VERSION = (
    f"UPDATE forward_instances SET {', '.join(c + ' = ?' for c in _VERSION_COLUMNS)}, "
    "removed_at = NULL WHERE id = ?"
)


def record_instance(
    store: Store,
    info: InstanceInfo,
    file: str,
    digest: str,
    size: int,
    destinations: Iterable[str],
    now: float | None = None,
    durable: bool = True,
    indexed: Mapping[str, str] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> Recorded:
    """Commit an instance and its queue rows; idempotent for a repeated identical instance.

    ``digest`` names the version of the bytes (the receiver passes the kept version's
    when the bytes are the same). The same SOP Instance UID with the same version changes
    nothing (only destinations added since are queued). A new version replaces the old
    one and is queued again for every destination. ``durable=False`` when the spooled
    file is itself the durable record (the receiver: ``Receiver.recover`` queues a file
    whose rows a power cut took back). ``indexed``: the Query/Retrieve index columns of
    the instance (``appliance.qr.index``), written in the same transaction.
    ``before_commit`` runs last inside the transaction (the receiver waits there for its
    journal record's sync, so that the rows are written meanwhile but committed only
    once the record is durable); what it raises rolls the transaction back.
    """
    now = time.time() if now is None else now
    dests = list(destinations)
    version = (
        info.sop_class_uid, info.transfer_syntax, info.modality, info.calling_ae,
        file, digest, size, now,
    )  # fmt: skip
    with store.write(durable=durable) as db:
        recorded = _record_rows(db, info, file, digest, version, dests, now, indexed)
        if before_commit is not None:
            before_commit()
        return recorded


def _record_rows(
    db: sqlite_utils.Database,
    info: InstanceInfo,
    file: str,
    digest: str,
    version: tuple[Any, ...],
    dests: list[str],
    now: float,
    indexed: Mapping[str, str] | None,
) -> Recorded:
    """The statements of ``record_instance``, inside its transaction."""
    row = db.conn.execute(_FIND_INSTANCE, (info.sop_instance_uid,)).fetchone()
    if row is None:
        cur = db.conn.execute(_INSERT_INSTANCE, (info.sop_instance_uid, *version))
        instance_id = int(cur.lastrowid or 0)
        _add_rows(db, instance_id, dests, now)
        _index(db, instance_id, indexed)
        return Recorded(instance_id, "new")
    instance_id, old_digest, old_file = int(row[0]), row[1], row[2]
    if old_digest == digest:
        db.execute(
            "UPDATE forward_instances SET removed_at = NULL, file = ? WHERE id = ?",
            (file, instance_id),
        )
        _add_rows(db, instance_id, dests, now)
        _index(db, instance_id, indexed)
        return Recorded(instance_id, "duplicate")
    db.execute(_REPLACE_VERSION, (*version, instance_id))
    db.execute(
        """UPDATE forward_queue SET state = 'waiting', attempts = 0, next_attempt = ?,
           last_error = 'replaced by a new version', last_status = NULL,
           generation = generation + 1, updated_at = ?, delivered_at = NULL,
           commit_requested_at = NULL, committed_at = NULL, commit_error = ''
           WHERE instance_id = ?""",
        (now, now, instance_id),
    )
    _add_rows(db, instance_id, dests, now)
    _index(db, instance_id, indexed)
    return Recorded(instance_id, "replaced", old_file=old_file)


def _index(db: sqlite_utils.Database, instance_id: int, indexed: Mapping[str, str] | None) -> None:
    if indexed is not None:
        qr_index.record(db, instance_id, indexed)


def kept_version(store: Store, sop_instance_uid: str) -> tuple[str, str] | None:
    """(file, digest) of the instance's spooled version still kept, or None."""
    row = store.db.conn.execute(
        "SELECT file, digest FROM forward_instances WHERE sop_instance_uid = ? "
        "AND removed_at IS NULL",
        (sop_instance_uid,),
    ).fetchone()
    return (row[0], row[1]) if row is not None else None


def recorded_files(store: Store) -> set[str]:
    """Every spool file an instance row names (kept or removed)."""
    return {r["file"] for r in store.query("SELECT file FROM forward_instances")}


def checkpoints(store: Store) -> dict[int, int]:
    """Each journal segment's checkpoint (recovery scans from there)."""
    rows = store.query("SELECT seq, checkpoint FROM forward_journal_segments")
    return {int(r["seq"]): int(r["checkpoint"]) for r in rows}


def set_checkpoint(store: Store, seq: int, offset: int) -> None:
    with store.write(durable=False) as db:
        db.execute(
            "INSERT INTO forward_journal_segments (seq, checkpoint) VALUES (?, ?) "
            "ON CONFLICT (seq) DO UPDATE SET checkpoint = MAX(checkpoint, excluded.checkpoint)",
            (seq, offset),
        )


def segment_rows(store: Store, seq: int, kept_only: bool = True) -> list[dict[str, Any]]:
    """Instance rows whose file is a record in journal segment ``seq``."""
    prefix = f"journal/{seq:08d}.seg@"
    sql = (
        "SELECT id, sop_instance_uid, file, digest, size, removed_at FROM forward_instances "
        "WHERE file >= ? AND file < ?"
    )
    if kept_only:
        sql += " AND removed_at IS NULL"
    return store.query(sql, (prefix, prefix[:-1] + "A"))


def forget_segment(store: Store, seq: int) -> None:
    """Drop a segment's checkpoint before the segment is freed; a durable commit, so
    every row moved off the segment (compaction) is on disk before its space goes."""
    with store.write(durable=True) as db:
        db.execute("DELETE FROM forward_journal_segments WHERE seq = ?", (seq,))


def move_record(store: Store, instance_id: int, old: str, new: str) -> bool:
    """Point an instance at a copy of its record (compaction); False when it moved on."""
    with store.write(durable=False) as db:
        cur = db.execute(
            "UPDATE forward_instances SET file = ? WHERE id = ? AND file = ? AND removed_at IS NULL",
            (new, instance_id, old),
        )
        return cur.rowcount == 1


def _add_rows(db: sqlite_utils.Database, instance_id: int, dests: list[str], now: float) -> None:
    if dests:
        db.conn.executemany(
            """INSERT OR IGNORE INTO forward_queue
               (instance_id, destination, next_attempt, queued_at, updated_at)
               VALUES (?, ?, ?, ?, ?)""",
            [(instance_id, dest, now, now, now) for dest in dests],
        )


def claim(
    store: Store,
    destination: str,
    limit: int,
    now: float | None = None,
    lane: int = 0,
    lanes: int = 1,
) -> list[Item]:
    """Waiting rows of a destination whose next attempt is due, oldest first.

    With ``lanes`` > 1 each parallel association of the destination takes the rows
    whose id modulo ``lanes`` is its ``lane``, so no row is sent twice at once.
    """
    now = time.time() if now is None else now
    rows = store.query(
        """SELECT q.id, q.generation, q.attempts, i.file, i.sop_class_uid,
                  i.sop_instance_uid, i.transfer_syntax
           FROM forward_queue q JOIN forward_instances i ON i.id = q.instance_id
           WHERE q.destination = :dest AND q.state = 'waiting' AND q.next_attempt <= :now
             AND q.id % :lanes = :lane
           ORDER BY q.next_attempt, q.id LIMIT :limit""",
        {"dest": destination, "now": now, "lanes": lanes, "lane": lane, "limit": limit},
    )
    return [Item(**r) for r in rows]


def next_due(store: Store, destination: str, lane: int = 0, lanes: int = 1) -> float | None:
    """When the earliest waiting row (of a lane) is due, or None when none waits."""
    rows = store.query(
        """SELECT MIN(next_attempt) AS t FROM forward_queue
           WHERE destination = ? AND state = 'waiting' AND id % ? = ?""",
        (destination, lanes, lane),
    )
    return rows[0]["t"] if rows else None


def mark_delivered(store: Store, done: Iterable[tuple[Item, int]], now: float | None = None) -> int:
    """Record Success / warning responses; a row replaced meanwhile stays waiting.

    The commit does not wait for the disk: a delivery a power cut takes back is sent
    again (at least once; the PACS keeps one copy of a SOP Instance). Retention deletes a
    file only in a commit that waits, which makes every delivery before it durable too
    (SQLite WAL commits are ordered)."""
    now = time.time() if now is None else now
    count = 0
    with store.write(durable=False) as db:
        for item, status_code in done:
            cur = db.execute(
                """UPDATE forward_queue SET state = 'delivered', delivered_at = ?,
                   updated_at = ?, last_status = ?, last_error = ''
                   WHERE id = ? AND generation = ? AND state = 'waiting'""",
                (now, now, status_code, item.id, item.generation),
            )
            count += cur.rowcount
    return count


def mark_retry(
    store: Store,
    items: Iterable[Item],
    error: str,
    delay: Callable[[int], float],
    max_attempts: int = 0,
    status_code: int | None = None,
    now: float | None = None,
) -> None:
    """A transient failure: count the attempt and wait ``delay(attempts)`` seconds.

    With ``max_attempts`` > 0 a row that reaches it goes to the dead letters instead.
    """
    now = time.time() if now is None else now
    with store.write() as db:
        for item in items:
            attempts = item.attempts + 1
            if max_attempts and attempts >= max_attempts:
                state, reason = DEAD, f"gave up after {attempts} attempts: {error}"
            else:
                state, reason = WAITING, error
            db.execute(
                """UPDATE forward_queue SET state = ?, attempts = ?, next_attempt = ?,
                   last_error = ?, last_status = ?, updated_at = ?
                   WHERE id = ? AND generation = ? AND state = 'waiting'""",
                (
                    state,
                    attempts,
                    now + delay(attempts),
                    reason,
                    status_code,
                    now,
                    item.id,
                    item.generation,
                ),
            )


def mark_dead(
    store: Store,
    item: Item,
    reason: str,
    status_code: int | None = None,
    now: float | None = None,
) -> None:
    """A permanent refusal: keep the file, park the row with the reason."""
    now = time.time() if now is None else now
    with store.write() as db:
        db.execute(
            """UPDATE forward_queue SET state = 'dead', attempts = attempts + 1,
               last_error = ?, last_status = ?, updated_at = ?
               WHERE id = ? AND generation = ? AND state = 'waiting'""",
            (reason, status_code, now, item.id, item.generation),
        )


def defer_destination(
    store: Store, destination: str, until: float, error: str, now: float | None = None
) -> int:
    """The PACS cannot be reached: every due waiting row waits until ``until``. A row not
    tried yet takes the destination's error as why it waits; a held row (one that failed
    on its own) keeps its own error and its attempts."""
    now = time.time() if now is None else now
    with store.write() as db:
        cur = db.execute(
            """UPDATE forward_queue SET next_attempt = ?,
                   last_error = CASE WHEN attempts = 0 THEN ? ELSE last_error END,
                   updated_at = ?
               WHERE destination = ? AND state = 'waiting' AND next_attempt < ?""",
            (until, error, now, destination, until),
        )
        return cur.rowcount


# -- what a queue page needs -------------------------------------------------------
# (``waiting_page`` and ``dead_letter_page`` page through the lists with a keyset cursor.
# The import is here so that the page functions stay apart from the sending code above.)


# Each part reads an index range, not the table: waiting and dead rows from their partial
# indexes (few: the live backlog), delivered ones from the counts the triggers of 0004
# keep, the rest one destination at a time by index, so the cost does not grow with the
# delivered rows kept.
_WAITING_BY_DEST = """SELECT destination, COUNT(*) AS waiting, MIN(queued_at) AS oldest_waiting_at
    FROM forward_queue INDEXED BY forward_queue_waiting WHERE state = 'waiting'
    GROUP BY destination"""
_DEAD_BY_DEST = """SELECT destination, COUNT(*) AS dead
    FROM forward_queue INDEXED BY forward_queue_dead_dest WHERE state = 'dead'
    GROUP BY destination"""
_DELIVERED_BY_DEST = "SELECT destination, n AS delivered FROM forward_delivered_counts WHERE n > 0"
_ONE_DEST = """SELECT
    (SELECT MIN(next_attempt) FROM forward_queue
     WHERE destination = :dest AND state = 'waiting') AS next_attempt_at,
    (SELECT COUNT(*) FROM forward_queue
     WHERE destination = :dest AND state = 'delivered' AND delivered_at > :since)
     AS delivered_last_minute,
    (SELECT MAX(delivered_at) FROM forward_queue
     WHERE destination = :dest AND state = 'delivered') AS last_delivered_at,
    (SELECT COUNT(*) FROM forward_queue
     WHERE destination = :dest AND state = 'waiting' AND attempts > 0) AS held"""
# The newest error of a row not delivered (waiting or dead: the only other states); the
# newer row of two at the same time.
_LAST_ERROR = """SELECT last_error, updated_at FROM (
        SELECT id, last_error, updated_at FROM forward_queue
        WHERE destination = :dest AND state = 'waiting' AND last_error != ''
        UNION ALL
        SELECT id, last_error, updated_at FROM forward_queue INDEXED BY forward_queue_dead_dest
        WHERE destination = :dest AND state = 'dead' AND last_error != '')
    ORDER BY updated_at DESC, id DESC LIMIT 1"""


def stalled_for(row: dict[str, Any], now: float) -> float | None:
    """Seconds a destination has made no progress while items wait (since its last
    delivery or its oldest waiting item, whichever is later); None when nothing waits."""
    if not row.get("waiting"):
        return None
    since = max(row.get("last_delivered_at") or 0.0, row.get("oldest_waiting_at") or now)
    return max(0.0, now - since)


def summary(
    store: Store,
    destinations: Iterable[str] = (),
    now: float | None = None,
    stall_after: float = 0.0,
) -> list[dict[str, Any]]:
    """Per destination (those given, then any other with queue rows, by name): waiting,
    held (waiting after failing on their own), dead and delivered counts, oldest waiting
    item, next attempt, last error, deliveries in the last minute (throughput), the last
    delivery, and ``stalled_s`` when it made no progress for ``stall_after`` seconds
    (> 0) while items wait."""
    now = time.time() if now is None else now
    with store.read():
        waiting = {r["destination"]: r for r in store.query(_WAITING_BY_DEST)}
        dead = {r["destination"]: r["dead"] for r in store.query(_DEAD_BY_DEST)}
        delivered = {r["destination"]: r["delivered"] for r in store.query(_DELIVERED_BY_DEST)}
        others = sorted({*waiting, *dead, *delivered})
        out = []
        for name in dict.fromkeys([*destinations, *others]):
            params = {"dest": name, "since": now - 60.0}
            [one] = store.query(_ONE_DEST, params)
            last = store.query(_LAST_ERROR, params)
            w = waiting.get(name, {})
            out.append(
                {
                    "destination": name,
                    "waiting": w.get("waiting", 0),
                    "dead": dead.get(name, 0),
                    "delivered": delivered.get(name, 0),
                    "oldest_waiting_at": w.get("oldest_waiting_at"),
                    **one,
                    "last_error": last[0]["last_error"] if last else "",
                    "last_error_at": last[0]["updated_at"] if last else None,
                }
            )
            stalled = stalled_for(out[-1], now)
            out[-1]["stalled_s"] = (
                round(stalled) if stall_after > 0 and stalled is not None and stalled >= stall_after
                else None
            )  # fmt: skip
    return out


# Whose image it is: the Q/R index row, written in the same transaction as the queue row
# (absent for an instance the index could not read: the columns are then NULL).
_STUDY_COLUMNS = """r.patient_name, r.patient_id, r.accession_number, r.study_description,
       r.study_date"""
_STUDY_JOIN = "LEFT JOIN qr_instances r ON r.instance_id = i.id"
_WAITING_SELECT = f"""SELECT q.id, q.attempts, q.next_attempt, q.last_error, q.queued_at,
       i.sop_instance_uid, i.sop_class_uid, i.modality, i.calling_ae, {_STUDY_COLUMNS}
    FROM forward_queue q JOIN forward_instances i ON i.id = q.instance_id {_STUDY_JOIN}"""
_DEAD_SELECT = f"""SELECT q.id, q.destination, q.attempts, q.last_error AS reason, q.last_status,
       q.updated_at, i.sop_instance_uid, i.sop_class_uid, i.modality, i.calling_ae,
       {_STUDY_COLUMNS}
    FROM forward_queue q JOIN forward_instances i ON i.id = q.instance_id {_STUDY_JOIN}"""
# A waiting row keeps its queued_at; a dead row keeps its updated_at while it is dead:
# stable keys, so a page never shifts when rows arrive or leave.
WAITING_ORDER = paging.Order(("q.queued_at", "q.id"), ("queued_at", "id"), (float, int))
DEAD_ORDER = paging.Order(
    ("q.updated_at", "q.id"), ("updated_at", "id"), (float, int), descending=True
)


def _waiting_listing(destination: str) -> paging.Listing:
    return paging.Listing(
        _WAITING_SELECT,
        "forward_queue q",
        ["q.destination = ?", "q.state = 'waiting'"],
        [destination],
        WAITING_ORDER,
    )


def _dead_listing(destination: str | None) -> paging.Listing:
    where, params = ["q.state = 'dead'"], []
    if destination:
        where.append("q.destination = ?")
        params.append(destination)
    return paging.Listing(_DEAD_SELECT, "forward_queue q", where, params, DEAD_ORDER)


def _with_why(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Why each row waits: a held row (it failed on its own: attempts > 0) its own error;
    a row not tried yet says so, with the destination's error it waits behind, if any
    (that error came from the destination, not from this image: ``waits_for``)."""
    for r in rows:
        r["held"] = r["attempts"] > 0
        if r["held"]:
            r["why"], r["waits_for"] = r["last_error"] or "failed, waiting to be retried", ""
        elif r["last_error"]:
            r["why"], r["waits_for"] = "not tried yet", r["last_error"]
        else:
            r["why"], r["waits_for"] = "queued, not tried yet", ""
    return rows


def waiting_items(store: Store, destination: str, limit: int | None = 100) -> list[dict[str, Any]]:
    """Waiting rows of a destination (``limit`` of them, or all), oldest first, each with
    why it waits."""
    rows = store.query(
        f"{_WAITING_SELECT} WHERE q.destination = ? AND q.state = 'waiting' "
        "ORDER BY q.queued_at, q.id LIMIT ?",
        (destination, -1 if limit is None else limit),
    )
    return _with_why(rows)


def waiting_count(store: Store, destination: str) -> int:
    """How many rows of a destination wait (from the partial index of waiting rows)."""
    rows = store.query(
        "SELECT COUNT(*) AS n FROM forward_queue WHERE destination = ? AND state = 'waiting'",
        (destination,),
    )
    return int(rows[0]["n"])


def waiting_page(store: Store, destination: str, req: paging.PageRequest) -> paging.Page:
    """A page of a destination's waiting rows, oldest first, each with why it waits."""
    page = paging.fetch(store, _waiting_listing(destination), req)
    _with_why(page.rows)
    return page


def dead_letters(
    store: Store, destination: str | None = None, limit: int | None = 100
) -> list[dict[str, Any]]:
    """Rows refused for good (``limit`` of them, or all), newest first, with the reason and
    the last status."""
    where = "q.state = 'dead'" + (" AND q.destination = ?" if destination else "")
    n = -1 if limit is None else limit
    params: tuple[Any, ...] = (destination, n) if destination else (n,)
    return store.query(
        f"{_DEAD_SELECT} WHERE {where} ORDER BY q.updated_at DESC, q.id DESC LIMIT ?", params
    )


def dead_count(store: Store, destination: str | None = None) -> int:
    """How many dead letters there are (of one destination or all)."""
    where = "state = 'dead'" + (" AND destination = ?" if destination else "")
    rows = store.query(f"SELECT COUNT(*) AS n FROM forward_queue WHERE {where}",
                       (destination,) if destination else ())  # fmt: skip
    return int(rows[0]["n"])


def dead_letter_page(store: Store, destination: str | None, req: paging.PageRequest) -> paging.Page:
    """A page of the dead letters (of one destination or all), newest first."""
    return paging.fetch(store, _dead_listing(destination), req)


def retry_now(store: Store, destination: str | None = None, now: float | None = None) -> int:
    """Make every waiting row (of one destination) due now; returns how many."""
    now = time.time() if now is None else now
    with store.write() as db:
        if destination:
            cur = db.execute(
                """UPDATE forward_queue SET next_attempt = ?, updated_at = ?
                   WHERE state = 'waiting' AND destination = ?""",
                (now, now, destination),
            )
        else:
            cur = db.execute(
                "UPDATE forward_queue SET next_attempt = ?, updated_at = ? WHERE state = 'waiting'",
                (now, now),
            )
        return cur.rowcount


def resend(store: Store, queue_ids: Iterable[int], now: float | None = None) -> int:
    """Put dead (or delivered) rows back to waiting, attempts reset; returns how many.

    A row whose spooled file was already removed by retention cannot be resent.
    """
    now = time.time() if now is None else now
    count = 0
    with store.write() as db:
        for qid in queue_ids:
            cur = db.execute(
                """UPDATE forward_queue SET state = 'waiting', attempts = 0, next_attempt = ?,
                   last_error = 'resent by a person', updated_at = ?, delivered_at = NULL,
                   generation = generation + 1, commit_requested_at = NULL,
                   committed_at = NULL, commit_error = ''
                   WHERE id = ? AND state IN ('dead', 'delivered') AND instance_id IN
                   (SELECT id FROM forward_instances WHERE removed_at IS NULL)""",
                (now, now, int(qid)),
            )
            count += cur.rowcount
    return count


def send_study(
    store: Store,
    study_uid: str,
    destination: str,
    actor: str,
    source: str = "",
    now: float | None = None,
) -> tuple[int, int]:
    """A person's "Send to": queue every held instance of a study to ``destination`` (a
    destination's name or ``destinations.device_key``), with an audit row, in one
    transaction. A new row waits; a delivered or dead one waits again (attempts reset,
    a new generation); one already waiting stays as it is. Returns (instances held,
    rows queued now)."""
    now = time.time() if now is None else now
    with store.write() as db:
        ids = [
            int(r[0])
            for r in db.execute(
                "SELECT q.instance_id FROM qr_instances q JOIN forward_instances f "
                "ON f.id = q.instance_id WHERE f.removed_at IS NULL AND q.study_uid = ? "
                "ORDER BY q.instance_id",
                (study_uid,),
            ).fetchall()
        ]
        queued = 0
        for instance_id in ids:
            cur = db.execute(
                """INSERT OR IGNORE INTO forward_queue
                   (instance_id, destination, next_attempt, queued_at, updated_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (instance_id, destination, now, now, now),
            )
            if not cur.rowcount:
                cur = db.execute(
                    """UPDATE forward_queue SET state = 'waiting', attempts = 0,
                       next_attempt = ?, last_error = 'sent again by a person',
                       last_status = NULL, updated_at = ?, queued_at = ?, delivered_at = NULL,
                       generation = generation + 1, commit_requested_at = NULL,
                       committed_at = NULL, commit_error = ''
                       WHERE instance_id = ? AND destination = ? AND state != 'waiting'""",
                    (now, now, now, instance_id, destination),
                )
            queued += cur.rowcount
        if ids:
            audit.record(
                db, actor, "forward-send", f"study {study_uid}",
                f"to {destination}: {queued} of {len(ids)} instances queued", source,
            )  # fmt: skip
    return len(ids), queued


# -- instances no destination took -----------------------------------------------------
# Received and acknowledged, kept in the spool (retention only removes instances every
# row of which was delivered), but routed nowhere: no destination existed, or none of
# their rules matched. They are listed and can be sent to a destination later.

_UNROUTED_WHERE = """WHERE i.removed_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM forward_queue q WHERE q.instance_id = i.id)"""
_UNROUTED = f"FROM forward_instances i {_UNROUTED_WHERE}"


def unrouted_count(store: Store) -> int:
    """How many kept instances have no queue row at all."""
    return int(store.query(f"SELECT COUNT(*) AS n {_UNROUTED}")[0]["n"])


def unrouted(store: Store, limit: int | None = 100) -> list[dict[str, Any]]:
    """Kept instances routed nowhere, oldest first."""
    return store.query(
        f"""SELECT i.id, i.sop_instance_uid, i.sop_class_uid, i.modality, i.calling_ae,
                   i.received_at, {_STUDY_COLUMNS}
            FROM forward_instances i {_STUDY_JOIN} {_UNROUTED_WHERE}
            ORDER BY i.received_at, i.id LIMIT ?""",
        (-1 if limit is None else limit,),
    )


def route_unrouted(
    store: Store,
    destination: str,
    instance_ids: Iterable[int] | None = None,
    now: float | None = None,
) -> int:
    """Queue unrouted instances (these ``instance_ids``, or all) to ``destination``;
    returns how many were queued."""
    now = time.time() if now is None else now
    with store.write() as db:
        rows = db.execute(f"SELECT i.id {_UNROUTED}").fetchall()
        wanted = {r[0] for r in rows}
        if instance_ids is not None:
            wanted &= {int(i) for i in instance_ids}
        for instance_id in sorted(wanted):
            _add_rows(db, instance_id, [destination], now)
        return len(wanted)


# -- bytes saved by a destination's lossless compression (destination.transfer_syntax) --


def add_bytes_saved(store: Store, destination: str, n: int) -> None:
    key = f"forward_bytes_saved:{destination}"
    with store.write(durable=False) as db:
        db.execute(
            """INSERT INTO settings(key, value) VALUES (?, ?)
               ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?""",
            (key, str(n), n),
        )


def bytes_saved(store: Store) -> dict[str, int]:
    """Per destination, the pixel bytes its lossless compression saved so far."""
    rows = store.query("SELECT key, value FROM settings WHERE key LIKE 'forward_bytes_saved:%'")
    return {r["key"].split(":", 1)[1]: int(r["value"]) for r in rows}
