"""The SQLite database: one file in the data directory, WAL, one connection per thread.

Reads use the thread's connection directly; writes go through ``Store.write()``, a short
``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the busy timeout instead
of failing with "database is locked" halfway through. This module knows no table: the
migrations are applied by ``appliance.migrations.open_store`` with the composition root's
list (``appliance.app.open_store``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

DB_FILENAME = "appliance.db"
BUSY_TIMEOUT_MS = 10_000


def connect(path: Path) -> sqlite_utils.Database:
    """Open a connection with the appliance's pragmas (WAL, foreign keys, busy timeout)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: a commit survives power loss, which the spool's acknowledgements rely on.
    conn.execute("PRAGMA synchronous = FULL")
    return sqlite_utils.Database(conn)


class _CloseAtThreadEnd:
    """Held only by a thread's ``threading.local``: when the thread ends, the local goes
    and this closes the thread's connection (each association has a thread of its own;
    kept open, two file descriptors leaked per association)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def __del__(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.conn.close()


class Store:
    """Hands each thread its own connection to the one database file, closed when the
    thread ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: weakref.WeakSet[sqlite_utils.Database] = weakref.WeakSet()
        self._lock = threading.Lock()
        # This process's writers queue here, woken in turn as each commit ends, instead of
        # in SQLite's busy handler, which polls every 100 ms and lets a writer lose every
        # race for 10 s when 20 modalities store at once (A700 "database is locked").
        self._writer = threading.Lock()

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection, opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path)
            self._local.db = db
            self._local.closer = _CloseAtThreadEnd(db)
            with self._lock:
                self._all.add(db)
        return db

    @contextlib.contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite_utils.Database]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT); nested calls use savepoints.

        ``durable=False`` commits without waiting for the disk (WAL, synchronous=NORMAL):
        for records such as query audit rows, where an fsync on an SD card would delay
        the answer to a modality; the next durable commit or checkpoint syncs them.
        """
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        if not self._writer.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError("database is locked (in-process writer queue)")
        try:
            if not durable:
                db.conn.execute("PRAGMA synchronous = NORMAL")
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                raise
            else:
                db.conn.execute("COMMIT")
            finally:
                if not durable:
                    db.conn.execute("PRAGMA synchronous = FULL")
        finally:
            self._writer.release()

    def writer_idle(self) -> bool:
        """No write transaction of this process is running or waiting now (a hint: the
        next ``write`` may still wait)."""
        return not self._writer.locked()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A read transaction: the queries inside see one snapshot (WAL), take no lock
        that blocks writers; inside another transaction it is that one."""
        db = self.db
        if db.conn.in_transaction:
            yield db
            return
        db.conn.execute("BEGIN DEFERRED")
        try:
            yield db
        finally:
            if db.conn.in_transaction:
                db.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        """Run a read query and return rows as dicts."""
        cur = self.db.conn.execute(sql, params)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        """Close every connection this store opened (call at shutdown)."""
        with self._lock:
            for db in list(self._all):
                with contextlib.suppress(sqlite3.Error):
                    db.conn.close()
            self._all.clear()
        self._local = threading.local()


def run_script(db: sqlite_utils.Database, script: str) -> None:
    """Run statements one by one (``executescript`` would COMMIT a migration's transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
