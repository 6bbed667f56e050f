"""The job runner: Print Priority order, and a job queued by another process (the web)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from appliance.app import open_store
from appliance.config import PrintProfileSettings
from appliance.printing.jobs import JobRunner
from appliance.printing.output import Delivery, FolderOutput
from appliance.printing.repo import PrintRepo
from tests.helpers import wait_for


def job_row(uid: str, priority: str) -> dict:
    profile = dataclasses.asdict(PrintProfileSettings(dpi=20))
    return {
        "uid": uid,
        "calling_ae": "CT1",
        "called_ae": "APPLIANCE",
        "printer": "out",
        "priority": priority,
        "spec": {"films": [], "session": {}, "profile": profile},
    }


@dataclasses.dataclass
class RecordingFolder(FolderOutput):
    """The folder printer, remembering the order jobs arrive in."""

    order: list[str] = dataclasses.field(default_factory=list)

    def deliver(self, d: Delivery) -> str:
        self.order.append(d.job_uid)
        return super().deliver(d)


def test_high_priority_jobs_go_first_and_queued_rows_are_picked_up(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    repo = PrintRepo(store, tmp_path / "data" / "prints")
    for uid, priority in (("1.1", "LOW"), ("1.2", "MED"), ("1.3", "HIGH"), ("1.4", "HIGH")):
        repo.create_job(job_row(uid, priority), [])
    out = RecordingFolder("out", tmp_path / "out")
    runner = JobRunner(repo, {"out": out}, poll_interval=0.05)
    runner.start()
    try:
        done = lambda: store.query("SELECT uid FROM print_jobs WHERE state = 'DONE'")  # noqa: E731
        wait_for(lambda: len(done()) == 4)
        assert out.order == ["1.3", "1.4", "1.2", "1.1"]
        repo.create_job(job_row("1.5", "MED"), [])  # as another process would, no submit()
        wait_for(lambda: len(done()) == 5)
        assert out.order[-1] == "1.5"
    finally:
        runner.stop()
        store.close()
