"""pynetdicom handlers of the Print Management SCP (PS3.4 H): thin adapters.

Each handler checks who may print, reads the request, calls the service, and turns a
``PrintError`` into its status with an ErrorComment. No patient data is logged at INFO.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from appliance import dataset_check, status
from appliance.printing import session as rules
from appliance.printing.session import PrintError

if TYPE_CHECKING:
    from appliance.printing.service import PrintService

log = logging.getLogger(__name__)

UID_PREFIX = "1.2.840.10008.5.1.1."
FILM_SESSION = UID_PREFIX + "1"
FILM_BOX = UID_PREFIX + "2"
GRAYSCALE_IMAGE_BOX = UID_PREFIX + "4"
COLOR_IMAGE_BOX = UID_PREFIX + "4.1"
GRAYSCALE_META = UID_PREFIX + "9"
PRINT_JOB = UID_PREFIX + "14"
ANNOTATION_BOX = UID_PREFIX + "15"
PRINTER = UID_PREFIX + "16"
PRINTER_INSTANCE = UID_PREFIX + "17"
COLOR_META = UID_PREFIX + "18"
PRESENTATION_LUT = UID_PREFIX + "23"
SERVICE = "print"
ACTION_PRINT = 1


def _status(code: int, comment: str = "", instance_uid: str | None = None) -> Dataset:
    return status.response(code, comment, AffectedSOPInstanceUID=instance_uid or None)


def _allowed(event: evt.Event, svc: PrintService) -> Dataset | None:
    calling = event.assoc.requestor.ae_title
    if not svc.runtime.access.allowed(calling, SERVICE):
        log.info("print request from %s refused: not a known device", calling)
        return _status(status.NOT_AUTHORIZED, "calling AE title may not print")
    return None


def _where(event: evt.Event) -> tuple[str, str, str]:
    """(calling AE, called AE, meta: grayscale or color) of the request."""
    assoc = event.assoc
    meta = rules.COLOR if event.context.abstract_syntax == COLOR_META else rules.GRAYSCALE
    return assoc.requestor.ae_title.strip(), assoc.acceptor.ae_title.strip(), meta


# Image boxes carry their pixel data: a deflated one may inflate to a large film's worth.
LIMITS = dataset_check.Limits(max_depth=8, max_inflated=256 << 20)


def _read(event: evt.Event, attribute: str) -> Dataset:
    """The attribute or modification list, checked (PS3.5); a PrintError when it is malformed:
    0110 when it cannot be decoded, 0106 when a value is not valid for its VR (PS3.7 C.4)."""
    try:
        return dataset_check.read_request(event, attribute, LIMITS)
    except dataset_check.Malformed as exc:
        code = dataset_check.n_status(exc)
        raise MalformedList(code, exc.reason, dataset_check.peer(event)) from exc


class MalformedList(PrintError):
    """A request whose data set could not be used (logged as a warning with the peer)."""

    def __init__(self, code: int, comment: str, peer: str) -> None:
        super().__init__(code, comment)
        self.peer = peer


def _fail(exc: PrintError, what: str) -> Dataset:
    if isinstance(exc, MalformedList):
        log.warning("print %s from %s refused: 0x%04X %s", what, exc.peer, exc.code, exc.comment)
        return _status(exc.code, exc.comment)
    log.info("%s refused: 0x%04X %s", what, exc.code, exc.comment)
    return _status(exc.code, exc.comment)


def handle_n_create(event: evt.Event, svc: PrintService) -> tuple[Dataset, Dataset | None]:
    """N-CREATE: Film Session, Film Box, Presentation LUT (PS3.4 H.4.1-H.4.2, H.4.9)."""
    refused = _allowed(event, svc)
    if refused is not None:
        return refused, None
    req: Any = event.request
    cls = str(req.AffectedSOPClassUID)
    requested_uid = str(req.AffectedSOPInstanceUID) if req.AffectedSOPInstanceUID else None
    calling, called, meta = _where(event)
    try:
        ds = _read(event, "AttributeList")
        if cls == FILM_SESSION:
            uid, reply, warns = svc.create_session(ds, calling, called, meta, requested_uid)
            svc.listen(event.assoc, called, str(event.context.abstract_syntax))
        elif cls == FILM_BOX:
            uid, reply, warns = svc.create_film_box(ds, calling, called, meta, requested_uid)
        elif cls == PRESENTATION_LUT:
            uid, reply, warns = svc.create_lut(ds, calling, requested_uid)
        else:
            return _status(status.UNRECOGNIZED_OPERATION, "N-CREATE not defined"), None
    except PrintError as exc:
        return _fail(exc, "N-CREATE"), None
    code = rules.most_important(warns)
    if code == status.SUCCESS:
        # pynetdicom takes a created UID from the attribute list on success ...
        reply.AffectedSOPInstanceUID = uid
        return _status(code), reply
    # ... and from the status dataset on a warning.
    return _status(code, instance_uid=uid), reply


def handle_n_set(event: evt.Event, svc: PrintService) -> tuple[Dataset, Dataset | None]:
    """N-SET: Film Session, Film Box, Image Box, Annotation Box (PS3.4 H.4.1-H.4.4, H.4.7)."""
    refused = _allowed(event, svc)
    if refused is not None:
        return refused, None
    req: Any = event.request
    cls, uid = str(req.RequestedSOPClassUID), str(req.RequestedSOPInstanceUID)
    calling, called, _meta = _where(event)
    reply: Dataset | None
    try:
        ds = _read(event, "ModificationList")
        if cls == FILM_SESSION:
            reply, warns = svc.set_session(uid, ds, calling)
        elif cls == FILM_BOX:
            reply, warns = svc.set_film_box(uid, ds, calling, called)
        elif cls in (GRAYSCALE_IMAGE_BOX, COLOR_IMAGE_BOX):
            reply, warns = svc.set_image_box(uid, ds, cls == COLOR_IMAGE_BOX)
        elif cls == ANNOTATION_BOX:
            reply, warns = svc.set_annotation(uid, ds)
        else:
            return _status(status.UNRECOGNIZED_OPERATION, "N-SET not defined"), None
    except PrintError as exc:
        return _fail(exc, "N-SET"), None
    return _status(rules.most_important(warns)), reply


def handle_n_action(event: evt.Event, svc: PrintService) -> tuple[Dataset, Dataset | None]:
    """N-ACTION print: Film Session or Film Box (PS3.4 H.4.1.1.4, H.4.2.1.4)."""
    refused = _allowed(event, svc)
    if refused is not None:
        return refused, None
    req: Any = event.request
    cls, uid = str(req.RequestedSOPClassUID), str(req.RequestedSOPInstanceUID)
    if cls not in (FILM_SESSION, FILM_BOX):
        return _status(status.UNRECOGNIZED_OPERATION, "N-ACTION not defined"), None
    if event.action_type != ACTION_PRINT:
        return _status(status.NO_SUCH_ACTION_TYPE, f"action type {event.action_type}"), None
    calling, called, _meta = _where(event)
    try:
        job_uid, warns = svc.print_films(cls == FILM_SESSION, uid, calling, called, event.assoc)
    except PrintError as exc:
        return _fail(exc, "N-ACTION"), None
    reply = Dataset()
    item = Dataset()
    item.ReferencedSOPClassUID = PRINT_JOB
    item.ReferencedSOPInstanceUID = job_uid
    reply.ReferencedPrintJobSequence = [item]
    return _status(rules.most_important(warns)), reply


def handle_n_delete(event: evt.Event, svc: PrintService) -> Dataset:
    """N-DELETE: Film Session, Film Box, Presentation LUT (PS3.4 H.4.1.1.3, H.4.2.1.3, H.4.9)."""
    refused = _allowed(event, svc)
    if refused is not None:
        return refused
    req: Any = event.request
    cls, uid = str(req.RequestedSOPClassUID), str(req.RequestedSOPInstanceUID)
    if cls not in (FILM_SESSION, FILM_BOX, PRESENTATION_LUT):
        return _status(status.UNRECOGNIZED_OPERATION, "N-DELETE not defined")
    try:
        svc.delete(cls, uid, event.assoc.requestor.ae_title.strip())
    except PrintError as exc:
        return _fail(exc, "N-DELETE")
    return _status(status.SUCCESS)


def _only(ds: Dataset, wanted: Any) -> Dataset:
    """Keep the attributes the request asked for (all when it asked for none)."""
    if not wanted:
        return ds
    # A list of one tag arrives from pydicom as a single BaseTag (VM 1), not a list.
    tags = {int(wanted)} if isinstance(wanted, int) else {int(t) for t in wanted}
    out = Dataset()
    for elem in ds:
        if int(elem.tag) in tags:
            out.add(elem)
    return out


def handle_n_get(event: evt.Event, svc: PrintService) -> tuple[Dataset, Dataset | None]:
    """N-GET: Printer (its real state) and Print Job (PS3.4 H.4.5.1.2, H.4.6.1.2)."""
    refused = _allowed(event, svc)
    if refused is not None:
        return refused, None
    req: Any = event.request
    cls, uid = str(req.RequestedSOPClassUID), str(req.RequestedSOPInstanceUID)
    called = event.assoc.acceptor.ae_title.strip()
    try:
        if cls == PRINTER:
            if uid != PRINTER_INSTANCE:
                raise PrintError(
                    status.NO_SUCH_SOP_INSTANCE, "Printer is instance 1.2.840.10008.5.1.1.17"
                )
            ds = svc.printer_attributes(called)
        elif cls == PRINT_JOB:
            ds = svc.job_attributes(uid)
        else:
            return _status(status.UNRECOGNIZED_OPERATION, "N-GET not defined"), None
    except PrintError as exc:
        return _fail(exc, "N-GET"), None
    return _status(status.SUCCESS), _only(ds, req.AttributeIdentifierList)


def bindings(svc: PrintService) -> list[tuple[Any, ...]]:
    """The pynetdicom event bindings of the print service."""
    return [
        (evt.EVT_N_CREATE, handle_n_create, [svc]),
        (evt.EVT_N_SET, handle_n_set, [svc]),
        (evt.EVT_N_ACTION, handle_n_action, [svc]),
        (evt.EVT_N_DELETE, handle_n_delete, [svc]),
        (evt.EVT_N_GET, handle_n_get, [svc]),
    ]
