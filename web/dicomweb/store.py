"""STOW-RS (PS3.18 10.5): instances uploaded as multipart/related; type="application/dicom"
go into the forwarder's durable intake, each through ``Receiver.ingest`` as a C-STORE
data set does (spooled, fsynced, queued for its destinations and indexed in one commit).

The body is read to a file in the spool's tmp/ (never whole in memory), limited by
``dicomweb.max_body_mb`` (413); each part is written to its own temporary file and
handed to the intake. The response (PS3.18 10.5.3): 200 all stored, 202 some failed,
409 none stored, with ReferencedSOPSequence and FailedSOPSequence (FailureReason).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence

from appliance import audit, status
from appliance.forward.intake import file_meta
from appliance.forward.receiver import Receiver, refusal_for
from appliance.forward.spool import Spool
from web import request_store, runtime, security
from web.dicomweb import common, multipart

log = logging.getLogger(__name__)

bp = Blueprint("store", __name__)

CHUNK = 1 << 20
PART_TYPES = ("application/dicom",)
# FailureReason values (PS3.18 table 10.5.3-2 and PS3.4 B.2.3 statuses).
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_MISMATCH = 0xA900  # the instance names another study than the request's target
CANNOT_UNDERSTAND = status.CANNOT_UNDERSTAND
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())  # PS3.5 7.1.2


@bp.post("/studies")
def store_studies() -> Response:
    return stow(None)


@bp.post("/studies/<study>")
def store_study(study: str) -> Response:
    return stow(common.uid(study, "StudyInstanceUID"))


def _receiver() -> Receiver:
    rt = runtime()
    spool = Spool(rt.config.data_dir / "spool")
    spool.tmp.mkdir(parents=True, exist_ok=True)
    return Receiver(rt.config, rt.store, spool, destinations=rt.destinations.current)


def stow(target: str | None) -> Response:
    """Store every part of the request; the response says what became of each."""
    media, params = multipart.content_type(request.headers.get("Content-Type", ""))
    if media != "multipart/related":
        raise common.Refused(
            415, "Content-Type", 'must be multipart/related; type="application/dicom"'
        )
    part_type = params.get("type", "application/dicom").lower()
    if part_type not in PART_TYPES:
        raise common.Refused(
            415, "Content-Type", f"type {part_type[:60]!r} is not offered; send application/dicom"
        )
    limit = common.settings().max_body_mb << 20
    if request.content_length is not None and request.content_length > limit:
        raise common.Refused(413, "Content-Length", f"the body exceeds {limit >> 20} MB")
    common.want_json()
    receiver = _receiver()
    body_path = _spool_body(receiver.spool, limit)
    try:
        with open(body_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise common.Refused(400, "body", "the request has no body")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                try:
                    parts = multipart.parse(buf, params.get("boundary", ""))
                except multipart.MultipartError as exc:
                    raise common.Refused(400, "body", f"malformed multipart: {exc}") from exc
                if not parts:
                    raise common.Refused(400, "body", "the multipart body holds no part")
                results = [_store_part(receiver, buf, p, target) for p in parts]
    finally:
        with contextlib.suppress(OSError):
            os.unlink(body_path)
    return _response(results, target)


def _spool_body(spool: Spool, limit: int) -> str:
    """The request body copied to a temporary file in the spool; 413 beyond ``limit``."""
    request.max_content_length = limit
    fd, path = spool.new_temp()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := request.stream.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise common.Refused(413, "body", f"the body exceeds {limit >> 20} MB")
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


# SOP class, SOP instance, FailureReason (None: stored), "study/series/instance" path
Result = tuple[str, str, int | None, str]


def _store_part(receiver: Receiver, buf: Any, part: multipart.Part, target: str | None) -> Result:
    """Hand one part to the intake; (SOP class, SOP instance, FailureReason, study)."""
    if part.content_type not in ("", *PART_TYPES):
        return "", "", SOP_CLASS_NOT_SUPPORTED, ""
    data = buf[part.start : part.end]
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True, force=data[128:132] != b"DICM")
        meta = ds.file_meta
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop_instance = str(meta.MediaStorageSOPInstanceUID)
        ts = str(meta.TransferSyntaxUID)
        if data[128:132] != b"DICM":
            data = _with_preamble(data, sop_class, sop_instance, ts)
        study = str(ds.get("StudyInstanceUID", "") or "")
        where = f"{study}/series/{ds.get('SeriesInstanceUID', '')}/instances/{sop_instance}"
    except (InvalidDicomError, AttributeError, ValueError, KeyError, TypeError, EOFError):
        log.warning("STOW-RS part refused: not a DICOM file with File Meta Information")
        return "", "", CANNOT_UNDERSTAND, ""
    if target is not None and study != target:
        return sop_class, sop_instance, STUDY_MISMATCH, where
    fd, path = receiver.spool.new_temp()
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fdatasync(out.fileno())
        receiver.ingest(Path(path), sop_class, sop_instance, ts, common.settings().source_ae)
    except Exception as exc:
        refusal = refusal_for(exc, common.settings().source_ae)
        if refusal is None:
            raise
        return sop_class, sop_instance, refusal[0], where
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # gone already when it was spooled
    return sop_class, sop_instance, None, where


def _with_preamble(data: bytes, sop_class: str, sop_instance: str, ts: str) -> bytes:
    """A part that starts with its File Meta group but no preamble (as pydicom's
    ``dcmwrite`` writes one by default) as a PS3.10 file: the intake's File Meta
    Information in front of the data set's bytes, which stay as sent."""
    pos = 0
    while data[pos : pos + 2] == b"\x02\x00" and pos + 8 <= len(data):
        if data[pos + 4 : pos + 6] in LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    if pos == 0 or pos > len(data):
        raise ValueError("no File Meta Information group")
    source = common.settings().source_ae
    return file_meta(sop_class, sop_instance, ts, source) + bytes(data[pos:])


def _response(results: list[Result], target: str | None) -> Response:
    stored = [r for r in results if r[2] is None]
    failed = [r for r in results if r[2] is not None]
    ds = Dataset()
    studies = {r[3].partition("/")[0] for r in stored}
    if target or len(studies) == 1:
        ds.add_new(0x00081190, "UR", common.study_url(target or next(iter(studies))))
    if failed:
        seq = Sequence()
        for sop_class, sop_instance, reason, _ in failed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class or None
            item.ReferencedSOPInstanceUID = sop_instance or None
            item.add_new(0x00081197, "US", reason)  # FailureReason
            seq.append(item)
        ds.add_new(0x00081198, "SQ", seq)  # FailedSOPSequence
    if stored:
        seq = Sequence()
        for sop_class, sop_instance, _, where in stored:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            item.add_new(0x00081190, "UR", f"{common.base_url()}/studies/{where}")
            seq.append(item)
        ds.add_new(0x00081199, "SQ", seq)  # ReferencedSOPSequence
    code = 200 if not failed else 409 if not stored else 202
    audit.record_now(
        request_store(), security.actor(), "dicomweb-store", f"{len(results)} instances",
        f"{len(stored)} stored, {len(failed)} failed", source=security.source(), durable=False,
    )  # fmt: skip
    log.info("STOW-RS: %d stored, %d failed", len(stored), len(failed))
    body = common.in_tag_order(ds.to_json_dict())
    return Response(json.dumps(body), code, mimetype=common.DICOM_JSON)
