"""One received message in, one ACK out: decode, check, apply to the worklist, remember.

Everything a message changes, its audit rows and the record of the ACK it got are one
``BEGIN IMMEDIATE`` transaction: an AA is sent only after the commit, an AE leaves nothing
behind but the record, and a message control ID seen before is answered with the ACK it
got the first time, without applying it again (HL7 v2.5.1 2.10.2, 2.15.9.10).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

import hl7
import sqlite_utils

from appliance import audit, catalog
from appliance.catalog import Procedure
from appliance.config import DeviceSettings, Hl7Settings
from appliance.db import Store
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.hl7 import ack, charsets, mapping
from appliance.hl7.mapping import Location, Order, OrderError, value
from appliance.worklist.model import FINAL_STATUSES
from appliance.worklist.repo import WorklistRepo

log = logging.getLogger(__name__)

# Messages (and their ACKs, for duplicates) are kept this long; pruned every so many.
KEEP_DAYS = 90
PRUNE_EVERY = 500
# Fields the worklist validation names -> where they came from in the message.
FIELD_LOCATIONS = {
    "patient_id": Location("PID", 1, 3),
    "issuer_of_patient_id": Location("PID", 1, 3, 4),
    "patient_name": Location("PID", 1, 5),
    "birth_date": Location("PID", 1, 7),
    "sex": Location("PID", 1, 8),
    "referring_physician": Location("PV1", 1, 8),
    "requesting_physician": Location("ORC", 1, 12),
    "accession_number": Location("OBR", 1, 18),
    "requested_procedure_id": Location("OBR", 1, 19),
    "sps_id": Location("OBR", 1, 20),
    "modality": Location("OBR", 1, 24),
    "station_ae": Location("IPC", 1, 9),
    "station_name": Location("IPC", 1, 7),
    "location": Location("IPC", 1, 8),
    "study_instance_uid": Location("ZDS", 1, 1),
    "start": Location("TQ1", 1, 7),
    "priority": Location("TQ1", 1, 9),
}


def sender_of(msh: hl7.Segment) -> str:
    """MSH-3^MSH-4 (the namespace IDs of the sending application and facility)."""
    return f"{value(msh, 3)}^{value(msh, 4)}"


def allowed(settings: Hl7Settings, msh: hl7.Segment) -> bool:
    """Whether ``hl7.allowed_senders`` lists this sender ('APP^FACILITY', 'APP' or '*')."""
    app, facility = value(msh, 3), value(msh, 4)
    for entry in settings.allowed_senders:
        want_app, _, want_facility = entry.partition("^")
        if entry == "*" or (want_app == app and (not want_facility or want_facility == facility)):
            return True
    return False


class Inbox:
    """Applies orders to the worklist; ``handle(raw, peer)`` returns the encoded ACK."""

    def __init__(
        self,
        store: Store,
        settings: Hl7Settings,
        application: str = "APPLIANCE",
        devices: tuple[DeviceSettings, ...] = (),
        today: Callable[[], date] = date.today,
    ) -> None:
        self.store = store
        self.settings = settings
        self.application = application
        self.devices = devices
        self.repo = WorklistRepo(store, today)  # an order without accession: the clinic date
        self.counts: Counter[str] = Counter(
            dict.fromkeys(("received", "AA", "AE", "AR", "duplicates"), 0)
        )
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    # -- the edge: bytes in, bytes out ----------------------------------------

    def handle(self, raw: bytes, peer: str = "") -> bytes:
        """The ACK for one MLLP block's payload, in the sender's character set."""
        self._count("received")
        try:
            header = charsets.header(raw)
        except (hl7.ParseException, IndexError, ValueError):
            self._count("AR")
            return ack.bare_reject("not an HL7 v2 message (no MSH segment)").encode("ascii")
        codec = charsets.encoder(charsets.declared(header), self.settings.charset)
        try:
            text, code = self._answer(raw, header, peer)
        except Exception:  # a bug or a database error: AR, the sender may try again
            log.exception("HL7 message from %s could not be handled", peer)
            text, code = self._reply(
                header, ack.REJECT, Location("MSH", 1), "207", "internal error"
            )
        self._count(code)
        return text.encode(codec, errors="replace")

    def _reply(
        self, msg: hl7.Message, code: str, where: Location, error: str, reason: str
    ) -> tuple[str, str]:
        return ack.build(msg, code, [(where, error, reason)], self.application), code

    def _answer(self, raw: bytes, header: hl7.Message, peer: str) -> tuple[str, str]:
        msh = header.segment("MSH")
        if not allowed(self.settings, msh):
            log.warning("HL7 message from %s refused: sender %s not allowed", peer, sender_of(msh))
            return self._reply(
                header,
                ack.REJECT,
                Location("MSH", 1, 3),
                mapping.INTERNAL_ERROR,
                f"sending application {sender_of(msh)} is not allowed",
            )
        try:
            msg = hl7.parse(charsets.decode(raw, self.settings.charset))
        except charsets.CharsetError as exc:
            return self._reply(
                header, ack.ERROR, Location("MSH", 1, 18), mapping.DATA_TYPE_ERROR, str(exc)
            )
        except (hl7.ParseException, IndexError, ValueError) as exc:
            return self._reply(
                header, ack.REJECT, Location("MSH", 1), mapping.DATA_TYPE_ERROR, str(exc)
            )
        try:
            mapping.check_type(msg)
        except OrderError as exc:
            return self._reply(msg, ack.REJECT, exc.location, exc.code, exc.reason)
        control_id = value(msg.segment("MSH"), 10)
        if not control_id:
            return self._reply(
                msg,
                ack.REJECT,
                Location("MSH", 1, 10),
                mapping.REQUIRED_FIELD_MISSING,
                "MSH-10 message control ID",
            )
        return self._apply_once(msg, control_id, peer)

    # -- once per control ID, all or nothing -------------------------------------

    def _apply_once(self, msg: hl7.Message, control_id: str, peer: str) -> tuple[str, str]:
        msh = msg.segment("MSH")
        sender = sender_of(msh)
        kind = "^".join(mapping.message_type(msg))
        with self.store.write() as db:
            row = db.execute(
                "SELECT ack, ack_code FROM hl7_messages WHERE sender = ? AND control_id = ?",
                (sender, control_id),
            ).fetchone()
            if row:
                db.execute(
                    "UPDATE hl7_messages SET duplicates = duplicates + 1 WHERE sender = ? AND control_id = ?",
                    (sender, control_id),
                )
                self._count("duplicates")
                return str(row[0]), str(row[1])
            errors: list[tuple[Location, str, str]] = []
            try:
                with self.store.write():  # a savepoint: the whole message or none of it
                    self._apply(db, msg, f"hl7:{sender}", peer)
            except OrderError as exc:
                errors.append((exc.location, exc.code, exc.reason))
            except ValidationError as exc:
                where = FIELD_LOCATIONS.get(exc.field, Location("MSH", 1))
                errors.append((where, mapping.DATA_TYPE_ERROR, str(exc)))
            except (Conflict, NotFound) as exc:
                errors.append((Location("ORC", 1, 1), mapping.INTERNAL_ERROR, str(exc)))
            code = ack.ERROR if errors else ack.ACCEPT
            text = ack.build(msg, code, errors, self.application)
            cur = db.execute(
                """INSERT INTO hl7_messages(sender, control_id, message_type, peer, ack_code, ack, error)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (sender, control_id, kind, peer, code, text, errors[0][2] if errors else ""),
            )
            if (cur.lastrowid or 0) % PRUNE_EVERY == 0:
                db.execute(
                    "DELETE FROM hl7_messages WHERE received_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
                    (f"-{KEEP_DAYS} days",),
                )
        if errors:
            log.info("HL7 %s %s from %s: AE %s", kind, control_id, sender, errors[0][0])
        return text, code

    def _station_for(self, modality: str) -> str:
        """hl7.stations, else the one [[devices]] modality of that modality code."""
        mapped = self.settings.station_for(modality)
        if mapped:
            return mapped
        matching = [
            d.ae_title for d in self.devices if d.role == "modality" and d.modality == modality
        ]
        return matching[0] if len(matching) == 1 else ""

    def _procedure(self, code_value: str) -> Procedure | None:
        try:
            return catalog.get(self.store, code_value)
        except NotFound:
            return None

    def _apply(self, db: sqlite_utils.Database, msg: hl7.Message, actor: str, peer: str) -> None:
        ctx = mapping.Context(procedure=self._procedure, station_for=self._station_for)
        for order in mapping.orders(msg, ctx):
            steps = self._steps(db, order)
            if order.control == "NW":
                self._new(db, order, steps, actor, peer)
                continue
            if not steps:
                raise OrderError(
                    Location("ORC", order.sequence, 2),
                    mapping.UNKNOWN_KEY,
                    f"no order {order.placer or order.filler or order.accession} to change",
                )
            if order.control == "XO":
                self._change(db, order, steps, actor, peer)
            elif order.control == "CA":
                for step in steps:
                    if step["status"] != "CANCELED":
                        self.repo.cancel(step["step_pk"], actor, "ORC-1 CA", peer)
            elif order.control == "DC":
                self._set_status(db, steps, "DISCONTINUED", "discontinue", actor, peer)
            else:  # SC: the order's status changed at the RIS
                status = mapping.ORDER_STATUSES[order.status]
                self._set_status(db, steps, status, "status", actor, peer)

    def _steps(self, db: sqlite_utils.Database, order: Order) -> list[dict[str, Any]]:
        """The steps an order made: by placer, else filler number, else accession number."""
        pks: list[int] = []
        for column, key in (("placer", order.placer), ("filler", order.filler)):
            if key and not pks:
                pks = [
                    int(r[0])
                    for r in db.execute(
                        f"SELECT step_pk FROM hl7_orders WHERE {column} = ? ORDER BY step_pk",
                        (key,),
                    )
                ]
        if not pks and order.accession:
            pks = [
                int(r[0])
                for r in db.execute(
                    """SELECT s.pk FROM steps s JOIN procedures p ON p.pk = s.procedure_pk
                       WHERE p.accession_number = ? ORDER BY s.pk""",
                    (order.accession,),
                )
            ]
        return [self.repo.get(pk) for pk in pks]

    def _link(self, db: sqlite_utils.Database, step_pk: int, order: Order, actor: str) -> None:
        db.execute(
            """INSERT OR REPLACE INTO hl7_orders(step_pk, placer, filler, placer_ei, filler_ei, sender)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (
                step_pk,
                order.placer,
                order.filler,
                order.placer_ei,
                order.filler_ei,
                actor.removeprefix("hl7:"),
            ),
        )

    def _new(
        self,
        db: sqlite_utils.Database,
        order: Order,
        steps: list[dict[str, Any]],
        actor: str,
        peer: str,
    ) -> None:
        if any(s["status"] not in FINAL_STATUSES for s in steps):
            raise OrderError(
                Location("ORC", order.sequence, 2),
                mapping.DUPLICATE_KEY,
                f"order {order.placer or order.accession} is already scheduled",
            )
        for req in order.requests:
            self._link(db, self.repo.schedule(req, actor, peer), order, actor)

    def _change(
        self,
        db: sqlite_utils.Database,
        order: Order,
        steps: list[dict[str, Any]],
        actor: str,
        peer: str,
    ) -> None:
        """XO: each step of the message replaces the step with its SPS ID (else the one at
        its position); a step the order did not have yet is scheduled."""
        by_sps = {s["sps_id"]: s for s in steps}
        for i, req in enumerate(order.requests):
            target = by_sps.get(req.sps_id) if req.sps_id else None
            if target is None and not req.sps_id and i < len(steps):
                target = steps[i]
            if target is None:
                self._link(db, self.repo.schedule(req, actor, peer), order, actor)
                continue
            self.repo.update(target["step_pk"], req.replace(sps_id=target["sps_id"]), actor, peer)
            self._link(db, target["step_pk"], order, actor)

    def _set_status(
        self,
        db: sqlite_utils.Database,
        steps: list[dict[str, Any]],
        status: str,
        action: str,
        actor: str,
        peer: str,
    ) -> None:
        for step in steps:
            if step["status"] == status:
                continue
            if step["status"] in FINAL_STATUSES:
                raise Conflict(f"step {step['step_pk']} is {step['status'].lower()}")
            self.repo.set_status([step["step_pk"]], status, db=db)
            # The RIS made this change itself: no status message back to it (outbound).
            db.execute(
                "DELETE FROM hl7_status_events WHERE step_pk = ? AND status = ?",
                (step["step_pk"], status),
            )
            audit.record(db, actor, action, f"step {step['step_pk']}", status, peer)

    def health(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def recent(store: Store, limit: int = 20, failed: bool = False) -> list[dict[str, Any]]:
    """The newest messages received with their ACK code and error, newest first."""
    where = "WHERE ack_code != 'AA'" if failed else ""
    return store.query(
        f"""SELECT received_at, sender, control_id, message_type, peer, ack_code, error,
            duplicates FROM hl7_messages {where} ORDER BY pk DESC LIMIT ?""",
        (limit,),
    )
