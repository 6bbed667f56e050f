"""C-STORE sub-operations of C-MOVE and C-GET (PS3.4 C.4.2.3, C.4.3.3).

Each held file is sent as stored when the peer accepted its transfer syntax, else
decoded to an uncompressed syntax (as the forwarder does); a pending response follows
every sub-operation, and the final one carries the counts and the failed SOP Instance
UIDs. The sub-operations stop at a C-CANCEL (final FE00) or when the association that
carries them is lost (the remaining ones fail).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode

from appliance import status
from appliance.config import DicomSettings
from appliance.dicom.find_wire import MovePendingWriter
from appliance.forward import store_wire
from appliance.forward.journal import is_ref
from appliance.forward.sender import (
    SENDER_HANDLERS,
    UNCOMPRESSED,
    PermanentError,
    uncompressed,
)
from appliance.forward.sender import proposed_contexts as _proposed
from appliance.forward.spool import Spool
from appliance.qr.repo import HeldFile

log = logging.getLogger(__name__)

STREAMED = "streamed"  # store_one's "why" of a C-STORE answered through store_wire
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1-255


@dataclass
class Tally:
    """The sub-operation counts of one retrieve."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    streamed: int = 0  # sub-operations written by store_wire (the others: pynetdicom)

    def final_status(self) -> int:
        """0000 all sent, A702 none sent, B000 some failed or warned (PS3.4 C.4.2.1.5)."""
        if not self.failed and not self.warning:
            return status.SUCCESS
        if not self.completed and not self.warning:
            return status.UNABLE_TO_PERFORM_SUBOPERATIONS
        return status.SUBOPERATIONS_COMPLETE_WITH_FAILURES


def response(
    kind: type[C_MOVE] | type[C_GET],
    code: int,
    tally: Tally | None,
    transfer_syntax: UID,
    comment: str = "",
    pending: bool = False,
) -> C_MOVE | C_GET:
    """A C-MOVE or C-GET response with the counts (remaining only while pending)."""
    rsp = kind()
    rsp.Status = code
    if comment:
        rsp.ErrorComment = comment.replace("\\", "/")[:64]  # type: ignore[assignment]
    if tally is not None:
        if pending or code == status.CANCEL:
            rsp.NumberOfRemainingSuboperations = tally.remaining
        rsp.NumberOfCompletedSuboperations = tally.completed
        rsp.NumberOfFailedSuboperations = tally.failed
        rsp.NumberOfWarningSuboperations = tally.warning
        if not pending and tally.failed_uids:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = tally.failed_uids
            raw = encode(
                ds,
                transfer_syntax.is_implicit_VR,
                transfer_syntax.is_little_endian,
                transfer_syntax.is_deflated,
            )
            rsp.Identifier = BytesIO(raw or b"")
    return rsp


def _context(assoc: Any, sop_class: str, syntaxes: list[UID] | tuple[UID, ...]) -> Any:
    """The accepted presentation context for the SOP class in one of the syntaxes, or None."""
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] in syntaxes and cx.as_scu:
            return cx
    return None


def held_path(spool: Spool, held: HeldFile) -> Path:
    """The spooled file of a held instance: the one place a retrieve finds its bytes."""
    return spool.path(held.file)


def store_one(
    assoc: Any,
    held: HeldFile,
    spool: Spool,
    originator: str,
    message_id: int,
    wire: store_wire.StoreWire | None = None,
) -> tuple[int | None, str]:
    """Send one held file; (C-STORE status or None when nothing was answered, why). As
    stored and accepted, with ``wire``: streamed from the file (``forward.store_wire``);
    else through pynetdicom, decoded to an uncompressed syntax when only that was taken."""
    path = held_path(spool, held)
    stored = UID(held.transfer_syntax)
    # Move Originator (PS3.7 9.1.1.1): C-MOVE sub-operations only.
    extra: dict[str, Any] = (
        {"originator_aet": originator, "originator_id": message_id} if originator else {}
    )
    try:
        with spool.open(held.file) as f:  # the spool's one reader (file or journal record)
            as_stored = _context(assoc, held.sop_class_uid, [stored])
            if as_stored is not None and wire is not None:
                answer = wire.store(
                    f,
                    int(as_stored.context_id),
                    held.sop_class_uid,
                    held.sop_instance_uid,
                    (originator, message_id) if originator else None,
                )
                if answer is None:
                    return None, wire.failure or "association lost during the C-STORE"
                return answer[0], STREAMED
            if as_stored is not None:
                # No guard (pynetdicom without the internals store_wire needs): pynetdicom
                # streams a file's bytes itself; a journal record goes decoded.
                rsp = assoc.send_c_store(dcmread(f) if is_ref(held.file) else path, **extra)
            elif _context(assoc, held.sop_class_uid, UNCOMPRESSED) is not None:
                rsp = assoc.send_c_store(uncompressed(f, stored), **extra)
            else:
                return None, f"no accepted presentation context for {held.sop_class_uid}"
    except (PermanentError, store_wire.Unsendable) as exc:
        return None, str(exc)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        return None, f"file cannot be sent ({type(exc).__name__})"
    if not rsp or "Status" not in rsp:
        return None, "no C-STORE response (association lost or timed out)"
    return int(rsp.Status), ""


def sub_operations(
    kind: type[C_MOVE] | type[C_GET],
    assoc: Any,
    files: list[HeldFile],
    spool: Spool,
    transfer_syntax: UID,
    cancelled: Callable[[], bool],
    originator: str,
    message_id: int,
    wire: store_wire.StoreWire | None = None,
    tally: Tally | None = None,
    pending: MovePendingWriter | None = None,
) -> Iterator[C_MOVE | C_GET]:
    """Send every file on ``assoc`` (through ``wire`` where it can); a pending response
    after each (written by ``pending`` when given, else yielded), then the final one
    yielded; counts in ``tally`` when given."""
    tally = tally or Tally(remaining=len(files))
    for n, held in enumerate(files):
        if cancelled():
            tally.failed_uids.extend(h.sop_instance_uid for h in files[n:])
            yield response(kind, status.CANCEL, tally, transfer_syntax)
            return
        if not assoc.is_established:
            tally.failed += tally.remaining
            tally.failed_uids.extend(h.sop_instance_uid for h in files[n:])
            tally.remaining = 0
            break
        code, why = store_one(assoc, held, spool, originator, message_id, wire)
        tally.remaining -= 1
        if why == STREAMED:
            tally.streamed += 1
        if code is None or status.is_failure(code):
            tally.failed += 1
            tally.failed_uids.append(held.sop_instance_uid)
            log.warning(
                "retrieve sub-operation failed for %s: %s",
                held.sop_instance_uid,
                why if why and why != STREAMED else f"status 0x{code or 0:04X}",
            )
        elif code in status.WARNING_RANGE:
            tally.warning += 1
        else:
            tally.completed += 1
        if tally.remaining and pending is not None:
            if not pending.send_counts(
                tally.remaining, tally.completed, tally.failed, tally.warning
            ):
                log.warning("retrieve stopped: the requesting association is gone")
                return
        elif tally.remaining:
            yield response(kind, status.PENDING, tally, transfer_syntax, pending=True)
    yield response(kind, tally.final_status(), tally, transfer_syntax)


def open_destination(
    dicom: DicomSettings,
    ae_title: str,
    host: str,
    port: int,
    files: list[HeldFile],
    tls_args: tuple[Any, str] | None = None,
) -> Any:
    """An association with a C-MOVE destination proposing the files' SOP classes, each
    with its stored syntax and the uncompressed ones (dicom.* timeouts)."""
    ae = AE(ae_title=dicom.ae_title)
    ae.acse_timeout = dicom.acse_timeout
    ae.dimse_timeout = dicom.dimse_timeout
    ae.network_timeout = dicom.network_timeout
    ae.connection_timeout = dicom.acse_timeout
    pairs = sorted({(f.sop_class_uid, f.transfer_syntax) for f in files})
    for sop_class, syntaxes in _proposed(set(pairs[: MAX_CONTEXTS // 2])):
        ae.add_requested_context(sop_class, syntaxes)
    # The socket guard lets the C-STOREs of the files as stored go through store_wire.
    return ae.associate(
        host, port, ae_title=ae_title, evt_handlers=SENDER_HANDLERS, tls_args=tls_args
    )


# EVT_CONN_OPEN of the associations peers open: C-GET sub-operations go through
# store_wire on the requesting association, so its socket needs the guard too.
GUARD_HANDLERS: list[tuple[Any, ...]] = [(evt.EVT_CONN_OPEN, store_wire.install_guard)]


def wire_for(assoc: Any, dicom: DicomSettings) -> store_wire.StoreWire | None:
    """The streaming sender of an association ``open_destination`` made, or of a
    requesting association (C-GET), if guarded."""
    guard = store_wire.guard_of(assoc)
    return None if guard is None else store_wire.StoreWire(assoc, guard, dicom.dimse_timeout)
