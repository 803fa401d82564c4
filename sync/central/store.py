"""The central store interface: where validated events and dead letters land.

Backends: ``sqlite_store.SqliteCentralStore`` (embedded default) and
``pg_store.PostgresCentralStore`` (production). Both upsert on the event id, so a batch resent by a
device (lost ack, timeout, ingest killed between commit and ack) never lands twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypedDict

# Dead letters keep at most this much of the offending message (plus its full size and hash).
DEAD_LETTER_MAX_BYTES = 65_536


class StoredEvent(TypedDict):
    """A validated event as the ingest hands it to a store (the wire event, parsed)."""

    id: str  # canonical lower-case UUID text
    store: str
    device: str
    seq: int
    ts: datetime  # timezone-aware (UTC)
    kind: str  # "scan" | "footfall" | "health"
    payload: dict[str, Any]  # the validated payload of that kind (datetimes parsed)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    topic: str
    reason: str
    payload: bytes  # first DEAD_LETTER_MAX_BYTES of the message
    size: int  # full size of the message in bytes
    sha256: str  # of the full message


@dataclass(frozen=True, slots=True)
class EventKey:
    id: str
    store: str
    device: str
    seq: int
    kind: str


class CentralStore(Protocol):
    def write(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> int:
        """Store events and dead letters in ONE transaction; return how many events were new.

        Idempotent on the event id: writing the same event again changes nothing.
        """

    def event_keys(self) -> list[EventKey]:
        """Every stored event's identity, for invariant checks (order unspecified)."""

    def count_events(self) -> int: ...

    def dead_letters(self) -> list[DeadLetter]: ...

    def footfall_per_store_hour(self) -> list[tuple[str, datetime, int, int, int, int]]:
        """(store, hour start UTC, in, out, covered windows, uncovered windows), ordered."""

    def scans_per_kind_store_day(self) -> list[tuple[str, str, str, int]]:
        """(store, day 'YYYY-MM-DD' UTC, code kind, scans), ordered."""

    def close(self) -> None: ...
