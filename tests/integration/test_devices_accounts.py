"""Devices in the database (synced from the file, pushed to Access), accounts, the users CLI."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import accounts, devices
from appliance.access import Access
from appliance.app import open_store
from appliance.cli import main
from appliance.config import DeviceSettings
from appliance.errors import Conflict, ValidationError
from appliance.runtime import Runtime
from appliance.server import Appliance
from tests.helpers import make_config, wait_for

PASSWORD = "correct horse battery"


def test_config_devices_win_web_devices_stay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = make_config(
        data, {"devices": [{"ae_title": "CT1", "modality": "CT"}, {"ae_title": "OLD"}]}
    )
    store = open_store(data)
    access = Access(cfg, store)
    access.sync()
    assert access.device("CT1").modality == "CT" and access.device("OLD") is not None
    devices.save(store, DeviceSettings(ae_title="US1", modality="US"))
    with pytest.raises(ValidationError) as err:
        devices.save(store, DeviceSettings(ae_title="CT1", modality="MR"), original_ae="CT1")
    assert err.value.field == "ae_title"
    store.close()
    # Restart with a changed file: CT1 follows the file, OLD is gone, US1 (web) is kept.
    cfg2 = make_config(data, {"devices": [{"ae_title": "CT1", "modality": "MR"}]})
    store = open_store(data)
    access = Access(cfg2, store)
    access.sync()
    assert access.device("CT1").modality == "MR"
    assert access.device("OLD") is None
    assert access.device("US1").modality == "US"
    assert {r["ae_title"]: r["managed_by"] for r in devices.rows(store)} == {
        "CT1": "config",
        "US1": "web",
    }
    store.close()


def test_web_devices_survive_a_restart_of_the_appliance(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(data_dir=tmp_path / "d")
    devices.save(app.runtime.store, DeviceSettings(ae_title="CT9", character_set="ISO 2022 IR 87"))
    app.runtime.access.devices.publish()
    assert app.runtime.access.device("CT9") is not None
    app.stop()
    again = start_appliance(data_dir=tmp_path / "d")
    assert again.runtime.access.device("CT9").character_set == "ISO 2022 IR 87"


def test_device_validation_names_the_field(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for bad, field in (
        (DeviceSettings(ae_title=""), "ae_title"),
        (DeviceSettings(ae_title="A", port=99999), "port"),
        (DeviceSettings(ae_title="A", modality="c t"), "modality"),
        (DeviceSettings(ae_title="A", character_set="X"), "character_set"),
    ):
        with pytest.raises(ValidationError) as err:
            devices.save(store, bad)
        assert err.value.field == field
    assert devices.rows(store) == []
    store.close()


def test_passwords_are_hashed_at_the_shipped_cost_outside_the_suite() -> None:
    """The suite lowers the scrypt cost (tests/conftest.py); the appliance does not."""
    code = (
        "from appliance import accounts; "
        "print(accounts.PASSWORD_METHOD, accounts.hash_password('x' * 12).split('$')[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["scrypt", "scrypt:32768:8:1"]


def test_accounts_rules(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    token = accounts.issue_setup_token(store)
    assert token and accounts.setup_pending(store)
    second = accounts.issue_setup_token(store)
    with pytest.raises(ValidationError):
        accounts.complete_setup(store, token, "admin", PASSWORD)  # replaced by the second
    pk = accounts.complete_setup(store, second, "admin", PASSWORD)
    assert not accounts.setup_pending(store) and accounts.issue_setup_token(store) is None
    row = store.query("SELECT password_hash FROM users WHERE pk = ?", (pk,))[0]
    assert (
        row["password_hash"].startswith(("scrypt:", "pbkdf2:"))
        and PASSWORD not in row["password_hash"]
    )
    assert accounts.authenticate(store, "ADMIN", PASSWORD).pk == pk  # names are case-insensitive
    assert accounts.authenticate(store, "admin", "wrong") is None
    assert accounts.authenticate(store, "nobody", PASSWORD) is None
    with pytest.raises(Conflict):
        accounts.update_user(store, pk, accounts.FRONT_DESK, "", True)
    epoch = accounts.get_user(store, pk).session_epoch
    accounts.set_password(store, pk, "another long one")
    assert accounts.get_user(store, pk).session_epoch == epoch + 1
    assert accounts.secret_key(store) == accounts.secret_key(store)
    store.close()


def test_users_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    assert main(["users", "setup-token", "--data-dir", data]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 20
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert (
        main(["users", "add", "boss", "--role", "admin", "--password-stdin", "--data-dir", data])
        == 1
    )
    assert "at least 10" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert (
        main(["users", "add", "boss", "--role", "admin", "--password-stdin", "--data-dir", data])
        == 0
    )
    assert main(["users", "setup-token", "--data-dir", data]) == 1
    assert main(["users", "list", "--data-dir", data]) == 0
    assert "boss" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("a new long password\n"))
    assert main(["users", "set-password", "boss", "--password-stdin", "--data-dir", data]) == 0
    assert main(["users", "set-password", "nobody", "--password-stdin", "--data-dir", data]) == 1
    store = open_store(Path(data))
    assert accounts.authenticate(store, "boss", "a new long password") is not None
    store.close()


def test_a_change_made_by_another_process_is_seen(tmp_path: Path) -> None:
    """`serve --only web` and `serve --only dicom`: two stores on one file."""
    cfg = make_config(tmp_path, {})
    dicom_store, web_store = open_store(tmp_path), open_store(tmp_path)
    dicom_side = Access(cfg, dicom_store)
    assert dicom_side.device("US1") is None
    devices.save(web_store, DeviceSettings(ae_title="US1", modality="US"))
    wait_for(lambda: dicom_side.device("US1") is not None, timeout=10)
    devices.delete(web_store, "US1")
    wait_for(lambda: dicom_side.device("US1") is None, timeout=10)
    dicom_store.close()
    web_store.close()


def test_building_the_runtime_writes_nothing_until_sync(tmp_path: Path) -> None:
    """The constructors read nothing into the tables; ``sync()`` at start writes the
    file's devices and destinations (and only then are they served)."""
    cfg = make_config(
        tmp_path / "data",
        {"devices": [{"ae_title": "CT1", "modality": "CT"}],
         "destinations": [{"name": "main", "ae_title": "PACS", "host": "127.0.0.1",
                           "port": 104}]},
    )  # fmt: skip
    store = open_store(cfg.data_dir)
    before = store.db.conn.total_changes
    rt = Runtime.create(cfg, store)
    assert store.db.conn.total_changes == before
    assert store.query("SELECT count(*) AS n FROM devices")[0]["n"] == 0
    assert rt.access.device("CT1") is None and rt.destinations.current() == ()
    rt.sync()
    assert rt.access.device("CT1").modality == "CT"  # type: ignore[union-attr]
    assert [d.name for d in rt.destinations.current()] == ["main"]
    assert store.query("SELECT count(*) AS n FROM destinations")[0]["n"] == 1
    store.close()
