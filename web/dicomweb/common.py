"""What the DICOMweb resources share: errors naming the field, content negotiation
(PS3.18 8.7), path UIDs, the base URL, DICOM JSON responses (PS3.18 F.2)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import Response, current_app, request
from pydicom.dataset import Dataset
from werkzeug.http import parse_options_header

from appliance.qr import qido

DICOM_JSON = "application/dicom+json"
JSON_TYPES = frozenset((DICOM_JSON, "application/json", "application/*", "*/*"))


class Refused(Exception):
    """A request answered with an HTTP error naming the field it is about."""

    def __init__(self, code: int, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


def problem(code: int, field: str, message: str) -> Response:
    body = {"error": _NAMES.get(code, "error"), "field": field, "message": message}
    resp = Response(json.dumps(body), code, mimetype="application/json")
    return resp


_NAMES = {
    400: "bad_request",
    404: "not_found",
    406: "not_acceptable",
    409: "conflict",
    413: "request_entity_too_large",
    415: "unsupported_media_type",
}


def settings() -> Any:
    return current_app.extensions["appliance"].config.dicomweb


def accepted() -> list[tuple[str, dict[str, str]]]:
    """The Accept header's media types with their parameters, in order (empty: any)."""
    header = request.headers.get("Accept", "")
    out = []
    for item in _split(header):
        media, params = parse_options_header(item)
        if media:
            out.append((media.lower(), {k.lower(): v for k, v in params.items()}))
    return out


def _split(header: str) -> Iterable[str]:
    """Accept split at commas outside quotes."""
    part: list[str] = []
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            yield "".join(part)
            part = []
        else:
            part.append(ch)
    if part:
        yield "".join(part)


def want_json() -> None:
    """406 unless the client accepts DICOM JSON (PS3.18 8.7.3.1)."""
    types = accepted()
    if types and not any(media in JSON_TYPES for media, _ in types):
        raise Refused(406, "Accept", f"only {DICOM_JSON} is offered for this resource")


def want_multipart(part_type: str) -> str | None:
    """The transfer syntax asked for a multipart/related response of ``part_type``
    (None or ``*`` for any), or 406 when no Accept entry allows one."""
    types = accepted()
    if not types:
        return None
    for media, params in types:
        if media in ("*/*", "multipart/*"):
            return params.get("transfer-syntax")
        if media == "multipart/related" and params.get("type", part_type).lower() in (
            part_type,
            part_type.split("/")[0] + "/*",
            "*/*",
        ):
            return params.get("transfer-syntax")
    raise Refused(406, "Accept", f'only multipart/related; type="{part_type}" is offered')


def uid(value: str, what: str) -> str:
    try:
        return qido.check_uid(value, what)
    except qido.QidoError as exc:
        raise Refused(400, exc.key, exc.message) from exc


def base_url() -> str:
    return request.url_root.rstrip("/") + "/dicomweb"


def study_url(study: str) -> str:
    return f"{base_url()}/studies/{study}"


def in_tag_order(item: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON object with its attributes (and those of its sequences' items) in
    tag order, as PS3.18 F.2 asks."""
    out = {}
    for tag in sorted(item):
        attr = item[tag]
        if attr.get("vr") == "SQ" and "Value" in attr:
            attr = {**attr, "Value": [in_tag_order(v) for v in attr["Value"]]}
        out[tag] = attr
    return out


def dicom_json(datasets: Iterable[Dataset | dict[str, Any]], code: int = 200) -> Response:
    body = [in_tag_order(ds if isinstance(ds, dict) else ds.to_json_dict()) for ds in datasets]
    return Response(json.dumps(body, ensure_ascii=False), code, mimetype=DICOM_JSON)
