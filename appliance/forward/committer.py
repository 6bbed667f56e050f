"""Storage Commitment on the wire (PS3.4 J): SCP for modalities, SCU toward each PACS.

``handle_n_action`` keeps a modality's request and answers the N-ACTION at once; the
``Committer`` thread asks each PACS whose policy is ``pacs`` to commit the delivered
instances (N-ACTION on its own association), takes the PACS's N-EVENT-REPORT on the
listener (``handle_n_event_report``, new association with role selection) or on the
request's association, and sends the modality its N-EVENT-REPORT on a new association
to the host and port of its ``[[devices]]`` entry once every instance is resolved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt

from appliance import status
from appliance.access import Access
from appliance.config import Config, DestinationSettings
from appliance.db import Store
from appliance.dicom import tls
from appliance.errors import Conflict, ValidationError
from appliance.forward import commitment, retry
from appliance.forward.sender import NODELAY
from appliance.worker import Worker

log = logging.getLogger(__name__)

SERVICE = "forward"
POLL = 0.5  # seconds between looks at the commitment tables when nothing wakes the thread
REPORT_GIVE_UP = 24 * 3600.0  # seconds after the request when a report stops being retried


def _status(code: int, comment: str = "") -> Dataset:
    return status.response(code, comment)


class Committer(Worker):
    """Resolves modality requests, asks PACS for commitment, sends the reports."""

    def __init__(
        self,
        config: Config,
        store: Store,
        access: Access,
        destinations: Callable[[], Iterable[DestinationSettings]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.access = access
        self.ae_title = config.dicom.ae_title
        # The current destinations (the live list, edited in the web UI), else the file's.
        self.destinations = destinations or (lambda: config.destinations)
        self._pacs_retry: dict[str, tuple[int, float]] = {}
        super().__init__()
        self.last_error = ""

    def thread_name(self) -> str:
        return "forward-commit"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a bug must not kill the thread; logged, tried again
                log.exception("storage commitment: unexpected error")
            if self._wake.wait(POLL):
                self._wake.clear()

    def step(self, now: float | None = None) -> None:
        """One round: ask the PACS, resolve requests, send due reports."""
        if not commitment.has_open_requests(self.store):
            return
        dests = list(self.destinations())
        for dest in dests:
            if dest.commitment == "pacs":
                self._ask_pacs(dest)
        commitment.evaluate(self.store, {d.name: d.commitment for d in dests}, now)
        for c in commitment.due_reports(self.store, now):
            self._report(c)

    # -- toward the PACS ----------------------------------------------------------------

    def _ask_pacs(self, dest: DestinationSettings) -> None:
        failures, not_before = self._pacs_retry.get(dest.name, (0, 0.0))
        if time.time() < not_before:
            return
        # Unanswered requests are asked again after a third of the modality's timeout.
        again = time.time() - self.config.forward.commitment_timeout / 3
        rows = commitment.needing_pacs_commit(self.store, dest.name, ask_again_before=again)
        if not rows:
            return
        txn = generate_uid()
        # Recorded first: the PACS may report before our N-ACTION call returns.
        commitment.record_pacs_request(self.store, dest.name, txn, [r["queue_id"] for r in rows])
        refs = [commitment.Ref(r["sop_class_uid"], r["sop_instance_uid"]) for r in rows]
        error = self._send_n_action(dest, commitment.request_dataset(txn, refs))
        if error is None:
            self._pacs_retry.pop(dest.name, None)
            log.info("storage commitment asked of %s for %d instances", dest.name, len(rows))
            return
        commitment.cancel_pacs_request(self.store, txn)
        delay = retry.backoff(
            failures + 1, self.config.forward.retry_initial, self.config.forward.retry_max
        )
        self._pacs_retry[dest.name] = (failures + 1, time.time() + delay)
        self.last_error = f"{dest.name}: {error}"
        log.warning("storage commitment toward %s: %s; next try in %.1f s", dest.name, error, delay)

    def _send_n_action(self, dest: DestinationSettings, info: Dataset) -> str | None:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = self.config.dicom.acse_timeout
        ae.dimse_timeout = self.config.dicom.dimse_timeout
        ae.add_requested_context(commitment.SOP_CLASS)
        handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, handle_n_event_report, [self]), *NODELAY]
        tls_args = tls.for_destination(self.config, dest)
        assoc = ae.associate(
            dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=handlers, tls_args=tls_args
        )
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                return "the PACS does not accept Storage Commitment (set commitment = delivery)"
            return tls.failure(tls_args) or "no association for Storage Commitment"
        try:
            rsp, _ = assoc.send_n_action(
                info, commitment.ACTION_REQUEST, commitment.SOP_CLASS, commitment.SOP_INSTANCE
            )
        finally:
            if assoc.is_established:
                assoc.release()
        if not rsp or "Status" not in rsp:
            return "no answer to N-ACTION"
        if status.is_failure(int(rsp.Status)):
            return f"N-ACTION refused with 0x{int(rsp.Status):04X}"
        return None

    # -- toward the modality ------------------------------------------------------------

    def _report(self, c: dict[str, Any]) -> None:
        event_type, info = commitment.report(self.store, c["id"])
        error = self._send_report(c["calling_ae"], event_type, info)
        now = time.time()
        if error is None:
            commitment.mark_reported(self.store, c["id"], event_type, now)
            log.info(
                "storage commitment reported to %s (event type %d)", c["calling_ae"], event_type
            )
            return
        give_up = now - c["requested_at"] > REPORT_GIVE_UP
        delay = retry.backoff(
            c["report_attempts"] + 1,
            self.config.forward.retry_initial,
            self.config.forward.retry_max,
        )
        commitment.mark_report_failed(self.store, c["id"], error, None if give_up else now + delay)
        self.last_error = f"report to {c['calling_ae']}: {error}"
        log.warning("storage commitment report to %s: %s", c["calling_ae"], error)

    def _send_report(self, calling_ae: str, event_type: int, info: Dataset) -> str | None:
        device = self.access.device(calling_ae)
        if device is None or not device.host or not device.port:
            return f"{calling_ae} has no host and port in [[devices]] to send the report to"
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = self.config.dicom.acse_timeout
        ae.dimse_timeout = self.config.dicom.dimse_timeout
        ae.add_requested_context(commitment.SOP_CLASS)
        # We open the association but act as the SCP of the class (PS3.4 J.3.3).
        role = build_role(commitment.SOP_CLASS, scu_role=False, scp_role=True)
        tls_args = tls.for_device(self.config, device)
        assoc = ae.associate(
            device.host, device.port, ae_title=device.ae_title, ext_neg=[role],
            evt_handlers=NODELAY, tls_args=tls_args,
        )  # fmt: skip
        if not assoc.is_established:
            why = tls.failure(tls_args) or "no association"
            return f"{why} with {device.ae_title}@{device.host}:{device.port}"
        try:
            rsp, _ = assoc.send_n_event_report(
                info, event_type, commitment.SOP_CLASS, commitment.SOP_INSTANCE
            )
        finally:
            if assoc.is_established:
                assoc.release()
        if not rsp or "Status" not in rsp:
            return "no answer to N-EVENT-REPORT"
        if status.is_failure(int(rsp.Status)):
            return f"N-EVENT-REPORT refused with 0x{int(rsp.Status):04X}"
        return None

    def health(self) -> dict[str, Any]:
        return {"requests": commitment.pending_summary(self.store), "last_error": self.last_error}


def handle_n_action(event: Any, committer: Committer, access: Access) -> tuple[Dataset, None]:
    """EVT_N_ACTION: a modality asks for Storage Commitment (PS3.4 J.3.2); kept, then 0000."""
    calling = event.assoc.requestor.ae_title.strip()
    if not access.allowed(calling, SERVICE, str(event.assoc.requestor.address)):
        return _status(status.NOT_AUTHORIZED, "calling AE title may not ask for commitment"), None
    if event.action_type != commitment.ACTION_REQUEST:
        return _status(status.NO_SUCH_ACTION_TYPE, "only action type 1 is known"), None
    try:
        txn, refs = commitment.parse_request(event.action_information)
        commitment.record_request(
            committer.store, calling, txn, refs, committer.config.forward.commitment_timeout
        )
    except ValidationError as exc:
        return _status(status.INVALID_ARGUMENT_VALUE, str(exc)), None
    except Conflict as exc:
        return _status(status.PROCESSING_FAILURE, str(exc)), None
    log.info("storage commitment requested by %s for %d instances", calling, len(refs))
    committer.wake()
    return _status(status.SUCCESS), None


def handle_n_event_report(event: Any, committer: Committer) -> tuple[Dataset, None]:
    """EVT_N_EVENT_REPORT: a PACS reports on our commitment request (PS3.4 J.3.3)."""
    if event.event_type not in (commitment.EVENT_ALL_COMMITTED, commitment.EVENT_SOME_FAILED):
        return _status(status.NO_SUCH_EVENT_TYPE, "only event types 1 and 2 are known"), None
    try:
        txn, ok, failed = commitment.parse_report(event.event_information)
    except ValidationError as exc:
        return _status(status.INVALID_ARGUMENT_VALUE, str(exc)), None
    dest = commitment.apply_pacs_report(committer.store, txn, ok, failed, event.event_type)
    if dest is None:
        return _status(status.INVALID_ARGUMENT_VALUE, "unknown Transaction UID"), None
    log.info("storage commitment from %s: %d committed, %d failed", dest, len(ok), len(failed))
    committer.wake()
    return _status(status.SUCCESS), None
