"""JSON API under /api/v1/: procedures (scheduled steps), devices, destinations. See docs/api.md.

Authentication: ``Authorization: Bearer <token>`` (tokens are made on the Users page)
or the browser session (unsafe methods then need the ``X-CSRF-Token`` header). Bad
input answers 400 with the field named, as the HTML form does.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, g, jsonify, request

from appliance import destinations, devices
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.worklist.repo import WorklistRepo
from web import board, clock, request_store, runtime, security, stepform
from web.admin import device_from
from web.destinations import destination_from
from web.steps import lookups

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def invalid(errors: dict[str, str]) -> Any:
    field, message = next(iter(errors.items()))
    return jsonify(error="validation", field=field, message=message, errors=errors), 400


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="the request body must be a JSON object")
    return data


def step_json(row: dict[str, Any]) -> dict[str, Any]:
    """One scheduled step as the API shows it."""
    code = json.loads(row["procedure_code"]) if row["procedure_code"] else None
    start = datetime.strptime(row["start_dt"], "%Y%m%d%H%M%S")
    return {
        "id": row["step_pk"],
        "status": row["status"],
        "patient": {
            "id": row["patient_id"],
            "name": row["patient_name"],
            "birth_date": row["birth_date"],
            "sex": row["sex"],
        },
        "accession_number": row["accession_number"],
        "requested_procedure_id": row["requested_procedure_id"],
        "study_instance_uid": row["study_instance_uid"],
        "procedure": {
            "code": code.get("CodeValue") if code else "",
            "scheme": code.get("CodingSchemeDesignator") if code else "",
            "meaning": row["procedure_description"],
        },
        "station_ae": row["station_ae"],
        "modality": row["modality"],
        "start": start.isoformat(),
        "sps_id": row["sps_id"],
        "sps_description": row["sps_description"],
        "priority": row["priority"],
        "referring_physician": row["referring_physician"],
        "requesting_physician": row["requesting_physician"],
        "performing_physician": row["performing_physician"],
        "updated_at": row["updated_at"],
    }


def device_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in devices.FIELDS}
    out["hide_completed"] = bool(out["hide_completed"])
    out["managed_by"] = row["managed_by"]
    return out


def _admin() -> None:
    if not g.user.is_admin:
        abort(403, description="admin role required")


# -- procedures -------------------------------------------------------------------


@bp.get("/procedures")
def procedures() -> Any:
    repo = WorklistRepo(request_store())
    q = request.args.get("q", "").strip()
    if q:
        rows = repo.search(q)
    else:
        raw_day = request.args.get("date")
        if raw_day:
            try:
                datetime.strptime(raw_day, "%Y-%m-%d")
            except ValueError:
                return invalid({"date": "is not a date YYYY-MM-DD"})
        rows = repo.list_day(board.parse_day(raw_day), request.args.get("station") or None)
    return jsonify(procedures=[step_json(r) for r in rows])


@bp.post("/procedures")
def procedure_create() -> Any:
    parsed = stepform.parse(body(), lookups(), today=clock.clinic().today())
    if parsed.request is None:
        return invalid(parsed.errors)
    repo = WorklistRepo(request_store())
    try:
        pk = repo.schedule(parsed.request, actor=security.actor(), source=security.source())
    except ValidationError as exc:
        return invalid(stepform.domain_error(exc))
    return jsonify(step_json(repo.get(pk))), 201


@bp.get("/procedures/changes", endpoint="changes")
def procedure_changes() -> Any:
    return board.changes()


@bp.get("/procedures/<int:pk>")
def procedure_get(pk: int) -> Any:
    try:
        return jsonify(step_json(WorklistRepo(request_store()).get(pk)))
    except NotFound:
        abort(404, description=f"no procedure {pk}")


@bp.put("/procedures/<int:pk>")
def procedure_update(pk: int) -> Any:
    repo = WorklistRepo(request_store())
    data = body()
    try:
        current = repo.get(pk)
    except NotFound:
        abort(404, description=f"no procedure {pk}")
    parsed = stepform.parse(
        data,
        lookups(),
        today=clock.clinic().today(),
        new=False,
        current_patient_id=current["patient_id"],
    )
    if parsed.request is None:
        return invalid(parsed.errors)
    try:
        repo.update(pk, parsed.request, actor=security.actor(), source=security.source())
    except ValidationError as exc:
        return invalid(stepform.domain_error(exc))
    except Conflict as exc:
        return jsonify(error="conflict", message=str(exc)), 409
    return jsonify(step_json(repo.get(pk)))


@bp.post("/procedures/<int:pk>/cancel")
def procedure_cancel(pk: int) -> Any:
    repo = WorklistRepo(request_store())
    data = request.get_json(silent=True) or {}
    reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
    try:
        repo.cancel(pk, actor=security.actor(), reason=reason[:200], source=security.source())
    except NotFound:
        abort(404, description=f"no procedure {pk}")
    except Conflict as exc:
        return jsonify(error="conflict", message=str(exc)), 409
    return jsonify(step_json(repo.get(pk)))


# -- devices ----------------------------------------------------------------------


@bp.get("/devices")
def devices_list() -> Any:
    return jsonify(devices=[device_json(r) for r in devices.rows(request_store())])


@bp.get("/devices/<ae_title>")
def device_get(ae_title: str) -> Any:
    try:
        return jsonify(device_json(devices.get(request_store(), ae_title)))
    except NotFound:
        abort(404, description=f"no device {ae_title}")


def _device_write(original: str | None) -> Any:
    _admin()
    store = request_store()
    device, errors = device_from(body())
    if device is None:
        return invalid(errors)
    try:
        devices.save(store, device, original, security.actor(), security.source())
    except ValidationError as exc:
        return invalid({exc.field: exc.reason})
    except NotFound:
        abort(404, description=f"no device {original}")
    devices.publish(store, runtime().access)
    return jsonify(device_json(devices.get(store, device.ae_title))), (
        201 if original is None else 200
    )


@bp.post("/devices")
def device_create() -> Any:
    return _device_write(None)


@bp.put("/devices/<ae_title>")
def device_update(ae_title: str) -> Any:
    return _device_write(ae_title)


@bp.delete("/devices/<ae_title>")
def device_delete(ae_title: str) -> Any:
    _admin()
    store = request_store()
    try:
        devices.delete(store, ae_title, security.actor(), security.source())
    except NotFound:
        abort(404, description=f"no device {ae_title}")
    except ValidationError as exc:
        return invalid({exc.field: exc.reason})
    devices.publish(store, runtime().access)
    return "", 204


# -- destinations (admins only) -----------------------------------------------------


def destination_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in destinations.FIELDS}
    out["managed_by"] = row["managed_by"]
    return out


@bp.get("/destinations")
def destinations_list() -> Any:
    _admin()
    return jsonify(destinations=[destination_json(r) for r in destinations.rows(request_store())])


@bp.get("/destinations/<name>")
def destination_get(name: str) -> Any:
    _admin()
    try:
        return jsonify(destination_json(destinations.get(request_store(), name)))
    except NotFound:
        abort(404, description=f"no destination {name}")


def _destination_write(original: str | None) -> Any:
    _admin()
    store = request_store()
    dest, errors = destination_from(body())
    if dest is None:
        return invalid(errors)
    try:
        destinations.save(store, dest, original, security.actor(), security.source())
    except ValidationError as exc:
        return invalid({exc.field: exc.reason})
    except NotFound:
        abort(404, description=f"no destination {original}")
    destinations.publish(store, runtime().destinations)
    return jsonify(destination_json(destinations.get(store, dest.name))), (
        201 if original is None else 200
    )


@bp.post("/destinations")
def destination_create() -> Any:
    return _destination_write(None)


@bp.put("/destinations/<name>")
def destination_update(name: str) -> Any:
    return _destination_write(name)


@bp.delete("/destinations/<name>")
def destination_delete(name: str) -> Any:
    _admin()
    store = request_store()
    try:
        destinations.delete(store, name, security.actor(), security.source())
    except NotFound:
        abort(404, description=f"no destination {name}")
    except ValidationError as exc:
        return invalid({exc.field: exc.reason})
    destinations.publish(store, runtime().destinations)
    return "", 204
