"""Film session rules, pure: which attributes a request may carry and what they become.

Every check of PS3.4 H.4 that needs no database and no file lives here. A bad request
raises ``PrintError(status, comment)``; acceptable oddities come back as warnings
(status constants, most important first). The DICOM edge (``scp``) turns both into
response statuses with an ErrorComment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from appliance import status
from appliance.config import PrintProfileSettings
from image import film as film_mod
from image.pixels import PresentationLUT

GRAYSCALE = "grayscale"
COLOR = "color"

PRIORITIES = ("HIGH", "MED", "LOW")
MEDIUM_TYPES = ("PAPER", "CLEAR FILM", "BLUE FILM", "MAMMO CLEAR FILM", "MAMMO BLUE FILM")
DESTINATIONS = ("MAGAZINE", "PROCESSOR", *(f"BIN_{i}" for i in range(1, 11)))
YES_NO = ("YES", "NO")
RESOLUTIONS = ("STANDARD", "HIGH")
POLARITIES = ("NORMAL", "REVERSE")
DECIMATE_CROP = ("DECIMATE", "CROP", "FAIL")
MAX_COPIES = 99
MAX_PIXELS = 8192 * 8192


class PrintError(Exception):
    """A request that cannot be honoured: a PS3.4 H status and the reason."""

    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code = code
        self.comment = comment[:64]  # ErrorComment is LO


@dataclass
class Outcome:
    """Accepted attributes and the warnings the request earned."""

    attrs: dict[str, Any]
    warnings: list[int] = field(default_factory=list)


# -- helpers ------------------------------------------------------------------


def _text(ds: Dataset, keyword: str) -> str | None:
    if keyword not in ds:
        return None
    value = ds[keyword].value
    return "" if value is None else str(value).strip()


def _choice(ds: Dataset, keyword: str, choices: tuple[str, ...]) -> str | None:
    value = _text(ds, keyword)
    if value is None or value == "":
        return None
    if value.upper() not in choices:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{keyword} {value!r} is not supported")
    return value.upper()


def _int(ds: Dataset, keyword: str, low: int, high: int) -> int | None:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    try:
        value = int(ds[keyword].value)
    except (TypeError, ValueError):
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{keyword} is not a number") from None
    if not low <= value <= high:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{keyword} {value} is out of range")
    return value


def _density(ds: Dataset, keyword: str) -> str | None:
    value = _text(ds, keyword)
    if not value:
        return None
    value = value.upper()
    if value not in ("BLACK", "WHITE") and not re.fullmatch(r"\d{1,3}", value):
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{keyword} {value!r} is not supported")
    return value


def _unknown(ds: Dataset, known: set[str]) -> list[str]:
    """Keywords in the request that the SOP class does not define for this operation."""
    return [e.keyword or str(e.tag) for e in ds if e.keyword not in known and e.tag.group != 0]


# -- Basic Film Session (PS3.4 H.4.1) -------------------------------------------

SESSION_KEYS = {
    "NumberOfCopies",
    "PrintPriority",
    "MediumType",
    "FilmDestination",
    "FilmSessionLabel",
    "MemoryAllocation",
    "OwnerID",
    "SpecificCharacterSet",
}


def session_defaults() -> dict[str, Any]:
    """Film Session attributes when the SCU sends none."""
    return {
        "NumberOfCopies": 1,
        "PrintPriority": "MED",
        "MediumType": "PAPER",
        "FilmDestination": "PROCESSOR",
        "FilmSessionLabel": "",
        "OwnerID": "",
    }


def film_session_attrs(ds: Dataset, current: dict[str, Any] | None = None) -> Outcome:
    """Film Session N-CREATE / N-SET attributes (PS3.4 H.4.1.1.1, H.4.1.1.2)."""
    attrs = dict(current or session_defaults())
    out = Outcome(attrs)
    copies = _int(ds, "NumberOfCopies", 1, MAX_COPIES)
    if copies is not None:
        attrs["NumberOfCopies"] = copies
    for keyword, choices in (
        ("PrintPriority", PRIORITIES),
        ("MediumType", MEDIUM_TYPES),
        ("FilmDestination", DESTINATIONS),
    ):
        value = _choice(ds, keyword, choices)
        if value is not None:
            attrs[keyword] = value
    for keyword in ("FilmSessionLabel", "OwnerID"):
        value = _text(ds, keyword)
        if value is not None:
            attrs[keyword] = value
    if "MemoryAllocation" in ds:
        out.warnings.append(status.PRINT_MEMORY_ALLOCATION_NOT_SUPPORTED)
    if _unknown(ds, SESSION_KEYS):
        out.warnings.append(status.ATTRIBUTE_LIST_ERROR)
    return out


# -- Basic Film Box (PS3.4 H.4.2) ------------------------------------------------

SETTABLE_FILM_BOX_KEYS = {
    "BorderDensity",
    "ConfigurationInformation",
    "EmptyImageDensity",
    "Illumination",
    "MagnificationType",
    "MaxDensity",
    "MinDensity",
    "ReferencedPresentationLUTSequence",
    "ReflectedAmbientLight",
    "SmoothingType",
    "SpecificCharacterSet",
    "Trim",
}
# Film Box attributes an N-CREATE may carry: the settable ones plus those fixed at creation.
FILM_BOX_KEYS = SETTABLE_FILM_BOX_KEYS | {
    "AnnotationDisplayFormatID",
    "FilmOrientation",
    "FilmSizeID",
    "ImageDisplayFormat",
    "ReferencedFilmSessionSequence",
    "RequestedResolutionID",
}


def film_box_defaults(profile: PrintProfileSettings) -> dict[str, Any]:
    """Film Box attributes when the SCU sends none, from the printer profile."""
    return {
        "ImageDisplayFormat": "STANDARD\\1,1",
        "AnnotationDisplayFormatID": "",
        "FilmOrientation": "PORTRAIT",
        "FilmSizeID": profile.default_film_size,
        "MagnificationType": profile.default_magnification,
        "SmoothingType": "",
        "BorderDensity": profile.border_density,
        "EmptyImageDensity": profile.empty_image_density,
        "MinDensity": profile.min_density,
        "MaxDensity": profile.max_density,
        "Trim": "NO",
        "ConfigurationInformation": "",
        "RequestedResolutionID": "STANDARD",
        "Illumination": 2000,
        "ReflectedAmbientLight": 10,
        "PresentationLUT": "",
    }


def _display_format(ds: Dataset, profile: PrintProfileSettings) -> str:
    fmt = _text(ds, "ImageDisplayFormat")
    if not fmt:
        raise PrintError(status.MISSING_ATTRIBUTE, "Image Display Format is required")
    fmt = fmt.upper()
    try:
        kind, counts = film_mod.parse_display_format(fmt)
    except film_mod.LayoutError as exc:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, str(exc)) from None
    canonical = f"{kind}\\{','.join(map(str, counts))}"
    allowed = profile.display_formats.split()
    if allowed and canonical not in [a.upper() for a in allowed]:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{canonical} is not offered here")
    return canonical


def film_box_attrs(
    ds: Dataset,
    profile: PrintProfileSettings,
    current: dict[str, Any] | None = None,
    creating: bool = True,
) -> Outcome:
    """Film Box N-CREATE / N-SET attributes, checked against the profile (PS3.4 H.4.2)."""
    attrs = dict(current or film_box_defaults(profile))
    out = Outcome(attrs)
    if creating:
        attrs["ImageDisplayFormat"] = _display_format(ds, profile)
        orientation = _choice(ds, "FilmOrientation", film_mod.ORIENTATIONS)
        attrs["FilmOrientation"] = orientation or attrs["FilmOrientation"]
        size = _choice(ds, "FilmSizeID", tuple(film_mod.FILM_SIZES_MM))
        allowed = profile.film_sizes.split()
        if size and allowed and size not in allowed:
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"Film Size ID {size} not offered")
        attrs["FilmSizeID"] = size or attrs["FilmSizeID"]
        fmt_id = _text(ds, "AnnotationDisplayFormatID")
        if fmt_id:
            attrs["AnnotationDisplayFormatID"] = fmt_id.upper()
        resolution = _choice(ds, "RequestedResolutionID", RESOLUTIONS)
        attrs["RequestedResolutionID"] = resolution or attrs["RequestedResolutionID"]
        known = FILM_BOX_KEYS
    else:
        known = SETTABLE_FILM_BOX_KEYS
    bad = _unknown(ds, known)
    if not creating and set(bad) & FILM_BOX_KEYS:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{bad[0]} cannot be changed by N-SET")
    mag = _choice(ds, "MagnificationType", film_mod.MAGNIFICATIONS)
    attrs["MagnificationType"] = mag or attrs["MagnificationType"]
    smoothing = _text(ds, "SmoothingType")
    if smoothing is not None:
        attrs["SmoothingType"] = smoothing.upper()
    for keyword in ("BorderDensity", "EmptyImageDensity"):
        attrs[keyword] = _density(ds, keyword) or attrs[keyword]
    trim = _choice(ds, "Trim", YES_NO)
    attrs["Trim"] = trim or attrs["Trim"]
    config_info = _text(ds, "ConfigurationInformation")
    if config_info:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "Configuration Information not supported")
    for keyword in ("Illumination", "ReflectedAmbientLight"):
        value = _int(ds, keyword, 0, 65535)
        if value is not None:
            attrs[keyword] = value
    _densities(ds, profile, attrs, out)
    if bad:
        out.warnings.append(status.ATTRIBUTE_LIST_ERROR)
    return out


def _densities(
    ds: Dataset, profile: PrintProfileSettings, attrs: dict[str, Any], out: Outcome
) -> None:
    """Min/Max Density: beyond the paper's range they are limited, with B605 (PS3.4 H.4.2)."""
    lo = _int(ds, "MinDensity", 0, 65535)
    hi = _int(ds, "MaxDensity", 0, 65535)
    if lo is not None:
        attrs["MinDensity"] = lo
    if hi is not None:
        attrs["MaxDensity"] = hi
    if attrs["MaxDensity"] > profile.paper_max_density:
        attrs["MaxDensity"] = profile.paper_max_density
        out.warnings.insert(0, status.PRINT_DENSITY_OUT_OF_RANGE)
    if attrs["MinDensity"] >= attrs["MaxDensity"]:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "Min Density must be below Max Density")


def annotation_count(format_id: str) -> int:
    """Annotation boxes for an Annotation Display Format ID: 'n' or 'LABEL...' (one)."""
    if not format_id:
        return 0
    match = re.fullmatch(r"(\d{1,2})", format_id)
    return min(int(match.group(1)), 8) if match else 1


def image_box_count(attrs: dict[str, Any]) -> int:
    """Number of image boxes of a film box's layout."""
    return film_mod.box_count(attrs["ImageDisplayFormat"])


def box_width_mm(attrs: dict[str, Any], position: int) -> tuple[float, float]:
    """(width, height) in film mm of an image box, for Requested Image Size checks."""
    w_mm, h_mm = film_mod.film_size_mm(attrs["FilmSizeID"], attrs["FilmOrientation"])
    scale = 10  # tenths of mm, integer layout
    area = film_mod.Rect(0, 0, round(w_mm * scale), round(h_mm * scale))
    rect = film_mod.layout_boxes(attrs["ImageDisplayFormat"], area)[position - 1]
    return rect.w / scale, rect.h / scale


# -- Image Box (PS3.4 H.4.3) --------------------------------------------------------

IMAGE_BOX_KEYS = {
    "ImageBoxPosition",
    "Polarity",
    "MagnificationType",
    "SmoothingType",
    "ConfigurationInformation",
    "RequestedImageSize",
    "RequestedDecimateCropBehavior",
    "BasicGrayscaleImageSequence",
    "BasicColorImageSequence",
    "ReferencedPresentationLUTSequence",
    "SpecificCharacterSet",
}


@dataclass
class ImageBoxUpdate:
    """An accepted Image Box N-SET: attributes, pixels (or None to clear), warnings."""

    attrs: dict[str, Any]
    pixels: np.ndarray | None
    pixel_info: dict[str, Any]
    warnings: list[int] = field(default_factory=list)


def _aspect(item: Dataset) -> float:
    """Pixel Aspect Ratio (row spacing / column spacing), 1.0 when absent or unusable."""
    value = item.get("PixelAspectRatio")
    try:
        vertical, horizontal = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return 1.0
    ratio = vertical / horizontal if vertical > 0 and horizontal > 0 else 1.0
    return ratio if 0.1 <= ratio <= 10 else 1.0


def _pixels(item: Dataset, color: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixel Data of a Basic Grayscale/Color Image Sequence item as an array (PS3.3 C.13.5)."""
    try:
        rows, cols = int(item.Rows), int(item.Columns)
        spp = int(item.SamplesPerPixel)
        allocated, stored = int(item.BitsAllocated), int(item.BitsStored)
        photometric = str(item.PhotometricInterpretation).strip().upper()
        raw = item.PixelData
    except (AttributeError, TypeError, ValueError, KeyError):
        raise PrintError(status.MISSING_ATTRIBUTE, "image pixel module incomplete") from None
    if rows < 1 or cols < 1 or rows * cols > MAX_PIXELS:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"image of {cols}x{rows} not supported")
    if int(item.get("PixelRepresentation", 0) or 0) != 0:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "signed pixels are not printable")
    if color:
        if (spp, photometric, allocated, stored) != (3, "RGB", 8, 8):
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "colour pixels must be RGB, 8 bits")
        planar = int(item.get("PlanarConfiguration", 0) or 0)
        need = rows * cols * 3
        if len(raw) < need:
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "Pixel Data is too short")
        flat = np.frombuffer(raw, dtype=np.uint8, count=need)
        arr = (
            flat.reshape(3, rows, cols).transpose(1, 2, 0)
            if planar
            else flat.reshape(rows, cols, 3)
        )
        return np.ascontiguousarray(arr), {"photometric": "RGB", "bits": 8, "aspect": _aspect(item)}
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "grey pixels must be MONOCHROME1/2")
    if (allocated, stored) == (8, 8):
        dtype: Any = np.uint8
    elif allocated == 16 and stored in (12, 16):
        dtype = np.dtype("<u2")
    else:
        raise PrintError(
            status.INVALID_ATTRIBUTE_VALUE, f"{stored} of {allocated} bits unsupported"
        )
    need = rows * cols
    if len(raw) < need * np.dtype(dtype).itemsize:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "Pixel Data is too short")
    grey: np.ndarray = np.frombuffer(raw, dtype=dtype, count=need).reshape(rows, cols)
    return grey, {"photometric": photometric, "bits": stored, "aspect": _aspect(item)}


PATIENT_KEYWORDS = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "AccessionNumber": "accession_number",
}


def image_patient(item: Dataset) -> dict[str, str]:
    """Patient Name / ID / Accession Number an image carries, where present: not part of
    the Basic Image Box (PS3.3 C.13.5), but modalities often send them along."""
    out = {}
    for keyword, key in PATIENT_KEYWORDS.items():
        try:
            value = str(item.get(keyword, "") or "").strip("\0 ")
        except (TypeError, ValueError, LookupError):  # a value that cannot be decoded
            continue
        if value:
            out[key] = value[:200]
    return out


def image_box_update(
    ds: Dataset,
    position: int,
    color: bool,
    film_attrs: dict[str, Any],
    current: dict[str, Any],
) -> ImageBoxUpdate:
    """Image Box N-SET (PS3.4 H.4.3.1): attributes checked, pixels decoded, size checked."""
    attrs = dict(current)
    got = _int(ds, "ImageBoxPosition", 1, 65535)
    if got is not None and got != position:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"Image Box Position {got} != {position}")
    attrs["Polarity"] = _choice(ds, "Polarity", POLARITIES) or attrs.get("Polarity", "NORMAL")
    mag = _choice(ds, "MagnificationType", film_mod.MAGNIFICATIONS)
    if mag:
        attrs["MagnificationType"] = mag
    behavior = _choice(ds, "RequestedDecimateCropBehavior", DECIMATE_CROP)
    attrs["RequestedDecimateCropBehavior"] = behavior or attrs.get(
        "RequestedDecimateCropBehavior", "DECIMATE"
    )
    if "RequestedImageSize" in ds and ds.RequestedImageSize not in (None, ""):
        try:
            size = float(ds.RequestedImageSize)
        except (TypeError, ValueError):
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "Requested Image Size") from None
        if size < 0:
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "Requested Image Size < 0")
        attrs["RequestedImageSize"] = size
    out = ImageBoxUpdate(attrs, None, {})
    seq_kw = "BasicColorImageSequence" if color else "BasicGrayscaleImageSequence"
    other = "BasicGrayscaleImageSequence" if color else "BasicColorImageSequence"
    if other in ds:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"{other} in a {seq_kw[5:10]} box")
    if seq_kw in ds:
        seq = ds[seq_kw].value
        if seq:
            out.pixels, out.pixel_info = _pixels(seq[0], color)
            who = image_patient(seq[0]) or image_patient(ds)
            if who:
                out.pixel_info["patient"] = who
    requested = attrs.get("RequestedImageSize", 0.0)
    if requested:
        box_w, _ = box_width_mm(film_attrs, position)
        if requested > box_w:
            if attrs["RequestedDecimateCropBehavior"] == "FAIL":
                raise PrintError(
                    status.PRINT_IMAGE_LARGER_THAN_BOX,
                    f"requested {requested} mm, box is {box_w:.0f} mm wide",
                )
            out.warnings.append(
                status.PRINT_IMAGE_CROPPED
                if attrs["RequestedDecimateCropBehavior"] == "CROP"
                else status.PRINT_IMAGE_DECIMATED
            )
    if _unknown(ds, IMAGE_BOX_KEYS):
        out.warnings.append(status.ATTRIBUTE_LIST_ERROR)
    return out


# -- Presentation LUT (PS3.4 H.4.9) ------------------------------------------------


def presentation_lut_attrs(ds: Dataset) -> dict[str, Any]:
    """Presentation LUT N-CREATE: a shape (IDENTITY, LIN OD) or an explicit LUT."""
    shape = _text(ds, "PresentationLUTShape")
    seq = ds.get("PresentationLUTSequence")
    if shape and seq:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "both a LUT shape and a LUT sequence")
    if seq:
        item = seq[0]
        try:
            entries, first, bits = (int(v) for v in item.LUTDescriptor)
            data = item.LUTData
        except (AttributeError, TypeError, ValueError):
            raise PrintError(status.MISSING_ATTRIBUTE, "LUT Descriptor or LUT Data") from None
        entries = entries or 65536
        if isinstance(data, bytes):
            values = list(np.frombuffer(data, dtype="<u2"))
        else:
            values = list(data) if isinstance(data, list | tuple) else [data]
        if entries not in (256, 4096, 65536) or len(values) != entries or not 10 <= bits <= 16:
            raise PrintError(status.INVALID_ATTRIBUTE_VALUE, "LUT must be 256/4096 entries")
        return {"shape": "", "first": first, "bits": bits, "data": [int(v) for v in values]}
    shape = (shape or "IDENTITY").upper()
    if shape not in ("IDENTITY", "LIN OD"):
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"Presentation LUT Shape {shape}")
    return {"shape": shape}


def presentation_lut(attrs: dict[str, Any] | None) -> PresentationLUT:
    """The image/ description of a stored Presentation LUT."""
    if not attrs:
        return PresentationLUT()
    if attrs.get("data"):
        return PresentationLUT("", attrs["first"], attrs["bits"], tuple(attrs["data"]))
    return PresentationLUT(attrs["shape"])


# -- Annotation Box (PS3.4 H.4.7) -----------------------------------------------------


def annotation_text(ds: Dataset, position: int) -> str:
    """Annotation Box N-SET: the text for this position."""
    got = _int(ds, "AnnotationPosition", 1, 99)
    if got is not None and got != position:
        raise PrintError(status.INVALID_ATTRIBUTE_VALUE, f"Annotation Position {got}")
    return (_text(ds, "TextString") or "")[:64]


# -- Print Job (PS3.4 H.4.5) ---------------------------------------------------------

PENDING, PRINTING, DONE, FAILURE = "PENDING", "PRINTING", "DONE", "FAILURE"
JOB_EVENT_TYPES = {PENDING: 1, PRINTING: 2, DONE: 3, FAILURE: 4}
# Printer N-EVENT-REPORT event types (PS3.4 H.4.6.1.1)
PRINTER_EVENT_TYPES = {"NORMAL": 1, "WARNING": 2, "FAILURE": 3}


def most_important(warnings: list[int]) -> int:
    """The one warning status to report, print-specific ones first."""
    if not warnings:
        return status.SUCCESS
    specific = [w for w in warnings if 0xB600 <= w <= 0xB6FF]
    return specific[0] if specific else warnings[0]
