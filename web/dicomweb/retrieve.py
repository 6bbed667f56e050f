"""WADO-RS (PS3.18 10.4): held instances as stored (multipart/related of
application/dicom, the spool's bytes, never re-encoded), their metadata as DICOM JSON
with a BulkDataURI for the pixel data, frames as uncompressed bytes, and rendered
JPEG/PNG pictures and thumbnails (``image.display``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from flask import Blueprint, Response, request
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from appliance.forward.spool import Spool
from appliance.qr import repo
from appliance.qr.repo import HeldFile
from image import display
from web import request_store, runtime
from web.dicomweb import common, multipart

log = logging.getLogger(__name__)

bp = Blueprint("retrieve", __name__)

CHUNK = 1 << 20
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
THUMBNAIL = (128, 128)
_FRAMES = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")
READ_ERRORS = (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError)
# What pydicom raises when it cannot decode pixel data (no plugin, bad stream).
DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, KeyError, TypeError, AttributeError)


def _spool() -> Spool:
    return Spool(runtime().config.data_dir / "spool")


def held(study: str, series: str | None = None, instance: str | None = None) -> list[HeldFile]:
    """The held files of a study, series or instance (UIDs checked); 404 when none."""
    unique = {"study_uid": [common.uid(study, "StudyInstanceUID")]}
    if series is not None:
        unique["series_uid"] = [common.uid(series, "SeriesInstanceUID")]
    if instance is not None:
        unique["sop_instance_uid"] = [common.uid(instance, "SOPInstanceUID")]
    files = repo.files(request_store(), unique)
    if not files:
        what = "instance" if instance else "series" if series else "study"
        raise common.Refused(404, what, f"no {what} with these UIDs is held")
    return files


# -- instances as stored -----------------------------------------------------------


@bp.get("/studies/<study>")
def study(study: str) -> Response:
    return instances(held(study))


@bp.get("/studies/<study>/series/<series>")
def series(study: str, series: str) -> Response:
    return instances(held(study, series))


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
def instance(study: str, series: str, instance: str) -> Response:
    return instances(held(study, series, instance))


def instances(files: list[HeldFile]) -> Response:
    """multipart/related; type="application/dicom": each file as held (PS3.18 8.6.1.2);
    406 for a transfer syntax other than the held one (no transcoding here)."""
    wanted = common.want_multipart("application/dicom")
    if wanted not in (None, "*"):
        other = [f for f in files if f.transfer_syntax != wanted]
        if other:
            raise common.Refused(
                406,
                "transfer-syntax",
                f"{len(other)} instances are held in another transfer syntax "
                f"({other[0].transfer_syntax}); ask for transfer-syntax=* to get them as held",
            )
    spool = _spool()
    boundary = multipart.new_boundary()
    parts = (
        (f"application/dicom; transfer-syntax={f.transfer_syntax}", _chunks(spool, f))
        for f in files
    )
    return Response(
        multipart.write(boundary, parts),
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def _chunks(spool: Spool, held_file: HeldFile) -> Iterator[bytes]:
    try:
        with open(spool.path(held_file.file), "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
    except OSError as exc:  # removed by retention since the query: the part stays empty
        log.warning("WADO-RS: %s could not be read: %s", held_file.file, exc.strerror)


# -- metadata ------------------------------------------------------------------------


@bp.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    return metadata(held(study))


@bp.get("/studies/<study>/series/<series>/metadata")
def series_metadata(study: str, series: str) -> Response:
    return metadata(held(study, series))


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    return metadata(held(study, series, instance))


def metadata(files: list[HeldFile]) -> Response:
    """Each instance's attributes as DICOM JSON (PS3.18 F.2), its pixel data by a
    BulkDataURI (the frames resource of the instance)."""
    common.want_json()
    spool = _spool()
    out = []
    for f in files:
        try:
            ds = dcmread(spool.path(f.file), defer_size=4096)
        except READ_ERRORS as exc:
            log.warning("WADO-RS metadata: %s unreadable: %s", f.file, type(exc).__name__)
            continue
        out.append(_metadata_json(ds, f))
    return common.dicom_json(out)


def _instance_url(ds: Dataset, f: HeldFile) -> str:
    study_uid = str(ds.get("StudyInstanceUID", ""))
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    return f"{common.study_url(study_uid)}/series/{series_uid}/instances/{f.sop_instance_uid}"


def _metadata_json(ds: Dataset, f: HeldFile) -> dict[str, Any]:
    bulk: dict[str, dict[str, str]] = {}
    for tag in PIXEL_TAGS:
        if tag in ds:
            elem = ds[tag]
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            uri = f"{_instance_url(ds, f)}/frames/{','.join(str(n) for n in range(1, frames + 1))}"
            bulk[f"{tag:08X}"] = {"vr": elem.VR, "BulkDataURI": uri}
            del ds[tag]
    out: dict[str, Any] = ds.to_json_dict(suppress_invalid_tags=True)
    out.update(bulk)
    return dict(sorted(out.items()))


# -- frames ----------------------------------------------------------------------------


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
def frames(study: str, series: str, instance: str, frames: str) -> Response:
    """The frames listed (1-based), uncompressed, as multipart/related of
    application/octet-stream (PS3.18 8.7.3.3.2); 406 when they cannot be decoded."""
    numbers = _frame_numbers(frames)
    wanted = common.want_multipart("application/octet-stream")
    if wanted not in (None, "*", "1.2.840.10008.1.2.1"):
        raise common.Refused(406, "transfer-syntax", "frames are offered uncompressed only")
    f = held(study, series, instance)[0]
    ds = _read(f)
    data = [_frame_bytes(ds, n) for n in numbers]
    boundary = multipart.new_boundary()
    media = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    return Response(
        multipart.write(boundary, ((media, [d]) for d in data)),
        content_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )


def _frame_numbers(text: str) -> list[int]:
    if not _FRAMES.fullmatch(text):
        raise common.Refused(400, "frames", f"{text[:40]!r} is not a list of frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > 10000:
        raise common.Refused(400, "frames", "at most 10000 frames in one request")
    return numbers


def _read(f: HeldFile) -> Dataset:
    try:
        return dcmread(_spool().path(f.file))
    except READ_ERRORS as exc:
        raise common.Refused(404, "instance", f"the held file cannot be read ({exc})") from exc


def _frame_count(ds: Dataset) -> int:
    if "PixelData" not in ds:
        raise common.Refused(404, "frames", "the instance has no pixel data")
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _frame_bytes(ds: Dataset, number: int) -> bytes:
    """Frame ``number`` uncompressed, as explicit VR little endian would hold it."""
    count = _frame_count(ds)
    if number > count:
        raise common.Refused(404, "frames", f"frame {number} of {count}")
    ts = UID(ds.file_meta.TransferSyntaxUID)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if not ts.is_compressed and ts.is_little_endian and bits % 8 == 0 and bits:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        data = ds.PixelData[(number - 1) * size : number * size]
        if len(data) == size:
            return bytes(data)
    try:
        arr = pixel_array(ds, index=number - 1)
    except DECODE_ERRORS as exc:
        raise common.Refused(
            406, "Accept", f"the pixel data ({ts.name}) cannot be decoded here: {exc}"
        ) from exc
    return bytes(arr.astype(arr.dtype.newbyteorder("<")).tobytes())


# -- rendered and thumbnails -------------------------------------------------------------


@bp.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
def instance_rendered(study: str, series: str, instance: str) -> Response:
    return rendered(held(study, series, instance)[0], 1, None)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>/rendered")
def frame_rendered(study: str, series: str, instance: str, frames: str) -> Response:
    numbers = _frame_numbers(frames)
    if len(numbers) != 1:
        raise common.Refused(400, "frames", "one frame is rendered at a time")
    return rendered(held(study, series, instance)[0], numbers[0], None)


@bp.get("/studies/<study>/thumbnail")
def study_thumbnail(study: str) -> Response:
    files = held(study)
    return rendered(files[len(files) // 2], 1, THUMBNAIL)


@bp.get("/studies/<study>/series/<series>/thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    files = held(study, series)
    return rendered(files[len(files) // 2], 1, THUMBNAIL)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
def instance_thumbnail(study: str, series: str, instance: str) -> Response:
    return rendered(held(study, series, instance)[0], 1, THUMBNAIL)


RENDER_PARAMETERS = frozenset(("viewport", "quality", "window", "accept"))


def _media_type() -> str:
    """image/jpeg (the default) or image/png, as Accept or ``accept=`` asks; else 406."""
    asked = request.args.get("accept")
    types = [(asked.lower(), {})] if asked else common.accepted()
    if not types:
        return "image/jpeg"
    for media, _ in types:
        if media in ("image/jpeg", "image/*", "*/*"):
            return "image/jpeg"
        if media == "image/png":
            return "image/png"
    raise common.Refused(406, "Accept", "rendered media types offered: image/jpeg, image/png")


def _numbers(name: str, count: int) -> list[float]:
    raw = request.args.get(name, "")
    parts = raw.split(",")
    try:
        values = [float(p) for p in parts[:count]]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise common.Refused(400, name, f"{raw[:40]!r} is not {count} comma-separated numbers")
    return values


def rendered(f: HeldFile, frame: int, box: tuple[int, int] | None) -> Response:
    """One frame as a JPEG or PNG picture (PS3.18 8.3.5.1): ``viewport=w,h`` fits it,
    ``quality`` (JPEG), ``window=center,width[,function]`` replaces the stored window."""
    for name in request.args:
        if name not in RENDER_PARAMETERS:
            raise common.Refused(400, name, "is not a parameter of rendered resources")
    media = _media_type()
    ds = _read(f)
    count = _frame_count(ds)
    if frame > count:
        raise common.Refused(404, "frames", f"frame {frame} of {count}")
    try:
        arr = pixel_array(ds, index=frame - 1 if count > 1 else None)
    except DECODE_ERRORS as exc:
        raise common.Refused(
            406, "Accept", f"the pixel data cannot be decoded here: {exc}"
        ) from exc
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if "window" in request.args:
        center, width = _numbers("window", 2)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    try:
        im = display.window(arr, photometric, center, width, slope, intercept)
    except display.RenderError as exc:
        raise common.Refused(406, "Accept", str(exc)) from exc
    if "viewport" in request.args:
        w, h = _numbers("viewport", 2)
        if not (1 <= w <= 4096 and 1 <= h <= 4096):
            raise common.Refused(400, "viewport", "width and height are 1 to 4096")
        box = (int(w), int(h))
    if box is not None:
        im = display.fit(im, *box)
    quality = 90
    if "quality" in request.args:
        (q,) = _numbers("quality", 1)
        if not 1 <= q <= 100:
            raise common.Refused(400, "quality", "is 1 to 100")
        quality = int(q)
    return Response(display.encode(im, media, quality), mimetype=media)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None
