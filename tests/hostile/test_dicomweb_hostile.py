"""Hostile DICOMweb clients over real sockets: malformed multipart, wrong content types,
bodies over the limit, unknown query keys, path traversal and non-UIDs in the path.
Each gets a precise 4xx naming what is wrong (never a 500), and what is held stays."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.uid import generate_uid

from appliance.server import Appliance
from tests.dicomweb_helpers import Box, api_token, multipart_body, values
from tests.forward_factories import make_ct
from tests.helpers import make_config
from tests.qr_helpers import qr_config, store_studies
from tests.webclient import https_context

BOUNDARY = "XyZ"
CT = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    root = tmp_path_factory.mktemp("dicomweb-hostile")
    raw = {**qr_config(), "dicomweb": {"max_body_mb": 1}}
    app = Appliance(make_config(root / "data", raw)).start()
    try:
        yield Box(app, store_studies(app.dicom_port, root / "images"), api_token(app))
    finally:
        app.stop()


def held_count(box: Box) -> int:
    store = box.app.runtime.store  # type: ignore[union-attr]
    return int(store.query("SELECT count(*) AS n FROM qr_instances")[0]["n"])


def error(box: Box, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    code, headers, body = box.request(method, path, **kw)
    assert code < 500, (code, body[:200])
    assert headers["content-type"] == "application/json", headers
    return code, json.loads(body)


def part10(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("body", "ctype", "field"),
    [
        (b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nDICM", CT, "body"),  # no close
        (b"no boundary anywhere", CT, "body"),
        (b"--XyZ\r\nthis is no header\r\n\r\nx\r\n--XyZ--", CT, "body"),
        (b"--XyZ--\r\n", CT, "body"),  # no part
        (b"", CT, "body"),
        (b"--XyZ\r\n\r\nx\r\n--XyZ--", 'multipart/related; type="application/dicom"', "body"),
        (b"--XyZ junk\r\n\r\nx\r\n--XyZ--", CT, "body"),
        (b"--XyZ\r\n" + b"A: b\r\n" * 2000 + b"\r\nx\r\n--XyZ--", CT, "body"),  # headers > 8 KB
    ],
)
def test_malformed_multipart_gets_400(box: Box, body: bytes, ctype: str, field: str) -> None:
    before = held_count(box)
    code, answer = error(
        box, "POST", "/dicomweb/studies", body=body, headers={"Content-Type": ctype}
    )
    assert code == 400 and answer["field"] == field, answer
    assert held_count(box) == before


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=XyZ',
        "multipart/form-data; boundary=XyZ",
        "",
    ],
)
def test_wrong_content_types_get_415(box: Box, ctype: str) -> None:
    body, _ = multipart_body([part10(make_ct())], BOUNDARY)
    headers = {"Content-Type": ctype} if ctype else {}
    code, answer = error(box, "POST", "/dicomweb/studies", body=body, headers=headers)
    assert code == 415 and answer["field"] == "Content-Type"


def test_a_part_of_another_type_fails_alone(box: Box) -> None:
    good = make_ct(study_uid=generate_uid())
    body = (
        b"--XyZ\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + part10(good) + b"\r\n--XyZ--"
    )
    code, _, data = box.request(
        "POST", "/dicomweb/studies", body=body, headers={"Content-Type": CT}
    )
    assert code == 202
    answer = json.loads(data)
    assert values(values(answer, "00081198")[0], "00081197") == [0x0122]
    assert values(values(answer, "00081199")[0], "00081155") == [good.SOPInstanceUID]


def test_uids_with_path_characters_in_a_stored_file_fail(box: Box) -> None:
    ds = make_ct()
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "../../../etc/passwd"
    body, ctype = multipart_body([part10(ds)], BOUNDARY)
    code, _, data = box.request(
        "POST", "/dicomweb/studies", body=body, headers={"Content-Type": ctype}
    )
    assert code == 409
    assert values(values(json.loads(data), "00081198")[0], "00081197") == [0xC000]


def test_a_claimed_huge_body_gets_413_before_it_is_read(box: Box) -> None:
    """Content-Length of 2 GB, nothing sent: answered at once, the connection not held."""
    raw = socket.create_connection(("127.0.0.1", box.app.web_port), timeout=10)
    with https_context(box.ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(
            b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {box.token}\r\nContent-Type: {CT}\r\n".encode()
            + b"Content-Length: 2147483648\r\n\r\n"
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:80]


def test_a_body_over_the_limit_gets_413_and_leaves_nothing(box: Box) -> None:
    before = held_count(box)
    tmp = box.app.config.data_dir / "spool" / "tmp"
    leftovers = set(tmp.iterdir())
    body, ctype = multipart_body([b"\0" * (1 << 20) + b"x"], BOUNDARY)
    code, answer = error(
        box, "POST", "/dicomweb/studies", body=body, headers={"Content-Type": ctype}
    )
    assert code == 413
    assert set(tmp.iterdir()) == leftovers and held_count(box) == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("PatientNameX=a", "PatientNameX"),
        ("x" * 300 + "=1", "x" * 300),
        ("ScheduledProcedureStepSequence.Modality=CT", "ScheduledProcedureStepSequence.Modality"),
        ("StudyInstanceUID=1.2.x", "StudyInstanceUID"),
        ("limit=99999999999", "limit"),
        ("StudyTime=noon", "StudyTime"),
    ],
)
def test_unknown_or_bad_query_keys_get_400(box: Box, query: str, field: str) -> None:
    code, answer = error(box, "GET", f"/dicomweb/studies?{query}")
    assert code == 400 and answer["field"] == field, answer


@pytest.mark.parametrize(
    "path",
    [
        "/dicomweb/studies/..%2F..%2Fetc%2Fpasswd",
        "/dicomweb/studies/../../etc/passwd",
        "/dicomweb/studies/1.2.3%00/series",
        "/dicomweb/studies/%2e%2e/metadata",
        "/dicomweb/studies/abc/series/def/instances/ghi",
        "/dicomweb/studies/1.2.3/series/1.2.3;rm -rf/metadata",
        "/dicomweb/studies/" + "1." * 40 + "1",
        "/dicomweb/studies/1.2/series/1.2/instances/1.2/frames/1;2",
        "/dicomweb/studies/1.2/series/1.2/instances/1.2/frames/" + "1," * 10001 + "1",
    ],
)
def test_path_traversal_and_non_uids_are_refused(box: Box, path: str) -> None:
    code, headers, body = box.request("GET", path.replace(" ", "%20"))
    assert code in (400, 404), (code, body[:200])
    if code == 400:
        assert json.loads(body)["field"] in (
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "frames",
        )  # fmt: skip
    assert b"root:" not in body


def test_what_is_held_stays_retrievable(box: Box) -> None:
    study = next(iter(box.held.studies))
    assert len(box.client().retrieve_study(study)) == 5


MPPS_PATH = "/dicomweb/modality-performed-procedure-steps"
JSON_CT = {"Content-Type": "application/dicom+json"}


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"[" * 100000 + b"]" * 100000, 400, "body"),  # nesting deeper than the parser goes
        (b'{"00100010": {"vr": "PN", "Value": 5}}', 400, "body"),
        (b'{"zzzz": {"vr": "PN"}}', 400, "body"),
        (b"[{}, {}]", 400, "body"),
        (b'"a string"', 400, "body"),
        (b"\xff\xfe", 400, "body"),
        (b"{" + b'"00100010": {"vr": "PN"},' * 200000 + b'"00100020": {"vr": "LO"}}', 413, ""),
    ],
)
def test_hostile_mpps_payloads(box: Box, body: bytes, code: int, field: str) -> None:
    path = f"{MPPS_PATH}/{generate_uid()}"
    got, answer = error(box, "POST", path, body=body, headers=JSON_CT)
    assert got == code, answer
    if field:
        assert answer["field"] == field


@pytest.mark.parametrize(
    "path",
    [
        f"{MPPS_PATH}/..%2F..%2Fetc",
        f"{MPPS_PATH}/1.2.3;DROP TABLE mpps",
        f"{MPPS_PATH}/" + "9" * 65,
        "/dicomweb/modality-scheduled-procedure-steps?"
        + "PatientID=1&" * 3
        + "PatientName="
        + "*" * 5000,
        "/dicomweb/modality-scheduled-procedure-steps?00400100.00400100.00400001=CT",
        "/dicomweb/modality-scheduled-procedure-steps?ScheduledProcedureStepSequence=x",
    ],
)
def test_hostile_worklist_paths(box: Box, path: str) -> None:
    code, headers, body = box.request("GET", path.replace(" ", "%20"))
    assert code in (200, 400, 404), (code, body[:200])
    assert headers["content-type"].startswith("application/")
    if code == 400:
        assert json.loads(body)["field"], body
