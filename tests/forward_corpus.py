"""A real-world mix for the forward tests: many SOP classes, in every transfer syntax.

``build_corpus(directory)`` writes small instances (pydicom + numpy) of eleven SOP
classes (CT, MR, US, US multi-frame, NM, SC, RT Dose, RT Plan, Basic Text SR, 12-lead
ECG, VL photograph) with private sequences, odd-length pixel data, palette colour and
YBR, then encodes each in the transfer syntaxes its image type allows, with independent
encoders: DCMTK ``dcmconv`` (big endian, deflate), ``dcmcjpeg`` (JPEG baseline, 12-bit
extended, lossless), ``dcmcjpls`` (JPEG-LS), ``dcmcrle`` (RLE), OpenJPH ``ojph_compress``
(HTJ2K) and pydicom with pylibjpeg-openjpeg (JPEG 2000). Each entry knows the pixels a
faithful receiver must decode: the source's for lossless syntaxes, the lossy file's own
for lossy ones.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    NuclearMedicineImageStorage,
    RLELossless,
    RTDoseStorage,
    RTPlanStorage,
    SecondaryCaptureImageStorage,
    TwelveLeadECGWaveformStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    VLPhotographicImageStorage,
    generate_uid,
)

from tests.helpers import peer_env, require_peer

PRIVATE_CREATOR = "ACME IMAGING 1.0"
LOSSY = {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000, HTJ2K}
# Syntaxes DCMTK 3.6.7 does not know (storescu cannot send them; Orthanc 1.10 refuses them).
UNKNOWN_TO_DCMTK = {HTJ2KLossless, HTJ2K}


@dataclass(frozen=True)
class Entry:
    """One corpus file and what a receiver must decode from it."""

    name: str
    path: Path
    sop_class: str
    sop_instance: str
    syntax: UID
    pixels: np.ndarray | None  # None: no pixel data
    waveforms: tuple[np.ndarray, ...] = ()  # the source's, one array a multiplex group


# -- source instances ---------------------------------------------------------------


def _base(sop_class: str, modality: str, study: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20261203"
    ds.StudyTime = "091500"
    ds.PatientName = "Corpus^Patient^^^"
    ds.PatientID = "CORPUS-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.Modality = modality
    ds.Manufacturer = "Corpus Vendor"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def _private_sequence(ds: Dataset) -> None:
    """A private block holding a sequence whose item has private elements of its own."""
    item = Dataset()
    inner = item.private_block(0x0011, PRIVATE_CREATOR, create=True)
    inner.add_new(0x01, "LO", "inner value")
    inner.add_new(0x02, "US", [7, 513])
    inner.add_new(0x03, "FD", 2.5)
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "SQ", Sequence([item]))
    block.add_new(0x02, "SL", -70000)


def _image(
    ds: Dataset,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
) -> None:
    frames = 1 if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3) else None
    if frames is None:
        ds.NumberOfFrames = pixels.shape[0]
    samples = 3 if photometric in ("RGB", "YBR_FULL") else 1
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    rows, cols = pixels.shape[-3:-1] if samples == 3 else pixels.shape[-2:]
    ds.Rows, ds.Columns = rows, cols
    allocated = pixels.dtype.itemsize * 8
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    raw = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")  # PS3.5 7.1.1: padded to even
    ds["PixelData"].VR = "OB" if allocated == 8 else "OW"


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], top: int) -> np.ndarray:
    """A gradient plus noise in [0, top]: real-looking enough for every codec."""
    grid = np.indices(shape).sum(axis=0).astype(np.float64)
    base = grid / max(grid.max(), 1) * top * 0.8
    noise = rng.integers(0, max(top // 10, 2), size=shape)
    return np.clip(base + noise, 0, top)


def make_ct(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(CTImageStorage, "CT", study)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    pixels = (_smooth(rng, (64, 64), 4095) - 1024).astype(np.int16)
    _image(ds, pixels, bits_stored=12)
    _private_sequence(ds)
    return ds


def make_mr(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(MRImageStorage, "MR", study)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    _image(ds, _smooth(rng, (64, 64), 4095).astype(np.uint16), bits_stored=12)
    _private_sequence(ds)
    return ds


def make_us_rgb(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(UltrasoundImageStorage, "US", study)
    rgb = np.stack([_smooth(rng, (48, 64), 255) for _ in range(3)], axis=-1)
    _image(ds, rgb.astype(np.uint8), photometric="RGB")
    _private_sequence(ds)
    return ds


def make_us_multiframe(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(UltrasoundMultiFrameImageStorage, "US", study)
    ds.FrameTime = 40.0
    ds.FrameIncrementPointer = 0x00181063
    _image(ds, _smooth(rng, (4, 48, 64), 255).astype(np.uint8))
    return ds


def make_nm(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(NuclearMedicineImageStorage, "NM", study)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"]
    ds.FrameIncrementPointer = 0x00540010  # Energy Window Vector
    ds.EnergyWindowVector = [1, 1]
    ds.NumberOfEnergyWindows = 1
    _image(ds, _smooth(rng, (2, 64, 64), 60000).astype(np.uint16))
    _private_sequence(ds)
    return ds


def make_sc_odd(study: str, rng: np.random.Generator) -> Dataset:
    """8-bit, 63 x 65: 4095 bytes of pixels, so the Pixel Data value has a pad byte."""
    ds = _base(SecondaryCaptureImageStorage, "OT", study)
    ds.ConversionType = "WSD"
    _image(ds, _smooth(rng, (63, 65), 255).astype(np.uint8))
    _private_sequence(ds)
    return ds


def make_palette(study: str, rng: np.random.Generator) -> Dataset:
    """US image in PALETTE COLOR: 8-bit indices and 16-bit lookup table entries (OW)."""
    ds = _base(UltrasoundImageStorage, "US", study)
    _image(ds, _smooth(rng, (48, 64), 255).astype(np.uint8), photometric="PALETTE COLOR")
    ramp = np.arange(256, dtype=np.uint16)
    for colour, lut in (
        ("Red", ramp * 257),
        ("Green", (255 - ramp) * 257),
        ("Blue", (ramp * 7 % 256) * 257),
    ):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"
    return ds


def make_rt_dose(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(RTDoseStorage, "RTDOSE", study)
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = 1e-6
    ds.GridFrameOffsetVector = [0.0, 2.5, 5.0]
    ds.FrameIncrementPointer = 0x3004000C
    _image(ds, _smooth(rng, (3, 32, 32), 2_000_000_000).astype(np.uint32))
    return ds


def make_rt_plan(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(RTPlanStorage, "RTPLAN", study)
    ds.RTPlanLabel = "CORPUS"
    ds.RTPlanGeometry = "PATIENT"
    beam = Dataset()
    beam.BeamNumber = 1
    beam.BeamName = "AP"
    beam.BeamType = "STATIC"
    beam.RadiationType = "PHOTON"
    beam.NumberOfControlPoints = 2
    points = []
    for index, weight in ((0, 0.0), (1, 1.0)):
        cp = Dataset()
        cp.ControlPointIndex = index
        cp.CumulativeMetersetWeight = weight
        cp.GantryAngle = 0.0
        points.append(cp)
    beam.ControlPointSequence = points
    ds.BeamSequence = [beam]
    fraction = Dataset()
    fraction.FractionGroupNumber = 1
    fraction.NumberOfFractionsPlanned = 30
    ds.FractionGroupSequence = [fraction]
    _private_sequence(ds)
    return ds


def make_sr(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(BasicTextSRStorage, "SR", study)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator = "11528-7", "LN"
    title.CodeMeaning = "Radiology Report"
    ds.ConceptNameCodeSequence = [title]
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator = "121071", "DCM"
    name.CodeMeaning = "Finding"
    finding.ConceptNameCodeSequence = [name]
    finding.TextValue = "No acute findings. Zoë's report, ünïcode in Latin-1."
    ds.ContentSequence = [finding]
    return ds


def make_ecg(study: str, rng: np.random.Generator) -> Dataset:
    """12-lead ECG: one multiplex group of 12 channels, 16-bit samples (OW waveform data)."""
    ds = _base(TwelveLeadECGWaveformStorage, "ECG", study)
    group = Dataset()
    group.MultiplexGroupTimeOffset = 0.0
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = 12
    group.NumberOfWaveformSamples = 500
    group.SamplingFrequency = 500.0
    channels = []
    for lead in range(12):
        ch = Dataset()
        source = Dataset()
        source.CodeValue, source.CodingSchemeDesignator = f"5.6.3-9-{lead + 1}", "SCPECG"
        source.CodeMeaning = f"Lead {lead + 1}"
        ch.ChannelSourceSequence = [source]
        ch.ChannelSensitivity = 1.0
        units = Dataset()
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "uV"
        ch.ChannelSensitivityUnitsSequence = [units]
        ch.ChannelBaseline = 0.0
        ch.ChannelSampleSkew = 0.0
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    samples = rng.integers(-2000, 2000, size=(500, 12), dtype=np.int16)
    group.WaveformData = samples.astype("<i2").tobytes()
    group["WaveformData"].VR = "OW"
    ds.WaveformSequence = [group]
    return ds


def make_photo(study: str, rng: np.random.Generator) -> Dataset:
    ds = _base(VLPhotographicImageStorage, "XC", study)
    rgb = np.stack([_smooth(rng, (48, 64), 255) for _ in range(3)], axis=-1)
    _image(ds, rgb.astype(np.uint8), photometric="RGB")
    return ds


# -- encoders -------------------------------------------------------------------------


def _run(tool: str, *args: str | Path) -> None:
    out = subprocess.run(
        [require_peer(tool), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=peer_env(),
    )
    if out.returncode != 0:
        raise AssertionError(f"{tool} failed: {out.stdout}{out.stderr}")


def _dcmtk(tool: str, *options: str) -> Callable[[Path, Path], None]:
    def encode(src: Path, dst: Path) -> None:
        _run(tool, *options, src, dst)

    return encode


def _pydicom(syntax: UID, **kw: Any) -> Callable[[Path, Path], None]:
    def encode(src: Path, dst: Path) -> None:
        ds = dcmread(src)
        ds.compress(syntax, generate_instance_uid=False, **kw)
        ds.save_as(dst, enforce_file_format=True)

    return encode


def _native(syntax: UID) -> Callable[[Path, Path], None]:
    def encode(src: Path, dst: Path) -> None:
        ds = dcmread(src)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(dst, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)

    return encode


def _htj2k(syntax: UID) -> Callable[[Path, Path], None]:
    """OpenJPH's ojph_compress on each frame (PGM/PPM), encapsulated by pydicom."""
    lossless = syntax == HTJ2KLossless

    def encode(src: Path, dst: Path) -> None:
        ds = dcmread(src)
        pixels = ds.pixel_array
        frames = pixels if int(ds.get("NumberOfFrames", 1)) > 1 else pixels[None]
        codestreams = []
        for index, frame in enumerate(frames):
            colour = frame.ndim == 3
            image = dst.with_suffix(f".{index}.{'ppm' if colour else 'pgm'}")
            top = (1 << int(ds.BitsStored)) - 1
            header = f"{'P6' if colour else 'P5'}\n{frame.shape[1]} {frame.shape[0]}\n{top}\n"
            big = frame.astype(">u2") if top > 255 else frame.astype(np.uint8)
            image.write_bytes(header.encode() + big.tobytes())
            j2c = dst.with_suffix(f".{index}.j2c")
            options = ["-reversible", "true"] if lossless else ["-qstep", "0.01"]
            _run("ojph_compress", "-i", image, "-o", j2c, *options)
            codestreams.append(j2c.read_bytes())
        ds.PixelData = encapsulate(codestreams)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = syntax
        if colour:
            ds.PhotometricInterpretation = "YBR_RCT" if lossless else "YBR_ICT"
        if not lossless:
            ds.LossyImageCompression = "01"
        ds.save_as(dst, enforce_file_format=True)

    return encode


ENCODERS: dict[UID, Callable[[Path, Path], None]] = {
    ImplicitVRLittleEndian: _native(ImplicitVRLittleEndian),
    ExplicitVRLittleEndian: _native(ExplicitVRLittleEndian),
    ExplicitVRBigEndian: _dcmtk("dcmconv", "+tb"),
    DeflatedExplicitVRLittleEndian: _dcmtk("dcmconv", "+td"),
    JPEGBaseline8Bit: _dcmtk("dcmcjpeg", "+eb", "+un"),
    JPEGExtended12Bit: _dcmtk("dcmcjpeg", "+ee", "+un"),
    JPEGLossless: _dcmtk("dcmcjpeg", "+el", "+un"),
    JPEGLosslessSV1: _dcmtk("dcmcjpeg", "+e1", "+un"),
    JPEGLSLossless: _dcmtk("dcmcjpls", "+el", "+un"),
    JPEGLSNearLossless: _dcmtk("dcmcjpls", "+en", "+un"),
    JPEG2000Lossless: _pydicom(JPEG2000Lossless),
    JPEG2000: _pydicom(JPEG2000, j2k_cr=[10]),
    HTJ2KLossless: _htj2k(HTJ2KLossless),
    HTJ2K: _htj2k(HTJ2K),
    RLELossless: _dcmtk("dcmcrle", "+un"),
}

NATIVE = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
NATIVE_ALL = [*NATIVE, DeflatedExplicitVRLittleEndian]
LOSSLESS = [JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless]

# Each source and the syntaxes its image type allows (PS3.5 8.2: JPEG baseline is 8-bit,
# extended 8/12-bit; lossy never for palette colour; JPEG-LS up to 16 bits).
PLAN: list[tuple[str, Callable[[str, np.random.Generator], Dataset], list[UID]]] = [
    ("ct", make_ct, [*NATIVE_ALL, *LOSSLESS, JPEG2000]),
    ("mr", make_mr, [ExplicitVRLittleEndian, JPEGExtended12Bit, JPEGLSNearLossless,
                     JPEG2000, HTJ2KLossless, HTJ2K, JPEGLosslessSV1]),
    ("us", make_us_rgb, [*NATIVE, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless,
                         RLELossless, JPEGBaseline8Bit]),
    ("usmf", make_us_multiframe, [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                                  JPEGBaseline8Bit, JPEGLSLossless, JPEG2000Lossless,
                                  RLELossless, HTJ2KLossless]),
    ("nm", make_nm, [*NATIVE, JPEGLSLossless, JPEG2000Lossless, RLELossless, JPEGLossless]),
    ("sc", make_sc_odd, [*NATIVE_ALL, JPEGBaseline8Bit, JPEGExtended12Bit, *LOSSLESS,
                         JPEGLSNearLossless, HTJ2KLossless]),
    ("palette", make_palette, [*NATIVE_ALL, JPEGLSLossless, JPEG2000Lossless, RLELossless]),
    ("rtdose", make_rt_dose, [*NATIVE_ALL, RLELossless]),
    ("rtplan", make_rt_plan, NATIVE_ALL),
    ("sr", make_sr, NATIVE_ALL),
    ("ecg", make_ecg, NATIVE_ALL),
    ("photo", make_photo, [JPEGBaseline8Bit]),
]  # fmt: skip


def build_corpus(directory: Path, seed: int = 10) -> list[Entry]:
    """Write every planned (source, syntax) file under ``directory``; the entries."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study = generate_uid()
    entries = []
    for name, make, syntaxes in PLAN:
        source = make(study, rng)
        for syntax in syntaxes:
            ds = source.copy()
            ds.file_meta = FileMetaDataset(source.file_meta)
            ds.SOPInstanceUID = generate_uid()  # one instance per file
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            label = f"{name}-{syntax.keyword or syntax}"
            src = directory / f"{label}.src.dcm"
            ds.save_as(src, enforce_file_format=True)
            dst = directory / f"{label}.dcm"
            ENCODERS[syntax](src, dst)
            src.unlink()
            for scratch in directory.glob(f"{label}.*.*"):
                scratch.unlink()
            entries.append(_entry(name, dst, ds, syntax))
    return entries


def _entry(name: str, path: Path, source: Dataset, syntax: UID) -> Entry:
    written = dcmread(path)
    assert written.file_meta.TransferSyntaxUID == syntax, (path, written.file_meta)
    assert written.SOPInstanceUID == source.SOPInstanceUID, path
    pixels = None
    if "PixelData" in source:
        # Lossy: what the file itself decodes to (a forwarder must add no further loss).
        pixels = written.pixel_array if syntax in LOSSY else source.pixel_array
    waves = tuple(source.waveform_array(i) for i in range(len(source.get("WaveformSequence", []))))
    uids = str(source.SOPClassUID), str(source.SOPInstanceUID)
    return Entry(name, path, *uids, syntax, pixels, waves)


def storescu_profile(path: Path, entries: list[Entry]) -> Path:
    """A storescu profile with one presentation context per (SOP class, file's syntax)."""
    syntaxes = sorted({str(e.syntax) for e in entries})
    pairs = sorted({(e.sop_class, str(e.syntax)) for e in entries})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Corpus]"]
    for n, (sop_class, ts) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{n} = {sop_class}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Corpus]", "PresentationContexts = Corpus"]
    path.write_text("\n".join(lines) + "\n")
    return path
