"""A restart loses no film session and no queued job, and prints nothing twice."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import status
from appliance.server import Appliance
from tests.helpers import wait_for
from tests.printscu import FILM_BOX, PrintSCU


def config(tmp_path: Path, uri: str | None = None) -> dict[str, Any]:
    return {
        "devices": [{"ae_title": "CT1"}],
        "printers": [{"name": "ward", "uri": uri or f"folder:{tmp_path / 'out'}"}],
        "print_profiles": [{"dpi": 40}],
    }


def pdfs(tmp_path: Path) -> list[Path]:
    out = tmp_path / "out"
    return sorted(out.glob("*.pdf")) if out.exists() else []


def jobs(app: Appliance) -> list[dict[str, Any]]:
    return app.runtime.store.query("SELECT uid, state, attempts FROM print_jobs")


def idle(app: Appliance) -> bool:
    runner = next(s for s in app.services if s.name == "print").runner
    return runner.queued() == 0 and runner.current is None


def test_restart_mid_session_then_print_once(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    app = start_appliance(config(tmp_path), data_dir=data)
    scu = PrintSCU(app.dicom_port)
    st, session, _ = scu.session(FilmSessionLabel="KNEE")
    st, box, reply = scu.film_box(session, "STANDARD\\2,1", FilmSizeID="8INX10IN")
    boxes = [i.ReferencedSOPInstanceUID for i in reply.ReferencedImageBoxSequence]
    for pos, uid in enumerate(boxes, 1):
        assert scu.image(uid, pos)[0] == 0
    app.stop()  # the association dies with the appliance
    wait_for(lambda: not scu.assoc.is_established)

    app = start_appliance(config(tmp_path), data_dir=data)
    scu = PrintSCU(app.dicom_port)
    try:
        st, reply = scu.action(FILM_BOX, box)
        assert st == 0
    finally:
        scu.release()
    wait_for(lambda: [j["state"] for j in jobs(app)] == ["DONE"])
    assert len(pdfs(tmp_path)) == 1
    app.stop()

    app = start_appliance(config(tmp_path), data_dir=data)
    assert idle(app)  # nothing was queued again at start
    assert [(j["state"], j["attempts"]) for j in jobs(app)] == [("DONE", 1)]
    assert len(pdfs(tmp_path)) == 1


def test_job_queued_for_an_offline_printer_survives_restart(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on: the printer is offline
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    data = tmp_path / "data"
    app = start_appliance(config(tmp_path, f"ipp://127.0.0.1:{dead}/ipp/print"), data_dir=data)
    scu = PrintSCU(app.dicom_port)
    try:
        _box, job = scu.print_film("STANDARD\\1,1", FilmSizeID="8INX10IN")
    finally:
        scu.release()
    # The attempt and its error are one update: wait for both (read apart, they raced).
    wait_for(
        lambda: (lambda j: j["attempts"] >= 1 and "retrying" in j["error"])(
            app.runtime.store.query("SELECT attempts, error FROM print_jobs")[0]
        )
    )
    row = app.runtime.store.query("SELECT state, error FROM print_jobs")[0]
    assert row["state"] == "PRINTING" and "retrying" in row["error"]
    app.stop()

    # The same printer name now points at a folder: the job resumes there, once.
    app = start_appliance(config(tmp_path), data_dir=data)
    wait_for(lambda: [j["state"] for j in jobs(app)] == ["DONE"])
    assert len(pdfs(tmp_path)) == 1
    app.stop()
    app = start_appliance(config(tmp_path), data_dir=data)
    assert idle(app)
    assert len(pdfs(tmp_path)) == 1


def test_abandoned_sessions_expire_and_their_pixels_go(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    app = start_appliance(config(tmp_path), data_dir=data)
    scu = PrintSCU(app.dicom_port)
    try:
        st, session, _ = scu.session()
        st, box, reply = scu.film_box(session, "STANDARD\\1,1")
        assert scu.image(reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID, 1)[0] == 0
    finally:
        scu.release()
    pixels = data / "prints" / "pixels"
    assert len(list(pixels.iterdir())) == 1
    with app.runtime.store.write() as db:  # created three days ago, never printed
        db.execute(
            "UPDATE print_sessions SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-3 days')"
        )
    app.stop()
    app = start_appliance(config(tmp_path), data_dir=data)
    assert list(pixels.iterdir()) == []
    scu = PrintSCU(app.dicom_port)
    try:
        assert scu.action(FILM_BOX, box)[0] == status.NO_SUCH_SOP_INSTANCE
    finally:
        scu.release()
