"""Modality Worklist C-FIND SCP: thin pynetdicom handlers over matching and the repo.

PS3.4 Annex K. A query is parsed and narrowed in SQL through the indexes, candidates are
matched in Python on decoded Unicode, and each match is returned with exactly the keys
that were asked for, encoded in the character set the calling device needs.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)

from appliance import audit, dataset_check, status
from appliance.config import DeviceSettings
from appliance.dicom.find_wire import FastPath
from appliance.runtime import Runtime
from appliance.worklist import matching, mpps
from appliance.worklist.repo import Narrowing, WorklistRepo, row_to_item

log = logging.getLogger(__name__)

SERVICE = "worklist"

# Specific Character Set values (as DICOM multi-values) and a Python codec that can tell
# whether a text is representable in them.
CHARSET_VALUES: dict[str, tuple[list[str], str]] = {
    "ISO_IR 6": (["ISO_IR 6"], "ascii"),
    "ISO_IR 100": (["ISO_IR 100"], "latin_1"),
    "ISO_IR 192": (["ISO_IR 192"], "utf-8"),
    "ISO 2022 IR 87": (["", "ISO 2022 IR 87"], "iso2022_jp"),
    "ISO 2022 IR 13\\ISO 2022 IR 87": (["ISO 2022 IR 13", "ISO 2022 IR 87"], "iso2022_jp_ext"),
}
_QUERY_CHARSETS = {
    "": "ISO_IR 6",
    "ISO_IR 6": "ISO_IR 6",
    "ISO_IR 100": "ISO_IR 100",
    "ISO_IR 192": "ISO_IR 192",
    "\\ISO 2022 IR 87": "ISO 2022 IR 87",
    "ISO 2022 IR 6\\ISO 2022 IR 87": "ISO 2022 IR 87",
    "ISO 2022 IR 87": "ISO 2022 IR 87",
    "ISO 2022 IR 13\\ISO 2022 IR 87": "ISO 2022 IR 13\\ISO 2022 IR 87",
}


def _status(code: int, comment: str) -> Dataset:
    return status.response(code, comment)


def _charset_key(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return "\\".join(str(v).strip() for v in value)


def response_charset(device: DeviceSettings, query_charset: str) -> str:
    """The character set of responses: the device's, else the query's, else UTF-8."""
    if device.character_set:
        return device.character_set
    known = _QUERY_CHARSETS.get(query_charset)
    if known and known != "ISO_IR 6":
        return known
    return "ISO_IR 192"


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for sub in value:
            for v in sub.values():
                yield from _texts(v)


def encodable(item: dict[str, Any], charset: str) -> bool:
    """True when every text of the item can be written in the character set."""
    codec = CHARSET_VALUES[charset][1]
    for value in item.values():
        for text in _texts(value):
            if text.isascii():
                continue
            try:
                codecs.encode(text, codec)
            except UnicodeEncodeError:
                return False
    return True


class WorklistService:
    """The MWL C-FIND SCP and the MPPS SCP on the shared listener."""

    name = SERVICE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = WorklistRepo(runtime.store)
        self.mpps = mpps.MppsRecorder(runtime.store, self.repo)
        self._lock = threading.Lock()
        self.queries = 0
        self.last_query_at: float | None = None

    def contexts(self) -> list[tuple[str, list[str] | None]]:
        return [(ModalityWorklistInformationFind, None), (ModalityPerformedProcedureStep, None)]

    def handlers(self) -> list[tuple[Any, ...]]:
        return [
            (evt.EVT_C_FIND, handle_find, [self]),
            (evt.EVT_N_CREATE, mpps.handle_n_create, [self]),
            (evt.EVT_N_SET, mpps.handle_n_set, [self]),
        ]

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        with self._lock:
            last = self.last_query_at
            queries = self.queries
        return {
            "state": "running",
            "queries": queries,
            "last_query_s_ago": None if last is None else round(time.time() - last, 1),
        }

    def note_query(self) -> None:
        with self._lock:
            self.queries += 1
            self.last_query_at = time.time()


def _apply_policy(query: matching.Query, device: DeviceSettings, calling_ae: str) -> None:
    """Use the calling AE title as station filter when the device's policy says so."""
    if device.station_filter != "calling-ae":
        return
    sps = query.find("ScheduledProcedureStepSequence")
    if sps is None:
        sps = matching.Key("ScheduledProcedureStepSequence", "SQ", items=[])
        sps.hidden = True  # type: ignore[attr-defined]
        query.keys.append(sps)
    assert sps.items is not None
    station = next((k for k in sps.items if k.keyword == "ScheduledStationAETitle"), None)
    if station is None:
        station = matching.Key("ScheduledStationAETitle", "AE")
        station.hidden = True  # type: ignore[attr-defined]
        sps.items.append(station)
    if station.universal:
        station.value = calling_ae.strip()


def _strip_hidden(keys: list[matching.Key]) -> list[matching.Key]:
    out = []
    for k in keys:
        if getattr(k, "hidden", False):
            continue
        if k.items is not None:
            k = matching.Key(k.keyword, k.vr, k.value, _strip_hidden(k.items), k.tag)
        out.append(k)
    return out


QUERY_LIMITS = dataset_check.Limits(max_depth=8, max_inflated=1 << 20, query=True)


def _refused(
    event: evt.Event, code: int, reason: str, tag: int | None = None, logged: str = ""
) -> Dataset:
    """The final response of a query that cannot be served, logged in one line: the peer
    and the reason (``logged`` instead when the reason quotes a value of the query)."""
    log.warning(
        "worklist query from %s refused: 0x%04X %s",
        dataset_check.peer(event),
        code,
        logged or reason,
    )
    rsp = _status(code, reason)
    if tag is not None:
        rsp.OffendingElement = [tag]
    return rsp


def read_query(event: evt.Event, device: DeviceSettings) -> tuple[Dataset, matching.Query]:
    """The identifier, checked (PS3.5) and parsed; ``Malformed`` or ``QueryError`` if it cannot be."""
    charset = CHARSET_VALUES[device.character_set][0] if device.character_set else None
    ident = dataset_check.read_request(event, "Identifier", QUERY_LIMITS, charset)
    if "QueryRetrieveLevel" in ident:
        raise dataset_check.Malformed(
            dataset_check.STRUCTURE, "Query/Retrieve Level is not a worklist key", 0x00080052
        )
    return ident, matching.parse(ident)


def handle_find(event: evt.Event, service: WorklistService) -> Iterator[tuple[Any, Any]]:
    """C-FIND on the Modality Worklist Information Model (PS3.4 K.4.1.3).

    A malformed identifier ends the query with one response (PS3.4 C.4.1.1.4): A900 when
    its shape is not a worklist identifier, C000 when it cannot be decoded or a value is
    not valid for its VR; matching that exceeds ``dicom.query_time_limit`` of CPU ends in A700.
    """
    rt = service.runtime
    calling = event.assoc.requestor.ae_title
    if not rt.access.allowed(calling, SERVICE):
        log.warning("worklist query refused: %s is not a configured device", calling)
        yield _status(status.UNABLE_TO_PROCESS, "Calling AE title is not a configured device"), None
        return
    device = rt.access.policy(calling)
    deadline = time.thread_time() + rt.config.dicom.query_time_limit
    try:
        ident, query = read_query(event, device)
    except dataset_check.Malformed as exc:
        code = (
            status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
            if exc.kind == dataset_check.STRUCTURE
            else status.UNABLE_TO_PROCESS
        )
        yield _refused(event, code, exc.reason, exc.tag), None
        return
    except matching.QueryError as exc:
        where = str(exc).partition(":")[0]
        yield (
            _refused(event, status.UNABLE_TO_PROCESS, str(exc), logged=f"{where}: bad value"),
            None,
        )
        return
    _apply_policy(query, device, calling)
    return_keys = _strip_hidden(query.keys)
    charset = response_charset(device, _charset_key(ident.get("SpecificCharacterSet")))
    narrowing = Narrowing(**matching.narrowing_for(query))
    if device.hide_completed:
        narrowing.exclude_statuses = ("CANCELED", "COMPLETED", "DISCONTINUED")
    pending = status.PENDING_WARNING if query.unsupported else status.PENDING
    service.note_query()
    fast = FastPath.for_event(event, return_keys, pending, matching.keys_for_item)
    sent = 0
    try:
        for item in _matches(service, query, narrowing, deadline):
            if item is None:
                fast.flush()
                limit = rt.config.dicom.query_time_limit
                yield (
                    _refused(
                        event,
                        status.OUT_OF_RESOURCES,
                        f"Query exceeded {limit:g} s; narrow the query",
                    ),
                    None,
                )
                return
            if event.is_cancelled:
                fast.flush()
                yield status.CANCEL, None
                return
            if device.max_results and sent >= device.max_results:
                fast.flush()
                yield (
                    _status(
                        status.OUT_OF_RESOURCES,
                        f"More than {device.max_results} matches; narrow the query",
                    ),
                    None,
                )
                return
            use = charset if encodable(item, charset) else "ISO_IR 192"
            sent += 1
            if fast.send(item, CHARSET_VALUES[use][0]):
                continue
            fast.flush()
            rsp = matching.project(return_keys, item)
            rsp.SpecificCharacterSet = CHARSET_VALUES[use][0]
            yield pending, rsp
        fast.flush()
    finally:
        # Query audit rows are not worth an fsync before the final response.
        audit.record_now(
            rt.store, calling, "worklist-query", "worklist", f"{sent} items",
            source=event.assoc.requestor.address, durable=False,
        )  # fmt: skip
        log.info("worklist query from %s: %d items", calling, sent)


def _matches(
    service: WorklistService, query: matching.Query, narrowing: Narrowing, deadline: float
) -> Iterator[dict[str, Any] | None]:
    """The matching items; None once the thread's CPU time passes ``deadline`` (then stops)."""
    for row in service.repo.candidates(narrowing):
        if time.thread_time() > deadline:
            yield None
            return
        item = row_to_item(row)
        if matching.matches(query, item):
            yield item
