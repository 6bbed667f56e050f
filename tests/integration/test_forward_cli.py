"""``appliance forward ...`` against a real database and a real C-ECHO peer."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import cli
from appliance.db import open_store
from appliance.forward import queue
from tests.forward_helpers import FakePacs

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def config(tmp_path: Path, pacs: FakePacs) -> Path:
    f = tmp_path / "a.toml"
    f.write_text(
        f"""data_dir = "{tmp_path / "data"}"
[[destinations]]
name = "pacs"
ae_title = "{pacs.ae_title}"
host = "127.0.0.1"
port = {pacs.port}
[[destinations]]
name = "down"
ae_title = "NOBODY"
host = "127.0.0.1"
port = 9
"""
    )
    store = open_store(tmp_path / "data")
    for n in range(3):
        info = queue.InstanceInfo(f"1.2.{n}", CT, "1.2.840.10008.1.2.1", "CT", "CT1")
        queue.record_instance(store, info, f"f{n}", f"d{n}", 1, ["pacs", "down"], now=100)
    queue.defer_destination(store, "down", until=10**10, error="no association with NOBODY")
    [first] = queue.claim(store, "pacs", 1)
    queue.mark_dead(store, first, "cannot understand 0xC000: bad pixel data")
    store.close()
    return f


def test_status_waiting_and_dead(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forward", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "down" in out and "waiting 3" in out and "no association with NOBODY" in out
    assert "dead 1" in out
    assert cli.main(["forward", "waiting", "down", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("no association with NOBODY" in line for line in lines)
    # Never tried (the destination is down): no "attempts 0" beside the destination's error.
    assert all("attempts -" in line and "not tried yet (destination: " in line for line in lines)
    assert cli.main(["forward", "dead", "--config", str(config)]) == 0
    assert "bad pixel data" in capsys.readouterr().out


def test_retry_and_resend(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forward", "retry", "down", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("3 waiting items are due now")
    store = open_store(config.parent / "data")
    [dead] = queue.dead_letters(store)
    store.close()
    assert cli.main(["forward", "resend", str(dead["id"]), "--config", str(config)]) == 0
    assert "1 of 1 items are queued again" in capsys.readouterr().out
    store = open_store(config.parent / "data")
    assert queue.dead_letters(store) == []
    store.close()


def test_echo(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forward", "echo", "pacs", "--config", str(config)]) == 0
    assert "success" in capsys.readouterr().out
    assert cli.main(["forward", "echo", "down", "--config", str(config)]) == 1
    assert "no association" in capsys.readouterr().out
    assert cli.main(["forward", "echo", "nosuch", "--config", str(config)]) == 2


def _receive(config: Path, n: int, dest: str) -> None:
    """``n`` more images queued for ``dest``, each a second after the one before."""
    store = open_store(config.parent / "data")
    for i in range(n):
        info = queue.InstanceInfo(f"1.3.{dest}.{i}", CT, "1.2.840.10008.1.2.1", "CT", "CT1")
        queue.record_instance(store, info, f"g{i}", f"e{i}", 1, [dest], now=200 + i,
                              durable=False)  # fmt: skip
    store.close()


def _run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert cli.main(["forward", *args, "--config", str(config)]) == 0
    return capsys.readouterr().out.splitlines()


def test_waiting_shows_the_oldest_100_then_how_many_were_left_out(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _receive(config, 120, "down")  # 123 waiting
    lines = _run(config, capsys, "waiting", "down")
    assert len(lines) == 101
    assert lines[-1] == (
        "100 of 123 waiting items (oldest first) shown; --limit N shows more, --all every one"
    )
    assert all("no association with NOBODY" in line for line in lines[:3])  # the oldest
    lines = _run(config, capsys, "waiting", "down", "--limit", "5")
    assert len(lines) == 6 and lines[-1].startswith("5 of 123 waiting items")
    assert len(_run(config, capsys, "waiting", "down", "--all")) == 123  # and no last line
    assert len(_run(config, capsys, "waiting", "down", "--limit", "123")) == 123
    assert len(_run(config, capsys, "waiting", "pacs")) == 2  # every one shown: no last line


def test_dead_letters_limit_and_all_of_one_destination_or_every_one(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _receive(config, 9, "pacs")
    store = open_store(config.parent / "data")
    for item in queue.claim(store, "pacs", 100, now=10**10):
        queue.mark_dead(store, item, f"refused {item.sop_instance_uid}")
    store.close()  # 1 + 2 + 9 dead letters of pacs, none of down
    lines = _run(config, capsys, "dead", "--limit", "4")
    assert len(lines) == 5
    assert lines[-1] == (
        "4 of 12 dead letters (newest first) shown; --limit N shows more, --all every one"
    )
    assert len(_run(config, capsys, "dead", "pacs", "--all")) == 12
    assert len(_run(config, capsys, "dead")) == 12  # fewer than 100: no last line
    assert _run(config, capsys, "dead", "down", "--limit", "1") == []


@pytest.mark.parametrize(
    "args,message",
    [
        (["--limit", "0"], "--limit: must be a whole number from 1"),
        (["--limit", "ten"], "--limit: must be a whole number from 1"),
        (["--limit", "-3"], "--limit: must be a whole number from 1"),
        (["--all", "--limit", "5"], "not allowed with argument --all"),
    ],
)
def test_bad_limits_are_refused_naming_the_option(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    for command in (["waiting", "down"], ["dead"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["forward", *command, *args, "--config", str(config)])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
