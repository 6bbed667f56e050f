"""The worklist and MPPS over REST (PS3.18 chapters 14 and 15) on the tables of the DIMSE
services: MWL-RS search ``/modality-scheduled-procedure-steps`` matched with the
worklist's rules (``worklist.matching``, the items ``findscu -W`` gets), and the MPPS
resource ``/modality-performed-procedure-steps/{mppsUID}`` created, updated and read
through the MPPS SCP's ``MppsRecorder`` (the linked steps follow, audited)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, request
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from appliance import status
from appliance.qr import qido
from appliance.worklist import matching
from appliance.worklist.model import TOP_KEYS
from appliance.worklist.mpps import MppsError, MppsRecorder
from appliance.worklist.repo import Narrowing, WorklistRepo, row_to_item
from web import clock, request_store, runtime, security
from web.dicomweb import common, multipart

bp = Blueprint("worklist", __name__)

SPS = "ScheduledProcedureStepSequence"
HIDDEN = ("CANCELED", "COMPLETED", "DISCONTINUED")  # as a device with hide_completed (default)


# -- MWL-RS (chapter 14) ------------------------------------------------------------------


@bp.get("/modality-scheduled-procedure-steps")
def search() -> Response:
    """The scheduled steps that match (PS3.18 14): 200 with DICOM JSON items, an empty
    array for none; 400 naming a parameter that is no attribute or has a bad value."""
    common.want_json()
    settings = common.settings()
    keys, limit, offset, capped, ignored, fuzzy = _parse(
        request.args.items(multi=True), settings.max_results
    )
    query = matching.Query(keys)
    repo = WorklistRepo(request_store(), clock.clinic().today)
    narrowing = Narrowing(**matching.narrowing_for(query))
    narrowing.exclude_statuses = HIDDEN
    deadline = time.thread_time() + runtime().config.dicom.query_time_limit
    found: list[dict[str, Any]] = []
    for row in repo.candidates(narrowing):
        if time.thread_time() > deadline:
            raise common.Refused(503, "query", "the search took too long; narrow it")
        item = row_to_item(row)
        if matching.matches(query, item):
            found.append(item)
    page = found[offset : offset + limit]
    resp = common.dicom_json(matching.item_dataset(item) for item in page)
    texts = []
    if fuzzy:
        texts.append(
            "The fuzzymatching parameter is not supported. Only literal matching has been performed."
        )
    if ignored:
        texts.append(
            "The following attributes are not supported for matching and were ignored: "
            + ", ".join(ignored)
        )
    remaining = len(found) - offset - len(page)
    if remaining > 0 and capped:
        texts.append(f"There are {remaining} additional results that can be requested")
    for text in texts:
        resp.headers.add("Warning", f'299 {request.host} "{text}"')
    return resp


def _parse(
    args: Iterable[tuple[str, str]], max_results: int
) -> tuple[list[matching.Key], int, int, bool, list[str], bool]:
    """Matching keys (top level and in the Scheduled Procedure Step Sequence), limit,
    offset, whether the limit is the service's, the attributes ignored, fuzzymatching."""
    top: dict[str, matching.Key] = {}
    sps: dict[str, matching.Key] = {}
    limit, offset, capped, ignored, fuzzy = max_results, 0, True, [], False
    for name, value in args:
        if name == "includefield":
            for item in (v.strip() for v in value.split(",") if v.strip() and v != "all"):
                for part in item.split("."):
                    _keyword(part, item)  # every item is returned whole; names are checked
            continue
        if name in ("limit", "offset"):
            if not value.isdigit() or len(value) > 9:
                raise common.Refused(400, name, f"{value[:20]!r} is not a non-negative integer")
            if name == "offset":
                offset = int(value)
            else:
                limit, capped = min(int(value), max_results), int(value) > max_results
            continue
        if name == "fuzzymatching":
            if value not in ("true", "false"):
                raise common.Refused(400, name, f"{value[:20]!r} is not true or false")
            fuzzy = value == "true"
            continue
        path = name.split(".")
        if len(path) > 2 or (len(path) == 2 and _keyword(path[0], name) != SPS):
            ignored.append(name)  # deeper paths (code sequences) are not matched
            continue
        keyword = _keyword(path[-1], name)
        into, supported = (sps, matching.SUPPORTED[SPS]) if len(path) == 2 else (top, TOP_KEYS)
        if keyword not in supported or keyword in ("SpecificCharacterSet", SPS):
            ignored.append(name)
            continue
        into[keyword] = _key(keyword, value, name)
    keys = list(top.values())
    if sps:
        keys.append(matching.Key(SPS, "SQ", items=list(sps.values()), tag=0x00400100))
    return keys, limit, offset, capped, ignored, fuzzy


def _keyword(part: str, name: str) -> str:
    try:
        return qido.keyword_of(part)
    except qido.QidoError as exc:
        raise common.Refused(400, name, exc.message) from exc


def _key(keyword: str, value: str, name: str) -> matching.Key:
    tag = int(tag_for_keyword(keyword) or 0)
    vr = str(dictionary_VR(tag))
    if vr == "UI":
        value = value.replace(",", "\\")
    key = matching.Key(keyword, vr, value, tag=tag)
    try:
        matching.check_syntax(key)
    except matching.QueryError as exc:
        raise common.Refused(400, name, str(exc).partition(": ")[2] or str(exc)) from exc
    return key


# -- MPPS (chapter 15) ---------------------------------------------------------------------

MPPS = "/modality-performed-procedure-steps/<uid>"
# MPPS statuses (PS3.4 F.7.2) as the HTTP codes of PS3.18 tables 15.4.3-1 and 15.5.3-1.
HTTP_OF = {
    status.DUPLICATE_SOP_INSTANCE: 409,
    status.NO_SUCH_SOP_INSTANCE: 404,
    status.PROCESSING_FAILURE: 409,
}


def _recorder() -> MppsRecorder:
    store = request_store()
    return MppsRecorder(store, WorklistRepo(store))


def _payload() -> Dataset:
    """The request's one DICOM JSON object (or an array holding one), as a Dataset."""
    media, _ = multipart.content_type(request.headers.get("Content-Type", ""))
    if media not in (common.DICOM_JSON, "application/json"):
        raise common.Refused(415, "Content-Type", f"must be {common.DICOM_JSON}")
    try:
        data = json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise common.Refused(400, "body", f"is not JSON ({exc})") from exc
    except RecursionError as exc:
        raise common.Refused(400, "body", "is nested too deeply") from exc
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or not data:
        raise common.Refused(400, "body", "must be one DICOM JSON object")
    try:
        return Dataset.from_json(data)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise common.Refused(400, "body", f"is not DICOM JSON (PS3.18 F.2): {exc}") from exc


def _refused(err: MppsError) -> common.Refused:
    field = err.comment.split(" ")[0] if err.comment else "body"
    return common.Refused(HTTP_OF.get(err.code, 400), field, err.comment)


def _source() -> str:
    return f"{security.source()} ({security.actor()})"


@bp.post(MPPS)
def mpps_create_or_update(uid: str) -> Response:
    """Create (PS3.18 15.4: 201, 409 when it exists) or, with ``?update``, update
    (15.5: 200, 404 unknown, 409 when final or the change is not allowed)."""
    uid = common.uid(uid, "mppsUID")
    if "update" in request.args:
        return _update(uid)
    common.want_json()
    ds = _payload()
    try:
        _recorder().create(uid, ds, common.settings().source_ae, _source())
    except MppsError as err:
        raise _refused(err) from err
    resp = Response(status=201)
    resp.headers["Location"] = f"{common.base_url()}/modality-performed-procedure-steps/{uid}"
    return resp


@bp.post(f"{MPPS}/update")
def mpps_update(uid: str) -> Response:
    """The update as PS3.18 example B.38 writes it (a path segment, not a parameter)."""
    return _update(common.uid(uid, "mppsUID"))


def _update(uid: str) -> Response:
    ds = _payload()
    try:
        _recorder().update(uid, ds, common.settings().source_ae, _source())
    except MppsError as err:
        raise _refused(err) from err
    return Response(status=200)


@bp.get(MPPS)
def mpps_retrieve(uid: str) -> Response:
    """The MPPS's attributes (PS3.18 15.3) as DICOM JSON; 404 when unknown."""
    common.want_json()
    row = _recorder().get(common.uid(uid, "mppsUID"))
    if row is None:
        raise common.Refused(404, "mppsUID", "no such Modality Performed Procedure Step")
    return common.dicom_json([json.loads(row["attributes"])])
