"""``queue.send_study`` (the Studies page's "Send to") and ``appliance forward send``
against a real database: which rows it queues, resets or leaves, its audit row, and
the CLI's refusals naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import cli
from appliance.app import open_store
from appliance.db import Store
from appliance.forward import queue

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY, OTHER = "1.2.3.100", "1.2.3.200"


def _held(store: Store) -> None:
    """Three instances of STUDY (routed to pacs) and one of OTHER (routed nowhere)."""
    for n, study in enumerate([STUDY, STUDY, STUDY, OTHER]):
        info = queue.InstanceInfo(f"1.2.9.{n}", CT, "1.2.840.10008.1.2.1", "CT", "CT1")
        dests = ["pacs"] if study == STUDY else []
        indexed = {
            "study_uid": study,
            "series_uid": f"{study}.1",
            "sop_instance_uid": info.sop_instance_uid,
        }
        queue.record_instance(store, info, f"f{n}", f"d{n}", 1, dests, now=100, indexed=indexed)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    f = tmp_path / "a.toml"
    f.write_text(
        f"""data_dir = "{tmp_path / "data"}"
[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 9
[[devices]]
ae_title = "WS3D"
host = "127.0.0.1"
port = 9
[[devices]]
ae_title = "NOHOST"
"""
    )
    return f


def test_send_study_queues_new_rows_resets_done_ones_and_audits(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    _held(store)
    a, b, c = queue.claim(store, "pacs", 3, now=200)
    queue.mark_delivered(store, [(a, 0)], now=201)
    queue.mark_dead(store, b, "refused", now=201)
    assert queue.send_study(store, STUDY, "pacs", "tech", "web 127.0.0.1", now=300) == (3, 2)
    rows = store.query("SELECT state, attempts, generation, last_error FROM forward_queue "
                       "WHERE destination = 'pacs' ORDER BY id")  # fmt: skip
    assert [r["state"] for r in rows] == ["waiting"] * 3
    assert [r["generation"] for r in rows] == [1, 1, 0]  # the waiting one left as it was
    assert rows[0]["last_error"] == "sent again by a person"
    assert queue.send_study(store, STUDY, "device:WS3D", "tech", now=301) == (3, 3)
    assert queue.send_study(store, "1.2.3.999", "pacs", "tech") == (0, 0)  # none held
    audit = store.query("SELECT actor, object, detail, source FROM audit "
                        "WHERE action = 'forward-send' ORDER BY id")  # fmt: skip
    assert audit == [
        {"actor": "tech", "object": f"study {STUDY}", "detail": "to pacs: 2 of 3 instances queued",
         "source": "web 127.0.0.1"},
        {"actor": "tech", "object": f"study {STUDY}",
         "detail": "to device:WS3D: 3 of 3 instances queued", "source": ""},
    ]  # fmt: skip
    store.close()


def test_a_removed_instance_is_not_sent(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    _held(store)
    with store.write() as db:
        db.execute("UPDATE forward_instances SET removed_at = 1 WHERE sop_instance_uid = '1.2.9.0'")
    assert queue.send_study(store, STUDY, "device:WS3D", "tech")[0] == 2
    store.close()


def test_cli_send(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forward", "status", "--config", str(config)]) == 0  # creates the tables
    store = open_store(tmp_path / "data")
    _held(store)
    store.close()
    base = ["forward", "send", "--config", str(config), "--study"]
    assert cli.main([*base, OTHER, "--to", "pacs"]) == 0
    assert "1 of 1 images of the study are queued to pacs" in capsys.readouterr().out
    assert cli.main([*base, OTHER, "--to", "WS3D"]) == 0
    assert "queued to WS3D" in capsys.readouterr().out
    for to in ("NOHOST", "nowhere", "device:"):
        assert cli.main([*base, OTHER, "--to", to]) == 2
        assert "--to: " in capsys.readouterr().err
    assert cli.main([*base, "1.2.x", "--to", "pacs"]) == 2
    assert "--study: " in capsys.readouterr().err
    assert cli.main([*base, "1.2.3.999", "--to", "pacs"]) == 1
    assert "--study: no study" in capsys.readouterr().err
    store = open_store(tmp_path / "data")
    rows = store.query("SELECT destination FROM forward_queue q JOIN qr_instances i "
                       "ON i.instance_id = q.instance_id WHERE i.study_uid = ? ORDER BY q.id",
                       (OTHER,))  # fmt: skip
    assert [r["destination"] for r in rows] == ["pacs", "device:WS3D"]
    store.close()


def test_a_study_sent_while_retention_sweeps_keeps_its_files(tmp_path: Path) -> None:
    """Retention reads what may go, then marks it in a write; a "Send to" committed in
    between (a waiting row) keeps the file: the write checks the rows again."""
    from appliance.forward.retention import sweep
    from appliance.forward.spool import Spool

    store = open_store(tmp_path / "data")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    src = spool.tmp / "rx.dcm"
    src.write_bytes(b"x" * 100)
    sf = spool.place(src)
    info = queue.InstanceInfo("1.2.9.7", CT, "1.2.840.10008.1.2.1", "CT", "CT1")
    indexed = {"study_uid": STUDY, "sop_instance_uid": "1.2.9.7"}
    queue.record_instance(store, info, sf.rel, sf.token, sf.size, ["pacs"], now=0, indexed=indexed)
    items = queue.claim(store, "pacs", 10, now=1)
    queue.mark_delivered(store, [(i, 0) for i in items], now=1)

    real_query = store.query

    def query_then_send(sql: str, *args: object, **kw: object) -> object:
        rows = real_query(sql, *args, **kw)  # type: ignore[arg-type]
        if "HAVING SUM(q.state != 'delivered') = 0" in sql:  # retention's read
            assert queue.send_study(store, STUDY, "device:WS3D", "tech") == (1, 1)
        return rows

    store.query = query_then_send  # type: ignore[method-assign]
    try:
        assert sweep(store, spool, retention_s=0, now=10**9) == (0, 0)
    finally:
        store.query = real_query  # type: ignore[method-assign]
    assert (spool.root / sf.rel).exists()
    assert store.query("SELECT removed_at FROM forward_instances") == [{"removed_at": None}]
    store.close()
