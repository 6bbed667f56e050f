"""Print Job N-EVENT-REPORTs on the association that created the job (PS3.4 H.4.5.1.1).

pynetdicom's ``send_n_event_report`` takes the next DIMSE message as its response, so an
SCU request that arrives first (an N-DELETE right after N-ACTION) would be taken for
the response and lost. Here the report is sent with the association's reactor paused,
and while waiting for the response any peer request at the head of the queue is handed
back to the reactor to be served first. The report gives up (and is dropped) when the
association ends or the peer does not answer in time; it never aborts the association.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode

from appliance.dicom import compat

log = logging.getLogger(__name__)

POLL = 0.0002


def _pause(assoc: Any, deadline: float) -> bool:
    return compat.pause_reactor(assoc, deadline, POLL)


def send_event_report(
    assoc: Any,
    info: Dataset,
    event_type: int,
    class_uid: str,
    instance_uid: str,
    meta_uid: str,
    msg_id: int,
    timeout: float = 10.0,
) -> int | None:
    """Send one N-EVENT-REPORT; returns the response status, or None if none came."""
    if not assoc.is_established:
        return None
    context = compat.context_for(assoc, meta_uid or class_uid)
    syntax = context.transfer_syntax[0]
    req = N_EVENT_REPORT()
    req.MessageID = msg_id
    req.AffectedSOPClassUID = class_uid
    req.AffectedSOPInstanceUID = instance_uid
    req.EventTypeID = event_type
    encoded = encode(info, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError("event information cannot be encoded")
    req.EventInformation = BytesIO(encoded)
    deadline = time.monotonic() + timeout
    dimse = assoc.dimse
    try:
        if not _pause(assoc, deadline):
            return None
        dimse.send_msg(req, context.context_id)
        while assoc.is_established and time.monotonic() < deadline:
            if compat.peer_pdu_waiting(assoc):
                return None  # the peer releases or aborts: its reactor will not answer us
            msg = compat.peek_dimse(assoc)
            if msg is None:
                time.sleep(POLL)
                continue
            if isinstance(msg, N_EVENT_REPORT) and msg.MessageIDBeingRespondedTo == msg_id:
                compat.take_dimse(assoc)
                return int(msg.Status) if msg.Status is not None else None
            # A request from the peer came first: let the reactor serve it, then pause again.
            compat.resume_reactor(assoc)
            while assoc.is_established and compat.peek_dimse(assoc) is msg:
                if time.monotonic() > deadline:
                    return None
                time.sleep(POLL)
            if not _pause(assoc, deadline):
                return None
        return None
    finally:
        compat.resume_reactor(assoc)


Item = tuple["weakref.ref[Any]", str, int, Dataset, str, str]


class EventSender:
    """Sends reports in order on a background thread; remembers each job's association."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._targets: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._meta: dict[str, str] = {}
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._msg_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.sent: list[tuple[str, int, int | None]] = []  # (instance, event type, status)

    def start(self) -> None:
        """Start the sending thread."""
        self._thread = threading.Thread(target=self._loop, name="print-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the report being sent."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def watch(self, job_uid: str, assoc: Any, meta_uid: str) -> None:
        """Reports of this job go to this association while it lasts."""
        self._targets[job_uid] = assoc
        self._meta[job_uid] = meta_uid

    def report(
        self, job_uid: str, event_type: int, info: Dataset, class_uid: str, instance_uid: str
    ) -> None:
        """Queue a report for the job's association (dropped when there is none)."""
        assoc = self._targets.get(job_uid)
        if assoc is not None:
            self.send_to(
                assoc, self._meta.get(job_uid, ""), event_type, info, class_uid, instance_uid
            )

    def send_to(
        self,
        assoc: Any,
        meta_uid: str,
        event_type: int,
        info: Dataset,
        class_uid: str,
        instance_uid: str,
    ) -> None:
        """Queue a report for one association, on the meta SOP class context if given."""
        self._queue.put((weakref.ref(assoc), meta_uid, event_type, info, class_uid, instance_uid))

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            ref, meta_uid, event_type, info, class_uid, instance_uid = item
            assoc = ref()
            if assoc is None or not assoc.is_established:
                continue
            msg_id = self._msg_ids.get(assoc, 0x8000) + 1
            self._msg_ids[assoc] = msg_id
            try:
                status = send_event_report(
                    assoc, info, event_type, class_uid, instance_uid, meta_uid, msg_id, self.timeout
                )
            except Exception as exc:  # the thread serves every association: it must go on
                log.warning("print event report not sent: %s: %s", type(exc).__name__, exc)
                status = None
            self.sent.append((instance_uid, event_type, status))
            del self.sent[:-100]
