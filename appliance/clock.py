"""The clinic's clock: one time zone every time is shown in.

What is stored does not change: audit, MPPS, HL7 and print times are UTC (ISO text ending
in ``Z``), queue times are Unix seconds, and scheduled step times are the clinic's wall
clock as the front desk typed them (DICOM DA/TM values carry no zone, PS3.5 6.2: they are
local to the clinic, and worklist answers give them back unchanged). This module turns the
first two into the clinic's zone for people; the third is already in it.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SHOWN = "%Y-%m-%d %H:%M:%S"


def local_zone_name(env: dict[str, str] | None = None, localtime: Path | None = None) -> str:
    """The box's zone as an IANA name ($TZ, else where /etc/localtime points), '' if none."""
    env = dict(os.environ) if env is None else env
    name = env.get("TZ", "").lstrip(":")
    if name and _valid(name):
        return name
    link = localtime or Path("/etc/localtime")
    try:
        target = str(link.resolve())
    except OSError:
        return ""
    marker = "/zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        return name if _valid(name) else ""
    return ""


def _valid(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class Clock:
    """The clinic's zone (a setting, else the box's) and what is shown in it."""

    def __init__(self, setting: str = "", now: float | None = None) -> None:
        self.name = setting or local_zone_name()
        self.zone: tzinfo
        if self.name:
            self.zone = ZoneInfo(self.name)
        else:  # a zone with no IANA name: the offset the C library reports
            self.zone = datetime.now().astimezone().tzinfo or UTC
            self.name = time.tzname[0] or "UTC"
        self._fixed_now = now

    def now(self) -> datetime:
        """The clinic's wall clock now (aware)."""
        seconds = time.time() if self._fixed_now is None else self._fixed_now
        return datetime.fromtimestamp(seconds, self.zone)

    def today(self) -> date:
        """The clinic's date now (the board's 'today', the age on a birth date)."""
        return self.now().date()

    def label(self) -> str:
        """The zone named for people: 'Asia/Tokyo (JST, UTC+09:00)'."""
        now = self.now()
        abbrev = now.tzname() or ""
        offset = _offset_text(now.utcoffset() or timedelta(0))
        parts = [p for p in (abbrev if abbrev != self.name else "", offset) if p]
        return f"{self.name} ({', '.join(parts)})"

    def offset_minutes(self) -> int:
        """The zone's offset from UTC now, in minutes (for the page's running clock)."""
        delta = self.now().utcoffset() or timedelta(0)
        return int(delta.total_seconds() // 60)

    def from_epoch(self, seconds: float | None) -> str:
        """Unix seconds as the clinic's 'YYYY-MM-DD HH:MM:SS' ('—' when there is none)."""
        if seconds is None or seconds == "":
            return "—"
        return datetime.fromtimestamp(float(seconds), self.zone).strftime(SHOWN)

    def from_stored(self, text: str | None) -> str:
        """A stored UTC ISO time ('...Z', '+00:00' or naive UTC) in the clinic's zone;
        '—' when empty, the text as stored when it is not a time."""
        if not text:
            return "—"
        raw = str(text).strip()
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
        except ValueError:
            return raw
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(self.zone).strftime(SHOWN)

    def to_stored(self, wall: datetime) -> str:
        """A wall-clock time in the clinic's zone as stored UTC ('YYYY-MM-DDTHH:MM:SS')."""
        if wall.tzinfo is None:
            wall = wall.replace(tzinfo=self.zone)
        return wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _offset_text(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"
