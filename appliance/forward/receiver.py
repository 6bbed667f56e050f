"""Storage SCP (PS3.4 Annex B): received files go durably to the spool, then to the queue.

pynetdicom streams each data set to a temporary file (``STORE_RECV_CHUNKED_DATASET``)
with the File Meta group in front; ``Receiver.ingest`` reads only the header up to the
pixel data for routing, moves the file into the spool (fsync, rename, fsync dir),
commits the queue rows, and only then does ``handle_store`` answer Success.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from appliance import status
from appliance.config import Config
from appliance.db import Store
from appliance.errors import StorageFull, ValidationError
from appliance.forward import queue, routing
from appliance.forward.spool import Spool

log = logging.getLogger(__name__)

SERVICE = "forward"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "Modality"]


def check_uid(value: str, field: str) -> str:
    """A UID as PS3.5 9.1 allows (digits and dots, at most 64 characters)."""
    value = str(value).rstrip("\0 ")
    if not value or len(value) > 64 or not _UID.fullmatch(value):
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
    ) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self.on_queued = on_queued
        self.reserve_bytes = config.forward.reserve_mb * 1024 * 1024

    def ingest(
        self, path: Path, sop_class: str, sop_instance: str, transfer_syntax: str, calling_ae: str
    ) -> Received:
        """Spool and queue one received file; raises StorageFull or ValidationError."""
        if self.spool.free_bytes() < self.reserve_bytes:
            raise StorageFull(
                f"free space on the spool below the reserve of {self.config.forward.reserve_mb} MB"
            )
        sop_class = check_uid(sop_class, "Affected SOP Class UID")
        sop_instance = check_uid(sop_instance, "Affected SOP Instance UID")
        header = read_header(path)
        in_data = str(header.get("SOPInstanceUID", "") or "")
        if not in_data:
            raise ValidationError("SOP Instance UID", "is missing from the data set")
        if in_data != sop_instance:
            raise ValidationError("SOP Instance UID", "differs from the Affected SOP Instance UID")
        modality = str(header.get("Modality", "") or "")
        dests = routing.route(self.config.destinations, calling_ae, modality, sop_class)
        sf = self.spool.commit(path)
        info = queue.InstanceInfo(sop_instance, sop_class, transfer_syntax, modality, calling_ae)
        recorded = queue.record_instance(self.store, info, sf.rel, sf.digest, sf.size, dests)
        if recorded.old_file and recorded.old_file != sf.rel:
            self.spool.delete(recorded.old_file)
        if dests:
            self.on_queued(dests)
        return Received(recorded, dests)


def read_header(path: Path) -> Dataset:
    """The few header elements routing needs, read up to (not into) the pixel data."""
    try:
        return dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise ValidationError("Data Set", f"cannot be parsed ({type(exc).__name__})") from exc


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def handle_store(event: Any, receiver: Receiver, access: Any) -> Dataset:
    """EVT_C_STORE: spool durably, then Success; refusals carry an ErrorComment.

    0124 not authorized for an AE title without the right to store (unknown AE under
    verify-only); A700 when free space is below the reserve or the spool or queue
    cannot be written (the modality retries later; nothing was acknowledged); C000 when
    the data set cannot be parsed or its UIDs are invalid; Success for a repeated
    identical instance.
    """
    calling = event.assoc.requestor.ae_title.strip()
    if not access.allowed(calling, SERVICE):
        log.warning("C-STORE refused: AE title %r may not store", calling)
        return _status(status.NOT_AUTHORIZED, "calling AE title may not store here")
    req = event.request
    try:
        received = receiver.ingest(
            event.dataset_path,
            req.AffectedSOPClassUID,
            req.AffectedSOPInstanceUID,
            event.context.transfer_syntax,
            calling,
        )
    except StorageFull as exc:
        log.warning("C-STORE from %s refused: %s", calling, exc)
        return _status(status.OUT_OF_RESOURCES, "out of resources: spool disk reserve reached")
    except ValidationError as exc:
        log.warning("C-STORE from %s refused: %s", calling, exc)
        return _status(status.CANNOT_UNDERSTAND, str(exc))
    except OSError as exc:
        log.error("C-STORE from %s: spool write failed: %s", calling, exc.strerror)
        return _status(status.OUT_OF_RESOURCES, "out of resources: spool write failed")
    except sqlite3.Error as exc:
        log.error("C-STORE from %s: queue not committed: %s", calling, type(exc).__name__)
        return _status(status.OUT_OF_RESOURCES, "out of resources: queue database busy")
    log.debug(
        "C-STORE %s from %s: %s, to %s",
        req.AffectedSOPInstanceUID,
        calling,
        received.recorded.outcome,
        received.destinations,
    )
    return _status(status.SUCCESS)
