"""Query/Retrieve SCP: Patient Root and Study Root FIND, MOVE and GET (PS3.4 Annex C).

Hierarchical queries over the index of held instances (``appliance.qr.index``): a
query names its level, keys of that level and above are matched with the worklist's
rules (``worklist.matching``: wildcards, ranges, UID lists, universal matching, PS3.4
C.2.2.2), and each matching entity is returned with exactly the keys asked for. C-MOVE
sends the files to a ``[[devices]]`` entry with host and port, C-GET on the same
association; both answer every response themselves (``compat.serve_retrieves_whole``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from appliance import audit, dataset_check, status
from appliance.config import DeviceSettings
from appliance.dicom import compat, tls
from appliance.dicom.find_wire import FastPath, MovePendingWriter
from appliance.forward.spool import Spool
from appliance.qr import index, repo, retrieve
from appliance.runtime import Runtime
from appliance.worklist import matching
from appliance.worklist.scp import CHARSET_VALUES, encodable, response_charset

log = logging.getLogger(__name__)

SERVICE = "qr"
FIND = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
MOVE = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
STUDY_ROOT = frozenset(
    str(u)
    for u in (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
    )
)
# Keys answered from the service itself, never matched (PS3.4 C.4.1.1.3.2, C.6.1.1.1).
RESPONSE_ONLY = frozenset(("QueryRetrieveLevel", "RetrieveAETitle", "InstanceAvailability"))
QUERY_LIMITS = dataset_check.Limits(max_depth=8, max_inflated=1 << 20, query=True)
LEVEL_TAG = 0x00080052
MAX_SUBOPERATIONS = 0xFFFF  # the counts are US (PS3.7 9.3.4)


class QueryRetrieveService:
    """The Q/R SCP on the shared listener, over the forwarder's spool and the index."""

    name = SERVICE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.spool = Spool(runtime.config.data_dir / "spool")
        self._lock = threading.Lock()
        # "streamed": C-MOVE and C-GET sub-operations written by store_wire (bytes as held)
        self.counts = {"find": 0, "move": 0, "get": 0, "streamed": 0}

    def contexts(self) -> list[tuple[str, list[str] | None]]:
        return [(str(uid), None) for uid in (*FIND, *MOVE, *GET)]

    def handlers(self) -> list[tuple[Any, ...]]:
        return [
            *retrieve.GUARD_HANDLERS,  # C-GET streams on the requesting association
            (evt.EVT_C_FIND, handle_find, [self]),
            (evt.EVT_C_MOVE, handle_move, [self]),
            (evt.EVT_C_GET, handle_get, [self]),
        ]

    def start(self) -> None:
        compat.serve_retrieves_whole([*MOVE, *GET])
        # Instances held before the index existed are indexed in the background.
        threading.Thread(target=self._backfill, name="qr-backfill", daemon=True).start()

    def _backfill(self) -> None:
        try:
            n = index.backfill(self.runtime.store, self.spool.open)
        except Exception:  # a failed backfill leaves those instances unindexed, nothing else
            log.exception("Q/R: indexing the instances held before the index failed")
            return
        if n:
            log.warning("Q/R: %d held instances indexed at start", n)

    def stop(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        return {"state": "running", **counts}

    def note(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n


class Request:
    """A parsed Q/R identifier: its level, the keys to match and the keys to return."""

    def __init__(self, ident: Dataset, level: str, query: matching.Query) -> None:
        self.ident = ident
        self.level = level
        self.query = query
        self.match: list[matching.Key] = []
        self.unsupported: list[str] = []
        for key in query.keys:
            if key.keyword in RESPONSE_ONLY:
                continue
            lv = repo.level_of(key.keyword)
            if lv is not None and repo.LEVELS.index(lv) > repo.LEVELS.index(level):
                raise dataset_check.Malformed(
                    dataset_check.STRUCTURE,
                    f"{key.keyword} is a {lv} key, below the {level} level",
                    key.tag or None,
                )
            if lv is None or key.items is not None:
                self.unsupported.append(key.keyword)
            else:
                self.match.append(key)

    def narrowing(self) -> repo.Narrowing:
        """SQL conditions from the indexed keys of the level and above."""
        columns = repo.keys_of(self.level)
        out = repo.Narrowing()
        for key in self.match:
            column = columns.get(key.keyword)
            if column is None or key.universal:
                continue
            if key.vr == "UI":
                out.equal[column] = [u.strip("\0 ") for u in key.value.split("\\")]
            elif key.keyword in ("PatientID", "AccessionNumber"):
                value = matching.literal(key)
                if value is not None:
                    out.equal[column] = [value]
            elif key.keyword == "PatientName":
                out.name_prefixes = matching.pn_prefixes(key.value) or []
            elif key.keyword == "StudyDate":
                v = key.value.replace(".", "").strip()
                lo, _, hi = v.partition("-") if "-" in v else (v, "", v)
                out.study_date_from, out.study_date_to = lo or None, hi or None
        return out

    def unique_keys(self) -> dict[str, list[str]]:
        """Column -> values of the unique keys a retrieve names (PS3.4 C.4.2.2.1): the
        level's is required, those above it narrow it when given."""
        out: dict[str, list[str]] = {}
        for lv in repo.levels_upto(self.level):
            keyword = repo.UNIQUE[lv]
            key = self.query.find(keyword)
            if key is None or key.universal:
                if lv == self.level:
                    raise dataset_check.Malformed(
                        dataset_check.STRUCTURE,
                        f"{keyword} is required to retrieve at the {lv} level",
                        tag_for_keyword(keyword),
                    )
                continue
            values = [v.strip("\0 ") for v in key.value.split("\\") if v.strip("\0 ")]
            out[repo.ATTRIBUTES[lv][keyword]] = values
        return out


def read_request(event: evt.Event, device: DeviceSettings) -> Request:
    """The identifier checked (PS3.5), its level checked against the information model
    and parsed; ``Malformed`` or ``QueryError`` when it cannot be served."""
    charset = CHARSET_VALUES[device.character_set][0] if device.character_set else None
    ident = dataset_check.read_request(event, "Identifier", QUERY_LIMITS, charset)
    level = str(ident.get("QueryRetrieveLevel", "") or "").strip()
    study_root = str(event.context.abstract_syntax) in STUDY_ROOT
    allowed = repo.LEVELS[1:] if study_root else repo.LEVELS
    if level not in allowed:
        what = f"QueryRetrieveLevel {level[:16]!r} not {'/'.join(allowed)}"
        raise dataset_check.Malformed(
            dataset_check.STRUCTURE,
            what if level else "Query/Retrieve Level is missing",
            LEVEL_TAG,
        )
    return Request(ident, level, matching.parse(ident))


def _status(code: int, comment: str, tag: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    if tag is not None:
        ds.OffendingElement = [tag]
    return ds


def _refusal(event: evt.Event, exc: Exception) -> tuple[int, str, int | None]:
    """The status, comment and offending tag that answer an identifier that cannot be
    served (logged): A900 for its shape, C000 for a value or encoding."""
    if isinstance(exc, dataset_check.Malformed):
        code = (
            status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
            if exc.kind == dataset_check.STRUCTURE
            else status.UNABLE_TO_PROCESS
        )
        reason, tag = exc.reason, exc.tag
    else:
        code, reason, tag = status.UNABLE_TO_PROCESS, str(exc), None
    log.warning(
        "Q/R request from %s refused: 0x%04X %s",
        dataset_check.peer(event),
        code,
        reason.partition(":")[0] if code == status.UNABLE_TO_PROCESS else reason,
    )
    return code, reason, tag


def _admitted(event: evt.Event, service: QueryRetrieveService) -> bool:
    calling = event.assoc.requestor.ae_title
    address = str(event.assoc.requestor.address or "")
    if service.runtime.access.allowed(calling, SERVICE, address):
        return True
    log.warning("Q/R request refused: %s is not a configured device", calling.strip())
    return False


NOT_A_DEVICE = "Calling AE title is not a configured device"


def handle_find(event: evt.Event, service: QueryRetrieveService) -> Iterator[tuple[Any, Any]]:
    """C-FIND (PS3.4 C.4.1.3): a pending response per matching entity, then Success;
    FE00 after a C-CANCEL; A900 / C000 for an identifier that cannot be served; A700
    when matching exceeds ``dicom.query_time_limit`` of CPU."""
    rt = service.runtime
    if not _admitted(event, service):
        yield _status(status.NOT_AUTHORIZED, NOT_A_DEVICE), None
        return
    calling = event.assoc.requestor.ae_title.strip()
    device = rt.access.policy(calling)
    deadline = time.thread_time() + rt.config.dicom.query_time_limit
    try:
        req = read_request(event, device)
    except (dataset_check.Malformed, matching.QueryError) as exc:
        code, reason, tag = _refusal(event, exc)
        yield _status(code, reason, tag), None
        return
    service.note("find")
    query_charset = _charset_key(req.ident.get("SpecificCharacterSet"))
    charset = response_charset(device, query_charset)
    pending = status.PENDING_WARNING if req.unsupported else status.PENDING
    own = {
        "QueryRetrieveLevel": req.level,
        "RetrieveAETitle": rt.config.dicom.ae_title,
        "InstanceAvailability": "ONLINE",
    }
    sent = 0
    fast = FastPath.for_event(event, req.query.keys, pending, matching.keys_for_item)
    try:
        returned = [k.keyword for k in req.query.keys]
        for entity in repo.entities(
            rt.store, req.level, req.narrowing(), req.match, deadline, returned=returned
        ):
            if event.is_cancelled:
                fast.flush()
                yield status.CANCEL, None
                return
            entity.update(own)
            use = charset if encodable(entity, charset) else "ISO_IR 192"
            sent += 1
            if fast.send(entity, CHARSET_VALUES[use][0]):
                continue
            fast.flush()
            rsp = matching.project(req.query.keys, entity)
            rsp.SpecificCharacterSet = CHARSET_VALUES[use][0]
            yield pending, rsp
        fast.flush()
    except repo.DeadlinePassed:
        fast.flush()
        limit = rt.config.dicom.query_time_limit
        yield _status(status.OUT_OF_RESOURCES, f"Query exceeded {limit:g} s"), None
    finally:
        audit.record_now(
            rt.store, calling, "qr-query", f"{req.level} level", f"{sent} matches",
            source=str(event.assoc.requestor.address or ""), durable=False,
        )  # fmt: skip
        log.info("Q/R query from %s at %s level: %d matches", calling, req.level, sent)


def _charset_key(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return "\\".join(str(v).strip() for v in value)


def _retrieve_request(
    event: evt.Event, service: QueryRetrieveService, kind: type[C_MOVE] | type[C_GET]
) -> tuple[list[repo.HeldFile] | None, C_MOVE | C_GET | None]:
    """The files a C-MOVE / C-GET names, or the response that refuses it."""
    ts = UID(event.context.transfer_syntax)
    if not _admitted(event, service):
        return None, retrieve.response(kind, status.NOT_AUTHORIZED, None, ts, NOT_A_DEVICE)
    device = service.runtime.access.policy(event.assoc.requestor.ae_title)
    try:
        req = read_request(event, device)
        unique = req.unique_keys()
    except (dataset_check.Malformed, matching.QueryError) as exc:
        code, reason, tag = _refusal(event, exc)
        rsp = retrieve.response(kind, code, None, ts, reason)
        if tag is not None:
            rsp.OffendingElement = [tag]  # type: ignore[assignment]
        return None, rsp
    files = repo.files(service.runtime.store, unique)
    if len(files) > MAX_SUBOPERATIONS:
        comment = f"{len(files)} instances; at most {MAX_SUBOPERATIONS} in one retrieve"
        return None, retrieve.response(kind, status.TOO_MANY_MATCHES, None, ts, comment)
    return files, None


def handle_move(event: evt.Event, service: QueryRetrieveService) -> Iterator[C_MOVE | C_GET]:
    """C-MOVE (PS3.4 C.4.2.3): C-STORE sub-operations on an association with the Move
    Destination, a known device with host and port (else A801 naming it)."""
    ts = UID(event.context.transfer_syntax)
    request = event.request
    destination = str(getattr(request, "MoveDestination", "") or "").strip()
    files, refused = _retrieve_request(event, service, C_MOVE)
    if refused is not None:
        yield refused
        return
    assert files is not None
    dicom = service.runtime.config.dicom
    device = service.runtime.access.device(destination)
    if device is None or not device.host or not device.port:
        log.warning("C-MOVE to %r refused: not a device with host and port", destination)
        yield retrieve.response(
            C_MOVE,
            status.MOVE_DESTINATION_UNKNOWN,
            None,
            ts,
            f"Move destination {destination} is not a known device with host and port",
        )
        return
    service.note("move")
    calling = event.assoc.requestor.ae_title.strip()
    log.info("C-MOVE from %s to %s: %d instances", calling, destination, len(files))
    if not files:
        yield retrieve.response(C_MOVE, status.SUCCESS, retrieve.Tally(0), ts)
        return
    # A device with tls = "required" gets its images over DICOM TLS as well.
    tls_args = tls.for_device(service.runtime.config, device)
    assoc = retrieve.open_destination(dicom, destination, device.host, device.port, files, tls_args)
    if not assoc.is_established:
        why = tls.failure(tls_args)
        if why:
            log.warning("C-MOVE to %s at %s:%s: %s", destination, device.host, device.port, why)
        tally = retrieve.Tally(0, failed=len(files))
        tally.failed_uids = [f.sop_instance_uid for f in files]
        yield retrieve.response(
            C_MOVE,
            status.UNABLE_TO_PERFORM_SUBOPERATIONS,
            tally,
            ts,
            why or f"No association with {destination} at {device.host}:{device.port}",
        )
        return
    tally = retrieve.Tally(remaining=len(files))
    try:
        yield from retrieve.sub_operations(
            C_MOVE,
            assoc,
            files,
            service.spool,
            ts,
            lambda: event.is_cancelled,
            calling,
            int(request.MessageID or 0),
            retrieve.wire_for(assoc, dicom),
            tally,
            MovePendingWriter(
                event.assoc,
                int(event.context.context_id or 1),
                int(request.MessageID or 0),
                str(request.AffectedSOPClassUID),
            ),
        )
    finally:
        service.note("streamed", tally.streamed)
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()


def handle_get(event: evt.Event, service: QueryRetrieveService) -> Iterator[C_MOVE | C_GET]:
    """C-GET (PS3.4 C.4.3.3): C-STORE sub-operations on the requesting association, on
    the storage contexts it proposed with the SCP role."""
    ts = UID(event.context.transfer_syntax)
    files, refused = _retrieve_request(event, service, C_GET)
    if refused is not None:
        yield refused
        return
    assert files is not None
    service.note("get")
    calling = event.assoc.requestor.ae_title.strip()
    log.info("C-GET from %s: %d instances", calling, len(files))
    if not files:
        yield retrieve.response(C_GET, status.SUCCESS, retrieve.Tally(0), ts)
        return
    tally = retrieve.Tally(remaining=len(files))
    try:
        yield from retrieve.sub_operations(
            C_GET,
            event.assoc,
            files,
            service.spool,
            ts,
            lambda: event.is_cancelled,
            "",
            0,
            retrieve.wire_for(event.assoc, service.runtime.config.dicom),
            tally,
        )
    finally:
        service.note("streamed", tally.streamed)
