"""The Print SCP over real associations: layouts to the folder printer, statuses, events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from appliance import status
from appliance.server import Appliance
from image.pdf import read_pages
from tests.helpers import wait_for
from tests.imaging import assert_image_similar
from tests.printscu import (
    ANNOTATION,
    COLOR_BOX,
    FILM_BOX,
    FILM_SESSION,
    GRAY_BOX,
    PLUT,
    PRINT_JOB,
    PRINTER,
    PRINTER_INSTANCE,
    PrintSCU,
    gray_item,
    ref,
)

DPI = 40


def print_config(tmp_path: Path, **profile: Any) -> dict[str, Any]:
    return {
        "devices": [{"ae_title": "CT1"}],
        "printers": [{"name": "out", "uri": f"folder:{tmp_path / 'out'}"}],
        "print_profiles": [{"dpi": DPI, **profile}],
    }


@pytest.fixture
def printer_app(start_appliance: Callable[..., Appliance], tmp_path: Path) -> Appliance:
    return start_appliance(print_config(tmp_path))


@pytest.fixture
def scu(printer_app: Appliance) -> Any:
    client = PrintSCU(printer_app.dicom_port)
    assert client.ok
    yield client
    client.release()


def job_row(app: Appliance, uid: str) -> dict[str, Any]:
    return app.runtime.store.query("SELECT * FROM print_jobs WHERE uid = ?", (uid,))[0]


def wait_done(app: Appliance, uid: str) -> dict[str, Any]:
    wait_for(lambda: job_row(app, uid)["state"] in ("DONE", "FAILURE"), timeout=20)
    row = job_row(app, uid)
    assert row["state"] == "DONE", row["error"]
    return row


def printed_page(app: Appliance, row: dict[str, Any]) -> Any:
    pdf = app.runtime.config.data_dir / "prints" / row["document"]
    pages = list(read_pages(pdf))
    assert len(pages) == row["pages"]
    return pages[0][0]


@pytest.mark.parametrize(
    ("fmt", "positions", "golden"),
    [
        ("STANDARD\\2,2", [1, 4], "scp_standard_2x2"),
        ("ROW\\1,2", [1, 2, 3], "scp_row_1_2"),
        ("COL\\2,1", [2, 3], "scp_col_2_1"),
    ],
)
def test_layouts_print_to_the_folder(
    printer_app: Appliance,
    scu: PrintSCU,
    tmp_path: Path,
    fmt: str,
    positions: list[int],
    golden: str,
) -> None:
    _box, job = scu.print_film(fmt, positions, FilmSizeID="8INX10IN")
    row = wait_done(printer_app, job)
    assert_image_similar(printed_page(printer_app, row), golden)
    out = sorted((tmp_path / "out").iterdir())
    assert [p.suffix for p in out] == [".png", ".pdf"]


def test_job_events_and_n_get(start_appliance: Callable[..., Appliance], tmp_path: Path) -> None:
    app = start_appliance(print_config(tmp_path, job_events=True))
    scu = PrintSCU(app.dicom_port)
    try:
        _box, job = scu.print_film()
        wait_done(app, job)
        # The SCU sends nothing until the three reports are in: pynetdicom's SCU would take
        # a report arriving during its own request for the response.
        wait_for(lambda: len(scu.events) >= 3)
        check_events_and_n_get(scu, job)
    finally:
        scu.release()


def check_events_and_n_get(scu: PrintSCU, job: str) -> None:
    assert [(t, uid) for t, uid, _ in scu.events] == [(1, job), (2, job), (3, job)]
    assert scu.events[-1][2].ExecutionStatusInfo == "NORMAL"
    st, ds = scu.get(PRINT_JOB, job)
    assert st == 0 and ds.ExecutionStatus == "DONE" and ds.Originator == "CT1"
    st, ds = scu.get(PRINTER, PRINTER_INSTANCE, [0x21100010, 0x21100020])
    assert st == 0 and (ds.PrinterStatus, ds.PrinterStatusInfo) == ("NORMAL", "NORMAL")
    assert "PrinterName" not in ds
    # One tag in the Attribute Identifier List (only Printer Status, as many modalities ask):
    # pydicom hands it over as a single tag, not a list; it used to answer 0x0110.
    st, ds = scu.get(PRINTER, PRINTER_INSTANCE, [0x21100010])
    assert st == 0 and ds.PrinterStatus == "NORMAL"
    assert "PrinterStatusInfo" not in ds and "PrinterName" not in ds


def test_no_events_unless_the_profile_asks(printer_app: Appliance, scu: PrintSCU) -> None:
    _box, job = scu.print_film()
    wait_done(printer_app, job)
    st, ds = scu.get(PRINT_JOB, job)  # the association still works; no report came
    assert (st, ds.ExecutionStatus, scu.events) == (0, "DONE", [])


def test_film_session_action_prints_every_film_box_as_pages(
    printer_app: Appliance, scu: PrintSCU
) -> None:
    st, session, _ = scu.session(FilmSessionLabel="CHEST", NumberOfCopies=2)
    assert st == 0
    for fmt in ("STANDARD\\1,1", "STANDARD\\1,2"):
        st, _box, reply = scu.film_box(session, fmt)
        assert st == 0
        first = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
        assert scu.image(first, 1)[0] == 0
    st, reply = scu.action(FILM_SESSION, session)
    assert st == 0
    job = str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID)
    row = wait_done(printer_app, job)
    assert (row["pages"], row["copies"], row["label"]) == (2, 2, "CHEST")
    assert scu.delete(FILM_SESSION, session) == 0


def test_n_create_response_carries_the_attributes(scu: PrintSCU) -> None:
    st, session, reply = scu.session(MediumType="PAPER")
    assert st == 0 and reply.MediumType == "PAPER" and reply.NumberOfCopies == 1
    st, _box, reply = scu.film_box(
        session, "STANDARD\\3,2", AnnotationDisplayFormatID="1", FilmOrientation="LANDSCAPE"
    )
    assert st == 0
    assert reply.FilmSizeID == "14INX17IN" and reply.FilmOrientation == "LANDSCAPE"
    assert reply.MagnificationType == "CUBIC" and reply.MaxDensity == 200
    assert reply.ReferencedFilmSessionSequence[0].ReferencedSOPInstanceUID == session
    boxes = reply.ReferencedImageBoxSequence
    assert len(boxes) == 6 and {b.ReferencedSOPClassUID for b in boxes} == {GRAY_BOX}
    assert all(len(b.ReferencedSOPInstanceUID) <= 64 for b in boxes)
    assert len(reply.ReferencedBasicAnnotationBoxSequence) == 1


def test_color_session_prints_rgb(printer_app: Appliance) -> None:
    scu = PrintSCU(printer_app.dicom_port, color=True)
    try:
        st, session, _ = scu.session()
        st, box, reply = scu.film_box(session, "STANDARD\\2,1", FilmSizeID="8INX10IN")
        assert {b.ReferencedSOPClassUID for b in reply.ReferencedImageBoxSequence} == {COLOR_BOX}
        uid = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
        assert scu.image(uid, 1)[0] == 0
        st, reply = scu.action(FILM_BOX, box)
        assert st == 0
        job = str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID)
    finally:
        scu.release()
    row = wait_done(printer_app, job)
    page = printed_page(printer_app, row)
    assert page.mode == "RGB"
    assert_image_similar(page, "scp_color")


def test_presentation_lut_and_annotation(printer_app: Appliance, scu: PrintSCU) -> None:
    lut = Dataset()
    lut.PresentationLUTShape = "LIN OD"
    st, lut_uid, _ = scu.create(PLUT, lut)
    assert st == 0
    st, session, _ = scu.session()
    st, box, reply = scu.film_box(
        session,
        "STANDARD\\1,1",
        FilmSizeID="8INX10IN",
        AnnotationDisplayFormatID="1",
        ReferencedPresentationLUTSequence=[ref(PLUT, lut_uid)],
    )
    assert (
        st == 0 and reply.ReferencedPresentationLUTSequence[0].ReferencedSOPInstanceUID == lut_uid
    )
    note = Dataset()
    note.AnnotationPosition = 1
    note.TextString = "LEFT"
    ann_uid = reply.ReferencedBasicAnnotationBoxSequence[0].ReferencedSOPInstanceUID
    assert scu.set(ANNOTATION, ann_uid, note)[0] == 0
    img = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
    assert scu.image(img, 1, gray_item(bits=8))[0] == 0
    st, reply = scu.action(FILM_BOX, box)
    row = wait_done(printer_app, str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID))
    assert row["spec"].count("LEFT") == 1 and '"shape": "LIN OD"' in row["spec"]
    page = np.asarray(printed_page(printer_app, row))
    film_h = round(254 * DPI / 25.4)
    assert page.shape[0] > film_h and (page[film_h:] < 128).any()  # the annotation line
    assert scu.delete(PLUT, lut_uid) == 0
    assert scu.delete(PLUT, lut_uid) == status.NO_SUCH_SOP_INSTANCE


def test_mono1_12_bit_reverse_polarity_prints_like_mono2(
    printer_app: Appliance, scu: PrintSCU
) -> None:
    jobs = []
    for photometric, polarity in (("MONOCHROME1", "NORMAL"), ("MONOCHROME2", "REVERSE")):
        st, session, _ = scu.session()
        st, box, reply = scu.film_box(session, "STANDARD\\1,1", FilmSizeID="8INX10IN")
        img = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
        st, _ = scu.image(img, 1, gray_item(bits=12, photometric=photometric), Polarity=polarity)
        assert st == 0
        st, reply = scu.action(FILM_BOX, box)
        jobs.append(str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID))
    pages = [np.asarray(printed_page(printer_app, wait_done(printer_app, j))) for j in jobs]
    assert np.array_equal(pages[0], pages[1])
    assert pages[0].min() < 40 and pages[0].max() > 215


# -- failure and warning statuses ------------------------------------------------------


def test_unknown_calling_ae_may_not_print(printer_app: Appliance) -> None:
    stranger = PrintSCU(printer_app.dicom_port, calling="STRANGER")
    try:
        st, _, reply = stranger.session()
        assert st == status.NOT_AUTHORIZED
    finally:
        stranger.release()


def test_statuses_of_bad_requests(scu: PrintSCU) -> None:
    st, session, _ = scu.session(MemoryAllocation=1024)
    assert st == status.PRINT_MEMORY_ALLOCATION_NOT_SUPPORTED
    st, _, reply = scu.session(PrintPriority="URGENT")
    assert st == status.INVALID_ATTRIBUTE_VALUE and "PrintPriority" in reply.ErrorComment
    assert scu.film_box(session, "SLIDE")[0] == status.INVALID_ATTRIBUTE_VALUE
    assert scu.film_box(session, "STANDARD\\1,1", FilmSizeID="99INX99IN")[0] == (
        status.INVALID_ATTRIBUTE_VALUE
    )
    assert scu.film_box("1.2.3.4", "STANDARD\\1,1")[0] == status.INVALID_ATTRIBUTE_VALUE
    st, _, reply = scu.film_box(session, "STANDARD\\1,1", MaxDensity=320)
    assert st == status.PRINT_DENSITY_OUT_OF_RANGE and reply.MaxDensity == 200
    st, box, reply = scu.film_box(session, "STANDARD\\2,1", FilmSizeID="8INX10IN")
    assert st == 0
    img = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
    assert scu.image(img, 2)[0] == status.INVALID_ATTRIBUTE_VALUE  # wrong position
    assert scu.image("1.2.3.4", 1)[0] == status.NO_SUCH_SOP_INSTANCE
    st, _ = scu.image(img, 1, RequestedImageSize="300", RequestedDecimateCropBehavior="FAIL")
    assert st == status.PRINT_IMAGE_LARGER_THAN_BOX
    st, _ = scu.image(img, 1, RequestedImageSize="300", RequestedDecimateCropBehavior="CROP")
    assert st == status.PRINT_IMAGE_CROPPED
    bad = gray_item()
    bad.BitsStored = 10
    assert scu.image(img, 1, bad)[0] == status.INVALID_ATTRIBUTE_VALUE
    assert scu.action(FILM_BOX, box, action_type=2)[0] == status.NO_SUCH_ACTION_TYPE
    assert scu.get(PRINT_JOB, "1.2.3.4")[0] == status.NO_SUCH_SOP_INSTANCE
    assert scu.delete(FILM_BOX, "1.2.3.4") == status.NO_SUCH_SOP_INSTANCE


def test_empty_prints_warn_and_no_film_box_fails(printer_app: Appliance, scu: PrintSCU) -> None:
    st, session, _ = scu.session()
    assert scu.action(FILM_SESSION, session)[0] == status.PRINT_NO_FILM_BOXES
    st, box, _ = scu.film_box(session, "STANDARD\\1,1")
    st, reply = scu.action(FILM_BOX, box)
    assert st == status.PRINT_EMPTY_PAGE_NO_IMAGE
    wait_done(printer_app, str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID))
    assert scu.action(FILM_SESSION, session)[0] == status.PRINT_EMPTY_PAGE


def test_profiles_choose_called_ae_titles(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = print_config(tmp_path)
    raw["print_profiles"].append(
        {
            "ae_title": "MAMMO",
            "film_sizes": "8INX10IN 10INX12IN",
            "default_film_size": "8INX10IN",
            "display_formats": "STANDARD\\1,1",
        }
    )
    app = start_appliance(raw)
    mammo = PrintSCU(app.dicom_port, called="MAMMO")
    try:
        st, session, _ = mammo.session()
        assert st == 0
        assert mammo.film_box(session, "STANDARD\\2,2")[0] == status.INVALID_ATTRIBUTE_VALUE
        st, _, reply = mammo.film_box(session, "STANDARD\\1,1", FilmSizeID="14INX17IN")
        assert st == status.INVALID_ATTRIBUTE_VALUE and "14INX17IN" in reply.ErrorComment
        st, _, reply = mammo.film_box(session, "STANDARD\\1,1")
        assert st == 0 and reply.FilmSizeID == "8INX10IN"
    finally:
        mammo.release()
    ae = AE(ae_title="CT1")
    ae.add_requested_context(PRINTER)
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="NOPROFILE")
    assert not assoc.is_established and assoc.is_rejected


def test_sessions_belong_to_their_calling_ae(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = print_config(tmp_path)
    raw["devices"].append({"ae_title": "CT2"})
    app = start_appliance(raw)
    one, two = PrintSCU(app.dicom_port), PrintSCU(app.dicom_port, calling="CT2")
    try:
        st, session, _ = one.session()
        assert two.action(FILM_SESSION, session)[0] == status.NO_SUCH_SOP_INSTANCE
        assert two.delete(FILM_SESSION, session) == status.NO_SUCH_SOP_INSTANCE
    finally:
        one.release()
        two.release()


def test_profile_paper_per_film_size_and_grey_only(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(
        print_config(tmp_path, paper="A4", paper_for_film="14INX17IN=A3", fit=True, color=False)
    )
    scu = PrintSCU(app.dicom_port, color=True)
    try:
        _box, small = scu.print_film("STANDARD\\1,1", FilmSizeID="8INX10IN")
        _box, large = scu.print_film("STANDARD\\1,1", FilmSizeID="14INX17IN")
    finally:
        scu.release()
    a4 = printed_page(app, wait_done(app, small))
    a3 = printed_page(app, wait_done(app, large))
    assert a4.size == (round(210 * DPI / 25.4), round(297 * DPI / 25.4))
    assert a3.size == (round(297 * DPI / 25.4), round(420 * DPI / 25.4))
    assert a4.mode == a3.mode == "L"  # the profile prints grey only


def test_n_set_changes_session_and_film_box(printer_app: Appliance, scu: PrintSCU) -> None:
    st, session, _ = scu.session()
    change = Dataset()
    change.NumberOfCopies = 3
    change.FilmSessionLabel = "SPINE"
    assert scu.set(FILM_SESSION, session, change)[0] == 0
    bad = Dataset()
    bad.NumberOfCopies = 500
    assert scu.set(FILM_SESSION, session, bad)[0] == status.INVALID_ATTRIBUTE_VALUE
    st, box, reply = scu.film_box(session, "STANDARD\\1,1", FilmSizeID="8INX10IN")
    film = Dataset()
    film.MagnificationType = "REPLICATE"
    film.BorderDensity = "BLACK"
    assert scu.set(FILM_BOX, box, film)[0] == 0
    layout = Dataset()
    layout.ImageDisplayFormat = "STANDARD\\2,2"  # only N-CREATE may set the layout
    assert scu.set(FILM_BOX, box, layout)[0] == status.INVALID_ATTRIBUTE_VALUE
    img = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
    assert scu.image(img, 1)[0] == 0
    st, reply = scu.action(FILM_BOX, box)
    row = wait_done(printer_app, str(reply.ReferencedPrintJobSequence[0].ReferencedSOPInstanceUID))
    assert (row["copies"], row["label"]) == (3, "SPINE")
    assert '"MagnificationType": "REPLICATE"' in row["spec"]
    assert '"BorderDensity": "BLACK"' in row["spec"]


def test_big_endian_is_not_offered_for_print(printer_app: Appliance) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context("1.2.840.10008.5.1.1.9", "1.2.840.10008.1.2.2")  # Explicit BE
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification, so the association opens
    assoc = ae.associate("127.0.0.1", printer_app.dicom_port, ae_title="APPLIANCE")
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert accepted == {"1.2.840.10008.1.1"}
    finally:
        assoc.release()


def test_a_printer_that_cannot_print_fails_n_action(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    raw = print_config(tmp_path)
    raw["printers"] = [{"name": "out", "uri": f"folder:{blocked / 'sub'}"}]
    app = start_appliance(raw)
    scu = PrintSCU(app.dicom_port)
    try:
        st, ds = scu.get(PRINTER, PRINTER_INSTANCE)
        assert (st, ds.PrinterStatus, ds.PrinterStatusInfo) == (0, "FAILURE", "PRINTER DOWN")
        st, session, _ = scu.session()
        st, box, reply = scu.film_box(session, "STANDARD\\1,1")
        assert scu.image(reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID, 1)[0] == 0
        st, reply = scu.action(FILM_BOX, box)
        assert st == status.PROCESSING_FAILURE and "is down" in reply.ErrorComment
    finally:
        scu.release()
    assert app.runtime.store.query("SELECT count(*) AS n FROM print_jobs")[0]["n"] == 0
