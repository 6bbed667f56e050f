"""Admin pages: devices, users and API tokens, the procedure catalog, the audit log, backup."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from appliance import accounts, audit, backup, catalog, devices
from appliance.config import CHARSETS, DEVICE_ROLES, STATION_FILTERS, DeviceSettings
from appliance.dicom import echo as dicom_echo
from appliance.errors import Conflict, NotFound, ValidationError
from web import gettext, paging, request_store, runtime, security
from web.prints import refuse

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _admins_only() -> None:
    if g.user is None or not g.user.is_admin:
        abort(403)


# -- devices -------------------------------------------------------------------


def device_from(data: Any) -> tuple[DeviceSettings | None, dict[str, str]]:
    """A DeviceSettings from form or JSON data; errors name the field."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in (
        "ae_title",
        "host",
        "role",
        "description",
        "modality",
        "station_filter",
        "character_set",
        "tls",
        "tls_fingerprint",
    ):
        values[name] = str(data.get(name, "") or "").strip()
    values["tls"] = values["tls"] or "optional"
    values["modality"] = values["modality"].upper()
    values["role"] = values["role"] or "modality"
    values["station_filter"] = values["station_filter"] or "none"
    for name in ("port", "max_results"):
        raw = data.get(name, 0)
        raw = 0 if raw in ("", None) else raw
        try:
            if isinstance(raw, bool):
                raise ValueError
            values[name] = int(raw)
        except (TypeError, ValueError):
            errors[name] = "is not a whole number"
            values[name] = 0
    hide = data.get("hide_completed", False)
    values["hide_completed"] = hide in (True, "1", "on", "true", "yes")
    if len(values["description"]) > 64:
        errors["description"] = "is longer than 64 characters"
    if errors:
        return None, errors
    try:
        return devices.validate(DeviceSettings(**values)), {}
    except ValidationError as exc:
        return None, {exc.field: exc.reason}


def _device_form(values: dict[str, Any], errors: dict[str, str], original: str | None) -> Any:
    return render_template(
        "admin/device_form.html",
        values=values,
        errors=errors,
        original=original,
        roles=DEVICE_ROLES,
        filters=STATION_FILTERS,
        charsets=CHARSETS,
    ), (400 if errors else 200)


@bp.get("/devices", endpoint="devices")
def devices_list() -> Any:
    return render_template("admin/devices.html", devices=devices.rows(request_store()))


@bp.route("/devices/new", methods=["GET", "POST"])
def device_new() -> Any:
    return _device_save(None)


@bp.route("/devices/<ae_title>", methods=["GET", "POST"])
def device_edit(ae_title: str) -> Any:
    return _device_save(ae_title)


def _device_save(original: str | None) -> Any:
    store = request_store()
    if request.method == "GET":
        if original is None:
            return _device_form({"role": "modality", "hide_completed": True}, {}, None)
        try:
            return _device_form(devices.get(store, original), {}, original)
        except NotFound:
            abort(404)
    values: dict[str, Any] = dict(request.form)
    values["hide_completed"] = "hide_completed" in request.form
    device, errors = device_from(request.form)
    if device is not None:
        try:
            devices.save(store, device, original, security.actor(), security.source())
        except ValidationError as exc:
            errors = {exc.field: exc.reason}
        except NotFound:
            abort(404)
    if errors:
        return _device_form(values, errors, original)
    devices.publish(store, runtime().access)
    flash(gettext("Saved."))
    return redirect(url_for("admin.devices"))


@bp.post("/devices/<ae_title>/delete")
def device_delete(ae_title: str) -> Any:
    store = request_store()
    try:
        devices.delete(store, ae_title, security.actor(), security.source())
    except NotFound:
        abort(404)
    except ValidationError as exc:
        flash(f"{ae_title}: {gettext(exc.reason)}", "error")
        return redirect(url_for("admin.devices"))
    devices.publish(store, runtime().access)
    return redirect(url_for("admin.devices"))


@bp.post("/devices/<ae_title>/echo")
def device_echo(ae_title: str) -> Any:
    """C-ECHO the device (a modality with a Verification SCP, a PACS), as its host:port."""
    device = runtime().access.device(ae_title)
    if device is None:
        abort(404)
    if not device.host or not device.port:
        return refuse(400, "host", "give the device's host and port to test it")
    cfg = runtime().config.dicom
    ok, what = dicom_echo.echo(device.host, device.port, device.ae_title, cfg.ae_title)
    audit.record_now(request_store(), security.actor(), "device-echo", ae_title, what,
                     security.source())  # fmt: skip
    if ok:
        flash(gettext("C-ECHO to %(name)s: %(what)s.", name=ae_title, what=what))
    else:
        flash(gettext("C-ECHO to %(name)s failed: %(what)s", name=ae_title, what=what), "error")
    return redirect(url_for("admin.devices"))


# -- users -----------------------------------------------------------------------


def _users_page(
    errors: dict[str, str] | None = None, values: dict | None = None, token: str = ""
) -> Any:
    store = request_store()
    return render_template(
        "admin/users.html",
        users=accounts.list_users(store),
        tokens=accounts.list_tokens(store),
        errors=errors or {},
        values=values or {"role": accounts.FRONT_DESK},
        new_token=token,
        roles=accounts.ROLES,
    ), (400 if errors else 200)


@bp.get("/users")
def users() -> Any:
    return _users_page()


@bp.post("/users")
def user_add() -> Any:
    values = {k: request.form.get(k, "") for k in ("username", "role", "language")}
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        return _users_page({"password2": "the two passwords differ"}, values)
    try:
        accounts.create_user(
            request_store(),
            values["username"],
            password,
            values["role"] or "",
            values["language"],
            security.actor(),
            security.source(),
        )
    except ValidationError as exc:
        return _users_page({exc.field: exc.reason}, values)
    flash(gettext("Saved."))
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:pk>")
def user_change(pk: int) -> Any:
    store = request_store()
    try:
        accounts.update_user(
            store,
            pk,
            request.form.get("role", ""),
            request.form.get("language", ""),
            request.form.get("active") == "1",
            security.actor(),
            security.source(),
        )
        if request.form.get("password"):
            accounts.set_password(
                store, pk, request.form["password"], security.actor(), security.source()
            )
    except NotFound:
        abort(404)
    except ValidationError as exc:
        return _users_page({f"user{pk}.{exc.field}": exc.reason})
    except Conflict as exc:
        return _users_page({f"user{pk}.active": str(exc)})
    flash(gettext("Saved."))
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:pk>/tokens")
def token_add(pk: int) -> Any:
    try:
        raw = accounts.create_token(
            request_store(),
            pk,
            request.form.get("token_name", ""),
            security.actor(),
            security.source(),
        )
    except NotFound:
        abort(404)
    except ValidationError as exc:
        return _users_page({f"user{pk}.token_name": exc.reason})
    return _users_page(token=raw)


@bp.post("/tokens/<int:token_pk>/revoke")
def token_revoke(token_pk: int) -> Any:
    try:
        accounts.revoke_token(request_store(), token_pk, security.actor(), security.source())
    except NotFound:
        abort(404)
    return redirect(url_for("admin.users"))


# -- catalog -----------------------------------------------------------------------


def _catalog_page(
    errors: dict[str, str] | None = None, values: dict | None = None, editing: str | None = None
) -> Any:
    return render_template(
        "admin/catalog.html",
        entries=catalog.all_rows(request_store()),
        errors=errors or {},
        values=values or {"scheme": "LOCAL", "protocol_scheme": "LOCAL"},
        editing=editing,
        columns=catalog.CSV_COLUMNS,
    ), (400 if errors else 200)


@bp.get("/catalog", endpoint="catalog")
def catalog_page() -> Any:
    editing = request.args.get("edit")
    if editing:
        try:
            entry = catalog.get(request_store(), editing)
        except NotFound:
            abort(404)
        return _catalog_page(values=entry.__dict__, editing=editing)
    return _catalog_page()


@bp.post("/catalog")
def catalog_save() -> Any:
    values = {c: request.form.get(c, "") for c in catalog.CSV_COLUMNS}
    original = request.form.get("original") or None
    try:
        catalog.save(
            request_store(),
            catalog.Procedure(**values),
            original,
            security.actor(),
            security.source(),
        )
    except ValidationError as exc:
        return _catalog_page({exc.field: exc.reason}, values, original)
    except NotFound:
        abort(404)
    flash(gettext("Saved."))
    return redirect(url_for("admin.catalog"))


@bp.post("/catalog/<code>/delete")
def catalog_delete(code: str) -> Any:
    try:
        catalog.delete(request_store(), code, security.actor(), security.source())
    except NotFound:
        abort(404)
    return redirect(url_for("admin.catalog"))


@bp.post("/catalog/import")
def catalog_import() -> Any:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _catalog_page({"file": "is required"})
    raw = upload.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:  # what Excel writes on a Japanese Windows PC
            text = raw.decode("cp932")
        except UnicodeDecodeError:
            return _catalog_page({"file": "is not UTF-8 or Shift_JIS text"})
    try:
        n = catalog.import_csv(request_store(), text, security.actor(), security.source())
    except ValidationError as exc:
        return _catalog_page({"file": exc.reason})
    flash(gettext("Imported %(n)s procedures.", n=n))
    return redirect(url_for("admin.catalog"))


@bp.get("/catalog.csv")
def catalog_export() -> Any:
    return Response(
        catalog.export_csv(request_store()),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=catalog.csv"},
    )


# -- audit log -----------------------------------------------------------------------


@bp.get("/audit", endpoint="audit")
def audit_page() -> Any:
    store = request_store()
    action = request.args.get("action", "").strip()
    try:
        page = audit.page(store, action or None, paging.page_request(request.args))
    except ValidationError as exc:
        return refuse(400, exc.field, exc.reason)
    return render_template(
        "admin/audit.html",
        page=page,
        links=paging.links(page, "admin.audit", request.args),
        sizes=paging.SIZES,
        actions=audit.actions(store),
        action=action,
    )


# -- backup --------------------------------------------------------------------------


@bp.get("/backup", endpoint="backup")
def backup_page() -> Any:
    return render_template("admin/backup.html")


@bp.get("/backup.tar.gz", endpoint="backup_download")
def backup_download() -> Any:
    """The database (an online snapshot), prints and certificates as a .tar.gz, for
    ``appliance restore``; the spool and the configuration file are left out. A GET, as
    it changes nothing but the audit log."""
    data_dir = Path(runtime().config.data_dir)
    archive = tempfile.TemporaryFile(
        dir=backup.scratch_dir(data_dir)
    )  # gone once sent (or on an error)
    try:
        summary = backup.create(data_dir, archive)
    except BaseException:
        archive.close()
        raise
    size = archive.tell()
    archive.seek(0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    audit.record_now(
        request_store(), security.actor(), "backup-download", f"appliance-{stamp}.tar.gz",
        f"{sum(summary.tables.values())} rows, {summary.files} files, {size} bytes",
        security.source(),
    )  # fmt: skip
    return send_file(
        archive,
        mimetype="application/gzip",
        as_attachment=True,
        download_name=f"appliance-{stamp}.tar.gz",
        max_age=0,
    )
