"""Print jobs: render films to a PDF with page previews, deliver it, report each state.

One worker thread takes queued jobs in order. A job's document is written temp + fsync +
rename; ``ready_at`` marks the document ready for the printer, ``delivered_at`` that the
printer has it. After a restart, unfinished jobs resume where they stopped, so a job
is rendered again at most and delivered once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.fsutil import fsync_path
from appliance.printing import session as rules
from appliance.printing.output import Delivery, DeliveryError, Output
from appliance.printing.repo import PrintRepo
from image import film as film_mod
from image import page as page_mod
from image.pdf import PdfWriter
from image.pixels import SourceImage, Tone

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PRIORITY_RANK = {"HIGH": 0, "MED": 1, "LOW": 2}
MAX_ATTEMPTS = 20

Notify = Callable[[str, str, str], None]


def now_iso() -> str:
    """UTC timestamp as stored in the database."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _tone(attrs: dict[str, Any], profile: dict[str, Any]) -> Tone:
    return Tone(
        min_density=attrs["MinDensity"] / 100.0,
        max_density=attrs["MaxDensity"] / 100.0,
        illumination=float(attrs.get("Illumination") or 2000),
        reflected_ambient=float(attrs.get("ReflectedAmbientLight") or 0),
        paper_dmax=profile["paper_max_density"] / 100.0,
    )


def paper_name(profile: dict[str, Any], film_size_id: str) -> str:
    """The profile's paper for a film size: its paper_for_film entry, else its paper."""
    for pair in profile.get("paper_for_film", "").split():
        film_id, _, paper = pair.partition("=")
        if film_id == film_size_id:
            return paper.upper()
    return str(profile["paper"])


def film_spec(attrs: dict[str, Any], profile: dict[str, Any]) -> page_mod.FilmSpec:
    """The image/ film description of a stored Film Box."""
    return page_mod.FilmSpec(
        display_format=attrs["ImageDisplayFormat"],
        film_size_id=attrs["FilmSizeID"],
        orientation=attrs["FilmOrientation"],
        magnification=attrs["MagnificationType"],
        border_density=attrs["BorderDensity"],
        empty_image_density=attrs["EmptyImageDensity"],
        trim=attrs.get("Trim") == "YES",
        tone=_tone(attrs, profile),
    )


class JobRunner:
    """Renders and delivers queued jobs on one worker thread."""

    def __init__(
        self,
        repo: PrintRepo,
        outputs: dict[str, Output],
        notify: Notify | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        poll_interval: float = 1.0,
    ) -> None:
        self.repo = repo
        self.outputs = outputs
        self.notify = notify or (lambda uid, state, info: None)
        self.retry_delays = retry_delays
        self.poll_interval = poll_interval
        self._queue: list[str] = []  # in arrival order; taken by Print Priority first
        self._rank: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Resume unfinished jobs, then start the worker."""
        with self._cond:
            self._stop = False
            self._queue, self._rank = [], {}
            for uid, priority in self.repo.unfinished_jobs():
                self._add(uid, priority)
        self._thread = threading.Thread(target=self._loop, name="print-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current step; unfinished jobs stay queued in the database."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _add(self, uid: str, priority: str) -> None:
        if uid not in self._rank:
            self._queue.append(uid)
            self._rank[uid] = PRIORITY_RANK.get(priority, 1)

    def _take(self) -> str:
        """The next job: the highest Print Priority, then the oldest."""
        uid = min(self._queue, key=lambda u: self._rank[u])
        self._queue.remove(uid)
        del self._rank[uid]
        return uid

    def submit(self, uid: str, priority: str = "MED") -> None:
        """Queue a job already committed to the database."""
        with self._cond:
            self._add(uid, priority)
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        """True while the worker thread lives."""
        return self._thread is not None and self._thread.is_alive()

    def queued(self) -> int:
        """Jobs waiting (not counting the current one)."""
        with self._cond:
            return len(self._queue)

    def _refresh(self) -> None:
        """Pick up jobs queued by another process (a reprint from the web part)."""
        try:
            pending = self.repo.unfinished_jobs()
        except sqlite3.Error as exc:
            log.warning("cannot read the print queue: %s", exc)
            return
        with self._cond:
            for uid, priority in pending:
                if uid != self.current:
                    self._add(uid, priority)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stop:
                    self._cond.wait(timeout=self.poll_interval)
                if self._stop:
                    return
            if not self._queue:
                self._refresh()
            with self._cond:
                if not self._queue:
                    continue
                uid = self._take()
                self.current = uid
            try:
                self.process(uid)
            except Exception:  # one bad job must not stop the queue; recorded below
                log.exception("print job %s failed unexpectedly", uid)
                self._finish(uid, rules.FAILURE, "PROCESSING FAILURE", "internal error")
            finally:
                self.current = None

    def _sleep(self, seconds: float) -> bool:
        """Wait, unless stopping; returns False when the runner is stopping."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop, timeout=seconds)
            return not self._stop

    # -- one job ----------------------------------------------------------------

    def process(self, uid: str) -> None:
        """Render (unless the document is ready) and deliver (unless delivered) one job."""
        job = self.repo.job(uid)
        if job is None or job["state"] in (rules.DONE, rules.FAILURE):
            return
        if job["state"] == rules.PENDING:
            self.repo.update_job(uid, state=rules.PRINTING, started_at=now_iso())
            self.notify(uid, rules.PRINTING, "NORMAL")
        if job["printer"] not in self.outputs:  # removed from the Printers page since
            self._finish(uid, rules.FAILURE, "PRINTER DOWN", f"no printer {job['printer']!r}")
            return
        if job["ready_at"] is None:
            try:
                self.render(job)
            except (page_mod.ImageTooLarge, film_mod.LayoutError, ValueError, OSError) as exc:
                self._finish(uid, rules.FAILURE, "INVALID PAGE DES", str(exc)[:200])
                return
            job = self.repo.job(uid)
            assert job is not None
        if job["delivered_at"] is None and not self.deliver(job):
            return
        self._finish(uid, rules.DONE, "NORMAL", "")

    def _finish(self, uid: str, state: str, info: str, error: str) -> None:
        self.repo.update_job(uid, state=state, state_info=info, error=error, finished_at=now_iso())
        log.info("print job %s %s %s", uid, state, error)
        self.notify(uid, state, info)
        try:
            self.repo.purge_pixels()
        except OSError as exc:
            log.warning("could not purge pixel files: %s", exc)

    def render(self, job: dict[str, Any]) -> None:
        """Write document.pdf and page-N.png for every film of the job."""
        started = time.perf_counter()
        spec = job["spec"]
        profile = spec["profile"]
        output = self.outputs[job["printer"]]
        out_dir = self.repo.job_dir(job["uid"])
        out_dir.mkdir(parents=True, exist_ok=True)
        pdf_path = out_dir / "document.pdf"
        tmp = pdf_path.with_suffix(".tmp")
        warnings: set[str] = set()
        media = ""
        films = spec["films"]
        with open(tmp, "wb") as f:
            writer = PdfWriter(f)
            for n, film in enumerate(films, 1):
                attrs = film["attrs"]
                film_mm = film_mod.film_size_mm(attrs["FilmSizeID"], attrs["FilmOrientation"])
                paper = output.paper(film_mm, paper_name(profile, attrs["FilmSizeID"]))
                media = media or paper.media
                # Annotation Box texts are printed under the film; the profile's footer adds
                # the film session label, the date and the page number.
                footer = " ".join(film.get("annotations", []))
                if profile["footer"]:
                    label = spec["session"].get("FilmSessionLabel", "")
                    date = job["created_at"][:10]
                    footer = f"{label} {footer} {date} page {n} of {len(films)}"
                page_spec = page_mod.PageSpec(
                    paper_mm=paper.size_mm,
                    dpi=profile["dpi"],
                    fit=profile["fit"],
                    color=profile["color"] and film["color"],
                    footer=" ".join(footer.split()),
                )
                result = page_mod.render_film(
                    film_spec(attrs, profile), self._boxes(film), page_spec
                )
                warnings |= result.warnings
                writer.add_page(result.page, profile["dpi"])
                page_mod.preview(result.page).save(out_dir / f"page-{n}.png")
                del result
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, pdf_path)
        fsync_path(out_dir)
        elapsed = round((time.perf_counter() - started) * 1000)
        self.repo.update_job(
            job["uid"],
            document=str(pdf_path.relative_to(self.repo.root)),
            pages=len(films),
            media=media,
            warnings=",".join(sorted(warnings)),
            render_ms=elapsed,
            ready_at=now_iso(),
        )

    def _boxes(self, film: dict[str, Any]) -> list[page_mod.BoxSpec]:
        boxes = []
        for box in film["boxes"]:
            attrs, info, name = box["attrs"], box["info"], box["file"]

            def load(name: str = name, info: dict[str, Any] = info) -> SourceImage:
                arr = self.repo.load_pixels(name)
                return SourceImage(arr, info["photometric"], info["bits"], info.get("aspect", 1.0))

            boxes.append(
                page_mod.BoxSpec(
                    position=box["position"],
                    loader=load,
                    polarity=attrs.get("Polarity", "NORMAL"),
                    magnification=attrs.get("MagnificationType", ""),
                    requested_size_mm=float(attrs.get("RequestedImageSize") or 0.0),
                    decimate_crop=attrs.get("RequestedDecimateCropBehavior", "DECIMATE"),
                    plut=rules.presentation_lut(film.get("lut")),
                )
            )
        return boxes

    def delivery(self, job: dict[str, Any]) -> Delivery:
        """What the output needs to deliver a rendered job."""
        out_dir = self.repo.job_dir(job["uid"])
        previews = sorted(out_dir.glob("page-*.png"), key=lambda p: int(p.stem.split("-")[1]))
        spec = job["spec"]
        label = spec["session"].get("FilmSessionLabel", "") or "film"
        return Delivery(
            job_uid=job["uid"],
            pdf=self.repo.root / job["document"],
            previews=previews,
            copies=job["copies"],
            color=bool(spec["profile"]["color"]) and any(f["color"] for f in spec["films"]),
            media=job["media"],
            job_name=f"{label} ({job['calling_ae']})",
            dpi=spec["profile"]["dpi"],
            pages=job["pages"],
        )

    def deliver(self, job: dict[str, Any]) -> bool:
        """Deliver with retries; True when delivered, False when failed or stopping."""
        uid = job["uid"]
        output = self.outputs.get(job["printer"])
        if output is None:
            self._finish(uid, rules.FAILURE, "PRINTER DOWN", f"no printer {job['printer']!r}")
            return False
        attempt = job["attempts"]
        while True:
            attempt += 1
            self.repo.update_job(uid, attempts=attempt)
            try:
                detail = output.deliver(self.delivery(job))
            except DeliveryError as exc:
                if not exc.retry or attempt >= MAX_ATTEMPTS:
                    self._finish(uid, rules.FAILURE, "PRINTER DOWN", str(exc)[:200])
                    return False
                delay = self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)]
                self.repo.update_job(uid, error=f"retrying: {exc}"[:200])
                log.warning("print job %s: %s; retry in %.0f s", uid, exc, delay)
                if not self._sleep(delay):
                    return False
                continue
            self.repo.update_job(uid, delivered_at=now_iso(), error="")
            log.info("print job %s delivered to %s", uid, job["printer"])
            log.debug("print job %s delivery: %s", uid, detail)
            return True


def document_path(repo: PrintRepo, job: dict[str, Any]) -> Path | None:
    """The job's PDF, if rendered."""
    return repo.root / job["document"] if job.get("document") else None
