"""Checks on calendar fields, shared by the events and the meetings routes.

Each `check_*` raises `ValueError` with a short message; used as a pydantic validator (the
`Annotated` aliases below, or inside a `field_validator`) that becomes the API's 422
VALIDATION_ERROR naming the field. Nothing here knows HTTP or Temporal.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil.rrule import rrulestr
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field

# Google's limits (Calendar API v3, Events resource: reminders.overrides).
MAX_REMINDERS = 5
MAX_REMINDER_MINUTES = 40_320  # four weeks
MAX_ATTENDEES = 1_000  # an API request keeps far fewer; Google refuses beyond its own limit
MAX_RECURRENCE_LINES = 20
_RECURRENCE_DATES = ("RDATE", "EXDATE")
# RFC 5545's ranges for the numeric parts dateutil takes without complaint ((low, high,
# whether negatives count from the end)).
_RRULE_RANGES = {
    "COUNT": (1, 100_000, False),
    "INTERVAL": (1, 10_000, False),
    "BYSECOND": (0, 60, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTH": (1, 12, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYSETPOS": (1, 366, True),
}
_RECURRENCE_RULES = ("RRULE", "EXRULE")


# Files in the zone database that are not zones Google knows.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(
        name
        for name in available_timezones()
        if name not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
    )


def check_time_zone(value: str) -> str:
    """An IANA time zone name (`Europe/Berlin`, `UTC`)."""
    zones = _zones()
    known = value in zones if zones else False
    if not known and not zones:  # no zone list on this system: ask zoneinfo itself
        try:
            ZoneInfo(value)
            known = "/" in value or value == "UTC"
        except (ZoneInfoNotFoundError, ValueError):
            known = False
    if not known:
        raise ValueError("must be an IANA time zone name such as Europe/Berlin")
    return value


def check_email(value: str) -> str:
    """An e-mail address (syntax only: no DNS lookup), lower-cased."""
    try:
        checked = validate_email(value, check_deliverability=False)
    except (EmailNotValidError, UnicodeError):
        raise ValueError("must be an e-mail address") from None
    return checked.normalized.lower()


def check_rrule(value: str) -> str:
    """One recurrence line: an RRULE (with or without the `RRULE:` prefix), an EXRULE, or an
    RDATE/EXDATE line; returned with its prefix, as Google wants it."""
    line = value.strip()
    name, sep, rest = line.partition(":")
    upper = name.upper()
    if not sep:
        upper, rest = "RRULE", line
    elif upper.split(";")[0] in _RECURRENCE_DATES:
        if not rest:
            raise ValueError("must be an RRULE such as FREQ=WEEKLY;BYDAY=MO;COUNT=10")
        return line
    elif upper not in _RECURRENCE_RULES:
        raise ValueError("must be an RRULE such as FREQ=WEEKLY;BYDAY=MO;COUNT=10")
    rule = rest.strip()
    parts = [part.partition("=")[0].upper() for part in rule.split(";")]
    if "FREQ" not in parts or ("COUNT" in parts and "UNTIL" in parts):
        raise ValueError("must be an RRULE with FREQ, and COUNT or UNTIL but not both")
    for part in rule.split(";"):
        key, _, raw = part.partition("=")
        bounds = _RRULE_RANGES.get(key.upper())
        if bounds is None:
            continue
        low, high, signed = bounds
        for item in raw.split(","):
            try:
                number = int(item)
            except ValueError:
                raise ValueError(f"{key.upper()} must be a whole number") from None
            if not low <= (abs(number) if signed else number) <= high:
                raise ValueError(f"{key.upper()}={item} is out of range")
    try:
        rrulestr(rule, dtstart=datetime(2000, 1, 1, tzinfo=UTC) if "Z" in rule else None)
    except Exception as exc:  # noqa: BLE001 - dateutil raises more than ValueError on junk
        raise ValueError(f"is not a valid RRULE ({type(exc).__name__})") from None
    return f"{upper}:{rule}"


def check_recurrence(lines: Sequence[str]) -> list[str]:
    if len(lines) > MAX_RECURRENCE_LINES:
        raise ValueError(f"at most {MAX_RECURRENCE_LINES} lines")
    return [check_rrule(line) for line in lines]


def check_reminders(reminders: Sequence[object]) -> Sequence[object]:
    """At most five reminders (each one's method and minutes are checked by its model)."""
    if len(reminders) > MAX_REMINDERS:
        raise ValueError(f"at most {MAX_REMINDERS} reminders")
    return reminders


def instant(value: datetime | date, time_zone: str | None) -> datetime:
    """The moment `value` stands for: a naive datetime is wall-clock time in `time_zone`
    (UTC when none), a date is that day's midnight."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(time_zone) if time_zone else UTC)
    return value


def check_end_after_start(
    start: datetime | date, end: datetime | date, time_zone: str | None = None
) -> None:
    """`end` strictly after `start` (Google: "The specified time range is empty.")."""
    if isinstance(start, datetime) != isinstance(end, datetime):
        raise ValueError("must be of the same kind as start (both dates or both date-times)")
    try:
        before = instant(end, time_zone) <= instant(start, time_zone)
    except OverflowError:  # an offset that takes year 1 or 9999 out of range
        raise ValueError("is out of range") from None
    if before:
        raise ValueError("must be after start")


def check_has_zone(value: datetime | date, time_zone: str | None) -> None:
    """A date-time without an offset needs `timeZone` (Google refuses it otherwise)."""
    if isinstance(value, datetime) and value.tzinfo is None and not time_zone:
        raise ValueError("needs a UTC offset (2026-12-01T10:00:00Z) or timeZone")


TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_time_zone)]
AttendeeEmail = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(check_email)]
RecurrenceLine = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_rrule)]
ReminderMethod = Literal["email", "popup"]
ReminderMinutes = Annotated[int, Field(ge=0, le=MAX_REMINDER_MINUTES)]
