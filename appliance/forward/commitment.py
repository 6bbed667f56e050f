"""Storage Commitment state (PS3.4 Annex J, push model): modality requests, PACS requests.

A modality's N-ACTION (action type 1) lists instances by (SOP Class UID, SOP Instance
UID). The appliance answers with N-EVENT-REPORT only when every listed instance is
resolved: *committed* when each of its queue rows is delivered and, for a destination
with ``commitment = "pacs"``, that PACS has committed it (our own N-ACTION toward the
PACS and its N-EVENT-REPORT back); *failed* with a Failure Reason (0008,1197) when the
appliance does not hold it (0112), holds it under another SOP class (0119), its
forwarding was refused for good or the PACS failed it (0110), or the deadline
(``forward.commitment_timeout``) passed (0110). Everything is kept in SQLite, so a
restart neither forgets a request nor answers one early.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance import status
from appliance.db import Store
from appliance.errors import Conflict, ValidationError
from appliance.forward.receiver import check_uid

SOP_CLASS = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model
SOP_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known instance
ACTION_REQUEST = 1  # N-ACTION Action Type ID: Request Storage Commitment
EVENT_ALL_COMMITTED = 1  # N-EVENT-REPORT Event Type ID: success
EVENT_SOME_FAILED = 2  # ... failures exist

PENDING = "pending"
REPORTING = "reporting"
REPORTED = "reported"
UNREPORTED = "unreported"
COMMITTED = "committed"
FAILED = "failed"


@dataclass(frozen=True)
class Ref:
    """One referenced instance: (Referenced SOP Class UID, Referenced SOP Instance UID)."""

    sop_class_uid: str
    sop_instance_uid: str


def parse_request(ds: Dataset) -> tuple[str, list[Ref]]:
    """Transaction UID and references of an N-ACTION; raises ValidationError naming the field."""
    if "TransactionUID" not in ds or not ds.TransactionUID:
        raise ValidationError("Transaction UID", "is missing")
    txn = check_uid(ds.TransactionUID, "Transaction UID")
    seq = ds.get("ReferencedSOPSequence")
    if not seq:
        raise ValidationError("Referenced SOP Sequence", "is missing or empty")
    refs = []
    for item in seq:
        refs.append(
            Ref(
                check_uid(item.get("ReferencedSOPClassUID", ""), "Referenced SOP Class UID"),
                check_uid(item.get("ReferencedSOPInstanceUID", ""), "Referenced SOP Instance UID"),
            )
        )
    return txn, refs


def request_dataset(txn: str, refs: Iterable[Ref]) -> Dataset:
    """The Action Information of an N-ACTION toward a PACS."""
    ds = Dataset()
    ds.TransactionUID = txn
    ds.ReferencedSOPSequence = Sequence([_ref_item(r) for r in refs])
    return ds


def _ref_item(ref: Ref, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if reason is not None:
        item.FailureReason = reason
    return item


def parse_report(ds: Dataset) -> tuple[str, list[Ref], list[tuple[Ref, int]]]:
    """Transaction UID, committed and failed references of an N-EVENT-REPORT."""
    txn = check_uid(ds.get("TransactionUID", ""), "Transaction UID")
    ok = [
        Ref(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
        for i in ds.get("ReferencedSOPSequence", [])
    ]
    failed = [
        (
            Ref(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)),
            int(i.get("FailureReason", status.PROCESSING_FAILURE)),
        )
        for i in ds.get("FailedSOPSequence", [])
    ]
    return txn, ok, failed


# -- modality requests -----------------------------------------------------------------


def record_request(
    store: Store,
    calling_ae: str,
    txn: str,
    refs: list[Ref],
    timeout: float,
    now: float | None = None,
) -> int:
    """Keep a modality's request; raises Conflict for a Transaction UID it already used."""
    now = time.time() if now is None else now
    with store.write() as db:
        seen = db.execute(
            "SELECT id FROM forward_commitments WHERE calling_ae = ? AND transaction_uid = ?",
            (calling_ae, txn),
        ).fetchone()
        if seen:
            raise Conflict(f"Transaction UID already used by {calling_ae}")
        cur = db.execute(
            """INSERT INTO forward_commitments (transaction_uid, calling_ae, requested_at, deadline)
               VALUES (?, ?, ?, ?)""",
            (txn, calling_ae, now, now + timeout),
        )
        cid = int(cur.lastrowid or 0)
        for ref in refs:
            db.execute(
                """INSERT INTO forward_commitment_items (commitment_id, sop_class_uid,
                   sop_instance_uid) VALUES (?, ?, ?)""",
                (cid, ref.sop_class_uid, ref.sop_instance_uid),
            )
    return cid


def _resolve_item(
    store: Store, item: dict[str, Any], policies: Mapping[str, str]
) -> tuple[str, int | None, str]:
    """(result, failure reason, detail) of one requested instance right now."""
    inst = store.query(
        "SELECT id, sop_class_uid FROM forward_instances WHERE sop_instance_uid = ?",
        (item["sop_instance_uid"],),
    )
    if not inst:
        return FAILED, status.NO_SUCH_SOP_INSTANCE, "not received by the appliance"
    if inst[0]["sop_class_uid"] != item["sop_class_uid"]:
        return FAILED, status.CLASS_INSTANCE_CONFLICT, "received under another SOP class"
    rows = store.query(
        """SELECT destination, state, committed_at, commit_error, last_error
           FROM forward_queue WHERE instance_id = ?""",
        (inst[0]["id"],),
    )
    for r in rows:
        if r["state"] == "dead":
            return FAILED, status.PROCESSING_FAILURE, f"{r['destination']}: {r['last_error']}"
        if r["commit_error"]:
            return FAILED, status.PROCESSING_FAILURE, f"{r['destination']}: {r['commit_error']}"
    for r in rows:
        if r["state"] != "delivered":
            return PENDING, None, ""
        if policies.get(r["destination"], "delivery") == "pacs" and r["committed_at"] is None:
            return PENDING, None, ""
    return COMMITTED, None, ""


def evaluate(store: Store, policies: Mapping[str, str], now: float | None = None) -> list[int]:
    """Resolve what can be resolved; returns the requests now ready to be reported."""
    now = time.time() if now is None else now
    ready = []
    for c in store.query("SELECT id, deadline FROM forward_commitments WHERE state = 'pending'"):
        items = store.query(
            """SELECT id, sop_class_uid, sop_instance_uid FROM forward_commitment_items
               WHERE commitment_id = ? AND result = 'pending'""",
            (c["id"],),
        )
        late = now >= c["deadline"]
        outcomes = []
        for item in items:
            result, reason, detail = _resolve_item(store, item, policies)
            if result == PENDING and late:
                result, reason = FAILED, status.PROCESSING_FAILURE
                detail = "not committed before forward.commitment_timeout"
            outcomes.append((item["id"], result, reason, detail))
        with store.write() as db:
            for item_id, result, reason, detail in outcomes:
                if result != PENDING:
                    db.execute(
                        """UPDATE forward_commitment_items SET result = ?, failure_reason = ?,
                           detail = ? WHERE id = ?""",
                        (result, reason, detail, item_id),
                    )
            if all(result != PENDING for _, result, _, _ in outcomes):
                db.execute(
                    """UPDATE forward_commitments SET state = 'reporting', next_report = ?
                       WHERE id = ? AND state = 'pending'""",
                    (now, c["id"]),
                )
                ready.append(c["id"])
    return ready


def due_reports(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Requests resolved and due to be reported to their modality."""
    now = time.time() if now is None else now
    return store.query(
        """SELECT id, transaction_uid, calling_ae, requested_at, report_attempts
           FROM forward_commitments WHERE state = 'reporting' AND next_report <= ?
           ORDER BY id""",
        (now,),
    )


def report(store: Store, commitment_id: int) -> tuple[int, Dataset]:
    """Event Type ID and Event Information of the N-EVENT-REPORT for a resolved request."""
    c = store.query(
        "SELECT transaction_uid FROM forward_commitments WHERE id = ?", (commitment_id,)
    )[0]
    items = store.query(
        """SELECT sop_class_uid, sop_instance_uid, result, failure_reason
           FROM forward_commitment_items WHERE commitment_id = ? ORDER BY id""",
        (commitment_id,),
    )
    ds = Dataset()
    ds.TransactionUID = c["transaction_uid"]
    ok = [i for i in items if i["result"] == COMMITTED]
    bad = [i for i in items if i["result"] != COMMITTED]
    if ok:
        ds.ReferencedSOPSequence = Sequence(
            [_ref_item(Ref(i["sop_class_uid"], i["sop_instance_uid"])) for i in ok]
        )
    if bad:
        ds.FailedSOPSequence = Sequence(
            [
                _ref_item(
                    Ref(i["sop_class_uid"], i["sop_instance_uid"]),
                    i["failure_reason"] or status.PROCESSING_FAILURE,
                )
                for i in bad
            ]
        )
    return (EVENT_SOME_FAILED if bad else EVENT_ALL_COMMITTED), ds


def mark_reported(
    store: Store, commitment_id: int, event_type: int, now: float | None = None
) -> None:
    now = time.time() if now is None else now
    with store.write() as db:
        db.execute(
            """UPDATE forward_commitments SET state = 'reported', event_type = ?, reported_at = ?,
               report_attempts = report_attempts + 1, last_error = '' WHERE id = ?""",
            (event_type, now, commitment_id),
        )


def mark_report_failed(
    store: Store, commitment_id: int, error: str, retry_at: float | None, now: float | None = None
) -> None:
    """The modality could not be reached: retry at ``retry_at``, or give up when None."""
    now = time.time() if now is None else now
    with store.write() as db:
        db.execute(
            """UPDATE forward_commitments SET report_attempts = report_attempts + 1,
               last_error = ?, next_report = ?, state = ? WHERE id = ?""",
            (error, retry_at, REPORTING if retry_at is not None else UNREPORTED, commitment_id),
        )


# -- our requests to a PACS ------------------------------------------------------------


def needing_pacs_commit(
    store: Store,
    destination: str,
    limit: int = 500,
    ask_again_before: float = 0.0,
) -> list[dict[str, Any]]:
    """Delivered rows a modality waits on whose PACS has not committed them yet: never
    asked, or asked before ``ask_again_before`` without an answer (a lost report, or a
    PACS that did not know the appliance then).

    Driven from the pending request items (few), not from the delivered rows (many).
    """
    return store.query(
        """SELECT DISTINCT q.id AS queue_id, i.sop_class_uid, i.sop_instance_uid
           FROM forward_commitment_items ci
           JOIN forward_instances i ON i.sop_instance_uid = ci.sop_instance_uid
           JOIN forward_queue q ON q.instance_id = i.id
           WHERE ci.result = 'pending' AND q.destination = ? AND q.state = 'delivered'
             AND q.committed_at IS NULL AND q.commit_error = ''
             AND (q.commit_requested_at IS NULL OR q.commit_requested_at < ?)
           ORDER BY q.id LIMIT ?""",
        (destination, ask_again_before, limit),
    )


def has_open_requests(store: Store) -> bool:
    """True while a modality request waits for resolution or for its report."""
    return bool(
        store.query(
            "SELECT 1 FROM forward_commitments WHERE state IN ('pending', 'reporting') LIMIT 1"
        )
    )


def record_pacs_request(
    store: Store, destination: str, txn: str, queue_ids: Iterable[int], now: float | None = None
) -> None:
    now = time.time() if now is None else now
    with store.write() as db:
        cur = db.execute(
            """INSERT INTO forward_pacs_requests (transaction_uid, destination, sent_at)
               VALUES (?, ?, ?)""",
            (txn, destination, now),
        )
        rid = int(cur.lastrowid or 0)
        for qid in queue_ids:
            db.execute(
                "INSERT INTO forward_pacs_request_items (request_id, queue_id) VALUES (?, ?)",
                (rid, qid),
            )
            db.execute("UPDATE forward_queue SET commit_requested_at = ? WHERE id = ?", (now, qid))


def cancel_pacs_request(store: Store, txn: str) -> None:
    """The N-ACTION did not reach the PACS: its rows will be asked again."""
    with store.write() as db:
        row = db.execute(
            "SELECT id FROM forward_pacs_requests WHERE transaction_uid = ? AND answered_at IS NULL",
            (txn,),
        ).fetchone()
        if row is None:
            return
        db.execute(
            """UPDATE forward_queue SET commit_requested_at = NULL WHERE committed_at IS NULL
               AND id IN (SELECT queue_id FROM forward_pacs_request_items WHERE request_id = ?)""",
            (row[0],),
        )
        db.execute("DELETE FROM forward_pacs_request_items WHERE request_id = ?", (row[0],))
        db.execute("DELETE FROM forward_pacs_requests WHERE id = ?", (row[0],))


def apply_pacs_report(
    store: Store,
    txn: str,
    committed: list[Ref],
    failed: list[tuple[Ref, int]],
    event_type: int,
    now: float | None = None,
) -> str | None:
    """Record a PACS's N-EVENT-REPORT; returns the destination, or None for an unknown UID."""
    now = time.time() if now is None else now
    req = store.query(
        "SELECT id, destination FROM forward_pacs_requests WHERE transaction_uid = ?", (txn,)
    )
    if not req:
        return None
    rid, dest = req[0]["id"], req[0]["destination"]
    rows = store.query(
        """SELECT q.id, i.sop_instance_uid FROM forward_pacs_request_items r
           JOIN forward_queue q ON q.id = r.queue_id JOIN forward_instances i ON i.id = q.instance_id
           WHERE r.request_id = ?""",
        (rid,),
    )
    by_uid = {r["sop_instance_uid"]: r["id"] for r in rows}
    with store.write() as db:
        db.execute(
            "UPDATE forward_pacs_requests SET answered_at = ?, event_type = ? WHERE id = ?",
            (now, event_type, rid),
        )
        for ref in committed:
            if ref.sop_instance_uid in by_uid:
                db.execute(
                    "UPDATE forward_queue SET committed_at = ? WHERE id = ?",
                    (now, by_uid[ref.sop_instance_uid]),
                )
        for ref, reason in failed:
            if ref.sop_instance_uid in by_uid:
                db.execute(
                    "UPDATE forward_queue SET commit_error = ? WHERE id = ?",
                    (
                        f"PACS failed the commitment, reason 0x{reason:04X}",
                        by_uid[ref.sop_instance_uid],
                    ),
                )
    return str(dest)


def pending_summary(store: Store) -> dict[str, int]:
    """How many modality requests wait for resolution, for a report, or were never reported."""
    rows = store.query("SELECT state, COUNT(*) AS n FROM forward_commitments GROUP BY state")
    return {r["state"]: r["n"] for r in rows}
