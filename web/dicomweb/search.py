"""QIDO-RS (PS3.18 10.6): studies, series and instances held, searched with the Q/R
SCP's matching over the index (``qr.qido`` parses, ``qr.scp.Request`` narrows)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, request
from pydicom.dataset import Dataset

from appliance.qr import qido, repo
from appliance.qr.scp import Request
from appliance.worklist import matching
from web import request_store, runtime
from web.dicomweb import common

bp = Blueprint("search", __name__)


@bp.get("/studies")
def studies() -> Response:
    return run("STUDY", {})


@bp.get("/studies/<study>/series")
def study_series(study: str) -> Response:
    return run("SERIES", {"StudyInstanceUID": common.uid(study, "StudyInstanceUID")})


@bp.get("/studies/<study>/series/<series>/instances")
def series_instances(study: str, series: str) -> Response:
    return run(
        "IMAGE",
        {
            "StudyInstanceUID": common.uid(study, "StudyInstanceUID"),
            "SeriesInstanceUID": common.uid(series, "SeriesInstanceUID"),
        },
    )


@bp.get("/studies/<study>/instances")
def study_instances(study: str) -> Response:
    return run("IMAGE", {"StudyInstanceUID": common.uid(study, "StudyInstanceUID")})


@bp.get("/series")
def all_series() -> Response:
    return run("SERIES", {})


@bp.get("/instances")
def all_instances() -> Response:
    return run("IMAGE", {})


def run(level: str, fixed: dict[str, str]) -> Response:
    """Search ``level``: 200 with the matches as DICOM JSON (an empty array for none),
    400 naming the parameter that cannot be served, a Warning for what was ignored."""
    common.want_json()
    settings = common.settings()
    try:
        search = qido.parse(request.args.items(multi=True), level, fixed, settings.max_results)
    except qido.QidoError as exc:
        raise common.Refused(400, exc.key, exc.message) from exc
    req = Request(Dataset(), level, matching.Query(search.keys))
    deadline = time.thread_time() + runtime().config.dicom.query_time_limit
    # The client's own limit needs no count of what lies beyond it: stop at the page's end.
    wanted = None if search.capped else search.offset + search.limit
    matched: list[dict[str, str]] = []
    try:
        for entity in repo.entities(
            request_store(), level, req.narrowing(), req.match, deadline, wanted, search.returned
        ):
            matched.append(entity)
    except repo.DeadlinePassed as exc:
        limit = runtime().config.dicom.query_time_limit
        raise common.Refused(503, "query", f"the search exceeded {limit:g} s") from exc
    page = matched[search.offset : search.offset + search.limit]
    resp = common.dicom_json(_result(e, search) for e in page)
    texts = search.warnings()
    remaining = len(matched) - search.offset - len(page)
    if remaining > 0 and search.capped:
        texts.append(f"There are {remaining} additional results that can be requested")
    for text in texts:
        resp.headers.add("Warning", f'299 {request.host} "{text}"')
    return resp


def _result(entity: dict[str, str], search: qido.Search) -> dict[str, Any]:
    out = qido.entity_json(entity, search.returned)
    url = common.study_url(entity["StudyInstanceUID"])
    if search.level in ("SERIES", "IMAGE"):
        url += f"/series/{entity['SeriesInstanceUID']}"
    if search.level == "IMAGE":
        url += f"/instances/{entity['SOPInstanceUID']}"
    out["00081190"] = {"vr": "UR", "Value": [url]}  # RetrieveURL
    out["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}  # InstanceAvailability
    return out
