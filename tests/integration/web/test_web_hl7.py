"""The HL7 page (admins): messages from the RIS with their ACK and reason, the status
outbox with a resend."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.webclient import Web, post


def _rows(web: Web) -> None:
    db = web.store.db
    with web.store.write():
        db.execute(
            "INSERT INTO hl7_messages(sender, control_id, message_type, ack_code, ack, error) "
            "VALUES ('RIS^HOSP', 'M1', 'ORM^O01', 'AA', 'x', ''), "
            "('RIS^HOSP', 'M2', 'ORM^O01', 'AE', 'x', 'OBR-4: unknown procedure code XYZ')"
        )
        db.execute(
            "INSERT INTO hl7_outbox(destination, event_pk, step_pk, status, control_id, message, "
            "state, attempts, last_error) VALUES ('ris', 1, 7, 'CM', 'S1', 'MSH|', 'dead', 5, "
            "'connection refused')"
        )


def test_messages_outbox_and_resend(web: Web, admin: FlaskClient) -> None:
    _rows(web)
    page = admin.get("/admin/hl7").text
    assert 'id="hl7-off"' in page  # [hl7] is not enabled in this configuration
    assert "OBR-4: unknown procedure code XYZ" in page and "M1" in page
    failed = admin.get("/admin/hl7?failed=1").text
    assert "M2" in failed and ">M1<" not in failed
    assert "connection refused" in page and 'id="outbox-1"' in page
    [pk] = [r["pk"] for r in web.store.query("SELECT pk FROM hl7_outbox")]
    assert post(admin, f"/admin/hl7/outbox/{pk}/resend").status_code == 302
    [row] = web.store.query("SELECT state, attempts FROM hl7_outbox")
    assert (row["state"], row["attempts"]) == ("waiting", 0)
    [entry] = web.store.query("SELECT actor FROM audit WHERE action = 'hl7-resend'")
    assert entry["actor"] == "admin"
    assert post(admin, "/admin/hl7/outbox/999/resend").status_code == 404


def test_front_desk_cannot_see_it(desk: FlaskClient) -> None:
    assert desk.get("/admin/hl7").status_code == 403
