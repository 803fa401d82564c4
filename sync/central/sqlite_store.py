"""Embedded central store on SQLite (the default when no PostgreSQL URL is configured).

Durability: WAL. By default ``synchronous=FULL``: ``write`` returns once its commit is on disk. The
ingest acknowledges a batch to the device only after that, and the device then deletes the events;
with ``NORMAL`` alone a power cut could undo the last commits *after* their ack, i.e. lose events
for good. With ``group_commit=True`` (what the ingest opens) commits are written with
``synchronous=NORMAL`` and ``sync()`` fsyncs the WAL file, which makes every commit written before
it durable: the ingest acks a group only after a ``sync()`` that began after the group's commit.
One fsync then covers several groups and the next group's work goes on while the disk writes
(measured in docs/central_store.md), with the same guarantee for what is acknowledged.

Timestamps are stored as ISO 8601 text in UTC, as orjson writes it: ``2024-05-01T10:00:00+00:00``
or, with a fraction, ``2024-05-01T10:00:00.123000+00:00``. Readable, sortable as text ('+' sorts
before '.', so a whole second sorts before the same second with a fraction), and the hour/day
buckets of the report queries are plain prefixes.

Driver: APSW (``apsw``), not the standard ``sqlite3`` module. It bundles a current SQLite and binds
parameters with far less per-row work; measured on the hot path of the ingest (validate, build the
rows, insert 500-event batches into the scans table, one thread; ``bench/ingest_hot_path.py``):
3.83-3.99 us of CPU per event with APSW against 6.01 with ``sqlite3`` (and 9.1 with
``pysqlite3-binary``), see docs/central_store.md.
Every connection to the central file in this process goes through this class, so two SQLite
libraries never hold POSIX locks on the same file in one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import apsw
import msgspec
import orjson

from sync.central.store import (
    DEAD_LETTER_MAX_BYTES,
    FLEET_FIELDS,
    DeadLetter,
    EventKey,
    FleetRow,
    FleetUpdate,
)
from sync.central.stores import (
    BOOL_COLUMNS,
    DATETIME_COLUMNS,
    JSON_COLUMNS,
    TABLE_OF_KIND,
    kind_columns,
)
from sync.stored import FootfallEvent, HealthEvent, ScanEvent, StoredEvent

log = logging.getLogger(__name__)

Synchronous = Literal["FULL", "NORMAL"]

# How long an event write waits for its turn (and SQLite for its lock) before raising BusyError.
TURN_TIMEOUT_S = 10.0

_ENVELOPE_TYPES: dict[str, type] = {"event_id": str, "store": str, "device": str, "seq": int, "ts": str}
_PAYLOAD_TYPES: dict[str, dict[str, type]] = {
    "scan": {
        "camera": str,
        "code_kind": str,
        "rule": str,
        "symbology": str,
        "text": str,
        "data_b64": str,
        "truncated": int,
        "pseudonymised": int,
        "fields": str,
    },
    "footfall": {
        "camera": str,
        "line": str,
        "window_start": str,
        "window_s": float,
        "in_count": int,
        "out_count": int,
        "covered": int,
        "seconds_live": float,
        "frames_processed": int,
        "frames_dropped": int,
    },
    "health": {"status": str, "component": str, "message": str, "metrics": str},
}
_NULLABLE: Final = frozenset({"rule", "text", "data_b64"})


_SQL_TYPES: Final[dict[type, str]] = {str: "TEXT", int: "INTEGER", float: "REAL", bytes: "BLOB"}


def _create_table(
    conn: apsw.Connection,
    table: str,
    columns: dict[str, type],
    *,
    not_null: Sequence[str],
    pk: str | tuple[str, ...] | None = None,
) -> None:
    """CREATE TABLE from a column -> Python type map (the layout sqlite-utils used to generate)."""
    lines = []
    for name, py_type in columns.items():
        spec = f'"{name}" {_SQL_TYPES[py_type]}'
        if pk == name:
            spec += " PRIMARY KEY"
        elif name in not_null:
            spec += " NOT NULL"
        lines.append(spec)
    if isinstance(pk, tuple):
        lines.append("PRIMARY KEY (" + ", ".join(f'"{c}"' for c in pk) + ")")
    conn.execute(f'CREATE TABLE "{table}" (\n   ' + ",\n   ".join(lines) + "\n)")


def _create_event_table(conn: apsw.Connection, kind: str) -> None:
    table = TABLE_OF_KIND[kind]
    columns = {**_ENVELOPE_TYPES, **_PAYLOAD_TYPES[kind], "received_at": str}
    _create_table(conn, table, columns, not_null=[c for c in columns if c not in _NULLABLE])
    # A rowid table with a UNIQUE index on the id: measured 81k vs 43k events/s for WITHOUT ROWID.
    conn.execute(f'CREATE UNIQUE INDEX "{table}_event_id"\n    ON "{table}" ("event_id")')


def _migration_1(conn: apsw.Connection) -> None:
    for kind in TABLE_OF_KIND:
        _create_event_table(conn, kind)
    _create_table(
        conn,
        "dead_letters",
        {
            "id": int,
            "received_at": str,
            "topic": str,
            "reason": str,
            "payload": bytes,
            "size": int,
            "sha256": str,
        },
        pk="id",
        not_null=["received_at", "topic", "reason", "payload", "size", "sha256"],
    )


def _migration_2(conn: apsw.Connection) -> None:
    """The fleet table: one row per device, fed by sync.central.fleet."""
    _create_table(
        conn,
        "fleet",
        {
            "store": str,
            "device": str,
            "state": str,
            "last_seen": str,
            "state_changed_at": str,
            "software": str,
            "config_version": int,
            "config_hash": str,
            "config_result": str,
            "backlog_events": int,
            "backlog_bytes": int,
            "backlog_oldest_age_s": float,
            "clock_offset_s": float,
            "heartbeat_s": float,
            "opening_hours": str,
            "updated_at": str,
        },
        pk=("store", "device"),
        not_null=["store", "device", "updated_at"],
    )


# Integer schema versions, applied in order; never edit a released one, append a new one.
MIGRATIONS: Final[tuple[tuple[int, Callable[[apsw.Connection], None]], ...]] = (
    (1, _migration_1),
    (2, _migration_2),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


def _utc_iso(value: datetime) -> str:
    """UTC ISO 8601 text; naive datetimes are refused rather than guessed.

    orjson's RFC 3339 writer costs a third of ``isoformat()`` (measured 0.36 vs 0.92 us), and the
    ingest hands over UTC times, so the conversion runs only for other offsets.
    """
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the central store only takes timezone-aware times")
    text = orjson.dumps(value)[1:-1].decode()
    if not text.endswith("+00:00"):
        text = orjson.dumps(value.astimezone(UTC))[1:-1].decode()
    return text


_TIME_ENCODER: Final = msgspec.json.Encoder()
_TEXTS: Final = msgspec.json.Decoder(list[str])


def _utc_iso_many(values: list[datetime]) -> list[str]:
    """``_utc_iso`` of each value, in two C calls for the whole list when all of them are UTC.

    msgspec spells UTC as ``Z`` where orjson writes ``+00:00`` (same digits otherwise, always six
    for a fraction); the stored text keeps ``+00:00`` so that old and new rows sort alike. Measured
    0.77 us per event one by one against ~0.15 us in bulk.
    """
    encoded = _TIME_ENCODER.encode(values)
    texts = _TEXTS.decode(encoded.replace(b'Z"', b'+00:00"'))
    if encoded.count(b'Z"') != len(values):  # other offsets or naive times: one by one
        for i, text in enumerate(texts):
            if not text.endswith("+00:00"):
                texts[i] = _utc_iso(values[i])
    return texts


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() if value else "{}"


def _scan_row(e: ScanEvent, ts: str, received_at: str) -> tuple[Any, ...]:
    p = e.payload
    return (
        e.id,
        e.store,
        e.device,
        e.seq,
        ts,
        p.camera,
        p.code_kind,
        p.rule,
        p.symbology,
        p.text,
        p.data_b64,
        p.truncated,
        p.pseudonymised,
        _json(p.fields),
        received_at,
    )


def _footfall_row(e: FootfallEvent, ts: str, received_at: str) -> tuple[Any, ...]:
    p = e.payload
    return (
        e.id,
        e.store,
        e.device,
        e.seq,
        ts,
        p.camera,
        p.line,
        _utc_iso(p.window_start),
        p.window_s,
        p.in_count,
        p.out_count,
        p.covered,
        p.seconds_live,
        p.frames_processed,
        p.frames_dropped,
        received_at,
    )


def _health_row(e: HealthEvent, ts: str, received_at: str) -> tuple[Any, ...]:
    p = e.payload
    return (
        e.id,
        e.store,
        e.device,
        e.seq,
        ts,
        p.status,
        p.component,
        p.message,
        _json(p.metrics),
        received_at,
    )


_ROW_BUILDERS: Final[dict[type, tuple[str, Callable[[Any, str, str], tuple[Any, ...]]]]] = {
    ScanEvent: ("scan", _scan_row),
    FootfallEvent: ("footfall", _footfall_row),
    HealthEvent: ("health", _health_row),
}


def _insert_sql(kind: str) -> str:
    columns = (*kind_columns(kind), "received_at")
    return (
        f"INSERT OR IGNORE INTO {TABLE_OF_KIND[kind]} ({', '.join(columns)}) "  # noqa: S608 - identifiers come from the fixed layout, never from input
        f"VALUES ({', '.join('?' * len(columns))})"
    )


_INSERT_SQL: Final = {kind: _insert_sql(kind) for kind in TABLE_OF_KIND}
_INSERT_DEAD_SQL: Final = (
    "INSERT INTO dead_letters (received_at, topic, reason, payload, size, sha256) VALUES (?, ?, ?, ?, ?, ?)"
)
_FLEET_COLUMNS: Final = ("store", "device", "last_seen", "state_changed_at", *FLEET_FIELDS, "updated_at")
_UPSERT_FLEET_SQL: Final = (
    "INSERT INTO fleet "  # noqa: S608 - identifiers come from the fixed layout, never from input
    f"({', '.join(_FLEET_COLUMNS)}) VALUES ({', '.join('?' * len(_FLEET_COLUMNS))}) "
    "ON CONFLICT (store, device) DO UPDATE SET "
    "last_seen = CASE WHEN fleet.last_seen IS NULL OR excluded.last_seen > fleet.last_seen "
    "THEN excluded.last_seen ELSE fleet.last_seen END, "
    "state_changed_at = CASE WHEN excluded.state IS NOT NULL AND excluded.state IS NOT fleet.state "
    "THEN excluded.updated_at ELSE fleet.state_changed_at END, "
    + ", ".join(f"{c} = coalesce(excluded.{c}, fleet.{c})" for c in FLEET_FIELDS)
    + ", updated_at = excluded.updated_at"
)


@dataclass(frozen=True, slots=True)
class PreparedSqlite:
    """The rows of one write, built ahead (see ``SqliteCentralStore.prepare``)."""

    by_kind: dict[str, list[tuple[Any, ...]]]
    dead_rows: list[tuple[Any, ...]]


class SqliteCentralStore:
    """The CentralStore protocol on one SQLite file (see the module docstring for durability).

    Safe to share between threads: every call takes the store's lock.
    """

    # One ingest thread validates and writes (see sync.central.ingest for the measurement).
    pipelined_writes = False
    # 2,500 events per transaction with 500-event batches: several groups per device's window of
    # batches in flight, so that receiving, writing, fsyncing and acknowledging overlap, also
    # with two workers taking turns (sync_throughput, 1M events, idle: one worker 143.0k/145.2k
    # events/s with 5, 144.5-147.3k with 10, 134.2k/134.9k with 50; two workers 172.2k/169.8k
    # with 5, 156.4-169.1k with 10). See docs/central_store.md.
    messages_per_write = 5

    def __init__(
        self, path: str | Path, *, synchronous: Synchronous = "FULL", group_commit: bool = False
    ) -> None:
        """Open (and migrate) the file.

        ``group_commit``: commits do not wait for the disk (``synchronous=NORMAL``); ``sync()``
        does, for every commit before it. Whoever acknowledges writes must call it first
        (``durable_on_commit`` is then False, which the ingest reads).
        """
        self.path = Path(path)
        self.durable_on_commit = not group_commit
        if group_commit:
            synchronous = "NORMAL"
        self._lock = threading.Lock()
        self._wal_lock = threading.Lock()
        self._wal_fd: int | None = None
        # The writers' turn-taking lock (see ``_take_turn``); None until the first write, -1 when
        # the file system refused it.
        self._turn_fd: int | None = None
        # APSW never opens transactions behind our back: every write below says BEGIN and COMMIT.
        self._conn = apsw.Connection(str(self.path))
        self._conn.set_busy_timeout(int(TURN_TIMEOUT_S * 1000))
        self._conn.execute("PRAGMA journal_mode=WAL").fetchall()
        self._conn.execute(f"PRAGMA synchronous={synchronous}").fetchall()
        # Checkpoint every ~40 MB of WAL instead of every 4 MB: the newest rows' pages are written
        # once per checkpoint instead of once per small checkpoint. Measured on the ingest's write
        # path: 3.84 vs 4.5-4.7 us of CPU per event, and 226k vs 185-196k events/s.
        self._conn.execute("PRAGMA wal_autocheckpoint=10000").fetchall()
        self.migrate()

    # -- schema -------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations (each in its own transaction); return the schema version.

        Running it again is a no-op: applied versions are recorded in ``schema_version``.
        """
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            for version, migration in MIGRATIONS:
                # BEGIN IMMEDIATE takes the write lock first, so two processes opening the same
                # file cannot both see version N-1 and both apply N.
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    applied = self._conn.execute(
                        "SELECT 1 FROM schema_version WHERE version = ?", (version,)
                    ).fetchone()
                    if applied is None:
                        migration(self._conn)
                        self._conn.execute(
                            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                            (version, _utc_iso(datetime.now(UTC))),
                        )
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            return self._schema_version()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of a read, as plain tuples (call with the lock held)."""
        return self._conn.execute(sql, params).fetchall()

    def schema_version(self) -> int:
        with self._lock:
            return self._schema_version()

    def _schema_version(self) -> int:
        row = self._conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        assert row is not None  # an aggregate always gives one row
        return int(row[0])

    # -- writes -------------------------------------------------------------------------------

    def write(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> int:
        """Store events and dead letters in one transaction; return how many events were new."""
        return self.write_prepared(self.prepare(events, dead))

    def prepare(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> PreparedSqlite:
        """Build the rows of a write (pure Python, no database access; any thread)."""
        received_at = _utc_iso(datetime.now(UTC))
        by_kind: dict[str, list[tuple[Any, ...]]] = {}
        for e in events:
            if type(e) not in _ROW_BUILDERS:
                raise ValueError(f"not a stored event: {type(e).__name__}")
        for e, ts in zip(events, _utc_iso_many([e.ts for e in events]), strict=True):
            kind, build = _ROW_BUILDERS[type(e)]
            rows = by_kind.get(kind)
            if rows is None:
                rows = by_kind[kind] = []
            rows.append(build(e, ts, received_at))
        dead_rows = [
            (_utc_iso(d.received_at), d.topic, d.reason, d.payload[:DEAD_LETTER_MAX_BYTES], d.size, d.sha256)
            for d in dead
        ]
        return PreparedSqlite(by_kind, dead_rows)

    def write_prepared(self, prepared: PreparedSqlite) -> int:
        """Insert prepared rows in one transaction; return how many events were new.

        The rows stay valid after a failure, so a write can be retried with the same object.
        """
        by_kind, dead_rows = prepared.by_kind, prepared.dead_rows
        with self._lock, self._writer_turn():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes()
                for kind, rows in by_kind.items():
                    conn.executemany(_INSERT_SQL[kind], rows)
                new = conn.total_changes() - before
                if dead_rows:
                    conn.executemany(_INSERT_DEAD_SQL, dead_rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return new

    @contextlib.contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Hold this process's turn to write for the ``with`` block (see ``_take_turn``)."""
        fd = self._take_turn()
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _take_turn(self) -> int | None:
        """Wait for this process's turn to write (the caller holds ``self._lock``); return the fd.

        Several ingest processes on one file (workers on one shared subscription) would otherwise
        meet in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... ms between tries while the
        other writer holds the lock for a whole group, and can miss its turn again and again. An
        exclusive ``flock`` on ``<file>-writer``, tried every 0.2-2 ms, takes the turn within about
        a millisecond of its release instead. After ``TURN_TIMEOUT_S`` (the busy timeout) it raises
        ``apsw.BusyError`` as SQLite would, so a writer stuck holding it shows up as failing writes
        in the log rather than a silent stall. It only orders the event writes; SQLite's own
        locking still guards every transaction (other writers, like the fleet table or the tools,
        do not take it). A file system that refuses it (read-only directory, no flock) leaves the
        writes to SQLite's busy handler, with one log line.
        """
        fd = self._turn_fd
        if fd is None:
            try:
                fd = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                log.warning("no writer turn lock next to %s (%s); writers wait in SQLite", self.path, exc)
                fd = -1
            self._turn_fd = fd
        if fd < 0:
            return None
        deadline = time.monotonic() + TURN_TIMEOUT_S
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise apsw.BusyError(
                        f"another writer held {self.path}-writer for {TURN_TIMEOUT_S:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
            except OSError as exc:
                log.warning("writer turn lock on %s failed (%s); writers wait in SQLite", self.path, exc)
                os.close(fd)
                self._turn_fd = -1
                return None

    # -- reads --------------------------------------------------------------------------------

    def event_keys(self) -> list[EventKey]:
        sql = " UNION ALL ".join(
            f"SELECT event_id, store, device, seq, '{kind}' FROM {table}"  # noqa: S608 - identifiers come from the fixed layout, never from input
            for kind, table in TABLE_OF_KIND.items()
        )
        with self._lock:
            return [EventKey(*row) for row in self._query(sql)]

    def count_events(self) -> int:
        sql = "SELECT " + " + ".join(f"(SELECT count(*) FROM {t})" for t in TABLE_OF_KIND.values())  # noqa: S608 - identifiers come from the fixed layout, never from input
        with self._lock:
            row = self._conn.execute(sql).fetchone()
        assert row is not None  # an aggregate always gives one row
        return int(row[0])

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            rows = self._query(
                "SELECT received_at, topic, reason, payload, size, sha256 FROM dead_letters ORDER BY id"
            )
        return [DeadLetter(datetime.fromisoformat(r[0]), r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def footfall_per_store_hour(self) -> list[tuple[str, datetime, int, int, int, int]]:
        # window_start is fixed-width UTC text, so its first 13 characters are the UTC hour.
        sql = """
            SELECT store, substr(window_start, 1, 13) AS hour,
                   sum(in_count), sum(out_count), sum(covered), count(*) - sum(covered)
            FROM footfall_windows GROUP BY store, hour ORDER BY store, hour
        """
        with self._lock:
            rows = self._query(sql)
        return [
            (store, datetime.fromisoformat(f"{hour}:00:00+00:00"), int(i), int(o), int(c), int(u))
            for store, hour, i, o, c, u in rows
        ]

    def scans_per_kind_store_day(self) -> list[tuple[str, str, str, int]]:
        sql = """
            SELECT store, substr(ts, 1, 10) AS day, code_kind, count(*)
            FROM scans GROUP BY store, day, code_kind ORDER BY store, day, code_kind
        """
        with self._lock:
            return [(s, d, k, int(n)) for s, d, k, n in self._query(sql)]

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """Every stored row of one event kind, decoded to Python types, for tests and tools.

        Keys are the table's columns (``event_id``, envelope, payload fields, ``received_at``);
        datetimes come back timezone-aware UTC, JSON columns as dicts, flags as bools. Ordered by
        (store, device, seq, event_id). Not for the hot path: it reads the whole table.
        """
        columns = (*kind_columns(kind), "received_at")
        sql = (
            f"SELECT {', '.join(columns)} FROM {TABLE_OF_KIND[kind]} "  # noqa: S608 - identifiers come from the fixed layout, never from input
            "ORDER BY store, device, seq, event_id"
        )
        with self._lock:
            raw = self._query(sql)
        return [_decode_row(dict(zip(columns, r, strict=True))) for r in raw]

    # -- fleet -------------------------------------------------------------------------------

    def update_fleet(self, update: FleetUpdate) -> None:
        now = _utc_iso(datetime.now(UTC))
        values: list[Any] = [
            update.store,
            update.device,
            None if update.seen_at is None else _utc_iso(update.seen_at),
            now if update.state is not None else None,
        ]
        for c in FLEET_FIELDS:
            v = getattr(update, c)
            values.append(orjson.dumps(v).decode() if c == "opening_hours" and v is not None else v)
        values.append(now)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(_UPSERT_FLEET_SQL, values)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def fleet(self) -> list[FleetRow]:
        columns = [c for c in _FLEET_COLUMNS if c != "updated_at"]
        sql = f"SELECT {', '.join(columns)} FROM fleet ORDER BY store, device"  # noqa: S608 - fixed identifiers
        with self._lock:
            raw = self._query(sql)
        rows = []
        for r in raw:
            d = dict(zip(columns, r, strict=True))
            for c in ("last_seen", "state_changed_at"):
                d[c] = None if d[c] is None else datetime.fromisoformat(d[c])
            d["opening_hours"] = None if d["opening_hours"] is None else orjson.loads(d["opening_hours"])
            rows.append(FleetRow(**d))
        return rows

    def sync(self) -> None:
        """Make every commit made so far durable: fsync the WAL file (its commits' frames).

        Called from another thread than the writes, on purpose: it takes no store lock, so the next
        transaction goes on while the disk writes. In ``FULL`` mode commits are durable already and
        this returns at once. An OSError (EIO, ENOSPC) is raised to the caller, which must then not
        acknowledge anything.
        """
        if self.durable_on_commit:
            return
        wal = f"{self.path}-wal"
        with self._wal_lock:
            fd = self._wal_fd
            if fd is not None and os.fstat(fd).st_ino != os.stat(wal).st_ino:
                # The WAL was replaced (SQLite does not while this connection is open); syncing
                # the old file would make nothing durable, so follow the path.
                os.close(fd)
                fd = self._wal_fd = None
            if fd is None:
                fd = self._wal_fd = os.open(wal, os.O_RDONLY)
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._turn_fd is not None and self._turn_fd >= 0:
                os.close(self._turn_fd)
            self._turn_fd = None
        with self._wal_lock:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    for column, value in row.items():
        if value is None:
            continue
        if column in DATETIME_COLUMNS:
            row[column] = datetime.fromisoformat(value)
        elif column in BOOL_COLUMNS:
            row[column] = bool(value)
        elif column in JSON_COLUMNS:
            row[column] = orjson.loads(value)
    return row
