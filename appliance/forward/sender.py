"""C-STORE SCU toward one PACS: one worker thread per destination.

The worker claims due rows in batches, reuses one association while the negotiated
presentation contexts cover the batch, and releases it after ``forward.idle_release``
seconds without work. For each (SOP class, stored transfer syntax) it proposes the
stored syntax and, for compressed ones, the uncompressed syntaxes as a separate
context; when the PACS accepts only those, the file is decompressed with pydicom's
pixel plugins and sent uncompressed. A file whose stored syntax was accepted is
streamed by ``store_wire`` straight onto the association's socket; pynetdicom still
negotiates, releases and aborts. Outcomes follow ``retry.classify``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt

from appliance.config import LOSSLESS_TARGETS, DestinationSettings, DicomSettings, ForwardSettings
from appliance.db import Store
from appliance.dicom import echo as dicom_echo
from appliance.dicom import tls
from appliance.forward import journal, queue, retry, store_wire
from appliance.forward.spool import Spool, StoredFile
from appliance.worker import Worker

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1-255
IDLE_POLL = 1.0  # seconds between looks at the queue when nothing is due (web edits, retries)
# An error of one instance (no acceptable context, no conversion, an exception preparing
# it) is retried on the instance's own backoff this many times (or forward.max_attempts,
# if lower), then it is a dead letter; a PACS configuration or a decoder may fix it.
INSTANCE_ATTEMPTS = 5


NODELAY = dicom_echo.NODELAY
# The sender's associations: no Nagle delay, and the socket guard store_wire needs.
SENDER_HANDLERS: list[Any] = [*NODELAY, (evt.EVT_CONN_OPEN, store_wire.install_guard)]


class PermanentError(Exception):
    """The PACS cannot take this instance as it is; the reason goes to the dead letters."""


def proposed_contexts(pairs: set[tuple[str, str]], target: str = "") -> list[tuple[str, list[str]]]:
    """Presentation contexts for (SOP class, stored syntax) pairs: the destination's
    lossless ``target`` for uncompressed data (if set), the stored syntax, then the
    uncompressed syntaxes."""
    out: list[tuple[str, list[str]]] = []
    for sop_class, ts in sorted(pairs):
        if target and not UID(ts).is_compressed:
            out.append((sop_class, [target]))
        out.append((sop_class, [ts]))
        others = [str(u) for u in UNCOMPRESSED if u != ts]
        out.append((sop_class, others))
    return out


class Sender(Worker):
    """A worker for one destination (one of ``lanes`` parallel associations to it);
    ``wake()`` when new rows are queued."""

    def __init__(
        self,
        dest: DestinationSettings,
        timeouts: DicomSettings,
        store: Store,
        spool: Spool,
        settings: ForwardSettings,
        on_delivered: Callable[[list[queue.Item]], None] = lambda items: None,
        lane: int = 0,
        lanes: int = 1,
        tls_args: tuple[Any, str] | None = None,
    ) -> None:
        self.dest = dest
        self.tls_args = tls_args  # dicom.tls.for_destination: DICOM TLS toward this PACS
        self.lane = lane
        self.lanes = lanes
        self.calling_ae = timeouts.ae_title
        self.timeouts = timeouts
        self.store = store
        self.spool = spool
        self.settings = settings
        self.on_delivered = on_delivered
        super().__init__()
        self._assoc: Any = None
        self._wire: store_wire.StoreWire | None = None
        self._pairs: set[tuple[str, str]] = set()
        self._why = ""  # why the last C-STORE got no response
        self._settled: set[int] = set()  # queue ids of the batch already charged or done
        self._last_work = 0.0
        self.failures = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self.delivered = 0
        self.wire_stores = 0  # C-STOREs answered through store_wire (the others: pynetdicom)
        # destination.transfer_syntax: compress uncompressed data losslessly on the way.
        self.target = LOSSLESS_TARGETS.get(dest.transfer_syntax, "")
        self.bytes_saved = 0  # pixel bytes compression saved (this batch; then stored)
        self.state = "stopped"

    # -- lifecycle --------------------------------------------------------------

    def thread_name(self) -> str:
        return f"forward-{self.dest.name}-{self.lane}"

    def start(self) -> None:
        self.state = "running"
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._release()
        self.state = "stopped"

    # -- the loop ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = queue.claim(
                    self.store,
                    self.dest.name,
                    self.settings.batch_size,
                    lane=self.lane,
                    lanes=self.lanes,
                )
                if items:
                    self._settled = set()
                    try:
                        self._send_batch(items)
                    except Exception as exc:
                        # A bug must neither kill the worker nor loop on the same batch
                        # uncharged: every claimed row not yet settled counts an attempt
                        # (once: a row already charged or delivered is not charged again).
                        log.exception("forward to %s: unexpected error", self.dest.name)
                        self._release()
                        error = f"unexpected error: {type(exc).__name__}: {exc}"
                        left = [i for i in items if i.id not in self._settled]
                        queue.mark_retry(
                            self.store, left, error, self._delay, self._instance_attempts()
                        )
                        self._note_error(error)
                    self._last_work = time.monotonic()
                    continue
                self._wait_for_work()
            except Exception:  # the queue itself failed (database): logged, tried again later
                log.exception("forward to %s: unexpected error", self.dest.name)
                self._release()
                self._stop.wait(self.settings.retry_initial)

    def _wait_for_work(self) -> None:
        timeout = IDLE_POLL
        due = queue.next_due(self.store, self.dest.name, self.lane, self.lanes)
        if due is not None:
            timeout = min(timeout, max(0.0, due - time.time()))
        if self._assoc is not None:
            idle_left = self.settings.idle_release - (time.monotonic() - self._last_work)
            if idle_left <= 0:
                self._release()
            else:
                timeout = min(timeout, idle_left)
        if self._wake.wait(timeout):
            self._wake.clear()

    # -- associations -----------------------------------------------------------

    def _ensure_association(self, items: list[queue.Item]) -> list[queue.Item] | None:
        """An association whose contexts cover the items (perhaps fewer of them), or None."""
        pairs = {(i.sop_class_uid, i.transfer_syntax) for i in items}
        if self._assoc is not None and self._assoc.is_established and pairs <= self._pairs:
            return items
        self._release()
        per_pair = 3 if self.target else 2
        if len(pairs) * per_pair > MAX_CONTEXTS:
            keep = set(sorted(pairs)[: MAX_CONTEXTS // per_pair])
            items = [i for i in items if (i.sop_class_uid, i.transfer_syntax) in keep]
            pairs = keep
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = self.timeouts.acse_timeout
        ae.dimse_timeout = self.timeouts.dimse_timeout
        ae.network_timeout = self.timeouts.network_timeout
        for sop_class, syntaxes in proposed_contexts(pairs, self.target):
            ae.add_requested_context(sop_class, syntaxes)
        assoc = ae.associate(
            self.dest.host,
            self.dest.port,
            ae_title=self.dest.ae_title,
            evt_handlers=SENDER_HANDLERS,
            tls_args=self.tls_args,
        )
        if not assoc.is_established and assoc.rejected_contexts and not assoc.accepted_contexts:
            # The PACS answered but took none of these SOP classes, with any syntax: each
            # instance is charged (the destination is not backed off for them).
            for item in items:
                self._charge(
                    item,
                    f"{self.dest.ae_title} accepted no presentation context for SOP class "
                    f"{item.sop_class_uid}",
                )
            return None
        if not assoc.is_established:
            where = f"{self.dest.ae_title}@{self.dest.host}:{self.dest.port}"
            refused = tls.failure(self.tls_args)
            if refused:  # an unknown or expired certificate: held, backed off, one line
                self._destination_failed(f"{refused} at {where}")
            elif assoc.is_rejected:
                self._destination_failed(f"association rejected by {where}")
            else:
                self._destination_failed(
                    f"no association with {where} (connection refused, timed out or aborted)"
                )
            return None
        self._assoc = assoc
        guard = store_wire.guard_of(assoc)
        if guard is not None:
            self._wire = store_wire.StoreWire(assoc, guard, self.timeouts.dimse_timeout)
        self._pairs = pairs
        return items

    def _release(self) -> None:
        if self._assoc is not None:
            try:
                if self._assoc.is_established:
                    self._assoc.release()
            finally:
                self._assoc = None
                self._wire = None
                self._pairs = set()

    def _destination_failed(self, error: str) -> None:
        """The PACS cannot be reached: every due row waits for the backoff, with why."""
        self.failures += 1
        delay = retry.backoff(self.failures, self.settings.retry_initial, self.settings.retry_max)
        queue.defer_destination(self.store, self.dest.name, time.time() + delay, error)
        self._note_error(f"{error}; next try in {delay:.1f} s")

    def _instance_attempts(self) -> int:
        limit = self.settings.max_attempts
        return min(limit, INSTANCE_ATTEMPTS) if limit else INSTANCE_ATTEMPTS

    def _charge(self, item: queue.Item, error: str, status_code: int | None = None) -> None:
        """An error of this instance alone: its attempt counts, it waits on its own
        backoff (a dead letter after its attempts); the others go on."""
        queue.mark_retry(
            self.store, [item], error, self._delay, self._instance_attempts(),
            status_code=status_code,
        )  # fmt: skip
        self._settled.add(item.id)
        self._note_error(f"instance held: {error}")

    def _note_error(self, error: str) -> None:
        self.last_error = error
        self.last_error_at = time.time()
        log.warning("forward to %s: %s", self.dest.name, error)

    # -- sending ----------------------------------------------------------------

    def _send_batch(self, items: list[queue.Item]) -> None:
        covered = self._ensure_association(items)
        if covered is None:
            return
        delivered: list[tuple[queue.Item, int]] = []
        try:
            for item in covered:
                if self._stop.is_set():
                    return
                try:
                    rsp = self._store_one(item)
                except PermanentError as exc:
                    self._charge(item, str(exc))
                    continue
                except FileNotFoundError:
                    queue.mark_dead(self.store, item, "the spooled file is missing")
                    self._settled.add(item.id)
                    continue
                except Exception as exc:  # anything else while preparing or sending this one
                    # Charged to this instance (its own backoff, a dead letter after its
                    # attempts); the rest of the batch goes on at once.
                    self._charge(item, f"cannot send this instance: {type(exc).__name__}: {exc}")
                    if self._assoc is None or not self._assoc.is_established:
                        self._release()
                        return
                    continue
                if rsp is None:
                    # The item in flight counts an attempt; the rest of the batch was not
                    # tried and waits with the destination's backoff.
                    self._release()
                    error = "association aborted or timed out during C-STORE"
                    if self._why:
                        error += f" ({self._why})"
                    queue.mark_retry(
                        self.store, [item], error, self._delay, self.settings.max_attempts
                    )
                    self._settled.add(item.id)
                    self._destination_failed(error)
                    return
                code, comment = rsp
                outcome = retry.classify(code)
                if outcome is retry.Outcome.DELIVERED:
                    if code:
                        log.warning("forward to %s: %s", self.dest.name, retry.describe(code))
                    delivered.append((item, code))
                elif outcome is retry.Outcome.TRANSIENT:
                    # Out of resources (A7xx) is the PACS's state, not this instance's:
                    # the attempt counts, and the destination backs off.
                    error = retry.describe(code) + (f": {comment}" if comment else "")
                    queue.mark_retry(
                        self.store,
                        [item],
                        error,
                        self._delay,
                        self.settings.max_attempts,
                        status_code=code,
                    )
                    self._settled.add(item.id)
                    self._release()
                    self._destination_failed(error)
                    return
                else:
                    reason = retry.describe(code) + (f": {comment}" if comment else "")
                    queue.mark_dead(self.store, item, reason, status_code=code)
                    self._settled.add(item.id)
                    self._note_error(f"instance refused for good: {reason}")
            self.failures = 0
        finally:
            if self.bytes_saved:
                queue.add_bytes_saved(self.store, self.dest.name, self.bytes_saved)
                self.bytes_saved = 0
            if delivered:
                self._settled.update(i.id for i, _ in delivered)
                queue.mark_delivered(self.store, delivered)
                self.delivered += len(delivered)
                self.on_delivered([i for i, _ in delivered])

    def _delay(self, attempts: int) -> float:
        return retry.backoff(attempts, self.settings.retry_initial, self.settings.retry_max)

    def _store_one(self, item: queue.Item) -> tuple[int, str] | None:
        """Send one spooled instance; (status, error comment), or None when the
        association failed. A missing file or segment raises FileNotFoundError."""
        with self.spool.open(item.file) as f:
            return self._store_opened(item, f)

    def _store_opened(self, item: queue.Item, f: StoredFile) -> tuple[int, str] | None:
        path = self.spool.path(item.file)
        self._why = ""
        if self._assoc is None or not self._assoc.is_established:
            return None  # the PACS aborted or released between two C-STOREs
        stored = UID(item.transfer_syntax)
        if self.target and not stored.is_compressed:
            packed = self._context(item.sop_class_uid, [UID(self.target)])
            compressed = _compressed(f, stored, UID(self.target)) if packed else None
            if compressed is not None:
                ds, saved = compressed
                rsp = self._assoc.send_c_store(ds)
                if not rsp or "Status" not in rsp:
                    return None
                self.bytes_saved += saved
                return int(rsp.Status), str(rsp.get("ErrorComment", "") or "")
        context = self._context(item.sop_class_uid, [stored])
        if context is not None and self._wire is not None:
            return self._store_on_wire(self._wire, f, context.context_id, item)
        if context is not None:
            # pynetdicom reads a file's bytes itself; a journal record goes decoded.
            rsp = self._assoc.send_c_store(dcmread(f) if journal.is_ref(item.file) else path)
        elif self._context(item.sop_class_uid, list(UNCOMPRESSED)) is not None:
            rsp = self._assoc.send_c_store(uncompressed(f, stored))
        else:
            raise PermanentError(
                f"{self.dest.ae_title} accepted no presentation context for SOP class "
                f"{item.sop_class_uid}"
            )
        if not rsp or "Status" not in rsp:
            return None
        return int(rsp.Status), str(rsp.get("ErrorComment", "") or "")

    def _store_on_wire(
        self, wire: store_wire.StoreWire, f: StoredFile, context_id: int, item: queue.Item
    ) -> tuple[int, str] | None:
        """The instance as stored, written on the socket by store_wire."""
        try:
            rsp = wire.store(f, context_id, item.sop_class_uid, item.sop_instance_uid)
        except store_wire.Unsendable as exc:
            raise PermanentError(str(exc)) from exc
        if rsp is None:
            self._why = wire.failure
        else:
            self.wire_stores += 1
        return rsp

    def _context(self, sop_class: str, syntaxes: list[UID]) -> Any:
        """The accepted presentation context for the SOP class in one of the syntaxes."""
        for cx in self._assoc.accepted_contexts:
            if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] in syntaxes:
                return cx
        return None

    # -- health -----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "connected": self._assoc is not None,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "delivered_since_start": self.delivered,
        }


def _compressed(path: Path | StoredFile, stored: UID, target: UID) -> tuple[Any, int] | None:
    """The instance compressed losslessly to ``target`` (same SOP Instance UID) and the
    pixel bytes saved; None when it has no pixel data or the encoder cannot take it
    (the file then goes as stored: compression is an optimisation, never a failure)."""
    try:
        ds = uncompressed(path, stored)
        if "PixelData" not in ds:
            return None
        before = len(ds.PixelData)
        ds.compress(target, generate_instance_uid=False)
        return ds, before - len(ds.PixelData)
    except Exception as exc:  # e.g. a bit depth or photometric the encoder does not take
        log.debug("not compressed to %s: %s: %s", target.name, type(exc).__name__, exc)
        return None


def uncompressed(path: Path | StoredFile, stored: UID) -> Any:
    """The instance decoded and, when compressed, decompressed (same SOP Instance UID)."""
    if isinstance(path, StoredFile):
        path.seek(0)
    ds = dcmread(path)
    if stored.is_compressed:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # any plugin failure means: cannot send uncompressed
            raise PermanentError(
                f"the PACS takes only uncompressed data and {stored.name} could not be "
                f"decompressed: {_decode_failure(exc)}"
            ) from exc
    elif stored == ExplicitVRBigEndian:
        _to_little_endian(ds)
    if ds.file_meta.TransferSyntaxUID not in UNCOMPRESSED:
        # Big endian (now swapped) and deflate (inflated on reading) go as explicit VR LE.
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.set_original_encoding(False, True, ds.get("SpecificCharacterSet"))
    return ds


DECODE_FAILURE_CHARS = 300  # of the plugins' own messages kept in the reason


def _decode_failure(exc: Exception) -> str:
    """What the pixel plugins said, on one line: no plugin for the syntax, or each
    plugin's error (pydicom tries every installed one in turn)."""
    if isinstance(exc, NotImplementedError):
        return "no installed pixel plugin decodes this syntax"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode"):
        lines = lines[1:]  # "Unable to decode as exceptions were raised by all ... plugins:"
    text = "; ".join(lines) or type(exc).__name__
    if len(text) > DECODE_FAILURE_CHARS:
        text = text[: DECODE_FAILURE_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}"


# Bytes per value of the binary VRs whose values a big endian file stores byte-swapped.
_SWAP_WIDTH = {"OW": 2, "US or OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _to_little_endian(ds: Any) -> None:
    """Swap the raw values of OW/OF/OL/OD/OV elements (pixel data, waveforms, LUTs).

    pydicom converts every other VR itself when it writes little endian; raw binary
    values it keeps as read, so a big endian file's words would arrive byte-swapped.
    """

    def swap(dataset: Any) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                for item in elem.value:
                    swap(item)
                continue
            width = _SWAP_WIDTH.get(elem.VR)
            if width and isinstance(elem.value, bytes | bytearray) and elem.value:
                raw = bytes(elem.value)
                if len(raw) % width:
                    raise PermanentError(
                        f"{elem.keyword or elem.tag}: {len(raw)} bytes is not a whole number of "
                        f"{elem.VR} values; cannot convert from big endian"
                    )
                elem.value = np.frombuffer(raw, dtype=f">u{width}").astype(f"<u{width}").tobytes()

    swap(ds)


def echo(dest: DestinationSettings, dicom: DicomSettings) -> tuple[bool, str]:
    """C-ECHO a destination (the web page's test button); (reachable, what happened)."""
    return dicom_echo.echo(
        dest.host, dest.port, dest.ae_title, dicom.ae_title, min(dicom.acse_timeout, 10.0)
    )
