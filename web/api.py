"""JSON API under /api/v1/: procedures (scheduled steps), devices, destinations. See docs/api.md.

Authentication: ``Authorization: Bearer <token>`` (tokens are made on the Users page)
or the browser session (unsafe methods then need the ``X-CSRF-Token`` header). Bad
input answers 400 with the field named, as the HTML form does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, g, jsonify, request

from appliance import destinations, devices
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.worklist.repo import WorklistRepo
from web import board, clock, request_store, security, stepform
from web.entries import DESTINATIONS, DEVICES, PRINTERS, Managed
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
    repo = WorklistRepo(request_store(), clock.clinic().today)
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
    repo = WorklistRepo(request_store(), clock.clinic().today)
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
        return jsonify(step_json(WorklistRepo(request_store(), clock.clinic().today).get(pk)))
    except NotFound:
        abort(404, description=f"no procedure {pk}")


@bp.put("/procedures/<int:pk>")
def procedure_update(pk: int) -> Any:
    repo = WorklistRepo(request_store(), clock.clinic().today)
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
    repo = WorklistRepo(request_store(), clock.clinic().today)
    data = request.get_json(silent=True) or {}
    reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
    try:
        repo.cancel(pk, actor=security.actor(), reason=reason[:200], source=security.source())
    except NotFound:
        abort(404, description=f"no procedure {pk}")
    except Conflict as exc:
        return jsonify(error="conflict", message=str(exc)), 409
    return jsonify(step_json(repo.get(pk)))


# -- devices, destinations and printers: one managed-table API ---------------------------------


@dataclass(frozen=True)
class ManagedApi:
    """A managed list (``web.entries.Managed``) as JSON endpoints: list, get, create,
    update and delete."""

    table: Managed
    to_json: Callable[[dict[str, Any]], dict[str, Any]]
    admin_reads: bool  # reading needs the admin role too

    def routes(self, blueprint: Blueprint) -> None:
        """``GET/POST /PLURAL`` and ``GET/PUT/DELETE /PLURAL/<key>`` on the blueprint."""
        noun, plural, add = self.table.noun, self.table.plural, blueprint.add_url_rule
        add(f"/{plural}", f"{plural}_list", self.list_all, methods=["GET"])
        add(f"/{plural}/<key>", f"{noun}_get", self.get_one, methods=["GET"])
        add(f"/{plural}", f"{noun}_create", self.create, methods=["POST"])
        add(f"/{plural}/<key>", f"{noun}_update", self.update, methods=["PUT"])
        add(f"/{plural}/<key>", f"{noun}_delete", self.remove, methods=["DELETE"])

    def list_all(self) -> Any:
        if self.admin_reads:
            _admin()
        rows = self.table.rows(request_store())
        return jsonify({self.table.plural: [self.to_json(r) for r in rows]})

    def get_one(self, key: str) -> Any:
        if self.admin_reads:
            _admin()
        try:
            return jsonify(self.to_json(self.table.get(request_store(), key)))
        except NotFound:
            abort(404, description=f"no {self.table.noun} {key}")

    def create(self) -> Any:
        return self._write(None)

    def update(self, key: str) -> Any:
        return self._write(key)

    def _write(self, original: str | None) -> Any:
        _admin()
        try:
            entry, errors = self.table.write(body(), original)
        except NotFound:
            abort(404, description=f"no {self.table.noun} {original}")
        if entry is None:
            return invalid(errors)
        saved = self.to_json(self.table.get(request_store(), self.table.key_of(entry)))
        return jsonify(saved), (201 if original is None else 200)

    def remove(self, key: str) -> Any:
        _admin()
        try:
            self.table.remove(key)
        except NotFound:
            abort(404, description=f"no {self.table.noun} {key}")
        except ValidationError as exc:
            return invalid({exc.field: exc.reason})
        return "", 204


def destination_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in destinations.FIELDS}
    out["managed_by"] = row["managed_by"]
    return out


ManagedApi(DEVICES, device_json, admin_reads=False).routes(bp)
ManagedApi(DESTINATIONS, destination_json, admin_reads=True).routes(bp)
ManagedApi(
    PRINTERS, lambda row: {k: row[k] for k in ("name", "uri", "managed_by")}, admin_reads=True
).routes(bp)
