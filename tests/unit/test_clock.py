"""The clinic's clock: stored UTC times shown in the clinic's zone, the zone's name."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from appliance import config as config_mod
from appliance.clock import Clock, local_zone_name
from appliance.errors import ConfigError

EPOCH = 1767367800.0  # 2026-01-02T15:30:00Z


def test_stored_utc_text_is_shown_in_the_clinic_zone() -> None:
    tokyo = Clock("Asia/Tokyo")
    for stored in ("2026-01-02T15:30:00.123Z", "2026-01-02T15:30:00+00:00", "2026-01-02T15:30:00"):
        assert tokyo.from_stored(stored) == "2026-01-03 00:30:00", stored
    assert Clock("America/New_York").from_stored("2026-07-02T15:30:00Z") == "2026-07-02 11:30:00"
    assert Clock("UTC").from_stored("2026-01-02 15:30:00") == "2026-01-02 15:30:00"


def test_empty_and_malformed_stored_times() -> None:
    tokyo = Clock("Asia/Tokyo")
    assert tokyo.from_stored("") == "—" and tokyo.from_stored(None) == "—"
    assert tokyo.from_stored("yesterday") == "yesterday"
    assert tokyo.from_epoch(None) == "—"


def test_unix_seconds_are_shown_in_the_clinic_zone() -> None:
    assert Clock("Asia/Tokyo").from_epoch(EPOCH) == "2026-01-03 00:30:00"
    assert Clock("Europe/Berlin").from_epoch(EPOCH) == "2026-01-02 16:30:00"
    assert Clock("UTC").from_epoch(EPOCH) == "2026-01-02 15:30:00"


def test_a_wall_clock_time_is_stored_as_utc() -> None:
    assert Clock("Asia/Tokyo").to_stored(datetime(2026, 1, 3, 0, 30)) == "2026-01-02T15:30:00"
    summer = Clock("Europe/Berlin").to_stored(datetime(2026, 7, 1, 12, 0))
    assert summer == "2026-07-01T10:00:00"


def test_the_zone_is_named_with_abbreviation_and_offset() -> None:
    assert Clock("Asia/Tokyo", now=EPOCH).label() == "Asia/Tokyo (JST, UTC+09:00)"
    assert Clock("America/New_York", now=EPOCH).label() == "America/New_York (EST, UTC-05:00)"
    assert Clock("UTC", now=EPOCH).label() == "UTC (UTC+00:00)"
    assert Clock("Asia/Kolkata", now=EPOCH).offset_minutes() == 330


def test_today_is_the_clinic_date() -> None:
    # 15:30 UTC is already the next day in Tokyo, still the same day in New York.
    assert Clock("Asia/Tokyo", now=EPOCH).today().isoformat() == "2026-01-03"
    assert Clock("America/New_York", now=EPOCH).today().isoformat() == "2026-01-02"


def test_the_box_zone_comes_from_tz_then_localtime(tmp_path: Path) -> None:
    assert local_zone_name({"TZ": "Asia/Tokyo"}, tmp_path / "none") == "Asia/Tokyo"
    assert local_zone_name({"TZ": ":Europe/Paris"}, tmp_path / "none") == "Europe/Paris"
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Asia/Seoul")
    assert local_zone_name({"TZ": "Not/AZone"}, link) == "Asia/Seoul"
    assert local_zone_name({}, tmp_path / "none") == ""
    assert Clock("").name  # an unnamed zone still gets a name from the C library


@pytest.mark.parametrize("bad", ["Tokyo", "Asia/Tokio", "../etc/passwd", "UTC+9"])
def test_a_bad_time_zone_is_refused_at_load_naming_the_field(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.from_mapping({"clinic": {"time_zone": bad}})
    assert info.value.setting == "clinic.time_zone" and repr(bad) in str(info.value)


def test_a_good_time_zone_is_kept() -> None:
    cfg = config_mod.from_mapping({"clinic": {"time_zone": "Asia/Tokyo"}})
    assert cfg.clinic.time_zone == "Asia/Tokyo"
    assert config_mod.from_mapping({}).clinic.time_zone == ""
