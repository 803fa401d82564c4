"""The central ingest: events topics -> validated -> central store -> acknowledgements.

Order per group of messages: validate, write events and dead letters in ONE transaction, commit,
then PUBACK each MQTT message to the broker (manual acks: a message the ingest took but never
committed is redelivered by the broker), then publish an ``acks`` message to each device. Killed
anywhere in between, the worst outcome is a resend that the upsert on event id absorbs.

With PostgreSQL, two threads besides paho's, so that the database's work (the server, and
psycopg's C code without the GIL) overlaps with the Python work on the next group: the validator
validates a group and builds its rows (``store.prepare``), the writer writes, commits and
acknowledges, one group after the other in the order the messages came (PUBACKs must go out in
that order). With SQLite one thread does both: each row's insert gives the GIL up and takes it back,
and with a validator thread wanting it too those hand-overs cost more than the overlap gains
(measured in-process on 500-event batches: 3.4-3.8 us of CPU per event and 230-260k events/s in
one thread, against 4.3-4.8 us and 190-210k/s in two).

A store whose commits are not durable when they return (SQLite opened with ``group_commit``, see
``CentralStore.durable_on_commit``) gets one more thread, the acker: the worker hands it each
committed group and goes on with the next one; the acker calls ``store.sync()`` once for all the
groups committed since its last one (one fsync) and only then sends their PUBACKs and acks, in the
order the messages came. If ``sync()`` fails, nothing more is acknowledged and the ingest stops
(``failed`` says why): the broker redelivers what was not acked to the next ingest.

Several ingest processes share the load through one shared subscription
(``$share/<group>/omni/v1/+/+/events``); nothing here assumes it is the only one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as paho

from sync import topics
from sync.central.mqtt import BrokerSettings, central_client
from sync.central.store import DEAD_LETTER_MAX_BYTES, CentralStore, DeadLetter, StoredEvent
from sync.validate import Rejected, Validated, validate_message
from sync.wire import MAX_MESSAGE_BYTES, seq_ranges

__all__ = ["BrokerSettings", "Ingest", "IngestStats", "dead_letter"]

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    events_new: int = 0
    events_duplicate: int = 0
    dead_letters: int = 0
    acks_sent: int = 0
    syncs: int = 0  # store.sync() calls that made committed groups durable (group commit)
    write_failures: int = 0
    connected: bool = False
    connect_refusals: int = 0
    last_error: str = ""


def dead_letter(topic: str, reason: str, raw: bytes) -> DeadLetter:
    return DeadLetter(
        received_at=datetime.now(UTC),
        topic=topic[:1024],
        reason=reason[:2000],
        payload=raw[:DEAD_LETTER_MAX_BYTES],
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


@dataclass
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass
class _Group:
    """Validated messages and their prepared rows (None if preparing failed: plain write)."""

    messages: list[_Msg]
    results: list[Validated]
    prepared: Any = None


class Ingest:
    def __init__(
        self,
        store: CentralStore,
        broker: BrokerSettings,
        *,
        group: str = "ingest",
        client_id: str | None = None,
        max_messages_per_write: int | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        on_write: Callable[[Validated], None] | None = None,
        crash_after_commits: int | None = None,
        shared: bool = True,
        pipelined: bool | None = None,
    ) -> None:
        self.store = store
        # Validate the next group while the store writes this one (two threads), or do both in one
        # thread; by default what the store says suits it (``CentralStore.pipelined_writes``).
        self.pipelined = store.pipelined_writes if pipelined is None else pipelined
        self.broker = broker
        self.group = group
        self.client_id = client_id or broker.client_id or f"ingest-{group}-1"
        # Messages validated and committed together (one transaction, one group for the acker);
        # by default what suits the store (``CentralStore.messages_per_write``). Groups much
        # smaller than a device's window of batches in flight let receiving, writing, syncing and
        # acknowledging overlap instead of going in lockstep.
        self.max_messages_per_write = max_messages_per_write or store.messages_per_write
        self.max_message_bytes = max_message_bytes
        self.on_write = on_write
        # Fault injection (harness and tests): SIGKILL this process right after the Nth commit,
        # before any PUBACK or ack leaves, the worst moment for exactly-once delivery.
        self.crash_after_commits = crash_after_commits
        # A shared subscription lets several ingest workers split the load; only a broker without
        # $share support (the demo's embedded fallback) needs the plain wildcard.
        self.subscription = (
            topics.shared(group, topics.EVENTS.wildcard()) if shared else topics.EVENTS.wildcard()
        )
        self._commits = 0
        self.stats = IngestStats()
        self._queue: queue.Queue[_Msg] = queue.Queue(maxsize=2000)
        # Validated groups waiting for the writer; small, so back-pressure reaches paho quickly.
        self._validated: queue.Queue[_Group] = queue.Queue(maxsize=2)
        # Committed groups waiting for store.sync() before their acks (stores that defer fsync);
        # bounded, so a disk that stalls the sync holds the writer back instead of filling memory.
        self._committed: queue.Queue[tuple[list[_Msg], list[Validated]]] = queue.Queue(maxsize=8)
        self.failed: str | None = None  # why the ingest stopped on its own (a failed sync)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client = central_client(
            broker,
            client_id=self.client_id,
            clean_session=False,  # queued events wait for us across an ingest restart
            manual_ack=True,
        )
        c = self._client
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 4)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if self.pipelined:
            self._threads = [
                threading.Thread(target=self._validate_loop, name=f"{self.client_id}-validator", daemon=True),
                threading.Thread(target=self._write_loop, name=f"{self.client_id}-writer", daemon=True),
            ]
        else:
            worker = threading.Thread(target=self._work_loop, name=f"{self.client_id}-worker", daemon=True)
            self._threads = [worker]
        writers = list(self._threads)
        if not self.store.durable_on_commit:
            acker = threading.Thread(
                target=self._ack_loop, args=(writers,), name=f"{self.client_id}-acker", daemon=True
            )
            self._threads.append(acker)  # joined last: it acks what the writers committed
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stats.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.stats.connected

    # -- paho callbacks (paho's thread) ---------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.stats.connect_refusals += 1
            self.stats.last_error = f"connection refused: {reason}"
            log.error("broker refused the ingest connection: %s", reason)
            return
        self.stats.connected = True
        client.subscribe(self.subscription, qos=1)
        log.info("ingest %s connected, subscribed to %s", self.client_id, self.subscription)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.stats.connected = False
        if not self._stop.is_set():
            log.warning("ingest lost the broker (%s); paho reconnects", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Blocks when the writer is behind: back-pressure through TCP rather than unbounded memory.
        self._queue.put(_Msg(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # -- the writer -------------------------------------------------------------------------

    def _write_group(self, group: list[_Msg], results: list[Validated], prepared: Any = None) -> int | None:
        """Write a group in one transaction, retrying while the store is down.

        A message the store itself refuses (while the store is up) would otherwise block the
        ingest forever: after a few failures the group is written message by message, and a
        message that still fails becomes a dead letter with the store's error as the reason.
        """
        delay = 0.1
        attempts = 0
        while True:
            try:
                if prepared is not None:
                    return self.store.write_prepared(prepared)
                return self.store.write(*self._rows(group, results))
            except Exception as exc:  # noqa: BLE001 - never ack what is not stored; retry instead
                attempts += 1
                self.stats.write_failures += 1
                log.error("central store write failed (%s); retrying in %.1fs", exc, delay)
                if attempts >= 3 and len(group) > 0 and self._store_is_up():
                    return self._write_one_by_one(group, results)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _rows(group: list[_Msg], results: list[Validated]) -> tuple[list[StoredEvent], list[DeadLetter]]:
        events = [ev for r in results for ev in r.events]
        dead = [
            dead_letter(m.topic, rej.reason, rej.raw)
            for m, r in zip(group, results, strict=True)
            for rej in r.rejected
        ]
        return events, dead

    def _store_is_up(self) -> bool:
        try:
            self.store.write([], [])
            return True
        except Exception:  # noqa: BLE001 - any failure means: not up
            return False

    def _write_one_by_one(self, group: list[_Msg], results: list[Validated]) -> int:
        new = 0
        for i, (m, r) in enumerate(zip(group, results, strict=True)):
            try:
                new += self.store.write(*self._rows([m], [r]))
            except Exception as exc:  # noqa: BLE001 - this message is what the store refuses
                reason = f"central store refused the message: {type(exc).__name__}: {exc}"[:2000]
                log.error("dead-lettering a message from %s: %s", m.topic, reason)
                settled = r.settled_seqs
                results[i] = Validated(
                    store=r.store,
                    device=r.device,
                    batch=r.batch,
                    rejected=[Rejected(reason, m.payload)],
                    settled_seqs=settled,
                )
                self.store.write(*self._rows([m], [results[i]]))
        return new

    def _next_group(self) -> _Group | None:
        """Up to ``max_messages_per_write`` queued messages, validated, their rows prepared."""
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return None
        group = [first]
        while len(group) < self.max_messages_per_write:
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        limit = self.max_message_bytes
        item = _Group(group, [validate_message(m.topic, m.payload, limit) for m in group])
        try:
            item.prepared = self.store.prepare(*self._rows(item.messages, item.results))
        except Exception:  # the writer's plain write path reports and handles it
            log.exception("preparing a group of %d messages failed", len(group))
        return item

    def _validate_loop(self) -> None:
        while not self._stop.is_set():
            item = self._next_group()
            if item is None:
                continue
            while not self._stop.is_set():
                try:
                    self._validated.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._validated.get(timeout=0.1)
            except queue.Empty:
                continue
            self._handle_until_done(item)

    def _work_loop(self) -> None:
        """Both halves in one thread: for stores whose writes gain nothing from the overlap."""
        while not self._stop.is_set():
            item = self._next_group()
            if item is not None:
                self._handle_until_done(item)

    def _handle_until_done(self, item: _Group) -> None:
        while not self._stop.is_set():
            try:
                self._handle(item)
                return
            except Exception:  # the writer thread must survive; the group is retried
                log.exception("ingest failed on a group of %d messages; retrying", len(item.messages))
                self._stop.wait(1.0)

    def _handle(self, item: _Group) -> None:
        group, results = item.messages, item.results
        new = self._write_group(group, results, item.prepared)
        if new is None:
            return  # stopping: nothing acked, the broker redelivers to the next ingest
        events = [ev for r in results for ev in r.events]
        dead = [rej for r in results for rej in r.rejected]
        self._commits += 1
        if self.crash_after_commits is not None and self._commits >= self.crash_after_commits:
            log.error("fault injection: SIGKILL after commit %d, before acks", self._commits)
            os.kill(os.getpid(), signal.SIGKILL)
        self.stats.messages += len(group)
        self.stats.events_new += new
        self.stats.events_duplicate += len(events) - new
        self.stats.dead_letters += len(dead)
        for m, r in zip(group, results, strict=True):
            for rej in r.rejected:
                log.warning("dead letter from %s: %s (%d bytes)", m.topic, rej.reason, len(rej.raw))
        if self.store.durable_on_commit:
            self._acknowledge(group, results)
            return
        while not self._stop.is_set():
            try:
                self._committed.put((group, results), timeout=0.1)
                return
            except queue.Full:
                continue
        # Stopping with the acker behind: left unacknowledged, the broker redelivers the messages.

    def _ack_loop(self, writers: list[threading.Thread]) -> None:
        """Sync the store, then acknowledge every group committed before the sync began."""
        while True:
            try:
                batch = [self._committed.get(timeout=0.1)]
            except queue.Empty:
                if self._stop.is_set() and not any(t.is_alive() for t in writers):
                    return  # the writers are done and everything they committed is acked
                continue
            while True:
                try:
                    batch.append(self._committed.get_nowait())
                except queue.Empty:
                    break
            try:
                self.store.sync()
            except Exception as exc:  # noqa: BLE001 - whatever the disk said, nothing is acked
                self.failed = f"central store sync failed: {type(exc).__name__}: {exc}"
                self.stats.last_error = self.failed
                log.critical("%s; acknowledging nothing more and stopping the ingest", self.failed)
                self._stop.set()
                return
            self.stats.syncs += 1
            for group, results in batch:
                try:
                    self._acknowledge(group, results)
                except Exception:  # the acker must survive; an unacked message is redelivered
                    log.exception("acknowledging a group of %d messages failed", len(group))

    def _acknowledge(self, group: list[_Msg], results: list[Validated]) -> None:
        """PUBACK each message, then ack each device's batch (only for durably committed groups)."""
        for m in group:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)
        for r in results:
            if r.store is not None and r.device is not None and r.batch is not None and r.settled_seqs:
                ack = {"v": 1, "batch": r.batch, "seqs": seq_ranges(r.settled_seqs)}
                self._client.publish(topics.ACKS.for_device(r.store, r.device), orjson.dumps(ack), qos=1)
                self.stats.acks_sent += 1
            if self.on_write is not None:
                self.on_write(r)
