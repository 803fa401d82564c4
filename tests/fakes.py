"""In-memory fakes of the I/O interfaces, for testing logic without a database."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from sync.central.store import DeadLetter, EventKey, StoredEvent
from sync.stored import kind_of


class MemoryCentralStore:
    """CentralStore in a dict; ``fail_next`` makes the next writes raise (a database outage)."""

    def __init__(self, *, pipelined_writes: bool = True, durable_on_commit: bool = True) -> None:
        self.pipelined_writes = pipelined_writes
        self.messages_per_write = 10
        # With durable_on_commit False, writes are "committed" but only sync() makes them durable:
        # ``durable`` holds the ids a sync covered; ``sync_gate`` (when set) holds sync() until the
        # test releases it, and ``sync_error`` makes sync() raise.
        self.durable_on_commit = durable_on_commit
        self.durable: set[str] = set()
        self.sync_gate: threading.Event | None = None
        self.sync_error: OSError | None = None
        self.events: dict[str, StoredEvent] = {}
        self.dead: list[DeadLetter] = []
        self.fail_next = 0
        self.writes = 0
        self._lock = threading.Lock()

    def write(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> int:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise ConnectionError("simulated database outage")
            self.writes += 1
            new = 0
            for ev in events:
                if ev.id not in self.events:
                    self.events[ev.id] = ev
                    new += 1
            self.dead.extend(dead)
            return new

    def prepare(
        self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()
    ) -> tuple[list[StoredEvent], list[DeadLetter]]:
        return list(events), list(dead)

    def write_prepared(self, prepared: tuple[list[StoredEvent], list[DeadLetter]]) -> int:
        return self.write(*prepared)

    def sync(self) -> None:
        if self.sync_gate is not None:
            self.sync_gate.wait(30)
        if self.sync_error is not None:
            raise self.sync_error
        with self._lock:
            self.durable.update(self.events)

    def event_keys(self) -> list[EventKey]:
        with self._lock:
            return [EventKey(e.id, e.store, e.device, e.seq, kind_of(e)) for e in self.events.values()]

    def count_events(self) -> int:
        return len(self.events)

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self.dead)

    def footfall_per_store_hour(self) -> list[tuple[str, datetime, int, int, int, int]]:
        raise NotImplementedError

    def scans_per_kind_store_day(self) -> list[tuple[str, str, str, int]]:
        raise NotImplementedError

    def close(self) -> None:
        pass
