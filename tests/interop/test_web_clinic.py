"""A clinic's day in headless Chromium against `appliance serve` (issue 15, points 4, 10,
11 and 12): one clock, the health page and help, the schedule form's start slot and
messages, the board search in the URL and a completed step that opens read-only.

The box runs with TZ=Asia/Tokyo; a second box sets clinic.time_zone. DCMTK findscu is the
modality asking for its worklist, a pynetdicom MPPS client reports the step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser import PASSWORD, Box
from tests.browser import chromium as launch
from tests.interop.test_web_browser import (
    CATALOG_CSV,
    findscu,
    mpps,
    shot,
)

pytestmark = pytest.mark.interop

TOKYO = ZoneInfo("Asia/Tokyo")
DEVICE = '[[devices]]\nae_title = "CT1"\nmodality = "CT"\ndescription = "CT room 1"\n'


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with launch(tmp_path_factory.mktemp("chromium-clinic")) as context:
        yield context


def first_start(box: Box, page: Any, tmp: Path) -> None:
    """Set the admin password with the box's setup token and import the catalog."""
    page.goto(box.url + "/")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#token", box.setup_token)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/devices$"))
    page.goto(box.url + "/admin/catalog")
    csv_file = tmp / "catalog.csv"
    csv_file.write_text(CATALOG_CSV)
    page.set_input_files("#file", str(csv_file))
    page.click("text=Import CSV >> nth=-1")
    page.wait_for_selector("#proc-CTHEAD")


def schedule(box: Box, page: Any, patient_id: str, family: str, start: str) -> str:
    """Schedule a CT head through the form; the step's pk."""
    page.goto(box.url + "/steps/new")
    page.fill("#patient_id", patient_id)
    page.fill("#name_alpha_family", family)
    page.fill("#name_alpha_given", "Hanako")
    page.select_option("#procedure", "CTHEAD")
    page.select_option("#station_ae", "CT1")
    page.fill("#start", start)
    page.click("#save")
    page.wait_for_selector(f"li.step:has-text('{patient_id}')")
    return str(page.locator(f"li.step:has-text('{patient_id}')").first.get_attribute("data-pk"))


def shown_near(text: str, zone: ZoneInfo, minutes: int = 3) -> bool:
    """A 'YYYY-MM-DD HH:MM:SS' in ``text`` within a few minutes of now in ``zone``."""
    now = datetime.now(zone).replace(tzinfo=None)
    for m in re.finditer(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text):
        when = datetime.strptime(m.group(0), "%Y-%m-%d %H:%M:%S")
        if abs(when - now) < timedelta(minutes=minutes):
            return True
    return False


@pytest.fixture(scope="module")
def tokyo_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    b = Box(tmp_path_factory.mktemp("tokyo"), extra=DEVICE, env={"TZ": "Asia/Tokyo"})
    yield b
    b.stop()


@pytest.fixture(scope="module")
def page(tokyo_box: Box, chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    pg = chromium.new_page()
    pg.set_default_timeout(15_000)
    first_start(tokyo_box, pg, tmp_path_factory.mktemp("catalog"))
    return pg


def test_one_clock_in_the_box_zone(tokyo_box: Box, page: Any, tmp_path: Path) -> None:
    """TZ=Asia/Tokyo, no setting: the step's start, its MPPS times and the audit log are all
    Tokyo times, the zone is named once per page, and the worklist keeps the typed time."""
    today = datetime.now(TOKYO).date()
    pk = schedule(tokyo_box, page, "TZ-0001", "Kato", f"{today.isoformat()}T18:00")
    found = findscu(tokyo_box, tmp_path, today.strftime("%Y%m%d"))
    item = next(f for f in found if f.PatientID == "TZ-0001")
    sps = item.ScheduledProcedureStepSequence[0]
    # DICOM DA/TM are the clinic's wall clock: the worklist gives back what was typed.
    assert sps.ScheduledProcedureStepStartDate == today.strftime("%Y%m%d")
    assert sps.ScheduledProcedureStepStartTime.startswith("1800")
    uid = mpps(tokyo_box, item, "IN PROGRESS")
    page.goto(f"{tokyo_box.url}/steps/{pk}")
    performed = page.inner_text("#performed")
    assert shown_near(performed, TOKYO), performed  # not UTC beside a local start
    body = page.content()
    assert "(UTC)" not in body and body.count("Asia/Tokyo") == 1
    assert "Asia/Tokyo (JST, UTC+09:00)" in page.inner_text("#clinic-zone")
    box_clock = page.inner_text("#box-clock")
    now = datetime.now(TOKYO)
    assert abs(
        datetime.combine(now.date(), datetime.strptime(box_clock, "%H:%M").time()).replace(
            tzinfo=TOKYO
        )
        - now
    ) < timedelta(minutes=3)
    assert page.locator("#clock-skew").is_hidden()
    shot(page, "clock-step-tokyo")
    mpps(tokyo_box, item, "COMPLETED", uid)
    for path in ("/admin/audit", "/admin/destinations", "/prints", "/admin/hl7"):
        page.goto(tokyo_box.url + path)
        text = page.content()
        assert "(UTC)" not in text and text.count("Asia/Tokyo") == 1, path
    page.goto(tokyo_box.url + "/admin/audit")
    assert shown_near(page.inner_text("#audit"), TOKYO)


def test_a_browser_clock_far_from_the_box_is_warned_about(
    tokyo_box: Box, chromium: Any, page: Any
) -> None:
    """This computer's clock 10 minutes ahead: a banner says so, on every page."""
    pg = chromium.new_page()
    pg.clock.install(time=datetime.now() + timedelta(minutes=10))
    pg.goto(tokyo_box.url + "/")
    pg.wait_for_selector("#clock-skew:not([hidden])")
    assert "10 min" in pg.inner_text("#clock-skew")
    shot(pg, "clock-skew")
    pg.goto(tokyo_box.url + "/steps/new")
    pg.wait_for_selector("#clock-skew:not([hidden])")
    pg.close()
    other = chromium.new_page()
    other.clock.install(time=datetime.now() + timedelta(seconds=30))  # near enough
    other.goto(tokyo_box.url + "/")
    other.wait_for_selector("#board")
    assert other.locator("#clock-skew").is_hidden()
    other.close()


def test_start_is_empty_and_offers_the_rooms_next_free_slot(tokyo_box: Box, page: Any) -> None:
    """Start is empty; choosing the room offers its next free slot; messages are sentences."""
    page.goto(tokyo_box.url + "/steps/new")
    assert page.input_value("#start") == ""
    assert page.locator("#next-slot").is_disabled()  # no room chosen yet
    page.click("#save")
    assert page.inner_text("#error-patient_id") == "Patient ID is required."
    assert page.inner_text("#error-start") == "Start is required."
    page.select_option("#station_ae", "CT1")
    page.wait_for_selector("#next-slot:not([disabled])")
    offered = page.get_attribute("#next-slot", "data-start") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:(00|15|30|45)", offered), offered
    assert page.inner_text("#next-slot") == "Next free slot: " + offered.replace("T", " ")
    page.click("#next-slot")
    assert page.input_value("#start") == offered
    assert page.locator("#error-start").count() == 0  # the message left with the change
    shot(page, "form-next-slot")
    page.fill("#patient_id", "SLOT-01")
    page.fill("#name_alpha_family", "Mori")
    page.select_option("#procedure", "CTHEAD")
    page.click("#save")
    page.wait_for_selector("li.step:has-text('SLOT-01')")
    # That slot is taken now: the form offers a later one.
    page.goto(tokyo_box.url + "/steps/new")
    page.select_option("#station_ae", "CT1")
    page.wait_for_selector("#next-slot:not([disabled])")
    assert (page.get_attribute("#next-slot", "data-start") or "") > offered


def test_the_board_search_is_in_the_url(tokyo_box: Box, chromium: Any, page: Any) -> None:
    """Back keeps the search, a shared link opens the same search, the placeholder shows."""
    schedule(tokyo_box, page, "SRCH-01", "Ishikawa", datetime.now(TOKYO).strftime("%Y-%m-%dT11:00"))
    page.goto(tokyo_box.url + "/")
    page.fill("#q", "Ishikawa")
    page.press("#q", "Enter")
    page.wait_for_selector("#results")
    assert "q=Ishikawa" in page.url and "SRCH-01" in page.inner_text("#results")
    shared = page.url
    page.click("#results a.name")
    page.wait_for_selector("#step-form")
    page.go_back()
    page.wait_for_selector("#results")
    assert page.input_value("#q") == "Ishikawa" and "SRCH-01" in page.inner_text("#results")
    other = chromium.new_page()
    other.goto(shared)
    assert other.input_value("#q") == "Ishikawa" and "SRCH-01" in other.inner_text("#results")
    measure = """() => {
        const q = document.getElementById("q");
        const css = getComputedStyle(q);
        const ctx = document.createElement("canvas").getContext("2d");
        ctx.font = css.font;
        const room = q.clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight);
        return [ctx.measureText(q.placeholder).width, room];
    }"""
    for width, height in ((1366, 768), (768, 1024), (390, 844)):
        other.set_viewport_size({"width": width, "height": height})
        for lang_page in (other,):
            text, room = lang_page.evaluate(measure)
            assert text <= room, f"placeholder cut off at {width}px: {text:.0f} > {room:.0f}"
        overflow = other.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, width
    other.set_viewport_size({"width": 390, "height": 844})
    shot(other, "board-search-phone")
    other.close()


def test_a_completed_step_opens_read_only_and_is_corrected_with_a_reason(
    tokyo_box: Box, page: Any, tmp_path: Path
) -> None:
    today = datetime.now(TOKYO).date()
    pk = schedule(tokyo_box, page, "RO-0001", "Ueda", f"{today.isoformat()}T12:00")
    item = next(
        f
        for f in findscu(tokyo_box, tmp_path, today.strftime("%Y%m%d"))
        if f.PatientID == "RO-0001"
    )
    mpps(tokyo_box, item, "COMPLETED", mpps(tokyo_box, item, "IN PROGRESS"))
    page.goto(f"{tokyo_box.url}/steps/{pk}")
    assert page.locator("#read-only").is_visible()
    assert page.locator("#save").count() == 0
    assert page.locator("#name_alpha_family").is_disabled() and page.locator("#start").is_disabled()
    shot(page, "step-read-only")
    page.click("#correct")
    page.wait_for_selector("#correction_reason")
    page.fill("#name_alpha_family", "Ueta")
    page.click("#save")
    assert page.inner_text("#error-correction_reason") == "Reason for the correction is required."
    page.fill("#correction_reason", "family name misspelt at the desk")
    shot(page, "step-correct")
    page.click("#save")
    page.wait_for_selector("#read-only")
    assert page.input_value("#name_alpha_family") == "Ueta"
    assert "COMPLETED" in page.inner_text("h1")
    page.goto(tokyo_box.url + "/admin/audit?action=correct")
    audit = page.inner_text("#audit")
    assert f"step {pk}" in audit and "family name misspelt at the desk" in audit
    assert "changed: name_alpha_family" in audit


def test_the_health_page_says_in_words_what_healthz_knows(tokyo_box: Box, page: Any) -> None:
    page.goto(tokyo_box.url + "/")
    page.click("#menu-health")
    page.wait_for_selector("#service-dicom")
    resp = page.request.get(tokyo_box.url + "/healthz")  # the same session
    assert resp.ok or resp.status == 503, (resp.status, resp.text()[:300])
    report = resp.json()
    for key in report["services"]:
        assert page.locator(f"#service-{key}").count() == 1, key
    assert "running" in page.inner_text("#service-dicom")
    assert str(report["services"]["dicom"]["port"]) in page.inner_text("#service-dicom")
    fingerprint = report["services"]["dicom_tls"]["fingerprint_sha256"]
    assert fingerprint and fingerprint in page.inner_text("#service-dicom_tls")
    assert "Queries since start" in page.inner_text("#service-worklist")
    assert re.search(r"GB free of [\d,.]+ GB", page.inner_text("#disk"))
    shot(page, "health")
    # Each page's help link opens that page's text.
    for path, topic in (("/", "board"), ("/steps/new", "schedule"), ("/health", "health")):
        page.goto(tokyo_box.url + path)
        page.click("#help-link")
        page.wait_for_url(re.compile(f"/help#help-{topic}$"))
        assert page.locator(f"#help-{topic}").is_visible()
    shot(page, "help")


def test_the_clinic_zone_setting_wins_over_the_box_zone(
    chromium: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """TZ=Asia/Tokyo but clinic.time_zone = America/New_York: pages show New York times;
    the worklist still answers with the scheduled date and time as typed.

    Last but one: this box is on 127.0.0.1 too, and cookies do not tell ports apart, so
    signing in here signs the Tokyo box's page out."""
    york = ZoneInfo("America/New_York")
    box = Box(
        tmp_path_factory.mktemp("york"),
        extra='[clinic]\ntime_zone = "America/New_York"\n' + DEVICE,
        env={"TZ": "Asia/Tokyo"},
    )
    pg = chromium.new_page()
    try:
        first_start(box, pg, tmp_path_factory.mktemp("catalog-york"))
        today = datetime.now(york).date()
        schedule(box, pg, "NY-0001", "Smith", f"{today.isoformat()}T07:15")
        # The board opened on the clinic's day, not Tokyo's.
        assert pg.get_attribute("#board", "data-date") == today.isoformat()
        assert "America/New_York" in pg.inner_text("#clinic-zone")
        found = findscu(box, tmp_path, today.strftime("%Y%m%d"))
        sps = next(f for f in found if f.PatientID == "NY-0001").ScheduledProcedureStepSequence[0]
        assert sps.ScheduledProcedureStepStartDate == today.strftime("%Y%m%d")
        assert sps.ScheduledProcedureStepStartTime.startswith("0715")
        pg.goto(box.url + "/admin/audit")
        audit = pg.inner_text("#audit")
        assert shown_near(audit, york) and not shown_near(audit, TOKYO)
        shot(pg, "clock-audit-new-york")
    finally:
        pg.close()
        box.stop()


def test_csp_blocked_nothing(chromium: Any) -> None:
    """Last: no page above had a script or style the CSP refused."""
    assert chromium.csp_refusals == []
