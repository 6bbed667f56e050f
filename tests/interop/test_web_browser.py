"""A newcomer's first hour, in headless Chromium against `appliance serve`, with DCMTK
findscu and a pynetdicom MPPS client as the modality.

Start the box, set the admin password with the setup token it printed, add a CT room,
import the procedure catalog, schedule a Japanese patient through the form (in Japanese),
find it with ``findscu -W`` as the CT would, send MPPS IN PROGRESS and COMPLETED and watch
the board change without a reload. Screenshots of the main pages go to build/screenshots/
(scripts/screenshots copies them to docs/screenshots/).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.browser import PASSWORD, SHOTS, Box, chromium
from tests.helpers import peer_env, require_peer

pytestmark = pytest.mark.interop

JP_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"
CATALOG_CSV = (
    "code_value,scheme,meaning,modality,protocol_value,protocol_scheme,protocol_meaning\n"
    "CTHEAD,LOCAL,CT Head,CT,CTH-R,LOCAL,Head routine\n"
    "CTCHEST,LOCAL,CT Chest,CT,CTC-C,LOCAL,Chest with contrast\n"
    "MRBRAIN,LOCAL,MR Brain,MR,,,\n"
)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    b = Box(tmp_path_factory.mktemp("box"))
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), width=1280, height=860) as ctx:
        yield ctx  # ctx.csp_refusals is read by test_csp_blocked_nothing


@pytest.fixture(scope="module")
def page(browser: Any) -> Any:
    pg = browser.new_page()
    pg.set_default_timeout(15_000)
    return pg


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def findscu(box: Box, tmp: Path, today: str) -> list[Dataset]:
    """Query as the CT would: its station AE title and today, Japanese character set."""
    exe = require_peer("findscu")
    out = tmp / "rsp"
    out.mkdir()
    keys = [
        "SpecificCharacterSet=ISO 2022 IR 87",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "(0040,0100)[0].ScheduledStationAETitle=CT1",
        f"(0040,0100)[0].ScheduledProcedureStepStartDate={today}",
        "(0040,0100)[0].ScheduledProcedureStepStartTime",
        "(0040,0100)[0].Modality=CT",
        "(0040,0100)[0].ScheduledProcedureStepID",
        "(0040,0100)[0].ScheduledProtocolCodeSequence",
    ]
    args = [exe, "-W", "-aet", "CT1", "-aec", "APPLIANCE", "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    args += ["127.0.0.1", str(box.dicom_port)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=peer_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def mpps(box: Box, found: Dataset, status: str, uid: str | None = None) -> str:
    """N-CREATE (IN PROGRESS) or N-SET (COMPLETED) from the CT, as a modality sends them."""
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    now = datetime.now()
    try:
        ds = Dataset()
        if uid is None:
            uid = generate_uid()
            ds.SpecificCharacterSet = "ISO_IR 192"
            ref = Dataset()
            ref.StudyInstanceUID = found.StudyInstanceUID
            ref.AccessionNumber = found.AccessionNumber
            ref.RequestedProcedureID = found.RequestedProcedureID
            ref.ScheduledProcedureStepID = found.ScheduledProcedureStepSequence[
                0
            ].ScheduledProcedureStepID
            ds.ScheduledStepAttributesSequence = [ref]
            ds.PatientName = found.PatientName
            ds.PatientID = found.PatientID
            ds.PerformedProcedureStepID = "PPS-" + uid[-6:]
            ds.PerformedStationAETitle = "CT1"
            ds.PerformedProcedureStepStartDate = now.strftime("%Y%m%d")
            ds.PerformedProcedureStepStartTime = now.strftime("%H%M%S")
            ds.PerformedProcedureStepStatus = status
            ds.Modality = "CT"
            rsp, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        else:
            ds.PerformedProcedureStepStatus = status
            ds.PerformedProcedureStepEndDate = now.strftime("%Y%m%d")
            ds.PerformedProcedureStepEndTime = now.strftime("%H%M%S")
            rsp, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        assert rsp is not None and rsp.Status == 0x0000, rsp
    finally:
        assoc.release()
    return uid


def test_newcomer_first_hour(box: Box, page: Any, tmp_path: Path) -> None:
    today = date.today()
    # 1. First start: the box asks for the setup token it printed, then the admin password.
    page.goto(box.url + "/")
    assert page.url.endswith("/setup")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    shot(page, "setup")  # before the token goes in: it differs each run
    page.fill("#token", box.setup_token)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/devices$"))

    # 2. Add a CT room; a bad port is refused next to the field first.
    page.click("text=New device")
    page.fill("#ae_title", "CT1")
    page.fill("#modality", "CT")
    page.fill("#description", "CT room 1")
    page.fill("#port", "70000")
    page.select_option("#character_set", "ISO 2022 IR 87")
    page.click("button.primary")
    assert page.inner_text("#error-port")
    page.fill("#port", "104")
    page.fill("#host", "127.0.0.1")
    page.click("button.primary")
    page.wait_for_url(re.compile(r"/admin/devices$"))
    assert "CT room 1" in page.inner_text("#device-CT1")
    shot(page, "devices")

    # 3. Import the procedure catalog from CSV.
    page.goto(box.url + "/admin/catalog")
    csv_file = tmp_path / "catalog.csv"
    csv_file.write_text(CATALOG_CSV)
    page.set_input_files("#file", str(csv_file))
    page.click("text=Import CSV >> nth=-1")
    page.wait_for_selector("#proc-CTHEAD")
    shot(page, "catalog")

    # 4. Japanese from here on (saved for this user), then the schedule form.
    page.click("button.lang")
    page.wait_for_selector("html[lang=ja]")
    page.goto(box.url + "/steps/new")
    page.click("#save")  # empty: every required field gets its message
    for field in ("patient_id", "patient_name", "procedure", "station_ae", "start"):
        assert page.inner_text(f"#error-{field}"), field
    assert "必須です" in page.inner_text("#error-patient_id")
    shot(page, "form-errors-ja")
    page.fill("#patient_id", "JP-0001")
    page.fill("#name_alpha_family", "Yamada")
    page.fill("#name_alpha_given", "Tarou")
    page.fill("#name_ideo_family", "山田")
    page.fill("#name_ideo_given", "太郎")
    page.fill("#name_phon_family", "やまだ")
    page.fill("#name_phon_given", "たろう")
    page.fill("#birth_date", "1970-03-04")
    page.select_option("#sex", "M")
    page.select_option("#procedure", "CTHEAD")
    page.select_option("#station_ae", "CT1")
    assert page.input_value("#modality") == "CT"  # follows the station
    page.fill("#start", f"{today.isoformat()}T10:30")
    page.fill("#referring_physician", "Suzuki^Ichiro")
    # The messages leave as the fields are filled.
    assert page.locator("span.error").count() == 0 and page.locator("#form-errors").count() == 0
    # Numbered when saved: the field is empty and says which number it will be.
    assert page.input_value("#accession_number") == ""
    placeholder = page.get_attribute("#accession_number", "placeholder") or ""
    accession = placeholder.rsplit(" ", 1)[-1]
    assert re.fullmatch(r"A\d{10}", accession), placeholder
    shot(page, "schedule-form-ja")
    page.click("#save")
    page.wait_for_selector("li.step[data-status=SCHEDULED]")
    row = page.locator("li.step").first
    assert "山田 太郎" in row.inner_text() and "予約済" in row.inner_text()
    pk = row.get_attribute("data-pk")

    # 5. The CT asks for its worklist, as a modality would.
    found = findscu(box, tmp_path, today.strftime("%Y%m%d"))
    assert len(found) == 1
    item = found[0]
    assert str(item.PatientName) == JP_NAME
    assert item.PatientID == "JP-0001" and item.AccessionNumber == accession
    assert item.PatientBirthDate == "19700304" and item.PatientSex == "M"
    assert "ISO 2022 IR 87" in list(item.SpecificCharacterSet)
    sps = item.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledStationAETitle == "CT1" and sps.Modality == "CT"
    assert sps.ScheduledProtocolCodeSequence[0].CodeValue == "CTH-R"

    # 6. MPPS IN PROGRESS, then COMPLETED: the open board follows without a reload.
    page.evaluate("window.__noReload = 'still here'")
    uid = mpps(box, item, "IN PROGRESS")
    page.wait_for_selector(f"#step-{pk}[data-status=STARTED]", timeout=20_000)
    assert "検査中" in page.inner_text(f"#step-{pk}")
    assert page.evaluate("window.__noReload") == "still here"
    shot(page, "board-ja")
    page.set_viewport_size({"width": 768, "height": 1024})
    shot(page, "board-tablet-ja")
    page.set_viewport_size({"width": 1280, "height": 860})
    mpps(box, item, "COMPLETED", uid)
    page.wait_for_selector(f"#step-{pk}[data-status=COMPLETED]", timeout=20_000)
    assert "完了" in page.inner_text(f"#step-{pk}")
    assert page.evaluate("window.__noReload") == "still here"
    page.click(f"#step-{pk} a.name")  # the step's page tells what the CT reported
    performed = page.inner_text("#performed")
    assert "完了" in performed and "CT1" in performed
    page.go_back()

    # 7. Search, then the audit log: who scheduled, which device queried and got how many.
    page.fill("#q", "やまだ")
    page.press("#q", "Enter")
    assert "JP-0001" in page.inner_text("#results")
    page.click("button.lang")  # back to English for the admin pages
    page.wait_for_selector("html[lang=en]")
    page.goto(box.url + "/admin/audit")
    audit = page.inner_text("#audit")
    assert re.search(r"admin\s+schedule", audit)
    assert re.search(r"CT1\s+worklist-query", audit)
    shot(page, "audit")
    page.select_option("#audit-filter select[name=action]", "schedule")  # sends itself (page.js)
    page.wait_for_url(re.compile(r"action=schedule"))
    assert "worklist-query" not in page.inner_text("#audit")
    page.goto(box.url + "/")
    shot(page, "board-en")


def test_box_logs_no_patient_data(box: Box) -> None:
    """After the first hour (the test above), the INFO log holds no name, ID or password."""
    text = "".join(box.lines)
    assert "IN PROGRESS from CT1" in text  # the log of that hour was read
    for secret in ("山田", "Yamada", "やまだ", "JP-0001", PASSWORD):
        assert secret not in text, secret


def test_front_desk_schedules_again_for_a_known_patient(box: Box, page: Any) -> None:
    """After the first hour: the admin adds a front-desk user, who finds the patient by kana."""
    page.goto(box.url + "/admin/users")
    page.fill("#username", "hanako")
    page.select_option("#role", "frontdesk")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.select_option("#language", "ja")
    page.click("form.card button.primary")
    page.wait_for_selector("#user-hanako")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#username", "hanako")
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_selector("#board")
    assert page.locator("html").get_attribute("lang") == "ja"  # her own language
    assert page.locator("details.dropdown").count() == 0  # no admin menu
    page.goto(box.url + "/steps/new")
    page.fill("#find-patient", "やまだ")
    page.click("#patient-hits button")
    assert page.input_value("#patient_id") == "JP-0001"
    assert page.input_value("#name_ideo_family") == "山田"
    assert page.input_value("#birth_date") == "1970-03-04"
    page.select_option("#procedure", "CTCHEST")
    page.select_option("#station_ae", "CT1")
    page.fill("#start", f"{date.today().isoformat()}T11:15")
    page.click("#save")
    page.wait_for_selector("section[data-station=CT1] li.step >> nth=1")
    times = page.locator("section[data-station=CT1] li.step .time").all_inner_texts()
    assert times == ["10:30", "11:15"]
    response = page.goto(box.url + "/admin/devices")
    assert response is not None and response.status == 403


def _run_clock_until(pg: Any, selector: str, state: str = "visible", limit_s: int = 30) -> None:
    """Advance the page's own clock (Playwright's, installed before it loaded) half a
    second at a time, letting each poll's real request finish, until ``selector`` is
    ``state``: the board's 3 s polls without 3 s waits."""
    for _ in range(limit_s * 2):
        pg.clock.run_for(500)
        pg.wait_for_timeout(30)  # real time for the poll's fetch to settle
        shown = pg.locator(selector).is_visible()
        if shown == (state == "visible"):
            return
    raise AssertionError(f"{selector} not {state} after {limit_s} s of the page's clock")


def test_open_board_says_when_it_lost_the_server(box: Box, browser: Any) -> None:
    """The server stops answering: after a few missed polls a banner says since when the
    board is stale; it goes away once the server answers again."""
    pg = browser.new_page()  # signed in (the module's page did); a clock of its own
    try:
        pg.clock.install()
        pg.goto(box.url + "/")
        _run_clock_until(pg, "#live")
        changes = pg.get_attribute("#board", "data-changes")
        pg.route(f"**{changes}*", lambda route: route.abort())
        _run_clock_until(pg, "#server-lost")
        assert re.fullmatch(r"\d\d:\d\d", pg.inner_text("#server-lost .since"))
        assert pg.locator("#live").is_hidden()
        pg.unroute(f"**{changes}*")
        _run_clock_until(pg, "#server-lost", state="hidden")
        assert pg.locator("#live").is_visible()
    finally:
        pg.close()


def test_open_board_tells_when_the_session_has_ended(box: Box, browser: Any, page: Any) -> None:
    """Signed out in another tab: the open board stops polling and says so."""
    board = browser.new_page()  # signed in; its own clock drives its polls
    try:
        board.clock.install()
        board.goto(box.url + "/")
        _run_clock_until(board, "#live")
        page.goto(box.url + "/")
        page.click("form.inline button.link")  # sign out, in the other tab
        page.wait_for_url(re.compile(r"/login"))
        _run_clock_until(board, "#session-ended")
        assert board.locator("#live").is_hidden()
    finally:
        board.close()


@pytest.mark.parametrize("width", [390, 768])
def test_pages_fit_a_narrow_screen(box: Box, browser: Any, width: int) -> None:
    """Phone and tablet widths: no page scrolls sideways (wide tables scroll in their box)."""
    pg = browser.new_page()
    pg.set_viewport_size({"width": width, "height": 900})
    pg.goto(box.url + "/login")  # the board at once when still signed in
    if pg.locator("#password").count():
        pg.fill("#username", "admin")
        pg.fill("#password", PASSWORD)
        pg.click("main button[type=submit]")
    pg.wait_for_selector("#board")
    paths = ["/", "/?q=JP-0001", "/steps/new", "/steps/1", "/account"]
    paths += [
        "/admin/devices",
        "/admin/devices/new",
        "/admin/users",
        "/admin/catalog",
        "/admin/audit",
    ]
    for path in paths:
        pg.goto(box.url + path)
        overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px too wide at {width}px"
    pg.close()


def test_plain_http_lands_on_https_with_a_secure_session(box: Box, browser: Any) -> None:
    """Chromium typed http://: it is sent to the HTTPS page; the session cookie it then
    holds is Secure and HttpOnly, and the answer carries HSTS."""
    pg = browser.new_page()
    try:
        answer = pg.goto(f"http://127.0.0.1:{box.http_port}/login?next=/board")
        assert pg.url.startswith(f"https://127.0.0.1:{box.web_port}/")  # the board, signed in
        assert answer is not None and answer.headers["strict-transport-security"]
        cookies = {c["name"]: c for c in browser.cookies(box.url)}
        session = cookies.get("appliance_session")
        assert session is not None, cookies
        assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    finally:
        pg.close()


def test_csp_blocked_nothing(browser: Any) -> None:
    """Last: no page of the tests above had a script or style the CSP refused."""
    assert browser.csp_refusals == []


def test_the_queue_page_refreshes_itself_unless_a_field_is_in_use(box: Box, browser: Any) -> None:
    pg = browser.new_page()
    pg.clock.install()
    pg.goto(box.url + "/login")
    if pg.locator("#password").count():
        pg.fill("#username", "admin")
        pg.fill("#password", PASSWORD)
        pg.click("main button[type=submit]")
    pg.wait_for_selector("#board")
    pg.goto(box.url + "/admin/destinations")
    pg.evaluate("window.__marker = 1")
    pg.clock.run_for(31_000)
    pg.wait_for_function("window.__marker === undefined", timeout=10_000)  # reloaded
    # Someone typing in a field: no reload under their hands.
    pg.evaluate(
        "window.__marker = 2; document.body.appendChild(document.createElement('input')).focus()"
    )
    pg.clock.run_for(31_000)
    pg.wait_for_timeout(500)
    assert pg.evaluate("window.__marker") == 2
    pg.close()


def test_the_board_prints_as_a_day_list(box: Box, browser: Any) -> None:
    """Print media: the day and room in a heading, no menu and no controls."""
    pg = browser.new_page()
    pg.goto(box.url + "/login")
    if pg.locator("#password").count():
        pg.fill("#username", "admin")
        pg.fill("#password", PASSWORD)
        pg.click("main button[type=submit]")
    pg.wait_for_selector("#board")
    assert pg.locator("#print-heading").is_hidden()
    pg.emulate_media(media="print")
    assert pg.locator("#print-heading").is_visible()
    assert date.today().isoformat() in pg.inner_text("#print-heading")
    assert pg.locator("header.top").is_hidden() and pg.locator(".toolbar").is_hidden()
    pg.pdf(path=str(SHOTS / "board-day-list.pdf"))  # Chromium's own print of the page
    pg.close()
