"""The real-world corpus through the appliance to two Orthancs: one takes every syntax,
one only uncompressed data (issue 10).

DCMTK ``storescu`` sends each file in its own transfer syntax (pynetdicom the HTJ2K
ones, which DCMTK 3.6.7 does not know). The all-syntax PACS must get the bytes as sent;
the uncompressed-only PACS the same pixels (for lossy files: what the lossy file decodes
to, no further loss), the same SOP Instance UID and the same attributes.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLSLossless,
)

from appliance import status
from appliance.forward import queue, sender
from appliance.server import Appliance
from tests.forward_corpus import UNKNOWN_TO_DCMTK, Entry, build_corpus, storescu_profile
from tests.forward_factories import write_series
from tests.forward_helpers import forward_config, pacs_destination, send_files, senders
from tests.helpers import peer_env, require_peer, wait_for
from tests.orthanc import Orthanc

UNCOMPRESSED = [str(ImplicitVRLittleEndian), str(ExplicitVRLittleEndian)]
# Values the decompression rewrites by definition (PS3.3 C.7.6.3.1.2: YBR_FULL_422 decoded
# is RGB), or that are bytes whose order the conversion changes (compared decoded instead).
REWRITTEN = {"PhotometricInterpretation", "PlanarConfiguration", "PixelData"}
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


@pytest.fixture
def two_pacs(tmp_path: Path) -> Iterator[tuple[Orthanc, Orthanc]]:
    """An Orthanc taking every syntax, and one configured for uncompressed data only."""
    every = Orthanc(tmp_path / "every", aet="EVERYPACS")
    plain = Orthanc(tmp_path / "plain", aet="PLAINPACS", AcceptedTransferSyntaxes=UNCOMPRESSED)
    try:
        yield every.start(), plain.start()
    finally:
        every.kill()
        plain.kill()


def _start(start_appliance: Callable[..., Appliance], *pacs: Orthanc) -> Appliance:
    dests = [pacs_destination(p.aet.lower(), p.aet, p.dicom_port) for p in pacs]
    return start_appliance(forward_config(dests, devices=("STORESCU", "MODALITY")))


def _storescu(port: int, config: Path, paths: list[Path]) -> None:
    out = subprocess.run(
        [require_peer("storescu"), "-aet", "STORESCU", "-aec", "APPLIANCE",
         "-xf", str(config), "Corpus", "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True, text=True, timeout=60, env=peer_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def _fetch(pacs: Orthanc, stored: dict[str, str], entry: Entry) -> Dataset:
    assert entry.sop_instance in stored, f"{entry.path.name} is missing from {pacs.aet}"
    return dcmread(io.BytesIO(pacs.instance_file(stored[entry.sop_instance])))


def _attributes(ds: Dataset, top: bool = True) -> list[tuple[str, Any]]:
    """Every non-binary attribute, nested ones included, with its value."""
    out: list[tuple[str, Any]] = []
    for elem in ds:
        if top and elem.keyword in REWRITTEN:
            continue
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value):
                out += [(f"{elem.tag}[{n}].{k}", v) for k, v in _attributes(item, top=False)]
        elif elem.VR not in BINARY_VRS:
            out.append((str(elem.tag), elem.value))
    return out


def _assert_kept(got: Dataset, sent: Dataset, entry: Entry) -> None:
    """The PACS took the file's own syntax: the same data set, the same pixel bytes."""
    assert got.file_meta.TransferSyntaxUID == entry.syntax, entry.path.name
    if "PixelData" in sent:
        assert got.PixelData == sent.PixelData, entry.path.name
    assert got == sent, entry.path.name  # every element, private sequences included


def _assert_converted(got: Dataset, sent: Dataset, entry: Entry) -> None:
    """The PACS got uncompressed little endian: same instance, attributes and pixels."""
    name = entry.path.name
    assert str(got.file_meta.TransferSyntaxUID) in UNCOMPRESSED, name
    assert got.SOPInstanceUID == entry.sop_instance, name
    assert _attributes(got) == _attributes(sent), name
    if entry.pixels is not None:
        assert np.array_equal(got.pixel_array, entry.pixels), name
        if got.PhotometricInterpretation == "PALETTE COLOR":  # the lookup tables, swapped
            assert np.array_equal(apply_color_lut(got.pixel_array, got),
                                  apply_color_lut(sent.pixel_array, sent)), name  # fmt: skip
    else:
        assert "PixelData" not in got, name
    # The source's samples: pydicom's waveform_array misreads a big endian file's own.
    for index, samples in enumerate(entry.waveforms):
        assert np.array_equal(got.waveform_array(index), samples), name


def test_corpus_reaches_both_pacs_kept_or_converted(
    start_appliance: Callable[..., Appliance],
    two_pacs: tuple[Orthanc, Orthanc],
    tmp_path: Path,
) -> None:
    every, plain = two_pacs
    entries = build_corpus(tmp_path / "corpus")
    assert len({e.sop_class for e in entries}) >= 10
    app = _start(start_appliance, every, plain)
    by_dcmtk = [e for e in entries if e.syntax not in UNKNOWN_TO_DCMTK]
    _storescu(app.dicom_port, storescu_profile(tmp_path / "storescu.cfg", by_dcmtk),
              [e.path for e in by_dcmtk])  # fmt: skip
    others = [e.path for e in entries if e.syntax in UNKNOWN_TO_DCMTK]
    assert send_files(app.dicom_port, others) == [status.SUCCESS] * len(others)

    store = app.runtime.store
    wait_for(lambda: all(r["delivered"] == len(entries) for r in queue.summary(store)), timeout=40)
    assert queue.dead_letters(store) == []
    on_every, on_plain = every.instance_uids(), plain.instance_uids()
    assert len(on_every) == len(on_plain) == len(entries)
    converted_by_every = set()
    for entry in entries:
        sent = dcmread(entry.path)
        got = _fetch(every, on_every, entry)
        if got.file_meta.TransferSyntaxUID == entry.syntax:
            _assert_kept(got, sent, entry)
        else:
            _assert_converted(got, sent, entry)
            converted_by_every.add(entry.syntax)
        got = _fetch(plain, on_plain, entry)
        if entry.syntax in UNCOMPRESSED:
            _assert_kept(got, sent, entry)
        else:
            _assert_converted(got, sent, entry)
    # Orthanc 1.10 (DCMTK 3.6.7) takes every syntax but HTJ2K, which it gets decoded.
    assert converted_by_every == UNKNOWN_TO_DCMTK
    # What was kept went through the sender's own wire, what was converted through pynetdicom.
    as_stored = {
        "everypacs": len(entries) - len(others),
        "plainpacs": sum(1 for e in entries if e.syntax in UNCOMPRESSED),
    }
    for name, count in as_stored.items():
        assert sum(s.wire_stores for s in senders(app, name)) == count, name


def _undecodable(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Two instances no plugin can decompress, each with the reason a person must read:
    a JPEG-LS frame that is garbage after its start-of-image marker, and a JPEG 2000
    Part 2 instance (a syntax pydicom has no decoder for)."""
    src = write_series(tmp_path / "bad-src", 2)
    corrupt, part2 = tmp_path / "bad.jls.dcm", tmp_path / "bad.jpx.dcm"
    subprocess.run([require_peer("dcmcjpls"), "+el", "+un", str(src[0]), str(corrupt)],
                   check=True, env=peer_env())  # fmt: skip
    ds = dcmread(corrupt)
    data = bytearray(ds.PixelData)
    start = data.index(b"\xff\xd8")  # the frame's SOI, after the item tags
    data[start + 2 :] = bytes((start * 37 + i * 11) % 251 for i in range(len(data) - start - 2))
    ds.PixelData = bytes(data)
    ds.save_as(corrupt, enforce_file_format=True)
    ds = dcmread(src[1])
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = JPEG2000MCLossless  # Part 2 is a superset of Part 1
    ds.save_as(part2, enforce_file_format=True)
    return {
        dcmread(corrupt).SOPInstanceUID: (
            corrupt,
            f"{JPEGLSLossless.name} could not be decompressed: RuntimeError: pylibjpeg: "
            "libjpeg error",
        ),
        dcmread(part2).SOPInstanceUID: (
            part2,
            f"{JPEG2000MCLossless.name} could not be decompressed: no installed pixel "
            "plugin decodes this syntax",
        ),
    }


def test_undecodable_instances_do_not_hold_fifty_good_ones(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    """Each bad one is retried on its own backoff (2 s doubling to 4 s, jittered: five
    attempts span at least 7 s) while the 50 behind them arrive at once."""
    plain = Orthanc(tmp_path / "plain", aet="PLAINPACS", AcceptedTransferSyntaxes=UNCOMPRESSED)
    plain.start()
    try:
        dest = pacs_destination("plain", plain.aet, plain.dicom_port)
        app = start_appliance(forward_config([dest], retry_initial=2.0, retry_max=4.0))
        store = app.runtime.store
        bad = _undecodable(tmp_path)
        good = write_series(tmp_path / "good", 50, rows=64, columns=64)
        started = time.monotonic()
        sent = send_files(app.dicom_port, [*(path for path, _ in bad.values()), *good])
        assert sent == [status.SUCCESS] * 52
        wait_for(lambda: len(plain.instance_uids()) == 50, timeout=5)
        wait_for(lambda: queue.summary(store)[0]["delivered"] == 50, timeout=2)
        assert time.monotonic() - started < 7  # before the bad ones' attempts could end
        assert set(plain.instance_uids()) == {dcmread(p).SOPInstanceUID for p in good}
        # Meanwhile the bad ones are held, each with its reason, not yet dead.
        held = {r["sop_instance_uid"]: r for r in queue.waiting_items(store, "plain")}
        assert set(held) == set(bad)
        for uid, (_, reason) in bad.items():
            assert held[uid]["held"], held[uid]
            assert reason in held[uid]["why"], held[uid]
        assert queue.dead_letters(store) == []

        dead = wait_for(lambda: len(queue.dead_letters(store)) == 2 and queue.dead_letters(store),
                        timeout=20)  # fmt: skip
        elapsed = time.monotonic() - started
        assert elapsed < 25, f"50 instances and two dead letters took {elapsed:.1f} s"
        assert {d["sop_instance_uid"] for d in dead} == set(bad)
        for letter in dead:
            reason = letter["reason"]
            assert reason.startswith(f"gave up after {sender.INSTANCE_ATTEMPTS} attempts"), reason
            assert bad[letter["sop_instance_uid"]][1] in reason, reason
            assert letter["attempts"] == sender.INSTANCE_ATTEMPTS
        summary = queue.summary(store)[0]
        assert (summary["delivered"], summary["dead"], summary["waiting"]) == (50, 2, 0)
        assert len(plain.instance_uids()) == 50
    finally:
        plain.kill()
