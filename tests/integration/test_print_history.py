"""What the web pages need: search the history, previews, the PDF, reprint, printers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.errors import NotFound, ValidationError
from appliance.printing import history
from appliance.server import Appliance
from image.pdf import read_pages
from tests.helpers import wait_for
from tests.printscu import PrintSCU


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "devices": [{"ae_title": "CT1"}, {"ae_title": "MR1"}],
        "printers": [
            {"name": "ward", "uri": f"folder:{tmp_path / 'ward'}"},
            {"name": "archive", "uri": f"folder:{tmp_path / 'archive'}"},
        ],
        "print_profiles": [{"dpi": 30}],
    }


def done(app: Appliance, uid: str) -> None:
    wait_for(lambda: history.get_job(app.runtime.store, uid)["state"] == "DONE")


@pytest.fixture
def printed(start_appliance: Callable[..., Appliance], tmp_path: Path) -> tuple[Appliance, dict]:
    app = start_appliance(config(tmp_path))
    jobs = {}
    for calling, label in (("CT1", "CHEST"), ("MR1", "KNEE LEFT"), ("CT1", "HEAD")):
        scu = PrintSCU(app.dicom_port, calling=calling)
        try:
            _box, jobs[label] = scu.print_film(
                "STANDARD\\1,2", session_attrs={"FilmSessionLabel": label}, FilmSizeID="8INX10IN"
            )
        finally:
            scu.release()
        done(app, jobs[label])
    return app, jobs


def test_search_by_device_label_state_and_time(printed: tuple[Appliance, dict]) -> None:
    app, jobs = printed
    store = app.runtime.store
    everything = history.list_jobs(store)
    assert [j["label"] for j in everything] == ["HEAD", "KNEE LEFT", "CHEST"]  # newest first
    ct = history.list_jobs(store, history.JobFilter(calling_ae="CT1"))
    assert [j["uid"] for j in ct] == [jobs["HEAD"], jobs["CHEST"]]
    assert [j["label"] for j in history.list_jobs(store, history.JobFilter(label="knee"))] == [
        "KNEE LEFT"
    ]
    assert history.list_jobs(store, history.JobFilter(label="%")) == []  # no wildcard injection
    assert len(history.list_jobs(store, history.JobFilter(state="DONE"))) == 3
    first = everything[-1]["created_at"]
    later = history.list_jobs(store, history.JobFilter(since=first), limit=2)
    assert len(later) == 2
    assert history.list_jobs(store, history.JobFilter(until=first)) == []
    with pytest.raises(ValidationError) as info:
        history.list_jobs(store, history.JobFilter(state="LOST"))
    assert info.value.field == "state"
    with pytest.raises(ValidationError) as info:
        history.list_jobs(store, limit=0)
    assert info.value.field == "limit"


def test_previews_and_pdf(printed: tuple[Appliance, dict]) -> None:
    app, jobs = printed
    cfg, store = app.runtime.config, app.runtime.store
    job = history.get_job(store, jobs["CHEST"])
    assert job["film_list"] == [
        {"film_size": "8INX10IN", "orientation": "PORTRAIT", "layout": "STANDARD\\1,2", "images": 2}
    ]
    preview = history.page_preview_path(cfg, store, jobs["CHEST"], 1)
    assert Image.open(preview).size == (240, 300)  # 8x10 in at 30 dpi
    sent, _dpi = next(read_pages(history.document_path(cfg, store, jobs["CHEST"])))
    assert np.array_equal(np.asarray(Image.open(preview)), np.asarray(sent))  # as it was sent
    for page in (0, 2):
        with pytest.raises(NotFound):
            history.page_preview_path(cfg, store, jobs["CHEST"], page)
    assert history.document_path(cfg, store, jobs["CHEST"]).read_bytes().startswith(b"%PDF-1.4")
    with pytest.raises(NotFound):
        history.get_job(store, "1.2.3")


def test_reprint_to_the_same_and_another_printer(
    printed: tuple[Appliance, dict], tmp_path: Path
) -> None:
    app, jobs = printed
    cfg, store = app.runtime.config, app.runtime.store
    assert len(list((tmp_path / "ward").glob("*.pdf"))) == 3
    again = history.reprint(cfg, store, jobs["CHEST"])
    elsewhere = history.reprint(cfg, store, jobs["CHEST"], printer="archive")
    done(app, again)
    done(app, elsewhere)
    assert len(list((tmp_path / "ward").glob("*.pdf"))) == 4
    assert len(list((tmp_path / "archive").glob("*.pdf"))) == 1
    job = history.get_job(store, elsewhere)
    assert (job["reprint_of"], job["printer"], job["label"]) == (jobs["CHEST"], "archive", "CHEST")
    original = history.document_path(cfg, store, jobs["CHEST"]).read_bytes()
    assert history.document_path(cfg, store, elsewhere).read_bytes() == original
    with pytest.raises(ValidationError) as info:
        history.reprint(cfg, store, jobs["CHEST"], printer="nowhere")
    assert info.value.field == "printer"


def test_printers_report_their_state(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    raw = config(tmp_path)
    raw["printers"].append({"name": "broken", "uri": f"folder:{blocked / 'sub'}"})
    raw["printers"].append({"name": "offline", "uri": "ipp://127.0.0.1:9/ipp/print"})
    app = start_appliance(raw)
    states = {
        p["name"]: (p["status"], p["info"])
        for p in history.printers(app.runtime.config, app.runtime.store)
    }
    assert states == {
        "ward": ("NORMAL", "NORMAL"),
        "archive": ("NORMAL", "NORMAL"),
        "broken": ("FAILURE", "PRINTER DOWN"),
        "offline": ("WARNING", "PRINTER OFFLINE"),
    }
