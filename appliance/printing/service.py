"""The Print Management service: profiles, film sessions on disk, the job queue, printers.

The pynetdicom handlers (``scp``) call the methods here; rules come from ``session``
(pure), storage from ``repo``, rendering and delivery from ``jobs`` and ``output``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from appliance import __version__, status
from appliance.config import PrintProfileSettings
from appliance.printing import printers as printer_list
from appliance.printing import scp
from appliance.printing import session as rules
from appliance.printing.events import EventSender
from appliance.printing.jobs import JobRunner
from appliance.printing.output import FAILURE, Output, PrinterState, make_output
from appliance.printing.repo import PrintRepo
from appliance.printing.session import PrintError

log = logging.getLogger(__name__)

PRINTS_DIR = "prints"
# Little endian only: image box pixels are read as little-endian words.
TRANSFER_SYNTAXES: list[str] = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
]
DEFAULT_PRINTER = printer_list.DEFAULT
MAX_QUEUED_JOBS = 50
PRINTER_POLL_SECONDS = 10.0  # how often printers are checked while an SCU is connected
SESSION_TTL_HOURS = 48  # an unprinted film session is kept this long after its creation
# Root for instance UIDs this service creates: generate_uid keeps them within 64 characters.
UID_ROOT = "1.2.826.0.1.3680043.10.1338."


def new_uid() -> str:
    """A fresh instance UID (at most 64 characters, PS3.5 9.1)."""
    return generate_uid(prefix=UID_ROOT)


def _ds(attrs: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for key, value in attrs.items():
        if key[0].isupper() and value not in (None, ""):
            setattr(ds, key, value)
    return ds


def _ref(cls: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = cls
    item.ReferencedSOPInstanceUID = uid
    return item


class PrintService:
    """What the shared DICOM listener needs from the print service, plus the web's view."""

    name = "print"

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        config = runtime.config
        self.data_dir = Path(config.data_dir)
        self.repo = PrintRepo(runtime.store, self.data_dir / PRINTS_DIR)
        # The same dict object the job runner reads: changed in place by _refresh_printers.
        self.printers: dict[str, Output] = {}
        self._printer_uris: dict[str, str] = {}
        self.default_printer = DEFAULT_PRINTER.name
        self._lock = threading.Lock()
        self._refresh_printers()
        self.profiles: dict[str, PrintProfileSettings] = {}
        for p in config.print_profiles:
            self.profiles[p.ae_title or config.dicom.ae_title] = p
        self.profiles.setdefault(config.dicom.ae_title, PrintProfileSettings())
        for ae, p in self.profiles.items():
            if p.printer and p.printer not in self.printers:
                raise PrintError(status.PROCESSING_FAILURE, f"profile {ae}: no printer {p.printer}")
        self.events = EventSender(timeout=min(10.0, config.dicom.dimse_timeout))
        self.runner = JobRunner(self.repo, self.printers, notify=self._job_changed)
        # Associations that opened a film session, with their printer and meta SOP class.
        self._listeners: weakref.WeakKeyDictionary[Any, tuple[str, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._printer_states: dict[str, tuple[str, str]] = {}
        self.printer_poll = PRINTER_POLL_SECONDS
        self._monitor_stop = threading.Event()
        self._monitor: threading.Thread | None = None

    # -- the Service protocol -------------------------------------------------

    def contexts(self) -> list[tuple[str, list[str] | None]]:
        """Both meta SOP classes, and the classes negotiated on their own."""
        uids = (scp.GRAYSCALE_META, scp.COLOR_META, scp.PRESENTATION_LUT, scp.PRINT_JOB)
        return [(uid, TRANSFER_SYNTAXES) for uid in (*uids, scp.ANNOTATION_BOX, scp.PRINTER)]

    def handlers(self) -> list[tuple[Any, ...]]:
        """N-CREATE, N-SET, N-ACTION, N-DELETE, N-GET bindings."""
        return scp.bindings(self)

    def called_ae_titles(self) -> list[str]:
        """Called AE titles besides the appliance's own that the listener must accept."""
        return sorted(self.profiles)

    def start(self) -> None:
        """Resume unfinished jobs, start the workers, remove orphan pixel files."""
        self.repo.expire_sessions(SESSION_TTL_HOURS)
        self.repo.purge_pixels()
        self.events.start()
        self.runner.start()
        self._monitor_stop.clear()
        self._monitor = threading.Thread(
            target=self._watch_printers, name="print-monitor", daemon=True
        )
        self._monitor.start()

    def stop(self) -> None:
        """Stop the workers; queued jobs stay in the database."""
        self._monitor_stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        self.runner.stop()
        self.events.stop()

    def health(self) -> dict[str, Any]:
        """Worker state and queue length."""
        rows = self.runtime.store.query(
            "SELECT state, count(*) AS n FROM print_jobs GROUP BY state"
        )
        return {
            "state": "running" if self.runner.running else "stopped",
            "queued": self.runner.queued(),
            "jobs": {r["state"]: r["n"] for r in rows},
            "printers": sorted(self.printers),
        }

    # -- profiles and printers ----------------------------------------------------

    def profile(self, called: str) -> PrintProfileSettings:
        """The profile of a called AE title."""
        try:
            return self.profiles[called]
        except KeyError:
            raise PrintError(status.PROCESSING_FAILURE, f"no print profile for {called}") from None

    def _refresh_printers(self) -> None:
        """Follow the live printer list (edited on the web): outputs added, changed (a new
        URI) and removed in place, so the job runner and the next film see them at once."""
        current = printer_list.effective(self.runtime.printers.current())
        uris = {p.name: p.uri for p in current}
        with self._lock:
            if uris == self._printer_uris:
                return
            for name, uri in uris.items():
                if self._printer_uris.get(name) != uri:
                    self.printers[name] = make_output(name, uri, self.data_dir)
            for name in set(self.printers) - set(uris):
                del self.printers[name]
            self._printer_uris = uris
            self.default_printer = current[0].name
        log.info("printers: %s", ", ".join(uris))

    def printer_name(self, profile: PrintProfileSettings) -> str:
        """The printer a profile prints to (the live list's first when it names none)."""
        self._refresh_printers()
        name = profile.printer or self.default_printer
        if name not in self.printers:
            raise PrintError(status.PROCESSING_FAILURE, f"no printer {name}")
        return name

    def printer_state(self, name: str) -> PrinterState:
        """The live state of a printer (remembered, so a change can be reported)."""
        output = self.printers.get(name)
        if output is None:
            raise PrintError(status.PROCESSING_FAILURE, f"no printer {name}")
        state = output.state()
        with self._lock:
            before = self._printer_states.get(name)
            self._printer_states[name] = (state.status, state.info)
        if before is not None and before != (state.status, state.info):
            self._printer_changed(name, state)
        return state

    def listen(self, assoc: Any, called: str, meta_uid: str) -> None:
        """Printer N-EVENT-REPORTs go to this association while it lasts (PS3.4 H.4.6.1.1)."""
        profile = self.profile(called)
        if not profile.job_events:
            return
        name = self.printer_name(profile)  # outside the lock: it may refresh the printers
        with self._lock:
            self._listeners[assoc] = (name, meta_uid)

    def _printer_changed(self, name: str, state: PrinterState) -> None:
        info = Dataset()
        info.PrinterStatusInfo = state.info
        info.PrinterName = name[:64]
        event_type = rules.PRINTER_EVENT_TYPES[state.status]
        with self._lock:
            targets = [(a, m) for a, (p, m) in self._listeners.items() if p == name]
        for assoc, meta_uid in targets:
            if assoc.is_established:
                self.events.send_to(
                    assoc, meta_uid, event_type, info, scp.PRINTER, scp.PRINTER_INSTANCE
                )
        log.info("printer %s is now %s %s", name, state.status, state.info)

    def _watch_printers(self) -> None:
        """Check the printers that connected SCUs print to, while any is connected."""
        last = time.monotonic()
        while not self._monitor_stop.wait(0.2):
            if time.monotonic() - last < self.printer_poll:
                continue
            last = time.monotonic()
            with self._lock:
                names = {p for a, (p, _m) in self._listeners.items() if a.is_established}
            self._refresh_printers()
            for name in sorted(names & set(self.printers)):  # a removed one is not watched
                self.printer_state(name)

    # -- Film Session -----------------------------------------------------------

    def create_session(
        self, ds: Dataset, calling: str, called: str, meta: str, uid: str | None
    ) -> tuple[str, Dataset, list[int]]:
        """Film Session N-CREATE."""
        self.profile(called)
        out = rules.film_session_attrs(ds)
        uid = uid or new_uid()
        if self.repo.session(uid) is not None:
            raise PrintError(status.DUPLICATE_SOP_INSTANCE, "Film Session exists")
        self.repo.create_session(uid, calling, called, meta, out.attrs)
        log.info("film session created for %s (%s)", calling, meta)
        return uid, _ds(out.attrs), out.warnings

    def _session(self, uid: str, calling: str) -> dict[str, Any]:
        row = self.repo.session(uid)
        if row is None or row["calling_ae"] != calling:
            raise PrintError(status.NO_SUCH_SOP_INSTANCE, "no such Film Session")
        return row

    def set_session(self, uid: str, ds: Dataset, calling: str) -> tuple[Dataset, list[int]]:
        """Film Session N-SET."""
        row = self._session(uid, calling)
        out = rules.film_session_attrs(ds, row["attrs"])
        self.repo.update_session(uid, out.attrs)
        return _ds({k: out.attrs[k] for k in out.attrs if k in ds}), out.warnings

    # -- Film Box -----------------------------------------------------------------

    def create_film_box(
        self, ds: Dataset, calling: str, called: str, meta: str, uid: str | None
    ) -> tuple[str, Dataset, list[int]]:
        """Film Box N-CREATE: creates its image and annotation boxes (PS3.4 H.4.2.2.1)."""
        profile = self.profile(called)
        refs = ds.get("ReferencedFilmSessionSequence")
        if not refs or "ReferencedSOPInstanceUID" not in refs[0]:
            raise PrintError(status.MISSING_ATTRIBUTE, "Referenced Film Session Sequence")
        session_uid = str(refs[0].ReferencedSOPInstanceUID)
        session_row = self.repo.session(session_uid)
        if session_row is None or session_row["calling_ae"] != calling:
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "no such Film Session")
        out = rules.film_box_attrs(ds, profile)
        lut_uid = self._lut_ref(ds)
        out.attrs["PresentationLUT"] = lut_uid
        uid = uid or new_uid()
        if self.repo.film_box(uid) is not None:
            raise PrintError(status.DUPLICATE_SOP_INSTANCE, "Film Box exists")
        color = session_row["meta"] == rules.COLOR
        box_cls = scp.COLOR_IMAGE_BOX if color else scp.GRAYSCALE_IMAGE_BOX
        boxes = [(new_uid(), pos, color) for pos in range(1, rules.image_box_count(out.attrs) + 1)]
        notes = [
            (new_uid(), pos)
            for pos in range(1, rules.annotation_count(out.attrs["AnnotationDisplayFormatID"]) + 1)
        ]
        self.repo.create_film_box(uid, session_uid, out.attrs, boxes, notes)
        reply = _ds({k: v for k, v in out.attrs.items() if k != "PresentationLUT"})
        reply.ReferencedFilmSessionSequence = [_ref(scp.FILM_SESSION, session_uid)]
        reply.ReferencedImageBoxSequence = [_ref(box_cls, u) for u, _p, _c in boxes]
        if notes:
            reply.ReferencedBasicAnnotationBoxSequence = [
                _ref(scp.ANNOTATION_BOX, u) for u, _ in notes
            ]
        if lut_uid:
            reply.ReferencedPresentationLUTSequence = [_ref(scp.PRESENTATION_LUT, lut_uid)]
        return uid, reply, out.warnings

    def _lut_ref(self, ds: Dataset) -> str:
        refs = ds.get("ReferencedPresentationLUTSequence")
        if not refs:
            return ""
        lut_uid = str(refs[0].get("ReferencedSOPInstanceUID", ""))
        if self.repo.lut(lut_uid) is None:
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "no such Presentation LUT")
        return lut_uid

    def _film_box(self, uid: str, calling: str) -> dict[str, Any]:
        row = self.repo.film_box(uid)
        if row is None:
            raise PrintError(status.NO_SUCH_SOP_INSTANCE, "no such Film Box")
        self._session(row["session_uid"], calling)
        return row

    def set_film_box(
        self, uid: str, ds: Dataset, calling: str, called: str
    ) -> tuple[Dataset, list[int]]:
        """Film Box N-SET."""
        row = self._film_box(uid, calling)
        out = rules.film_box_attrs(ds, self.profile(called), row["attrs"], creating=False)
        if "ReferencedPresentationLUTSequence" in ds:
            out.attrs["PresentationLUT"] = self._lut_ref(ds)
        self.repo.update_film_box(uid, out.attrs)
        changed = {k: v for k, v in out.attrs.items() if k != "PresentationLUT" and k in ds}
        return _ds(changed), out.warnings

    # -- Image Box, Annotation Box ------------------------------------------------------

    def set_image_box(self, uid: str, ds: Dataset, color: bool) -> tuple[Dataset | None, list[int]]:
        """Image Box N-SET: the pixels are on disk before Success is returned."""
        row = self.repo.image_box(uid)
        if row is None:
            raise PrintError(status.NO_SUCH_SOP_INSTANCE, "no such Image Box")
        if bool(row["color"]) != color:
            raise PrintError(status.CLASS_INSTANCE_CONFLICT, "Image Box class differs")
        update = rules.image_box_update(ds, row["position"], color, row["film_attrs"], row["attrs"])
        pixel_file = None
        if update.pixels is not None:
            try:
                pixel_file = self.repo.save_pixels(update.pixels)
            except OSError as exc:
                raise PrintError(status.PRINT_INSUFFICIENT_MEMORY, "cannot store image") from exc
        self.repo.set_image_box(uid, update.attrs, pixel_file, update.pixel_info)
        return None, update.warnings

    def set_annotation(self, uid: str, ds: Dataset) -> tuple[Dataset | None, list[int]]:
        """Annotation Box N-SET."""
        row = self.repo.annotation(uid)
        if row is None:
            raise PrintError(status.NO_SUCH_SOP_INSTANCE, "no such Annotation Box")
        self.repo.set_annotation(uid, rules.annotation_text(ds, row["position"]))
        return None, []

    # -- Presentation LUT ---------------------------------------------------------------

    def create_lut(
        self, ds: Dataset, calling: str, uid: str | None
    ) -> tuple[str, Dataset, list[int]]:
        """Presentation LUT N-CREATE."""
        attrs = rules.presentation_lut_attrs(ds)
        uid = uid or new_uid()
        if self.repo.lut(uid) is not None:
            raise PrintError(status.DUPLICATE_SOP_INSTANCE, "Presentation LUT exists")
        self.repo.create_lut(uid, calling, attrs)
        reply = Dataset()
        if attrs.get("shape"):
            reply.PresentationLUTShape = attrs["shape"]
        return uid, reply, []

    # -- N-DELETE -------------------------------------------------------------------------

    def delete(self, cls: str, uid: str, calling: str) -> None:
        """N-DELETE of a Film Session, Film Box or Presentation LUT."""
        if cls == scp.FILM_SESSION:
            self._session(uid, calling)
            self.repo.delete_session(uid)
        elif cls == scp.FILM_BOX:
            self._film_box(uid, calling)
            self.repo.delete_film_box(uid)
        elif not self.repo.delete_lut(uid):
            raise PrintError(status.NO_SUCH_SOP_INSTANCE, "no such Presentation LUT")

    # -- N-ACTION: printing ---------------------------------------------------------------

    def _film_snapshot(self, film: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A film box as the job will print it; second value: it has images."""
        boxes = [
            {
                "position": b["position"],
                "attrs": b["attrs"],
                "file": b["pixel_file"],
                "info": b["pixel_info"],
            }
            for b in self.repo.image_boxes(film["uid"])
            if b["pixel_file"]
        ]
        lut_uid = film["attrs"].get("PresentationLUT", "")
        snapshot = {
            "film_box_uid": film["uid"],
            "attrs": film["attrs"],
            "boxes": boxes,
            "lut": self.repo.lut(lut_uid) if lut_uid else None,
            "annotations": self.repo.annotations(film["uid"]),
            "color": any(b["info"].get("photometric") == "RGB" for b in boxes),
        }
        return snapshot, bool(boxes)

    def print_films(
        self, whole_session: bool, uid: str, calling: str, called: str, assoc: Any
    ) -> tuple[str, list[int]]:
        """Queue a print job for a session's film boxes or one film box; returns its UID."""
        profile = self.profile(called)
        if whole_session:
            session_row = self._session(uid, calling)
            films = self.repo.film_boxes(uid)
            if not films:
                raise PrintError(status.PRINT_NO_FILM_BOXES, "Film Session has no Film Box")
            empty_status = status.PRINT_EMPTY_PAGE
        else:
            film = self._film_box(uid, calling)
            session_row = self._session(film["session_uid"], calling)
            films = [film]
            empty_status = status.PRINT_EMPTY_PAGE_NO_IMAGE
        if self.runner.queued() >= MAX_QUEUED_JOBS:
            raise PrintError(status.PRINT_QUEUE_FULL, "print queue is full")
        printer = self.printer_name(profile)
        if self.printer_state(printer).status == FAILURE:
            raise PrintError(status.PROCESSING_FAILURE, f"printer {printer} is down")
        snapshots = [self._film_snapshot(f) for f in films]
        warnings = [] if any(has for _s, has in snapshots) else [empty_status]
        attrs = session_row["attrs"]
        job_uid = new_uid()
        row: dict[str, Any] = {**job_patient(s for s, _has in snapshots)}
        row |= {
            "uid": job_uid,
            "session_uid": session_row["uid"],
            "calling_ae": calling,
            "called_ae": called,
            "label": attrs.get("FilmSessionLabel", ""),
            "printer": printer,
            "priority": attrs.get("PrintPriority", "MED"),
            "copies": attrs.get("NumberOfCopies", 1),
            "films": len(films),
            "spec": {
                "films": [s for s, _has in snapshots],
                "session": attrs,
                "profile": dataclasses.asdict(profile),
            },
        }
        self.repo.create_job(row, [f["uid"] for f in films])
        negotiated = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        if profile.job_events and scp.PRINT_JOB in negotiated:
            self.events.watch(job_uid, assoc, "")
            self._job_changed(job_uid, rules.PENDING, "NORMAL")
        self.runner.submit(job_uid, row["priority"])
        log.info(
            "print job %s queued for %s: %d film(s) to %s", job_uid, calling, len(films), printer
        )
        return job_uid, warnings

    def _job_changed(self, job_uid: str, state: str, info: str) -> None:
        """Print Job N-EVENT-REPORT to the creating association (PS3.4 H.4.5.1.1)."""
        job = self.repo.job(job_uid)
        report = Dataset()
        report.ExecutionStatusInfo = info
        if job is not None:
            report.FilmSessionLabel = job["label"]
            report.PrinterName = job["printer"]
        self.events.report(job_uid, rules.JOB_EVENT_TYPES[state], report, scp.PRINT_JOB, job_uid)

    # -- N-GET ----------------------------------------------------------------------------

    def printer_attributes(self, called: str) -> Dataset:
        """Printer N-GET: the real printer's state (PS3.3 C.13.9)."""
        profile = self.profile(called)
        name = self.printer_name(profile)
        state = self.printer_state(name)
        ds = Dataset()
        ds.PrinterStatus = state.status
        ds.PrinterStatusInfo = state.info
        ds.PrinterName = name[:64]
        ds.Manufacturer = "DICOM Appliance"
        ds.ManufacturerModelName = "Print SCP"
        ds.DeviceSerialNumber = ""
        ds.SoftwareVersions = __version__
        ds.DateOfLastCalibration = ""
        ds.TimeOfLastCalibration = ""
        return ds

    def job_attributes(self, uid: str) -> Dataset:
        """Print Job N-GET (PS3.3 C.13.8)."""
        job = self.repo.job(uid)
        if job is None:
            raise PrintError(status.NO_SUCH_SOP_INSTANCE, "no such Print Job")
        created = dt.datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
        ds = Dataset()
        ds.ExecutionStatus = job["state"]
        ds.ExecutionStatusInfo = job["state_info"] or "NORMAL"
        ds.PrintPriority = job["priority"]
        ds.CreationDate = created.strftime("%Y%m%d")
        ds.CreationTime = created.strftime("%H%M%S")
        ds.PrinterName = job["printer"][:64]
        ds.Originator = job["calling_ae"]
        return ds


def job_patient(films: Any) -> dict[str, str]:
    """Whose films a job prints: the first Patient Name, ID and Accession Number found in
    its images (several patients on one job: the distinct IDs, comma-separated)."""
    found: dict[str, list[str]] = {key: [] for key in rules.PATIENT_KEYWORDS.values()}
    for film in films:
        for box in film["boxes"]:
            for key, value in box["info"].get("patient", {}).items():
                if key in found and value not in found[key]:
                    found[key].append(value)
    return {key: ", ".join(values[:3]) for key, values in found.items() if values}


def make_service(runtime: Any) -> PrintService:
    """The factory in ``appliance.services.FACTORIES``."""
    return PrintService(runtime)
