"""The central store interface: where validated events and dead letters land.

Backends: ``sqlite_store.SqliteCentralStore`` (embedded default) and
``pg_store.PostgresCentralStore`` (production). Both upsert on the event id, so a batch resent by a
device (lost ack, timeout, ingest killed between commit and ack) never lands twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sync.stored import StoredEvent

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "FLEET_FIELDS",
    "CentralStore",
    "DeadLetter",
    "EventKey",
    "FleetRow",
    "FleetStore",
    "FleetUpdate",
    "StoredEvent",
]

# Dead letters keep at most this much of the offending message (plus its full size and hash).
DEAD_LETTER_MAX_BYTES = 65_536


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
    # Whether the ingest should prepare the next group on another thread while this store writes
    # (see sync.central.ingest): worth it when the write waits on something outside the GIL.
    pipelined_writes: bool
    # Whether a write's commit is on disk when ``write``/``write_prepared`` returns. When False,
    # ``sync()`` makes every commit so far durable, and nothing may be acknowledged before it.
    durable_on_commit: bool
    # How many MQTT messages the ingest validates and commits as one transaction (one group).
    messages_per_write: int

    def write(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> int:
        """Store events and dead letters in ONE transaction; return how many events were new.

        Idempotent on the event id: writing the same event again changes nothing.
        """

    def prepare(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> Any:
        """The first half of ``write``: build what the transaction needs (rows, COPY data) without
        touching the database, on any thread. A pipelined ingest prepares the next group while the
        previous one is written."""

    def write_prepared(self, prepared: Any) -> int:
        """The second half of ``write``: one transaction; retrying with the same object is fine."""

    def sync(self) -> None:
        """Make every write committed so far durable (a no-op where ``durable_on_commit``).

        Safe to call from another thread while writes go on; raises if the disk refuses."""

    def event_keys(self) -> list[EventKey]:
        """Every stored event's identity, for invariant checks (order unspecified)."""

    def count_events(self) -> int: ...

    def dead_letters(self) -> list[DeadLetter]: ...

    def footfall_per_store_hour(self) -> list[tuple[str, datetime, int, int, int, int]]:
        """(store, hour start UTC, in, out, covered windows, uncovered windows), ordered."""

    def scans_per_kind_store_day(self) -> list[tuple[str, str, str, int]]:
        """(store, day 'YYYY-MM-DD' UTC, code kind, scans), ordered."""

    def close(self) -> None: ...


# -- the fleet table (sync.central.fleet feeds it from the status and config/ack topics) ----------


@dataclass(frozen=True, slots=True)
class FleetUpdate:
    """What one message tells about a device; None fields leave the stored value as it is."""

    store: str
    device: str
    seen_at: datetime | None = None  # central time of a live message (the latest one wins)
    state: str | None = None  # "online" | "offline"
    software: str | None = None
    config_version: int | None = None
    config_hash: str | None = None
    config_result: str | None = None  # result of the last config acknowledgement
    backlog_events: int | None = None
    backlog_bytes: int | None = None
    backlog_oldest_age_s: float | None = None
    clock_offset_s: float | None = None  # device clock minus central clock
    heartbeat_s: float | None = None
    opening_hours: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FleetRow:
    store: str
    device: str
    state: str | None
    last_seen: datetime | None
    state_changed_at: datetime | None
    software: str | None
    config_version: int | None
    config_hash: str | None
    config_result: str | None
    backlog_events: int | None
    backlog_bytes: int | None
    backlog_oldest_age_s: float | None
    clock_offset_s: float | None
    heartbeat_s: float | None
    opening_hours: dict[str, Any] | None


FLEET_FIELDS: tuple[str, ...] = (
    "state",
    "software",
    "config_version",
    "config_hash",
    "config_result",
    "backlog_events",
    "backlog_bytes",
    "backlog_oldest_age_s",
    "clock_offset_s",
    "heartbeat_s",
    "opening_hours",
)


class FleetStore(Protocol):
    """Both central store backends implement this next to CentralStore (schema version 2)."""

    def update_fleet(self, update: FleetUpdate) -> None:
        """Merge one update into the device's row (created on first sight)."""

    def fleet(self) -> list[FleetRow]:
        """Every known device, ordered by store and device."""
