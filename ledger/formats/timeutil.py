"""Times and the clock.

Every time in signed data is RFC 3339 UTC with a ``Z`` suffix and at most
microsecond precision (DESIGN §3). The notary's clock is a single injectable
object: production uses the system clock, simulations drive a
:class:`SimulatedClock` through months of events. Neither ever goes backwards.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Protocol

from ledger.formats.errors import USAGE, LedgerError

__all__ = [
    "KZ",
    "RFC3339_UTC",
    "Clock",
    "ClockError",
    "SimulatedClock",
    "SystemClock",
    "format_moment",
    "format_time",
    "parse_moment",
    "parse_time",
]

#: Kazakhstan's single time zone (since 1 March 2024): UTC+5, no daylight saving.
KZ = timezone(timedelta(hours=5), "UTC+5")

#: The only accepted spelling of a time in signed data.
RFC3339_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"
_RFC3339_UTC = re.compile(RFC3339_UTC)


class ClockError(LedgerError, ValueError):
    """A clock was asked to move backwards, or a time is not RFC 3339 UTC."""

    code = "time_invalid"
    exit_status = USAGE


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 UTC time (``...Z``, at most microseconds) strictly."""
    if not _RFC3339_UTC.fullmatch(text):
        raise ClockError(f"not an RFC 3339 UTC time ending in Z: {text!r}")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError as e:
        raise ClockError(f"invalid time {text!r}: {e}") from None


def format_time(t: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``: exactly as msgspec encodes a UTC datetime."""
    if t.tzinfo is None or t.utcoffset() != timedelta(0):
        raise ClockError(f"time must be timezone-aware UTC, got {t!r}")
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        text += f".{t.microsecond:06d}"
    return text + "Z"


def parse_moment(text: str) -> datetime:
    """A moment a person types, as an aware UTC datetime.

    - a date (``2026-08-31``): the END of that day in Kazakhstan (UTC+5), i.e.
      ``2026-08-31T23:59:59.999999+05:00`` = ``2026-08-31T18:59:59.999999Z``, so
      "as of a date" counts every entry integrated on that day;
    - a date and time without a zone (``2026-08-31T12:00``, ``2026-08-31 12:00:30``):
      read as UTC+5;
    - RFC 3339 with ``Z`` or an offset (``2026-08-31T07:00:00Z``,
      ``2026-08-31T12:00:00+05:00``): taken as given.
    """
    stripped = text.strip()
    wrong = ClockError(
        f"not a date or time: {text!r} (give 2026-08-31, 2026-08-31T12:00 in UTC+5, "
        "or RFC 3339 such as 2026-08-31T07:00:00Z)"
    )
    try:
        if len(stripped) == 10:
            day = date.fromisoformat(stripped)
            end = datetime.combine(day, time(23, 59, 59, 999999), tzinfo=KZ)
            return end.astimezone(UTC)
        if stripped[-1:] in ("z", "Z"):
            stripped = stripped[:-1] + "+00:00"
        t = datetime.fromisoformat(stripped)
    except ValueError:
        raise wrong from None
    if "T" not in stripped.upper() and " " not in stripped:
        raise wrong  # 20260831 and other compact spellings: ambiguous to a reader
    if t.tzinfo is None:
        t = t.replace(tzinfo=KZ)
    return t.astimezone(UTC)


def format_moment(t: datetime) -> str:
    """A moment for people: ``2026-08-31T18:59:59.999999Z (2026-08-31 23:59:59 UTC+5)``."""
    local = utc(t).astimezone(KZ)
    return f"{format_time(utc(t))} ({local:%Y-%m-%d %H:%M:%S} UTC+5)"


def utc(t: datetime) -> datetime:
    """Normalise an aware datetime to UTC, rejecting naive ones."""
    if t.tzinfo is None:
        raise ClockError(f"naive datetime {t!r}: give a timezone")
    return t.astimezone(UTC)


class Clock(Protocol):
    """Where the notary reads the time. ``now()`` never decreases."""

    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock UTC, made monotonic: it never reports an earlier time twice."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            t = datetime.now(UTC)
            if t < self._last:
                t = self._last
            self._last = t
            return t


class SimulatedClock:
    """A clock that simulations, the demo and tests move by hand.

    It refuses to move backwards, so a simulated ledger obeys the same
    ``integrated never decreases`` rule as a real one.
    """

    def __init__(self, start: datetime) -> None:
        self._now = utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, t: datetime) -> None:
        t = utc(t)
        with self._lock:
            if t < self._now:
                raise ClockError(f"clock cannot move backwards from {self._now} to {t}")
            self._now = t

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ClockError("clock cannot move backwards")
        with self._lock:
            self._now += delta
            return self._now
