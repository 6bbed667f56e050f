"""DICOMweb against a live appliance: dicomweb-client (PyPI) searches, retrieves and
stores, and plain HTTP requests written after PS3.18's examples check what it does not."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid

from appliance import accounts
from appliance.forward.spool import Spool
from appliance.server import Appliance
from tests.dicomweb_helpers import Box, api_token, multipart_body, parts, values
from tests.forward_factories import make_ct
from tests.forward_helpers import FakePacs
from tests.helpers import make_config, wait_for
from tests.qr_helpers import JAPANESE, Held, qr_config, store_studies

PN, PID, STUDY_UID, STUDY_DATE = "00100010", "00100020", "0020000D", "00080020"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One appliance holding the four Q/R test studies (ten images), read-only here."""
    root = tmp_path_factory.mktemp("dicomweb")
    app = Appliance(make_config(root / "data", qr_config())).start()
    try:
        held = store_studies(app.dicom_port, root / "images")
        yield Box(app, held, api_token(app))
    finally:
        app.stop()


def first(box: Box) -> tuple[str, str, str]:
    """The first study (P1's Chest, CT and MR series), its CT series and first image."""
    study = next(iter(box.held.studies))
    series = next(iter(box.held.studies[study]))
    return study, series, box.held.studies[study][series][0]


def spooled_bytes(box: Box, sop_instance: str) -> bytes:
    store = box.app.runtime.store  # type: ignore[union-attr]
    row = store.query(
        "SELECT file FROM forward_instances WHERE sop_instance_uid = ?", (sop_instance,)
    )
    with Spool(box.app.config.data_dir / "spool").open(row[0]["file"]) as f:  # file or record
        return f.read()


# -- who may ask ---------------------------------------------------------------------------


def test_anonymous_gets_401_and_a_bad_token_too(box: Box) -> None:
    assert box.request("GET", "/dicomweb/studies", token=False)[0] == 401
    code, _, _ = box.request("GET", "/dicomweb/studies", headers={"Authorization": "Bearer x"})
    assert code == 401


def test_a_signed_in_session_may_search(box: Box) -> None:
    store = box.app.runtime.store  # type: ignore[union-attr]
    accounts.create_user(store, "boss", "correct horse battery", accounts.ADMIN)
    s = box.session()
    root = f"https://127.0.0.1:{box.app.web_port}"
    page = s.get(f"{root}/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    form = {"csrf_token": csrf.group(1), "username": "boss", "password": "correct horse battery"}
    assert s.post(f"{root}/login", data=form, allow_redirects=False, timeout=10).status_code == 302
    resp = s.get(f"{root}/dicomweb/studies", timeout=10)
    assert resp.status_code == 200 and len(resp.json()) == 4


# -- QIDO-RS -------------------------------------------------------------------------------


def test_dicomweb_client_searches_studies_series_and_instances(box: Box) -> None:
    client = box.client()
    found = client.search_for_studies()
    assert sorted(values(s, STUDY_UID)[0] for s in found) == sorted(box.held.studies)
    does = client.search_for_studies(search_filters={"PatientName": "doe*"})
    assert len(does) == 2  # case-insensitive wildcard, as C-FIND matches names
    study, series, _ = first(box)
    in_study = client.search_for_series(study)
    assert sorted(values(s, "0020000E")[0] for s in in_study) == sorted(box.held.studies[study])
    assert {values(s, "00080060")[0] for s in in_study} == {"CT", "MR"}
    images = client.search_for_instances(study, series)
    assert sorted(values(i, "00080018")[0] for i in images) == sorted(
        box.held.studies[study][series]
    )
    assert len(client.search_for_series(search_filters={"Modality": "MR"})) == 1


def test_study_json_follows_ps3_18_f2(box: Box) -> None:
    study, _, _ = first(box)
    code, headers, body = box.json(f"/dicomweb/studies?StudyInstanceUID={study}")
    assert code == 200 and headers["content-type"] == "application/dicom+json"
    (item,) = body
    assert list(item) == sorted(item)  # attributes in tag order
    assert item[PN] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert item["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}  # ModalitiesInStudy
    assert item["00201208"]["Value"] == [5]  # NumberOfStudyRelatedInstances
    assert values(item, "00081190")[0].endswith(f"/dicomweb/studies/{study}")  # RetrieveURL
    assert values(item, "00080056") == ["ONLINE"]


def test_japanese_names_keep_all_three_groups(box: Box) -> None:
    code, _, body = box.json("/dicomweb/studies?PatientID=P3")
    assert code == 200
    alpha, ideo, phon = JAPANESE.split("=")
    assert body[0][PN]["Value"] == [{"Alphabetic": alpha, "Ideographic": ideo, "Phonetic": phon}]


def test_keys_by_tag_ranges_and_uid_lists(box: Box) -> None:
    code, _, body = box.json(f"/dicomweb/studies?{PID}=P2")
    assert code == 200 and [values(s, PID) for s in body] == [["P2"]]
    code, _, body = box.json("/dicomweb/studies?StudyDate=20261201-20261203")
    assert sorted(values(s, STUDY_DATE)[0] for s in body) == ["20261201", "20261202", "20261203"]
    two = list(box.held.studies)[:2]
    code, _, body = box.json(f"/dicomweb/studies?StudyInstanceUID={','.join(two)}")
    assert sorted(values(s, STUDY_UID)[0] for s in body) == sorted(two)


def test_includefield_limit_and_offset(box: Box) -> None:
    _, _, plain = box.json("/dicomweb/studies?PatientID=P2")
    assert "00081030" in plain[0] and "00100030" in plain[0]
    _, _, chosen = box.json("/dicomweb/series?PatientID=P2&includefield=PatientBirthDate")
    assert values(chosen[0], "00100030") == ["19800202"]
    _, _, every = box.json("/dicomweb/instances?PatientID=P2&includefield=all")
    assert len(every) == 2 and values(every[0], "00200011") == [1]  # SeriesNumber
    page1 = box.json("/dicomweb/studies?limit=2")[2]
    page2 = box.json("/dicomweb/studies?limit=2&offset=2")[2]
    uids = [values(s, STUDY_UID)[0] for s in page1 + page2]
    assert len(page1) == len(page2) == 2 and sorted(uids) == sorted(box.held.studies)
    code, headers, body = box.json("/dicomweb/studies?offset=10")
    assert code == 200 and body == [] and "warning" not in headers


def test_relational_and_study_instances(box: Box) -> None:
    study, series, _ = first(box)
    _, _, body = box.json(f"/dicomweb/studies/{study}/series/{series}/instances")
    assert len(body) == 3
    _, _, body = box.json(f"/dicomweb/studies/{study}/instances")
    assert len(body) == 5
    _, _, body = box.json("/dicomweb/instances?PatientID=P1&Modality=MR")
    assert len(body) == 2


def test_fuzzymatching_and_unsupported_attributes_answer_a_warning(box: Box) -> None:
    code, headers, body = box.json("/dicomweb/studies?PatientName=doe*&fuzzymatching=true")
    assert code == 200 and len(body) == 2
    assert re.search(r'^299 \S+ "The fuzzymatching parameter is not supported', headers["warning"])
    code, headers, body = box.json("/dicomweb/studies?Rows=512")
    assert code == 200 and len(body) == 4
    assert "Rows" in headers["warning"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("NotAnAttribute=1", "NotAnAttribute"),
        ("00991234=1", "00991234"),
        ("StudyDate=2026-12-01", "StudyDate"),
        ("limit=-1", "limit"),
        ("offset=x", "offset"),
        ("includefield=Nope", "Nope"),
        ("fuzzymatching=maybe", "fuzzymatching"),
    ],
)
def test_bad_queries_get_400_naming_the_key(box: Box, query: str, field: str) -> None:
    code, headers, body = box.json(f"/dicomweb/studies?{query}")
    assert code == 400 and headers["content-type"] == "application/json"
    assert body["field"] == field, body


def test_search_in_an_unknown_study_is_empty(box: Box) -> None:
    code, _, body = box.json("/dicomweb/studies/1.2.3.4/series")
    assert code == 200 and body == []


def test_qido_offers_json_only(box: Box) -> None:
    code, _, _ = box.request(
        "GET", "/dicomweb/studies", headers={"Accept": "application/dicom+xml"}
    )
    assert code == 406


def test_more_results_than_the_maximum_answer_a_warning(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance({**qr_config(), "dicomweb": {"max_results": 3}})
    held = store_studies(app.dicom_port, tmp_path / "images")
    small = Box(app, held, api_token(app))
    code, headers, body = small.json("/dicomweb/studies")
    assert code == 200 and len(body) == 3
    assert 'There are 1 additional results that can be requested"' in headers["warning"]
    code, headers, body = small.json("/dicomweb/studies?limit=2")
    assert len(body) == 2 and "warning" not in headers


# -- WADO-RS -------------------------------------------------------------------------------


def test_dicomweb_client_retrieves_study_series_and_instance(box: Box) -> None:
    client = box.client()
    study, series, image = first(box)
    got = client.retrieve_study(study)
    assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(box.held.instances(study))
    assert len(client.retrieve_series(study, series)) == 3
    ds = client.retrieve_instance(study, series, image)
    assert ds.SOPInstanceUID == image and ds.PatientID == "P1"


def test_instance_parts_are_the_bytes_held(box: Box) -> None:
    study, series, image = first(box)
    code, headers, body = box.request(
        "GET",
        f"/dicomweb/studies/{study}/series/{series}/instances/{image}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert code == 200
    assert headers["content-type"].startswith('multipart/related; type="application/dicom"')
    ((ctype, content),) = parts(headers["content-type"], body)
    assert ctype == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert content == spooled_bytes(box, image)
    code, headers, body = box.request("GET", f"/dicomweb/studies/{study}/series/{series}")
    assert code == 200 and len(parts(headers["content-type"], body)) == 3
    code, headers, body = box.request("GET", f"/dicomweb/studies/{study}")
    assert code == 200 and len(parts(headers["content-type"], body)) == 5


def test_retrieve_negotiation_and_unknown_uids(box: Box) -> None:
    study, series, image = first(box)
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{image}"
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    code, _, body = box.request("GET", url, headers={"Accept": jpeg})
    assert code == 406 and json.loads(body)["field"] == "transfer-syntax"
    assert box.request("GET", url, headers={"Accept": "application/json"})[0] == 406
    assert box.request("GET", f"/dicomweb/studies/{study}/series/1.2.3")[0] == 404
    assert box.request("GET", "/dicomweb/studies/1.2.3")[0] == 404


def test_metadata_has_the_attributes_and_a_bulk_data_uri(box: Box) -> None:
    study, series, image = first(box)
    client = box.client()
    md = client.retrieve_instance_metadata(study, series, image)
    assert values(md, PID) == ["P1"] and values(md, "00080018") == [image]
    assert md["7FE00010"]["BulkDataURI"].endswith(f"/instances/{image}/frames/1")
    assert "InlineBinary" not in md["7FE00010"] and "Value" not in md["7FE00010"]
    assert len(client.retrieve_series_metadata(study, series)) == 3
    code, _, body = box.json(f"/dicomweb/studies/{study}/metadata")
    assert code == 200 and len(body) == 5
    code, _, body = box.json(f"/dicomweb/studies/{study}/series/{series}/metadata")
    assert code == 200 and len(body) == 3
    code, _, body = box.json(
        f"/dicomweb/studies/{study}/series/{series}/instances/{image}/metadata"
    )
    assert code == 200 and values(body[0], "00080018") == [image]


def test_frames_are_the_uncompressed_pixels(box: Box, tmp_path: Path) -> None:
    study, series, image = first(box)
    original = dcmread(io.BytesIO(spooled_bytes(box, image)))
    (frame,) = box.client().retrieve_instance_frames(study, series, image, [1])
    assert frame == original.PixelData
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{image}/frames/1"
    code, headers, body = box.request("GET", url)
    assert code == 200
    ((ctype, content),) = parts(headers["content-type"], body)
    assert ctype.startswith("application/octet-stream") and content == original.PixelData
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{image}/frames"
    assert box.request("GET", f"{base}/2")[0] == 404
    assert json.loads(box.request("GET", f"{base}/0,x")[2])["field"] == "frames"


def jpeg_or_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_rendered_and_thumbnails(box: Box) -> None:
    study, series, image = first(box)
    inst = f"/dicomweb/studies/{study}/series/{series}/instances/{image}"
    code, headers, body = box.request(
        "GET", f"/dicomweb/studies/{study}/series/{series}/instances/{image}/rendered"
    )
    assert code == 200 and headers["content-type"] == "image/jpeg"
    assert jpeg_or_png(body).size == (32, 32)
    code, headers, body = box.request("GET", f"{inst}/rendered", headers={"Accept": "image/png"})
    assert headers["content-type"] == "image/png" and jpeg_or_png(body).format == "PNG"
    code, _, body = box.request(
        "GET",
        f"/dicomweb/studies/{study}/series/{series}/instances/{image}/frames/{1}/rendered"
        "?viewport=16,16&quality=50",
    )
    assert code == 200 and jpeg_or_png(body).size == (16, 16)
    for path in (f"/dicomweb/studies/{study}/thumbnail",
                 f"/dicomweb/studies/{study}/series/{series}/thumbnail",
                 f"/dicomweb/studies/{study}/series/{series}/instances/{image}/thumbnail"):  # fmt: skip
        code, headers, body = box.request("GET", path)
        assert code == 200 and headers["content-type"] == "image/jpeg", path
        assert max(jpeg_or_png(body).size) <= 128
    png = box.client().retrieve_instance_rendered(study, series, image, media_types=("image/png",))
    assert jpeg_or_png(png).format == "PNG"
    assert box.request("GET", f"{inst}/rendered", headers={"Accept": "image/gif"})[0] == 406
    assert json.loads(box.request("GET", f"{inst}/rendered?window=a")[2])["field"] == "window"
    assert json.loads(box.request("GET", f"{inst}/rendered?zoom=2")[2])["field"] == "zoom"


# -- STOW-RS -------------------------------------------------------------------------------


@pytest.fixture
def stow_box(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs]
) -> tuple[Box, FakePacs]:
    """An empty appliance whose one destination is a Storage SCP (FakePacs)."""
    pacs = fake_pacs(ae_title="PACS")
    dest = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}
    app = start_appliance({**qr_config(), "destinations": [dest]})

    return Box(app, Held(), api_token(app)), pacs


def part10(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicomweb_client_stores_and_the_images_reach_the_pacs(stow_box: Any) -> None:
    box, pacs = stow_box
    study = generate_uid()
    images = [make_ct(seed=i, study_uid=study) for i in range(3)]
    result = box.client().store_instances(images)
    refs = result.ReferencedSOPSequence
    assert sorted(r.ReferencedSOPInstanceUID for r in refs) == sorted(
        ds.SOPInstanceUID for ds in images
    )
    assert "FailedSOPSequence" not in result
    wait_for(lambda: len(pacs.stored_uids()) == 3, timeout=20)
    assert sorted(pacs.stored_uids()) == sorted(ds.SOPInstanceUID for ds in images)
    found = box.client().search_for_instances(study)
    assert len(found) == 3  # indexed in the same commit
    got = box.client().retrieve_instance(
        study, images[0].SeriesInstanceUID, images[0].SOPInstanceUID
    )
    assert got.PixelData == images[0].PixelData


def test_stow_as_the_standard_shows_it_200_202_409(stow_box: Any) -> None:
    box, _ = stow_box
    study = generate_uid()
    a, b = make_ct(seed=1, study_uid=study), make_ct(seed=2, study_uid=generate_uid())
    body, ctype = multipart_body([part10(a)])
    headers = {"Content-Type": ctype, "Accept": "application/dicom+json"}
    code, rh, data = box.request("POST", f"/dicomweb/studies/{study}", body=body, headers=headers)
    assert code == 200 and rh["content-type"] == "application/dicom+json", data
    answer = json.loads(data)
    assert values(answer, "00081190")[0].endswith(f"/dicomweb/studies/{study}")
    ref = values(answer, "00081199")[0]
    assert values(ref, "00081155") == [a.SOPInstanceUID]  # ReferencedSOPInstanceUID
    # b names another study than the target: it fails, a (stored again) succeeds: 202.
    body, ctype = multipart_body([part10(a), part10(b)])
    code, _, data = box.request(
        "POST", f"/dicomweb/studies/{study}", body=body, headers={"Content-Type": ctype}
    )
    assert code == 202, data
    failed = values(json.loads(data), "00081198")
    assert [values(f, "00081155") for f in failed] == [[b.SOPInstanceUID]]
    assert values(failed[0], "00081197") == [0xA900]  # FailureReason
    body, ctype = multipart_body([b"not a DICOM file at all"])
    code, _, data = box.request(
        "POST", "/dicomweb/studies", body=body, headers={"Content-Type": ctype}
    )
    assert code == 409 and values(values(json.loads(data), "00081198")[0], "00081197") == [0xC000]


def test_stow_while_the_pacs_is_down_is_queued_and_delivered_later(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs]
) -> None:
    """The forward guarantees: a STOW-RS upload is answered once queued; the PACS gets it
    when it comes up, after retries, like a C-STORE."""
    from appliance.forward import queue
    from tests.orthanc import free_port

    port = free_port()
    dest = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port}
    app = start_appliance({**qr_config(), "destinations": [dest], "forward": {
        "reserve_mb": 0, "retry_initial": 0.2, "retry_max": 0.5}})  # fmt: skip
    box = Box(app, Held(), api_token(app))
    images = [make_ct(seed=i, study_uid=generate_uid()) for i in range(2)]
    body, ctype = multipart_body([part10(ds) for ds in images])
    code, _, data = box.request(
        "POST", "/dicomweb/studies", body=body, headers={"Content-Type": ctype}
    )
    assert code == 200, data
    store = app.runtime.store  # type: ignore[union-attr]
    assert queue.waiting_count(store, "pacs") + queue.dead_count(store, "pacs") == 2
    pacs = fake_pacs(ae_title="PACS", port=port)
    wait_for(lambda: len(pacs.stored_uids()) == 2, timeout=30)
    assert sorted(pacs.stored_uids()) == sorted(ds.SOPInstanceUID for ds in images)
