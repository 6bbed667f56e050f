"""The schedule form: new, edit and cancel a procedure step."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from appliance import catalog, devices
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.worklist.model import FINAL_STATUSES, PRIORITIES
from appliance.worklist.repo import CORRECTABLE_STATUSES, WorklistRepo
from web import clock, gettext, i18n, request_store, security, stepform

bp = Blueprint("steps", __name__, url_prefix="/steps")
SLOT_HORIZON_DAYS = 730  # the next free slot is looked for up to two years ahead


def lookups() -> stepform.Lookups:
    store = request_store()

    def station(ae: str) -> dict[str, Any] | None:
        try:
            row = devices.get(store, ae)
        except NotFound:
            return None
        return row if row["role"] == "modality" else None

    def procedure(code: str) -> catalog.Procedure | None:
        try:
            return catalog.get(store, code)
        except NotFound:
            return None

    def patient(patient_id: str) -> dict[str, Any] | None:
        rows = store.query(
            "SELECT name, birth_date, sex FROM patients WHERE patient_id = ? AND issuer = ''",
            (patient_id,),
        )
        return rows[0] if rows else None

    def accession_taken(accession: str) -> bool:
        return bool(
            store.query("SELECT 1 FROM procedures WHERE accession_number = ?", (accession,))
        )

    return stepform.Lookups(
        station=station, procedure=procedure, patient=patient, accession_taken=accession_taken
    )


def performed(step_pk: int) -> list[dict[str, Any]]:
    """The MPPS instances a modality reported for this step (PS3.4 F.7), oldest first."""
    return request_store().query(
        """SELECT m.status, m.calling_ae, m.station_ae, m.modality, m.created_at, m.updated_at
           FROM mpps m JOIN mpps_steps ms ON ms.mpps_uid = m.sop_instance_uid
           WHERE ms.step_pk = ? ORDER BY m.created_at""",
        (step_pk,),
    )


def sentences(errors: dict[str, str]) -> dict[str, str]:
    """Each field's reason as a sentence naming the field, in the user's language."""
    lang = g.get("lang", i18n.DEFAULT)
    return {
        name: i18n.sentence(stepform.LABELS.get(name, ()), reason, lang)
        for name, reason in errors.items()
    }


def _render(
    values: dict[str, str],
    errors: dict[str, str],
    step: dict | None = None,
    slot_date: str = "",
    correcting: bool = False,
) -> Any:
    store = request_store()
    known = None
    if step is None and not values.get("next_accession"):
        # A new step, shown again with its errors: still say which number it will get.
        values = {
            **values,
            "next_accession": WorklistRepo(store, clock.clinic().today).next_accession_number(),
        }
    if "patient_id" in errors and values.get("patient_id"):
        known = lookups().patient(values["patient_id"])
    return render_template(
        "step_form.html",
        values=values,
        errors=sentences(errors),
        step=step,
        stations=devices.rows(store, role="modality"),
        procedures=catalog.all_rows(store),
        priorities=PRIORITIES,
        name_parts=stepform.NAME_PARTS,
        known_patient=known,
        performed=performed(step["step_pk"]) if step else [],
        slot_date=slot_date,
        correcting=correcting,
        read_only=bool(step and step["status"] in FINAL_STATUSES and not correcting),
        correctable=bool(step and step["status"] in CORRECTABLE_STATUSES),
    ), (400 if errors else 200)


@bp.get("/next-slot")
def next_slot() -> Any:
    """The station's next free slot: from now, or from the morning of a later ``date``."""
    station = request.args.get("station", "").strip()
    if lookups().station(station) is None:
        return jsonify(error="validation", field="station", message="is not a known station"), 400
    now = clock.clinic().now().replace(tzinfo=None)
    after = now
    raw = request.args.get("date", "").strip()
    if raw:
        try:
            day = datetime.strptime(raw, "%Y-%m-%d")
        except ValueError:
            return jsonify(error="validation", field="date", message="is not a date"), 400
        if day > now + timedelta(days=SLOT_HORIZON_DAYS):
            message = "is more than two years ahead"
            return jsonify(error="validation", field="date", message=message), 400
        after = max(now, day)
    last = after + timedelta(days=stepform.SLOT_SEARCH_DAYS + 1)
    starts = WorklistRepo(request_store(), clock.clinic().today).station_starts(
        station,
        (after - timedelta(minutes=stepform.SLOT_MINUTES)).strftime("%Y%m%d%H%M%S"),
        last.strftime("%Y%m%d%H%M%S"),
    )
    slot = stepform.next_free_slot([datetime.strptime(s, "%Y%m%d%H%M%S") for s in starts], after)
    if slot is None:
        return jsonify(station=station, start=None)
    return jsonify(station=station, start=slot.strftime("%Y-%m-%dT%H:%M"))


def _prefill_patient(values: dict[str, str], patient_id: str) -> None:
    rows = request_store().query(
        "SELECT * FROM patients WHERE patient_id = ? ORDER BY pk LIMIT 1", (patient_id,)
    )
    if rows:
        p = rows[0]
        values.update(stepform.split_name(p["name"]))
        values["patient_id"] = p["patient_id"]
        values["sex"] = p["sex"]
        b = p["birth_date"]
        values["birth_date"] = f"{b[:4]}-{b[4:6]}-{b[6:8]}" if len(b) == 8 else ""


@bp.route("/new", methods=["GET", "POST"])
def new() -> Any:
    repo = WorklistRepo(request_store(), clock.clinic().today)
    if request.method == "GET":
        # Numbered when saved: the form only shows which number that will be (_render).
        values = {"priority": "ROUTINE"}
        if request.args.get("patient_id"):
            _prefill_patient(values, request.args["patient_id"])
        # Start stays empty: the form offers the station's next free slot (next_slot).
        return _render(values, {}, slot_date=request.args.get("date", ""))
    values = {k: request.form.get(k, "") for k in stepform.TEXT_FIELDS}
    parsed = stepform.parse(request.form, lookups(), today=clock.clinic().today())
    if parsed.request is None:
        return _render(values, parsed.errors)
    try:
        pk = repo.schedule(parsed.request, actor=security.actor(), source=security.source())
    except ValidationError as exc:
        return _render(values, stepform.domain_error(exc))
    flash(gettext("Scheduled."))
    return redirect(
        url_for("board.index", date=parsed.request.start.strftime("%Y-%m-%d"), _anchor=f"step-{pk}")
    )


@bp.route("/<int:pk>", methods=["GET", "POST"])
def edit(pk: int) -> Any:
    repo = WorklistRepo(request_store(), clock.clinic().today)
    try:
        step = repo.get(pk)
    except NotFound:
        abort(404)
    if request.method == "GET":
        return _render(stepform.values_of(step), {}, step)
    values = {k: request.form.get(k, "") for k in stepform.TEXT_FIELDS}
    parsed = stepform.parse(
        request.form,
        lookups(),
        today=clock.clinic().today(),
        new=False,
        current_patient_id=step["patient_id"],
    )
    if parsed.request is None:
        return _render(values, parsed.errors, step)
    try:
        repo.update(pk, parsed.request, actor=security.actor(), source=security.source())
    except ValidationError as exc:
        return _render(values, stepform.domain_error(exc), step)
    except Conflict as exc:
        return _render(values, {"form": str(exc)}, step)
    flash(gettext("Saved."))
    return redirect(url_for("board.index", date=parsed.request.start.strftime("%Y-%m-%d")))


@bp.route("/<int:pk>/correct", methods=["GET", "POST"])
def correct(pk: int) -> Any:
    """A performed step's record, corrected: the form again, with a reason (audited)."""
    repo = WorklistRepo(request_store(), clock.clinic().today)
    try:
        step = repo.get(pk)
    except NotFound:
        abort(404)
    if step["status"] not in CORRECTABLE_STATUSES:
        return redirect(url_for("steps.edit", pk=pk))
    if request.method == "GET":
        return _render(stepform.values_of(step), {}, step, correcting=True)
    values = {k: request.form.get(k, "") for k in stepform.TEXT_FIELDS}
    values["correction_reason"] = request.form.get("correction_reason", "")
    parsed = stepform.parse(
        request.form,
        lookups(),
        today=clock.clinic().today(),
        new=False,
        current_patient_id=step["patient_id"],
    )
    errors = dict(parsed.errors)
    reason = values["correction_reason"].strip()
    if not reason:
        errors["correction_reason"] = "is required"
    elif len(reason) > 200:
        errors["correction_reason"] = "is longer than 200 characters"
    if errors or parsed.request is None:
        return _render(values, errors, step, correcting=True)
    before = stepform.values_of(step)
    changed = tuple(k for k in stepform.TEXT_FIELDS if k in before and before[k] != values[k])
    try:
        repo.correct(
            pk,
            parsed.request,
            reason,
            actor=security.actor(),
            source=security.source(),
            changed=changed,
        )
    except ValidationError as exc:
        return _render(values, stepform.domain_error(exc), step, correcting=True)
    except Conflict as exc:
        return _render(values, {"form": str(exc)}, step, correcting=True)
    flash(gettext("Corrected; the reason is in the audit log."))
    return redirect(url_for("steps.edit", pk=pk))


@bp.post("/<int:pk>/cancel")
def cancel(pk: int) -> Any:
    repo = WorklistRepo(request_store(), clock.clinic().today)
    try:
        step = repo.get(pk)
        repo.cancel(
            pk,
            actor=security.actor(),
            reason=request.form.get("reason", "")[:200],
            source=security.source(),
        )
    except NotFound:
        abort(404)
    except Conflict as exc:
        return _render(stepform.values_of(step), {"cancel": str(exc)}, step)
    flash(gettext("Cancelled."))
    return redirect(
        url_for(
            "board.index",
            date=f"{step['start_date'][:4]}-{step['start_date'][4:6]}-{step['start_date'][6:]}",
        )
    )
