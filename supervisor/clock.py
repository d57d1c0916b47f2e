"""Time as the ledger stores it (fixed-width UTC strings) and the local calendar that caps reset on.

Day and month caps follow the machine's local calendar; every boundary is computed with that day's own UTC
offset, so they stay right across DST changes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def iso(moment: datetime) -> str:
    """UTC timestamps as fixed-width strings, so string order is time order in SQL."""
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        moment = moment.astimezone(UTC)
    return f"{moment.isoformat(timespec='microseconds')[:-6]}Z"  # "...+00:00" -> "...Z" (faster than strftime)


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _local_midnight(day: date) -> datetime:
    """Midnight of ``day`` in local time, with that day's own UTC offset (right across DST changes)."""
    return datetime(day.year, day.month, day.day).astimezone()


def local_day_start(moment: datetime) -> datetime:
    """Midnight (local time) of the day containing ``moment``."""
    return _local_midnight(moment.astimezone().date())


def local_month_start(moment: datetime) -> datetime:
    return _local_midnight(moment.astimezone().date().replace(day=1))


def next_local_day(moment: datetime) -> datetime:
    return _local_midnight(moment.astimezone().date() + timedelta(days=1))


def next_local_month(moment: datetime) -> datetime:
    first = moment.astimezone().date().replace(day=1)
    return _local_midnight((first + timedelta(days=32)).replace(day=1))
