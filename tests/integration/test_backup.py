"""Backup while serving, restore on a stopped box: every row and file comes back; a
restore is refused while the box runs; a copy is kept before every migration."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance import backup
from appliance.app import MIGRATIONS, open_store
from appliance.db import DB_FILENAME, Store
from appliance.migrations import core, pending
from appliance.printing import history
from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_step_request
from tests.forward_factories import make_ct
from tests.forward_helpers import forward_config, pacs_destination, store_dataset
from tests.helpers import make_config, wait_for
from tests.printscu import PrintSCU

CONFIG_TEXT = '[dicom]\nae_title = "APPLIANCE"\n[[devices]]\nae_title = "CT1"\n'


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command line; a restore ignores the default ports (another box on this machine
    may answer there) and relies on the serve lock."""
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_CONFIG"}
    ports = ["--dicom-port", "0", "--web-port", "0", "--dicom-tls-port", "0", "--http-port", "0"]
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args, *(ports if args[0] == "restore" else [])],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dump(db_path: Path) -> dict[str, list[str]]:
    """Every row of every table, in a comparable form."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        ]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        conn.close()


def files(data_dir: Path) -> dict[str, str]:
    """Each file of the data folder that a backup keeps, with its SHA-256."""
    out = {}
    for path in data_dir.rglob("*"):
        rel = path.relative_to(data_dir)
        if path.is_file() and rel.parts[0] not in backup._SKIP_TOP and "tmp" not in rel.parts:
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def busy_box(start_appliance: Callable[..., Appliance], tmp_path: Path) -> Appliance:
    """A serving box with a scheduled step, a printed film and an instance waiting to be
    forwarded (its PACS is down and the next try is an hour away, so nothing moves)."""
    raw: dict[str, Any] = forward_config(
        [pacs_destination("pacs", "PACS", closed_port())],
        devices=("CT1", "MODALITY"),
        retry_initial=3600.0,
        retry_max=3600.0,
    )
    raw["printers"] = [{"name": "ward", "uri": f"folder:{tmp_path / 'ward'}"}]
    raw["print_profiles"] = [{"dpi": 30}]
    app = start_appliance(raw)
    assert app.runtime is not None
    store = app.runtime.store
    WorklistRepo(store).schedule(make_step_request(patient_id="B1", accession_number="ACCB1"))
    scu = PrintSCU(app.dicom_port, calling="CT1")
    try:
        _box, job = scu.print_film("STANDARD\\1,1", FilmSizeID="8INX10IN")
    finally:
        scu.release()
    wait_for(lambda: history.get_job(store, job)["state"] == "DONE")
    assert store_dataset(app.dicom_port, make_ct()).Status == 0
    wait_for(lambda: store.query("SELECT last_error FROM forward_queue")[0]["last_error"])
    return app


def test_backup_while_serving_wipe_restore_brings_every_row_and_file_back(
    busy_box: Appliance, tmp_path: Path, start_appliance: Callable[..., Appliance]
) -> None:
    data = Path(busy_box.config.data_dir)
    config_file = tmp_path / "appliance.toml"
    config_file.write_text(CONFIG_TEXT)
    rows, kept = dump(data / DB_FILENAME), files(data)
    assert any(p.startswith("prints/") for p in kept) and any(p.startswith("spool/") for p in kept)
    assert {"tls/appliance.crt", "tls/appliance.key"} <= set(kept)  # made at the first start
    for table in ("steps", "print_jobs", "forward_queue", "forward_instances", "audit"):
        assert rows[table], table

    archive = tmp_path / "box.tar.gz"
    out = cli(
        "backup", str(archive), "--data-dir", str(data), "--spool", "--config", str(config_file)
    )
    assert out.returncode == 0, out.stderr
    assert "spool, configuration" in out.stdout
    assert archive.stat().st_mode & 0o077 == 0  # patient data: this user only
    # Nothing moved meanwhile (the comparison is fair) but the backup's own audit row,
    # written after the snapshot; the health report now knows when the last one was.
    after = dump(data / DB_FILENAME)
    assert {t: v for t, v in after.items() if t != "audit"} == {
        t: v for t, v in rows.items() if t != "audit"
    }
    new = [r for r in after["audit"] if r not in rows["audit"]]
    assert len(new) == 1 and "'backup'" in new[0] and str(archive.resolve()) in new[0]
    database = busy_box.health()["services"]["database"]
    assert database["last_backup_s_ago"] is not None and database["last_backup_s_ago"] < 60
    assert database["size_mb"] > 0

    busy_box.stop()
    shutil.rmtree(data)
    target = tmp_path / "restored.toml"
    out = cli("restore", str(archive), "--data-dir", str(data), "--config", str(target),
              "--restore-config")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert dump(data / DB_FILENAME) == rows
    assert files(data) == kept
    assert target.read_text() == CONFIG_TEXT
    assert (data / "tls" / "appliance.key").stat().st_mode & 0o077 == 0

    again = start_appliance(data_dir=data)
    assert again.runtime is not None
    assert WorklistRepo(again.runtime.store).search("ACCB1")
    assert history.list_jobs(again.runtime.store)


def test_backup_leaves_the_spool_out_unless_asked(busy_box: Appliance, tmp_path: Path) -> None:
    (Path(busy_box.config.data_dir) / "appliance.log.1").write_text("a log line\n")
    archive = io.BytesIO()
    summary = backup.create(Path(busy_box.config.data_dir), archive)
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        names = tar.getnames()
    assert not any(n.startswith("data/spool") for n in names)
    assert any(n.startswith("data/prints/") for n in names)
    assert "data/status.key" not in names and f"data/{DB_FILENAME}-wal" not in names
    assert "data/appliance.log.1" not in names
    assert summary.tables["steps"] == 1 and not summary.spool


def test_a_journal_spool_is_backed_up_without_its_scratch_segments(tmp_path: Path) -> None:
    """Spare segments (zeros made ahead of need, 256 MiB each), freed ones kept for reuse
    and one being prepared hold no record: a backup with the spool leaves them out and
    keeps the segments that hold records."""
    data = tmp_path / "data"
    open_store(data).close()
    journal_dir = data / "spool" / "journal"
    journal_dir.mkdir(parents=True)
    for name in ("00000001.seg", "spare-00000000000000000007.seg", "freed-00000002.seg",
                 "prep-00000000000000000008.tmp"):  # fmt: skip
        (journal_dir / name).write_bytes(b"\0" * 4096)
    archive = io.BytesIO()
    backup.create(data, archive, spool=True)
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        kept = sorted(n for n in tar.getnames() if n.startswith("data/spool/"))
    assert kept == ["data/spool/journal/00000001.seg"]


def test_restore_is_refused_while_serve_runs(tmp_path: Path) -> None:
    data = tmp_path / "d"
    store = open_store(data)
    store.close()
    archive = tmp_path / "b.tar.gz"
    assert cli("backup", str(archive), "--data-dir", str(data)).returncode == 0
    shutil.rmtree(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1", "--data-dir",
         str(data), "--dicom-port", "0", "--web-port", "0", "--dicom-tls-port", "0", "--http-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        wait_for(lambda: "appliance: DICOM" in proc.stderr.readline(), timeout=30)
        out = cli("restore", str(archive), "--data-dir", str(data), "--force")
        assert out.returncode == 1
        assert "stop the appliance" in out.stderr and "serve.lock" in out.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    # Stopped: the same restore goes through.
    out = cli("restore", str(archive), "--data-dir", str(data), "--force")
    assert out.returncode == 0, out.stderr


def test_restore_is_refused_while_the_configured_port_answers(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance()
    archive = tmp_path / "b.tar.gz"
    with archive.open("wb") as f:
        backup.create(Path(app.config.data_dir), f)
    cfg = make_config(tmp_path / "other", {"dicom": {"port": app.dicom_port}})
    with pytest.raises(backup.BackupError, match=f"DICOM port 127.0.0.1:{app.dicom_port}"):
        backup.restore(archive, cfg)
    assert not (tmp_path / "other").exists()


def test_restore_into_a_used_folder_needs_force_and_moves_it_aside(tmp_path: Path) -> None:
    data = tmp_path / "d"
    store = open_store(data)
    WorklistRepo(store).schedule(make_step_request())
    store.close()
    archive = data / "b.tar.gz"  # in the folder that is moved aside
    with archive.open("wb") as f:
        backup.create(data, f)
    (data / "prints").mkdir()
    (data / "prints" / "later.pdf").write_bytes(b"%PDF")
    cfg = make_config(data)
    with pytest.raises(backup.BackupError, match="already holds a database"):
        backup.restore(archive, cfg)
    summary = backup.restore(archive, cfg, force=True)
    assert summary.tables["steps"] == 1
    [aside] = data.glob("before-restore-*")
    assert (aside / "prints" / "later.pdf").read_bytes() == b"%PDF"
    assert (aside / "b.tar.gz").exists()
    assert (aside / DB_FILENAME).exists()
    assert not (data / "prints").exists()


def test_restore_rejects_archives_that_are_not_backups(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "d")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("data/../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(backup.BackupError, match="unsafe member"):
        backup.restore(evil, cfg)
    assert not (tmp_path / "escaped").exists()
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(evil, "data/x")
    with pytest.raises(backup.BackupError, match="no MANIFEST.json"):
        backup.restore(plain, cfg)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip")
    with pytest.raises(backup.BackupError, match="cannot be read"):
        backup.restore(junk, cfg)


def _core_only(data: Path) -> None:
    """A database of an older appliance: only the core migrations applied."""
    data.mkdir(parents=True, exist_ok=True)
    store = Store(data / DB_FILENAME)
    core.apply(store.db)
    store.db.execute("INSERT INTO settings(key, value) VALUES ('old', 'yes')")
    store.close()


def test_a_copy_is_kept_before_migrations_run_the_last_three(tmp_path: Path) -> None:
    data = tmp_path / "d"
    open_store(data).close()  # a new database: nothing to keep
    assert not (data / backup.BACKUPS_DIR).exists()
    open_store(data).close()  # nothing pending: no copy
    assert not (data / backup.BACKUPS_DIR).exists()
    for _ in range(4):
        (data / DB_FILENAME).unlink()
        _core_only(data)
        store = open_store(data)
        assert pending(store.db, MIGRATIONS) == []
        store.close()
    copies = sorted((data / backup.BACKUPS_DIR).glob("before-migration-*.db"))
    assert len(copies) == backup.KEEP_BEFORE_MIGRATION
    conn = sqlite3.connect(copies[-1])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert conn.execute("SELECT value FROM settings WHERE key = 'old'").fetchone() == ("yes",)
    conn.close()
    assert "steps" not in tables and "settings" in tables


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring as root is what this checks")
def test_restore_as_root_gives_the_files_to_the_data_folders_owner(tmp_path: Path) -> None:
    data = tmp_path / "d"
    store = open_store(data)
    store.close()
    (data / "prints").mkdir()
    (data / "prints" / "p.pdf").write_bytes(b"%PDF")
    config_file = tmp_path / "box.toml"
    config_file.write_text(CONFIG_TEXT)
    archive = tmp_path / "b.tar.gz"
    with archive.open("wb") as f:
        backup.create(data, f, config_file=config_file)
    shutil.rmtree(data)
    data.mkdir()
    os.chown(data, 65534, 65534)  # the service user of this test: nobody
    os.chown(config_file, 0, 65534)
    backup.restore(archive, make_config(data), config_target=config_file)
    for path in [data / DB_FILENAME, data / "prints", data / "prints" / "p.pdf"]:
        assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path
    assert (config_file.stat().st_uid, config_file.stat().st_gid) == (0, 65534)
    # The lock file root left behind does not keep the service user out.
    assert (data / backup.LOCK_FILE).stat().st_mode & 0o004


def test_backup_names_what_it_cannot_do(tmp_path: Path) -> None:
    out = cli("backup", str(tmp_path / "b.tar.gz"), "--data-dir", str(tmp_path / "empty"))
    assert out.returncode == 1 and "no database at" in out.stderr
    open_store(tmp_path / "d").close()
    out = cli("backup", str(tmp_path / "missing" / "b.tar.gz"), "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 1 and "cannot write" in out.stderr and "Traceback" not in out.stderr
    out = cli("restore", str(tmp_path / "absent.tar.gz"), "--data-dir", str(tmp_path / "e"))
    assert out.returncode == 1 and "cannot be read" in out.stderr
