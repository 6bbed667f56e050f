"""An IPP printer that answers server-error-busy: the job waits and is printed once.

The printer here is a small IPP server on loopback (ippeveprinter cannot be made busy
on demand); it speaks the same encoding the appliance's client sends.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.printing import ipp
from appliance.server import Appliance
from tests.helpers import wait_for
from tests.printscu import PRINTER, PRINTER_INSTANCE, PrintSCU


class BusyPrinter:
    """Answers Print-Job with server-error-busy `busy` times, then accepts it."""

    def __init__(self, busy: int, job_state: int = 9) -> None:
        self.busy = busy
        self.job_state = job_state
        self.print_jobs: list[bytes] = []
        self.refused = 0
        self.reasons = ["none"]
        printer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else _read_chunked(self.rfile)
                self.send_response(200)
                self.send_header("Content-Type", "application/ipp")
                reply = printer.answer(body)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"ipp://127.0.0.1:{self.server.server_address[1]}/ipp/print"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, body: bytes) -> bytes:
        request = ipp.decode_response(body)  # same layout: the "status" is the operation
        op, rid = request.status, request.request_id
        head = [
            (ipp.CHARSET, "attributes-charset", "utf-8"),
            (ipp.LANGUAGE, "attributes-natural-language", "en"),
        ]
        if op == ipp.GET_PRINTER_ATTRIBUTES:
            printer = [
                (ipp.ENUM, "printer-state", 3),
                (ipp.KEYWORD, "printer-state-reasons", self.reasons),
                (ipp.MIME, "document-format-supported", ["application/pdf"]),
                (ipp.KEYWORD, "media-supported", ["iso_a4_210x297mm"]),
                (ipp.KEYWORD, "print-color-mode-supported", ["monochrome"]),
            ]
            return _response(0, rid, head, ipp.PRINTER_GROUP, printer)
        if op == ipp.PRINT_JOB:
            if self.refused < self.busy:
                self.refused += 1
                return _response(ipp.SERVER_ERROR_BUSY, rid, head)
            self.print_jobs.append(body)
            return _response(
                0, rid, head, ipp.JOB_GROUP, [(ipp.INTEGER, "job-id", len(self.print_jobs))]
            )
        if op == ipp.GET_JOB_ATTRIBUTES:
            state = [(ipp.ENUM, "job-state", self.job_state)]
            if self.job_state == 8:
                state.append((ipp.KEYWORD, "job-state-reasons", "document-format-error"))
            return _response(0, rid, head, ipp.JOB_GROUP, state)
        return _response(0x0501, rid, head)


def _response(status: int, rid: int, head: list, tag: int | None = None, attrs: list = ()) -> bytes:  # type: ignore[assignment]
    out = bytearray(struct.pack(">BBHI", 2, 0, status, rid))
    out.append(ipp.OPERATION_GROUP)
    for t, name, value in head:
        out += ipp._attr(t, name, value)
    if tag is not None:
        out.append(tag)
        for t, name, value in attrs:
            out += ipp._attr(t, name, value)
    out.append(ipp.END)
    return bytes(out)


def _read_chunked(stream: Any) -> bytes:
    data = bytearray()
    while True:
        size = int(stream.readline().strip(), 16)
        if size == 0:
            stream.readline()
            return bytes(data)
        data += stream.read(size)
        stream.readline()


@pytest.fixture
def busy_printer() -> Iterator[BusyPrinter]:
    printer = BusyPrinter(busy=1)
    printer.thread.start()
    yield printer
    printer.server.shutdown()
    printer.server.server_close()


def test_busy_printer_gets_the_job_once_it_is_free(
    start_appliance: Callable[..., Appliance], busy_printer: BusyPrinter, tmp_path: Path
) -> None:
    app = start_appliance(
        {
            "devices": [{"ae_title": "CT1"}],
            "printers": [{"name": "ward", "uri": busy_printer.uri}],
            "print_profiles": [{"dpi": 30}],
        }
    )
    busy_printer.reasons = ["media-low-report"]
    scu = PrintSCU(app.dicom_port)
    try:
        st, ds = scu.get(PRINTER, PRINTER_INSTANCE)
        assert (st, ds.PrinterStatus, ds.PrinterStatusInfo) == (0, "WARNING", "SUPPLY LOW")
        _box, job = scu.print_film("STANDARD\\1,1", FilmSizeID="8INX10IN")
    finally:
        scu.release()
    rows = lambda: app.runtime.store.query("SELECT state, attempts, media FROM print_jobs")  # noqa: E731
    wait_for(lambda: rows()[0]["state"] == "DONE", timeout=15)
    assert rows()[0]["attempts"] == 2 and rows()[0]["media"] == "iso_a4_210x297mm"
    assert busy_printer.refused == 1 and len(busy_printer.print_jobs) == 1
    sent = busy_printer.print_jobs[0]
    assert b"application/pdf" in sent and b"%PDF-1.4" in sent and b"iso_a4_210x297mm" in sent


def test_a_job_the_printer_aborts_fails_and_the_scu_hears_it(
    start_appliance: Callable[..., Appliance], busy_printer: BusyPrinter
) -> None:
    busy_printer.busy, busy_printer.job_state = 0, 8  # aborted
    app = start_appliance(
        {
            "devices": [{"ae_title": "CT1"}],
            "printers": [{"name": "ward", "uri": busy_printer.uri}],
            "print_profiles": [{"dpi": 30, "footer": True, "job_events": True}],
        }
    )
    scu = PrintSCU(app.dicom_port)
    try:
        _box, job = scu.print_film(
            "STANDARD\\1,1", session_attrs={"FilmSessionLabel": "HAND"}, FilmSizeID="8INX10IN"
        )
        wait_for(lambda: [e[0] for e in scu.events] == [1, 2, 4], timeout=15)
        assert scu.events[-1][2].ExecutionStatusInfo == "PRINTER DOWN"
        st, ds = scu.get("1.2.840.10008.5.1.1.14", job)
        assert (st, ds.ExecutionStatus) == (0, "FAILURE")
    finally:
        scu.release()
    row = app.runtime.store.query("SELECT error, pages FROM print_jobs")[0]
    assert "aborted (document-format-error)" in row["error"]
    preview = app.runtime.config.data_dir / "prints" / "jobs" / job / "page-1.png"
    assert preview.exists()  # the page is kept, for a reprint elsewhere


def test_printer_state_changes_reach_connected_scus(
    start_appliance: Callable[..., Appliance], busy_printer: BusyPrinter
) -> None:
    app = start_appliance(
        {
            "devices": [{"ae_title": "CT1"}],
            "printers": [{"name": "ward", "uri": busy_printer.uri}],
            "print_profiles": [{"job_events": True}],
        }
    )
    service = next(s for s in app.services if s.name == "print")
    service.printer_poll = 0.1
    service.printers["ward"].cache_seconds = 0.0
    scu = PrintSCU(app.dicom_port)
    try:
        st, ds = scu.get(PRINTER, PRINTER_INSTANCE)
        assert (st, ds.PrinterStatus) == (0, "NORMAL")
        assert scu.session()[0] == 0
        busy_printer.reasons = ["media-empty-error"]
        wait_for(lambda: [e[0] for e in scu.events] == [2])  # Printer WARNING
        event_type, uid, info = scu.events[0]
        assert uid == PRINTER_INSTANCE
        assert (info.PrinterStatusInfo, info.PrinterName) == ("SUPPLY EMPTY", "ward")
        busy_printer.reasons = ["none"]
        wait_for(lambda: [e[0] for e in scu.events] == [2, 1])  # back to NORMAL
        st, ds = scu.get(PRINTER, PRINTER_INSTANCE)
        assert (st, ds.PrinterStatus, ds.PrinterStatusInfo) == (0, "NORMAL", "NORMAL")
    finally:
        scu.release()
