"""The database: pragmas, migrations on a new and on an existing database, transactions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import app, migrations
from appliance.app import open_store
from appliance.db import DB_FILENAME, Store
from tests.helpers import open_fds, wait_for


def test_new_database_gets_every_migration(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    db = store.db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert {"settings", "audit", "_sqlite_migrations"} <= set(db.table_names())
    expected = sum(len(m._migrations) for m in app.MIGRATIONS)
    assert db["_sqlite_migrations"].count == expected
    store.close()


def test_existing_database_gets_only_new_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path)
    store.db["audit"].insert({"actor": "admin", "action": "kept"})
    store.close()

    later = Migrations("later-service")

    @later(name="0001_widgets")
    def _widgets(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT)")

    store = migrations.open_store(tmp_path, [*app.MIGRATIONS, later])
    assert "widgets" in store.db.table_names()
    assert [r["action"] for r in store.db["audit"].rows] == ["kept"]
    assert (
        migrations.migrate(store.db, [*app.MIGRATIONS, later]) == []
    )  # nothing pending the second time
    store.close()


def test_failed_migration_leaves_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(tmp_path).close()
    broken = Migrations("broken")

    @broken(name="0001_half")
    def _half(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE half (id INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        migrations.open_store(tmp_path, [*app.MIGRATIONS, broken])
    db = sqlite_utils.Database(tmp_path / DB_FILENAME)
    assert "half" not in db.table_names()


def test_write_rolls_back_on_error_and_threads_get_own_connections(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(ValueError), store.write() as db:
        db.execute("INSERT INTO settings(key, value) VALUES ('a', '1')")
        raise ValueError("abort")
    assert store.query("SELECT * FROM settings") == []

    conns: list[int] = []
    # All alive at once: a thread's connection is closed (and its id free again) when
    # the thread ends.
    together = threading.Barrier(8)

    def worker(i: int) -> None:
        with store.write() as db:
            db.execute("INSERT INTO settings(key, value) VALUES (?, ?)", (f"k{i}", str(i)))
        conns.append(id(store.db))
        together.wait(timeout=10)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(conns)) == 8
    assert len(store.query("SELECT * FROM settings")) == 8
    store.close()


def test_a_thread_connection_is_closed_when_the_thread_ends(tmp_path: Path) -> None:
    store = open_store(tmp_path)

    def one_thread(i: int) -> None:  # as pynetdicom runs each association in a thread
        t = threading.Thread(target=store.query, args=("SELECT ? AS i", (i,)))
        t.start()
        t.join()

    one_thread(0)
    before = open_fds(tmp_path / DB_FILENAME)
    for i in range(20):
        one_thread(i)
    assert wait_for(lambda: open_fds(tmp_path / DB_FILENAME) == before, 5)
    assert store.query("SELECT 1 AS one") == [{"one": 1}]  # this thread's is still open
    store.close()
    assert open_fds(tmp_path / DB_FILENAME) == 0


def test_store_reopens_after_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    store.db.execute("CREATE TABLE t (x)")
    store.close()
    assert store.query("SELECT count(*) AS n FROM t") == [{"n": 0}]


def test_non_durable_write_commits_and_restores_full_sync(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with store.write(durable=False) as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        db.execute("INSERT INTO settings(key, value) VALUES ('n', '1')")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    assert store.query("SELECT value FROM settings WHERE key = 'n'") == [{"value": "1"}]
    with pytest.raises(RuntimeError):
        with store.write(durable=False):
            raise RuntimeError("x")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()


def test_read_sees_one_snapshot_and_blocks_no_writer(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    count = "SELECT count(*) AS n FROM settings"

    def write(key: str) -> None:  # another thread: its own connection
        def run() -> None:
            with store.write() as db:
                db.execute("INSERT INTO settings(key, value) VALUES (?, '1')", (key,))

        t = threading.Thread(target=run)
        t.start()
        t.join(timeout=5)
        assert not t.is_alive()

    with store.read():
        assert store.query(count) == [{"n": 0}]
        write("during")  # commits at once although a read is open
        assert store.query(count) == [{"n": 0}]  # still the snapshot
        with store.read():  # nested: the same snapshot
            assert store.query(count) == [{"n": 0}]
        assert store.db.conn.in_transaction
    assert not store.db.conn.in_transaction
    assert store.query(count) == [{"n": 1}]
    store.close()
