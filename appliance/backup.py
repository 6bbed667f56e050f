"""Backups of a box: one .tar.gz with the database, the data folder, optionally the spool.

``create`` runs while the box serves: the database is copied through SQLite's online
backup API (one consistent snapshot, writers keep going), then the data folder's files
(print jobs, certificates...) are added; the spool only when asked. The snapshot comes
first so that every file a row names was there when the row was read. ``restore`` puts
an archive back into the data folder of a stopped box. Before a migration changes an
existing database, ``before_migration`` keeps a copy of it in ``DATA_DIR/backups``.

Archive layout: ``MANIFEST.json``, ``data/appliance.db``, ``data/...`` (the data folder's
other files), ``config/appliance.toml`` when a configuration file was given.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import socket
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from appliance import __version__, statuskey
from appliance.config import Config
from appliance.db import DB_FILENAME
from appliance.errors import ApplianceError

FORMAT = 1
MANIFEST = "MANIFEST.json"
DATA = "data"
CONFIG = "config/appliance.toml"
BACKUPS_DIR = "backups"
LOCK_FILE = "serve.lock"
SPOOL_DIR = "spool"
KEEP_BEFORE_MIGRATION = 3
# Never archived: the live database files (the snapshot stands for them), the key and
# lock of the running box, earlier backups, half-written files.
_SKIP_TOP = {
    DB_FILENAME,
    f"{DB_FILENAME}-wal",
    f"{DB_FILENAME}-shm",
    f"{DB_FILENAME}-journal",
    statuskey.FILE_NAME,
    statuskey.PORTS_FILE,
    LOCK_FILE,
    BACKUPS_DIR,
}
_SKIP_SUFFIXES = (".tmp", ".part")
# The journal spool's scratch segments (appliance/forward/journal.py): spares zero-filled
# ahead of need and freed ones kept for reuse hold no record that is still needed, and
# a spare is 256 MiB of zeros; the journal makes new ones after a restore.
_JOURNAL_SCRATCH = ("spare-", "freed-", "prep-")
_LOG_FILE = re.compile(r".*\.log(\.\d+)?")  # logging.file kept in data_dir: not data


class BackupError(ApplianceError):
    """A backup or restore that cannot be done; the message says why."""


@dataclass
class Summary:
    """What an archive holds (or a restore put back)."""

    files: int = 0
    bytes: int = 0
    spool: bool = False
    config: bool = False
    tables: dict[str, int] = field(default_factory=dict)


def snapshot_database(source: Path, target: Path) -> None:
    """Copy a live database with the online backup API (sqlite3.Connection.backup)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()


def _skipped(rel: PurePosixPath, spool: bool) -> bool:
    top = rel.parts[0]
    if top in _SKIP_TOP or top.startswith("before-restore-"):
        return True
    if top == SPOOL_DIR and (not spool or (len(rel.parts) > 1 and rel.parts[1] == "tmp")):
        return True
    if rel.parts[:2] == (SPOOL_DIR, "journal") and rel.name.startswith(_JOURNAL_SCRATCH):
        return True
    return rel.name.endswith(_SKIP_SUFFIXES) or (
        len(rel.parts) == 1 and bool(_LOG_FILE.fullmatch(top))
    )


def _data_files(data_dir: Path, spool: bool) -> Iterator[tuple[Path, PurePosixPath]]:
    for root, dirs, files in os.walk(data_dir):
        base = Path(root)
        dirs.sort()
        for name in sorted(files):
            path = base / name
            rel = PurePosixPath(path.relative_to(data_dir).as_posix())
            if not _skipped(rel, spool) and not path.is_symlink():
                yield path, rel


def create(
    data_dir: Path, out: IO[bytes], config_file: Path | None = None, spool: bool = False
) -> Summary:
    """Write a backup of a data folder (its box may be serving) to ``out``."""
    db_path = Path(data_dir) / DB_FILENAME
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}: nothing to back up")
    summary = Summary(spool=spool, config=config_file is not None)
    with tempfile.TemporaryDirectory(prefix="snapshot-", dir=scratch_dir(data_dir)) as tmp:
        snap = Path(tmp) / DB_FILENAME
        try:
            snapshot_database(db_path, snap)
            summary.tables = table_counts(snap)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot copy the database {db_path}: {exc}") from exc
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            manifest = {
                "format": FORMAT,
                "version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "spool": spool,
                "config": config_file is not None,
                "tables": summary.tables,
            }
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
            tar.add(snap, f"{DATA}/{DB_FILENAME}", recursive=False)
            if config_file is not None:
                tar.add(config_file, CONFIG, recursive=False)
            for path, rel in _data_files(Path(data_dir), spool):
                with contextlib.suppress(FileNotFoundError):  # e.g. a delivered file expired
                    tar.add(path, f"{DATA}/{rel}", recursive=False)
                    summary.files += 1
                    summary.bytes += path.stat().st_size
    return summary


def scratch_dir(data_dir: Path) -> Path:
    """DATA_DIR/backups: on the data's file system (not a small /tmp), made with the data
    folder's owner even when root makes it, so the service can write there later."""
    folder = Path(data_dir) / BACKUPS_DIR
    if not folder.is_dir():
        folder.mkdir(mode=0o750, exist_ok=True)
        if os.geteuid() == 0:
            owner = Path(data_dir).stat()
            os.chown(folder, owner.st_uid, owner.st_gid)
    return folder


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o640
    tar.addfile(info, io.BytesIO(data))


def table_counts(db_path: Path) -> dict[str, int]:
    """Rows per table of a database file."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        conn.close()


# -- restore -------------------------------------------------------------------------


def running_reason(config: Config) -> str | None:
    """Why the box of this configuration looks alive (its lock held, a port answering), or
    None when it is stopped."""
    if (Path(config.data_dir) / LOCK_FILE).exists():
        try:
            with restore_lock(config.data_dir):
                pass
        except BackupError as exc:
            return str(exc)
    running = statuskey.read_ports(config.data_dir)  # what a box started by hand wrote
    if running.get("pid"):
        return f"process {running['pid']} serves from {config.data_dir}"
    for what, host, port in (
        ("DICOM", config.dicom.host, config.dicom.port),
        ("DICOM TLS", config.dicom.host, config.dicom.tls_port if config.dicom.tls else 0),
        ("web", config.web.host, config.web.port),
    ):
        if port == 0:
            continue
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        with contextlib.suppress(OSError), socket.create_connection((local, port), timeout=1):
            return f"something answers on the {what} port {local}:{port}"
    return None


def _lock(data_dir: Path, how: int) -> int:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    # Read-only and readable by all: a lock file that root made (running a restore) must
    # not keep the service user from taking it.
    fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        what = "an appliance serves" if how == fcntl.LOCK_EX else "a restore runs"
        raise BackupError(f"{what} from {data_dir} (see {LOCK_FILE})") from exc
    return fd


def hold_serve_lock(data_dir: Path) -> int:
    """Taken by ``appliance serve`` for its lifetime (shared: ``--only dicom`` and
    ``--only web`` may run side by side); ``restore`` cannot start while it is held."""
    return _lock(data_dir, fcntl.LOCK_SH)


@contextlib.contextmanager
def restore_lock(data_dir: Path) -> Iterator[None]:
    """The exclusive lock of a restore: refused while any ``serve`` holds its lock."""
    fd = _lock(data_dir, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The archive's members, checked: plain files and folders under data/ or config/."""
    out: dict[str, tarfile.TarInfo] = {}
    for info in tar.getmembers():
        path = PurePosixPath(info.name)
        if path.is_absolute() or ".." in path.parts or not (info.isfile() or info.isdir()):
            raise BackupError(f"not a backup of this appliance: unsafe member {info.name!r}")
        if path.parts[0] not in (DATA, "config") and info.name != MANIFEST:
            raise BackupError(f"not a backup of this appliance: unexpected member {info.name!r}")
        out[info.name] = info
    return out


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of an archive; BackupError when it is not one of ours."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _members(tar)
            if MANIFEST not in members:
                raise BackupError(f"{archive}: no {MANIFEST}, not a backup of this appliance")
            data = tar.extractfile(members[MANIFEST])
            assert data is not None
            manifest: dict[str, Any] = json.loads(data.read())
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise BackupError(f"{archive}: cannot be read as a backup: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: backup format {manifest.get('format')!r} is not known")
    return manifest


def read_config(archive: Path) -> str:
    """The configuration file kept in an archive; BackupError when it holds none."""
    read_manifest(archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = _members(tar)
        if CONFIG not in members:
            raise BackupError(f"{archive} holds no configuration file")
        data = tar.extractfile(members[CONFIG])
        assert data is not None
        return data.read().decode("utf-8")


def restore(
    archive: Path,
    config: Config,
    config_target: Path | None = None,
    force: bool = False,
) -> Summary:
    """Put a backup into the data folder of a stopped box.

    A data folder that is not empty is refused unless ``force``; then its entries are
    moved into ``DATA_DIR/before-restore-TIMESTAMP/``. The configuration file
    of the backup is written to ``config_target`` only when one is given.
    """
    reason = running_reason(config)
    if reason:
        raise BackupError(f"stop the appliance before a restore: {reason}")
    manifest = read_manifest(archive)
    data_dir = Path(config.data_dir)
    if config_target is not None and not manifest.get("config"):
        raise BackupError(f"{archive} holds no configuration file")
    # Opened before anything moves: the archive may lie in the data folder.
    with restore_lock(data_dir), open(archive, "rb") as source:  # no serve starts meanwhile
        existing = [p for p in data_dir.iterdir() if p.name not in (LOCK_FILE, BACKUPS_DIR)]
        if existing and not force:
            what = "a database" if (data_dir / DB_FILENAME).exists() else "files"
            raise BackupError(f"{data_dir} already holds {what}; --force moves them aside")
        if existing:
            aside = data_dir / time.strftime("before-restore-%Y%m%dT%H%M%SZ", time.gmtime())
            aside.mkdir()
            for path in existing:
                path.rename(aside / path.name)
        summary = _extract(source, data_dir, config_target)
        summary.tables = table_counts(data_dir / DB_FILENAME)
        summary.spool = bool(manifest.get("spool"))
    return summary


def _extract(archive: IO[bytes], data_dir: Path, config_target: Path | None) -> Summary:
    summary = Summary()
    owner = data_dir.stat()
    # Run as root, the files go to the data folder's owner (the service user) and the
    # configuration file keeps the owner and group it had.
    config_owner = config_target.stat() if config_target and config_target.exists() else None
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        for name, info in _members(tar).items():
            if name == CONFIG and config_target is not None:
                target, mode = config_target, 0o640
                summary.config = True
            elif name.startswith(f"{DATA}/") and info.isfile():
                target = data_dir / PurePosixPath(name).relative_to(DATA)
                mode = info.mode & 0o640  # a private key stays 0600
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(info)
            assert source is not None
            tmp = target.with_name(target.name + ".tmp")
            with open(tmp, "wb") as f:
                while chunk := source.read(1 << 20):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            if os.geteuid() == 0:
                who = owner if target.is_relative_to(data_dir) else config_owner
                if who is not None:
                    os.chown(tmp, who.st_uid, who.st_gid)
            os.utime(tmp, (info.mtime, info.mtime))
            os.replace(tmp, target)
            if name != f"{DATA}/{DB_FILENAME}" and name != CONFIG:
                summary.files += 1
                summary.bytes += info.size
        if os.geteuid() == 0:
            for root, dirs, _files in os.walk(data_dir):
                for d in dirs:
                    os.chown(Path(root) / d, owner.st_uid, owner.st_gid)
    return summary


# -- before a migration --------------------------------------------------------------


def before_migration(conn: sqlite3.Connection, data_dir: Path) -> Path:
    """Copy the database (online backup API) to DATA_DIR/backups before migrations run;
    keeps the newest KEEP_BEFORE_MIGRATION copies."""
    folder = scratch_dir(data_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder / f"before-migration-{stamp}.db"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"before-migration-{stamp}-{n}.db"
    tmp = target.with_name(target.name + ".tmp")
    dst = sqlite3.connect(str(tmp))
    try:
        conn.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
    os.replace(tmp, target)
    old = sorted(folder.glob("before-migration-*.db"), key=lambda p: p.stat().st_mtime_ns)
    for stale in old[:-KEEP_BEFORE_MIGRATION]:
        stale.unlink()
    return target
