"""Store opening hours: when a silent device is an outage and when it is just a closed store.

A weekly schedule in the store's own time zone (so daylight saving is handled by ``zoneinfo``),
with intervals like ``"08:00-20:00"``; an interval whose end is not after its start runs past
midnight (``"22:00-02:00"`` belongs to the day it starts on). ``closed_dates`` lists holidays.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from device_configs.base import StrictModel

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INTERVAL = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

Interval = Annotated[
    str,
    Field(
        min_length=11,
        max_length=11,
        pattern=_INTERVAL.pattern,
        description="'HH:MM-HH:MM' local time; an end not after the start runs past midnight; "
        "'00:00-24:00' is the whole day.",
    ),
]


def _parse(interval: str) -> tuple[time, timedelta]:
    """Start time and length of an interval."""
    m = _INTERVAL.match(interval)
    if m is None:  # the field pattern already refused it; kept for direct callers
        raise ValueError(f"bad interval {interval!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h2 == 24 and m2 != 0:
        raise ValueError(f"bad interval {interval!r}: 24:MM is only valid as 24:00")
    start = h1 * 60 + m1
    end = h2 * 60 + m2
    length = end - start if end > start else end + 24 * 60 - start
    return time(h1, m1), timedelta(minutes=length)


class OpeningHours(StrictModel):
    timezone: str = Field(
        default="UTC", min_length=1, max_length=64, description="IANA time zone of the store."
    )
    always_open: bool = Field(
        default=False, description="Treat the store as always open (every silence is an alarm)."
    )
    weekly: dict[Weekday, list[Interval]] = Field(
        default_factory=dict,
        max_length=7,
        description="Opening intervals per weekday; a day left out is closed.",
    )
    closed_dates: list[date] = Field(
        default_factory=list, max_length=366, description="Whole days the store is closed (holidays)."
    )
    margin_min: int = Field(
        default=30,
        ge=0,
        le=720,
        description="Minutes before opening and after closing still treated as open (staff on site).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("weekly")
    @classmethod
    def _intervals_parse(cls, v: dict[Weekday, list[str]]) -> dict[Weekday, list[str]]:
        for intervals in v.values():
            if len(intervals) > 8:
                raise ValueError("at most 8 intervals per day")
            for interval in intervals:
                _parse(interval)
        return v

    @model_validator(mode="after")
    def _something_open(self) -> OpeningHours:
        if not self.always_open and not any(self.weekly.values()):
            raise ValueError("set always_open = true or give at least one weekly interval")
        return self

    def is_open(self, at: datetime) -> bool:
        """Whether the store counts as open at ``at`` (timezone-aware), margins included."""
        if self.always_open:
            return True
        if at.tzinfo is None:
            raise ValueError("is_open needs a timezone-aware datetime")
        local = at.astimezone(ZoneInfo(self.timezone))
        margin = timedelta(minutes=self.margin_min)
        # An interval starting yesterday may run past midnight into today.
        for day_offset in (-1, 0, 1):
            day = local.date() + timedelta(days=day_offset)
            if day in self.closed_dates:
                continue
            for interval in self.weekly.get(WEEKDAYS[day.weekday()], []):
                start_t, length = _parse(interval)
                start = datetime.combine(day, start_t, tzinfo=local.tzinfo)
                if start - margin <= local < start + length + margin:
                    return True
        return False
