"""Status back to the RIS: ORM^O01 with ORC-1 SC and ORC-5 IP / CM / DC over MLLP.

The event is written by a trigger in the transaction that changed the step (schema 0002),
so nothing is lost between MPPS and the outbox; ``fan_out`` turns each event into one
message per ``[[hl7.outbound]]`` RIS, built then and kept as it was sent; ``send_due``
sends each RIS's messages in order, one at a time (a step's IP before its CM), with
exponential retries, and dead-letters a message the RIS answers AE (or after
``max_attempts``). Rows survive restarts; a message resent after a crash carries the
same MSH-10, so the RIS can tell it is a repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import hl7
from hl7.mllp import open_hl7_connection

from appliance import audit
from appliance.config import Hl7OutboundSettings, Hl7Settings
from appliance.db import Store
from appliance.errors import NotFound
from appliance.hl7 import charsets
from appliance.hl7.mapping import escape, value
from appliance.worklist.repo import WorklistRepo

log = logging.getLogger(__name__)

ORC_STATUS = {"STARTED": "IP", "COMPLETED": "CM", "DISCONTINUED": "DC"}
# The MSH-18 written for each configured character set name.
MSH18 = {"ASCII": "", "ISO IR87": "~ISO IR87"}
ACCEPTED = ("AA", "CA")
REFUSED = ("AE", "CE")


def pn_to_xpn(pn: str) -> str:
    """DICOM PN groups as XPN repetitions (PS3.5 6.2.1 -> HL7 2.A.89), XPN-8 A / I / P."""
    reps = []
    for group, code in zip(pn.split("="), ("A", "I", "P"), strict=False):
        if not group.replace("^", ""):
            continue
        family, given, middle, prefix, suffix = (group.split("^") + [""] * 5)[:5]
        parts = [family, given, middle, suffix, prefix]
        reps.append("^".join(escape(p) for p in parts) + f"^^L^{code}")
    return "~".join(reps)


def status_message(
    step: dict[str, Any],
    order: dict[str, Any],
    status: str,
    ris: Hl7OutboundSettings,
    application: str,
    charset: str,
    control_id: str,
) -> str:
    """The ORM^O01 (HL7 v2.5.1 4.4.1) telling the RIS that a step of its order changed."""
    now = time.strftime("%Y%m%d%H%M%S")
    placer = order["placer_ei"] or escape(order["placer"])
    filler = order["filler_ei"] or escape(order["filler"])
    procedure = ""
    if step["procedure_code"]:
        c = json.loads(step["procedure_code"])
        procedure = "^".join(
            escape(str(c.get(k, "")))
            for k in ("CodeValue", "CodeMeaning", "CodingSchemeDesignator")
        )
    segments = [
        f"MSH|^~\\&|{escape(application)}|{escape(application)}|{ris.receiving_application}|"
        f"{ris.receiving_facility}|{now}||ORM^O01^ORM_O01|{control_id}|P|2.5.1||||||"
        f"{MSH18.get(charset, charset)}",
        f"PID|1||{escape(step['patient_id'])}^^^{escape(step['issuer'])}||"
        f"{pn_to_xpn(step['patient_name'])}||{step['birth_date']}|{step['sex']}",
        f"ORC|SC|{placer}|{filler}||{ORC_STATUS[status]}||||{now}",
        f"OBR|1|{placer}|{filler}|{procedure}||||||||||||||{escape(step['accession_number'])}|"
        f"{escape(step['requested_procedure_id'])}|{escape(step['sps_id'])}||||"
        f"{escape(step['modality'])}",
        f"ZDS|{step['study_instance_uid']}^{escape(application)}^Application^DICOM",
    ]
    return "\r".join(segments) + "\r"


async def exchange(host: str, port: int, payload: bytes, timeout: float) -> bytes:
    """Send one message over MLLP (python-hl7) and return the ACK block."""
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port), timeout)
    try:
        writer.writeblock(payload)
        await asyncio.wait_for(writer.drain(), timeout)
        return bytes(await asyncio.wait_for(reader.readblock(), timeout))
    finally:
        writer.close()


class Outbox:
    """The durable outbox of status messages, one ordered queue per RIS."""

    def __init__(self, store: Store, settings: Hl7Settings, application: str = "APPLIANCE"):
        self.store = store
        self.settings = settings
        self.application = application
        self.repo = WorklistRepo(store)

    def charset(self, ris: Hl7OutboundSettings) -> str:
        return ris.charset or self.settings.charset

    def fan_out(self) -> int:
        """Turn status events into messages for every RIS (one transaction); returns how many."""
        made = 0
        with self.store.write() as db:
            events = db.execute(
                "SELECT pk, step_pk, status FROM hl7_status_events ORDER BY pk LIMIT 500"
            ).fetchall()
            for event_pk, step_pk, status in events:
                order = self.store.query(
                    "SELECT placer, filler, placer_ei, filler_ei FROM hl7_orders WHERE step_pk = ?",
                    (step_pk,),
                )
                if order:
                    step = self.repo.get(step_pk)
                    for ris in self.settings.outbound:
                        control_id = hl7.generate_message_control_id()
                        text = status_message(
                            step, order[0], status, ris, self.application,
                            self.charset(ris), control_id,
                        )  # fmt: skip
                        db.execute(
                            """INSERT OR IGNORE INTO hl7_outbox(destination, event_pk, step_pk, status,
                               control_id, message) VALUES (?, ?, ?, ?, ?, ?)""",
                            (ris.name, event_pk, step_pk, status, control_id, text),
                        )
                        made += 1
                db.execute("DELETE FROM hl7_status_events WHERE pk = ?", (event_pk,))
        return made

    def send_due(self, stop: threading.Event | None = None) -> int:
        """Send every RIS's due messages in order; a RIS stops at its first failure."""
        sent = 0
        for ris in self.settings.outbound:
            rows = self.store.query(
                """SELECT pk, control_id, message, attempts, next_attempt FROM hl7_outbox
                   WHERE destination = ? AND state = 'waiting' ORDER BY pk LIMIT 100""",
                (ris.name,),
            )
            for row in rows:
                if (stop is not None and stop.is_set()) or row["next_attempt"] > time.time():
                    break
                if not self._send(ris, row):
                    break
                sent += 1
        return sent

    def _send(self, ris: Hl7OutboundSettings, row: dict[str, Any]) -> bool:
        """One attempt; True when the message is done with (sent or dead)."""
        codec = charsets.codec_for([self.charset(ris)], "ASCII")
        payload = str(row["message"]).encode(codec, errors="replace")
        try:
            answer = asyncio.run(exchange(ris.host, ris.port, payload, ris.timeout))
            code, reason = self._read_ack(answer, row["control_id"])
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            code, reason = "", f"{type(exc).__name__}: {exc}"[:200]
        if code in ACCEPTED:
            self._finish(row["pk"], "sent", code, "")
            return True
        if code in REFUSED:
            log.warning("HL7 status message %s refused by %s: %s", row["pk"], ris.name, reason)
            self._finish(row["pk"], "dead", code, f"RIS answered {code}: {reason}")
            return True
        attempts = int(row["attempts"]) + 1
        error = f"RIS answered {code}: {reason}" if code else reason
        if ris.max_attempts and attempts >= ris.max_attempts:
            self._finish(row["pk"], "dead", code, f"{error} (after {attempts} attempts)")
            return True
        wait = min(ris.retry_max, ris.retry_initial * 2 ** (attempts - 1))
        with self.store.write() as db:
            db.execute(
                """UPDATE hl7_outbox SET attempts = ?, next_attempt = ?, last_error = ?, ack_code = ?,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE pk = ?""",
                (attempts, time.time() + wait, error, code, row["pk"]),
            )
        return False

    def _read_ack(self, answer: bytes, control_id: str) -> tuple[str, str]:
        text = charsets.decode(answer, self.settings.charset)
        msg = hl7.parse(text)
        msa = msg.segment("MSA")
        if value(msa, 2) != control_id:
            return "", f"ACK for {value(msa, 2)!r}, not {control_id!r}"
        reason = value(msa, 3)
        try:
            reason = value(msg.segment("ERR"), 8) or reason
        except KeyError:
            pass
        return value(msa, 1).upper(), reason

    def _finish(self, pk: int, state: str, code: str, error: str) -> None:
        with self.store.write() as db:
            db.execute(
                """UPDATE hl7_outbox SET state = ?, ack_code = ?, last_error = ?, attempts = attempts + 1,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE pk = ?""",
                (state, code, error, pk),
            )

    def summary(self) -> dict[str, Any]:
        """Per RIS: waiting, sent, dead, and the last error of the oldest waiting message."""
        out: dict[str, Any] = {}
        for ris in self.settings.outbound:
            counts = {
                r["state"]: r["n"]
                for r in self.store.query(
                    "SELECT state, count(*) AS n FROM hl7_outbox WHERE destination = ? GROUP BY state",
                    (ris.name,),
                )
            }
            head = self.store.query(
                """SELECT last_error FROM hl7_outbox WHERE destination = ? AND state = 'waiting'
                   ORDER BY pk LIMIT 1""",
                (ris.name,),
            )
            out[ris.name] = {
                "waiting": counts.get("waiting", 0),
                "sent": counts.get("sent", 0),
                "dead": counts.get("dead", 0),
                "last_error": head[0]["last_error"] if head else "",
            }
        return out


class OutboundWorker:
    """A thread that fans events out and sends due messages, every ``interval`` seconds."""

    def __init__(self, outbox: Outbox, interval: float = 0.5) -> None:
        self.outbox = outbox
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hl7-outbound", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.outbox.fan_out()
                self.outbox.send_due(self._stop)
            except Exception:  # logged; the rows stay and the next round tries again
                log.exception("HL7 outbound round failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Ask the thread to end; a send under way ends at its timeout (its row stays)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None


def recent(store: Store, limit: int = 20, state: str | None = None) -> list[dict[str, Any]]:
    """The newest outbox rows (optionally of one state), newest first."""
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    return store.query(
        f"""SELECT pk, destination, step_pk, status, state, attempts, ack_code, last_error,
            updated_at FROM hl7_outbox {where} ORDER BY pk DESC LIMIT ?""",
        (*params, limit),
    )


def resend(store: Store, pk: int, actor: str = "cli") -> None:
    """Put a sent or dead message back in its RIS's queue, to go out at once (same MSH-10)."""
    with store.write() as db:
        changed = db.execute(
            """UPDATE hl7_outbox SET state = 'waiting', next_attempt = 0, attempts = 0,
               updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE pk = ?""",
            (pk,),
        ).rowcount
        if not changed:
            raise NotFound(f"no HL7 outbox message {pk}")
        audit.record(db, actor, "hl7-resend", f"hl7 outbox {pk}", "", "cli")
