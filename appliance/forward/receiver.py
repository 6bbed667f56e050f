"""Storage SCP (PS3.4 Annex B): received files go durably to the spool, then to the queue.

The intake (``appliance/forward/intake.py``) streams each data set from the socket to a
temporary file with the File Meta group in front, hashing and fsyncing it; ``Receiver.admit``
takes the routing header (from the intake, or read from the file up to the pixel data),
moves the file into the spool (rename, fsync dir), commits the queue rows, and only then
is Success answered. With ``forward.spool = "journal"`` the intake writes a journal record
instead (``appliance/forward/journal.py``) and ``Receiver.admit_record`` checks it, writes
the rows while the device writes the record, makes it durable with one fdatasync and
then commits the rows; ``admit`` (the public entry for any other source of files) copies
a file into a record the same way. ``refusal_for`` turns a failure into the status that
answers it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from appliance import identifiers, status
from appliance.access import Access
from appliance.config import Config, DestinationSettings
from appliance.db import Store
from appliance.errors import StorageFull, ValidationError
from appliance.forward import journal, queue, routing
from appliance.forward.spool import Spool
from appliance.qr import index as qr_index

log = logging.getLogger(__name__)

SERVICE = "forward"
_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "Modality"]


def check_uid(value: str, field: str) -> str:
    """A UID as PS3.5 9.1 allows (digits and dots, at most 64 characters)."""
    value = str(value).rstrip("\0 ")
    if not identifiers.is_uid(value):
        raise ValidationError(field, "is not a valid UID")
    return value


@dataclass(frozen=True)
class Received:
    """What became of one received instance."""

    recorded: queue.Recorded
    destinations: list[str]


class Receiver:
    """Takes a received file into the spool and queues it for its destinations."""

    def __init__(
        self,
        config: Config,
        store: Store,
        spool: Spool,
        on_queued: Callable[[list[str]], None] = lambda names: None,
        destinations: Callable[[], Iterable[DestinationSettings]] | None = None,
    ) -> None:
        self.config = config
        # The current destinations (the live list, edited in the web UI), else the file's.
        self.destinations = destinations or (lambda: config.destinations)
        self.store = store
        self.spool = spool
        self.on_queued = on_queued
        self.reserve_bytes = config.forward.reserve_mb * 1024 * 1024
        self._count_lock = threading.Lock()
        self.streamed = 0  # C-STORE data sets taken from the socket by the intake

    def count_streamed(self) -> None:
        with self._count_lock:
            self.streamed += 1

    def precheck(self, sop_class: str, sop_instance: str) -> tuple[int, str] | None:
        """A refusal known before the data set arrives (reserve, UIDs), or None."""
        try:
            self._check_space()
            check_uid(sop_class, "Affected SOP Class UID")
            check_uid(sop_instance, "Affected SOP Instance UID")
        except (StorageFull, ValidationError, OSError) as exc:
            return refusal_for(exc, "")
        return None

    def _check_space(self) -> None:
        if self.spool.free_bytes() < self.reserve_bytes:
            raise StorageFull(
                f"free space on the spool below the reserve of {self.config.forward.reserve_mb} MB"
            )

    def ingest(
        self, path: Path, sop_class: str, sop_instance: str, transfer_syntax: str, calling_ae: str
    ) -> Received:
        """Spool and queue one received file; raises StorageFull or ValidationError."""
        self._check_space()
        return self.admit(path, sop_class, sop_instance, transfer_syntax, calling_ae)

    def admit(
        self,
        path: Path | str,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        synced: bool = False,
        header: dict[int, str] | None = None,
        size: int | None = None,
        head: bytes | None = None,
    ) -> Received:
        """Move a complete received file into the spool and commit its queue rows.

        ``synced`` (and ``size``) when the caller fsynced the file as it wrote it;
        ``header`` the SOP Instance UID (0008,0018) and Modality (0008,0060) when the caller
        read them already, otherwise they are read from the file. A file with exactly the bytes of
        the version kept is not stored twice. ``head``: the start of the data set (the
        intake's), from which the Query/Retrieve index is read when it is enough.
        """
        path = Path(path)
        if self.spool.journaled:
            return self._admit_into_journal(
                path, sop_class, sop_instance, transfer_syntax, calling_ae, header, head
            )
        info, dests = self._identify(
            path, sop_class, sop_instance, transfer_syntax, calling_ae, header
        )
        kept = self._kept_copy(info.sop_instance_uid, path)
        if kept is not None:
            path.unlink()
            rel, version, size = kept[0], kept[1], self.spool.size(kept[0])
        else:
            sf = self.spool.place(path, synced=synced, size=size)
            rel, version, size = sf.rel, sf.token, sf.size
        indexed = None if head is None else qr_index.head_attributes(head, transfer_syntax)
        recorded = self._record(info, rel, version, size, dests, durable=False, indexed=indexed)
        if dests:
            self.on_queued(dests)
        return Received(recorded, dests)

    def _identify(
        self,
        source: Path | str,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        header: dict[int, str] | None,
    ) -> tuple[queue.InstanceInfo, list[str]]:
        """The checks either spool makes before it keeps an instance (UIDs well formed, the
        data set's SOP Instance UID the announced one) and its destinations. ``source``: a
        received file, or the reference of a journal record not yet committed; read only
        when the intake's ``header`` is not given."""
        sop_class = check_uid(sop_class, "Affected SOP Class UID")
        sop_instance = check_uid(sop_instance, "Affected SOP Instance UID")
        if header is None:
            if isinstance(source, Path):
                ds = read_header(source)
            else:
                with self.spool.open(source) as f:
                    ds = read_header(f)
            in_data = str(ds.get("SOPInstanceUID", "") or "")
            modality = str(ds.get("Modality", "") or "")
        else:
            in_data, modality = header[0x00080018], header[0x00080060]
        if not in_data:
            raise ValidationError("SOP Instance UID", "is missing from the data set")
        if in_data != sop_instance:
            raise ValidationError("SOP Instance UID", "differs from the Affected SOP Instance UID")
        dests = routing.route(self.destinations(), calling_ae, modality, sop_class)
        info = queue.InstanceInfo(sop_instance, sop_class, transfer_syntax, modality, calling_ae)
        return info, dests

    def _admit_into_journal(
        self,
        path: Path,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        header: dict[int, str] | None,
        head: bytes | None,
    ) -> Received:
        """``admit`` of a file when new images go to the journal: its bytes become a
        record, the file is removed."""
        append = self.spool.journal.begin(str(sop_instance))
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    append.write(chunk)
        except BaseException:
            append.abort()
            raise
        received = self.admit_record(
            append, sop_class, sop_instance, transfer_syntax, calling_ae, header, head
        )
        path.unlink()
        return received

    def admit_record(
        self,
        append: journal.Append,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        header: dict[int, str] | None = None,
        head: bytes | None = None,
    ) -> Received:
        """``admit`` for a journal record written but not yet committed: checked, made
        durable (one fdatasync) and queued; dropped (``abort``) when it is refused or
        holds exactly the kept version's bytes."""
        try:
            return self._admit_record(
                append, sop_class, sop_instance, transfer_syntax, calling_ae, header, head
            )
        finally:
            append.close()

    def _admit_record(
        self,
        append: journal.Append,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        calling_ae: str,
        header: dict[int, str] | None,
        head: bytes | None,
    ) -> Received:
        """The checks and commit of ``admit_record``; the caller closes ``append``.

        The record's writeback starts once it is sealed (``Append.seal``), and its rows
        are written meanwhile, inside their transaction, which waits for the record's
        sync before it commits: the rows are committed only once the record is durable,
        as when the sync came first. When another write transaction of this process
        runs or waits, the record is synced before the transaction begins, so that no
        writer waits for another's disk."""
        pending = append.location.ref
        info, dests = self._identify(
            pending, sop_class, sop_instance, transfer_syntax, calling_ae, header
        )
        kept = self._kept_copy(info.sop_instance_uid, pending)
        if kept is not None:
            rel, version, size = kept[0], kept[1], self.spool.size(kept[0])
            synced = None
        else:
            loc = append.seal()
            rel, version, size = loc.ref, record_version(append.serial), loc.length
            synced = append.sync
            if not self.store.writer_idle():
                append.sync()
                synced = None
        indexed = None if head is None else qr_index.head_attributes(head, transfer_syntax)
        recorded = self._record(
            info, rel, version, size, dests, durable=False, indexed=indexed, before_commit=synced
        )
        if dests:
            self.on_queued(dests)
        return Received(recorded, dests)

    def _kept_copy(self, sop_instance: str, path: Path | str) -> tuple[str, str] | None:
        """(file, version) of the spooled copy when it holds exactly the data set of
        ``path`` (a file, or a spool reference)."""
        kept = queue.kept_version(self.store, sop_instance)
        return kept if kept is not None and self.spool.same_bytes(kept[0], path) else None

    def _record(
        self,
        info: queue.InstanceInfo,
        rel: str,
        version: str,
        size: int,
        dests: list[str],
        durable: bool,
        indexed: dict[str, str] | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> queue.Recorded:
        """Commit the queue rows and the Query/Retrieve index row of the spooled ``rel``
        (one transaction; ``indexed`` or else read from the file; ``before_commit`` run
        last inside it); a version it replaces is deleted."""
        if indexed is None:
            with self.spool.open(rel) as f:
                indexed = qr_index.read_attributes(f)
        recorded = queue.record_instance(
            self.store, info, rel, version, size, dests, durable=durable, indexed=indexed,
            before_commit=before_commit,
        )  # fmt: skip
        if recorded.old_file and recorded.old_file != rel:
            self.spool.delete(recorded.old_file)
        return recorded

    def recover(self) -> int:
        """Queue spooled files no instance row names: acknowledged instances whose rows
        a power cut took back (the receiver's commits do not wait for the disk; its
        files do). Run before the listener opens; returns how many were queued."""
        known = queue.recorded_files(self.store)
        queued = self._recover_journal(known)
        for rel in self.spool.spooled():
            if rel in known:
                continue
            path = self.spool.path(rel)
            found = self._orphan(rel)
            if found is None:
                continue
            info, dests = found
            if self._kept_copy(info.sop_instance_uid, path) is not None:
                self.spool.delete(rel)
                continue
            self._record(info, rel, Path(rel).stem, path.stat().st_size, dests, durable=True)
            queued += 1
        if queued:
            log.warning("forward: %d spooled instances had no queue rows and were queued", queued)
        return queued

    def _orphan(self, rel: str) -> tuple[queue.InstanceInfo, list[str]] | None:
        """What a spooled instance without rows is (from its File Meta group and header)
        and where it goes; None (logged) when it cannot be read."""
        try:
            with self.spool.open(rel) as f:
                ds = dcmread(f, stop_before_pixels=True)
            meta = ds.file_meta
            sop_class = check_uid(meta.MediaStorageSOPClassUID, "SOP Class UID")
            sop_instance = check_uid(ds.SOPInstanceUID, "SOP Instance UID")
            calling = str(meta.get("SourceApplicationEntityTitle", "") or "").strip()
            modality = str(ds.get("Modality", "") or "")
            info = queue.InstanceInfo(
                sop_instance, sop_class, str(meta.TransferSyntaxUID), modality, calling
            )
        except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, AttributeError,
                TypeError, ValidationError) as exc:  # fmt: skip
            log.error("spooled %s cannot be queued again: %s", rel, type(exc).__name__)
            return None
        return info, routing.route(self.destinations(), calling, modality, sop_class)

    def _recover_journal(self, known: set[str]) -> int:
        """Scan each journal segment from its checkpoint: complete records no instance
        row names are queued (unless a later version or the same bytes are kept); the
        checkpoint moves to the end of the last complete record."""
        marks = queue.checkpoints(self.store)
        queued = 0
        end = journal.BLOCK
        seqs = self.spool.journal.sequences()
        for seq in seqs:
            end = marks.get(seq, journal.BLOCK)
            for rec in journal.scan(self.spool.journal.path(seq), end):
                end = rec.end
                ref = rec.location.ref
                if ref in known or self._superseded(rec):
                    continue
                found = self._orphan(ref)
                if found is None:
                    continue
                info, dests = found
                if self._kept_copy(info.sop_instance_uid, ref) is not None:
                    continue
                version = record_version(rec.serial)
                self._record(info, ref, version, rec.location.length, dests, durable=True)
                queued += 1
            queue.set_checkpoint(self.store, seq, end)
        if seqs and self.spool.journaled:
            self.spool.journal.reopen(seqs[-1], end)  # new records go on after the last
        return queued

    def _superseded(self, rec: journal.Record) -> bool:
        """True when the instance's kept version is a journal record received after this
        one, or this record's own bytes (a compacted copy keeps its serial)."""
        kept = queue.kept_version(self.store, rec.key)
        if kept is None or not kept[1].startswith("j"):
            return False
        try:
            return int(kept[1][1:], 16) >= rec.serial
        except ValueError:
            return False


def record_version(serial: int) -> str:
    """The version token of a journal record: its serial (a later record, a later one)."""
    return f"j{serial:016x}"


def read_header(path: Path | Any) -> Dataset:
    """The few header elements routing needs, read up to (not into) the pixel data."""
    try:
        return dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise ValidationError("Data Set", f"cannot be parsed ({type(exc).__name__})") from exc


def refusal_for(exc: BaseException, calling: str) -> tuple[int, str] | None:
    """The status and ErrorComment that answer a failed ingest (logged), or None for a bug.

    A700 when free space is below the reserve or the spool or queue cannot be written
    (the modality retries later; nothing was acknowledged); C000 when the data set
    cannot be parsed or its UIDs are invalid.
    """
    if isinstance(exc, StorageFull):
        log.warning("C-STORE from %s refused: %s", calling, exc)
        return status.OUT_OF_RESOURCES, "out of resources: spool disk reserve reached"
    if isinstance(exc, ValidationError):
        log.warning("C-STORE from %s refused: %s", calling, exc)
        return status.CANNOT_UNDERSTAND, str(exc)
    if isinstance(exc, OSError):
        log.error("C-STORE from %s: spool write failed: %s", calling, exc.strerror)
        return status.OUT_OF_RESOURCES, "out of resources: spool write failed"
    if isinstance(exc, sqlite3.Error):
        # The message names the cause ("database is locked", "disk I/O error"); no patient data.
        log.error("C-STORE from %s: queue not committed: %s: %s", calling, type(exc).__name__, exc)
        return status.OUT_OF_RESOURCES, "out of resources: queue database busy"
    return None


def handle_store(event: Any, receiver: Receiver, access: Access) -> Dataset:
    """EVT_C_STORE, the path pynetdicom takes when the intake is not installed (a
    pynetdicom whose internals the intake does not know): pynetdicom has written the data
    set to a temporary file, which is spooled and queued the same way; statuses as the
    intake's."""
    calling = event.assoc.requestor.ae_title.strip()
    rsp = Dataset()
    if not access.allowed(calling, SERVICE, str(event.assoc.requestor.address)):
        log.warning("C-STORE refused: AE title %r may not store", calling)
        rsp.Status, rsp.ErrorComment = status.NOT_AUTHORIZED, "calling AE title may not store here"
        return rsp
    req = event.request
    try:
        receiver.ingest(
            event.dataset_path,
            req.AffectedSOPClassUID,
            req.AffectedSOPInstanceUID,
            event.context.transfer_syntax,
            calling,
        )
    except Exception as exc:
        refusal = refusal_for(exc, calling)
        if refusal is None:
            raise
        rsp.Status, rsp.ErrorComment = refusal[0], status.error_comment(refusal[1])
        return rsp
    rsp.Status = status.SUCCESS
    return rsp
