"""Production central store on PostgreSQL.

Hot path, one transaction per ``write``, COPY in text format (built here as one bytes buffer):

1. optimistic: COPY the batch straight into the real tables, then COMMIT. A batch is nearly always
   new events, and this costs the server about half of the staged path (measured 6.7 -> 3.5
   server CPU us per event, bench/sync_throughput.py);
2. if any event is already there (a device's resend, an ingest killed between commit and ack),
   that COPY fails on the primary key and is rolled back whole, and the batch goes the staged
   way: COPY into per-session TEMP staging tables, ``INSERT ... SELECT ... ON CONFLICT (event_id)
   DO NOTHING`` into the real tables, COMMIT. Either way a batch is all in or all out.

Lost connections (PostgreSQL restarted, backend terminated): ``write`` either commits the whole
batch or raises, so the ingest withholds the ack and the device resends. If the connection turns
out to be dead *before* COMMIT was sent, nothing can have been committed, so ``write`` reconnects
and retries once; if it dies during COMMIT the outcome is unknown and ``write`` raises (a resend is
harmless: the insert is idempotent). A later call always starts on a fresh connection.

PostgreSQL text cannot hold NUL characters: an event carrying U+0000 in a text field makes the
whole batch fail (see docs/central_store.md for the proposed wire-level fix).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

from sync.central.store import (
    DEAD_LETTER_MAX_BYTES,
    FLEET_FIELDS,
    DeadLetter,
    EventKey,
    FleetRow,
    FleetUpdate,
)
from sync.central.stores import TABLE_OF_KIND, kind_columns
from sync.stored import FootfallEvent, HealthEvent, ScanEvent, StoredEvent

_SQL_TYPES: Final[dict[str, str]] = {
    "event_id": "uuid",
    "store": "text",
    "device": "text",
    "seq": "bigint",
    "ts": "timestamptz",
    "camera": "text",
    "code_kind": "text",
    "rule": "text",
    "symbology": "text",
    "text": "text",
    "data_b64": "text",
    "truncated": "boolean",
    "pseudonymised": "boolean",
    "fields": "jsonb",
    "line": "text",
    "window_start": "timestamptz",
    "window_s": "double precision",
    "in_count": "integer",
    "out_count": "integer",
    "covered": "boolean",
    "seconds_live": "double precision",
    "frames_processed": "bigint",
    "frames_dropped": "bigint",
    "status": "text",
    "component": "text",
    "message": "text",
    "metrics": "jsonb",
}
_NULLABLE: Final = frozenset({"rule", "text", "data_b64"})


def _event_table_ddl(kind: str) -> str:
    table = TABLE_OF_KIND[kind]
    columns = [
        f"{c} {_SQL_TYPES[c]}{' PRIMARY KEY' if c == 'event_id' else ''}"
        f"{'' if c in _NULLABLE else ' NOT NULL'}"
        for c in kind_columns(kind)
    ]
    columns.append("received_at timestamptz NOT NULL DEFAULT now()")
    return f"CREATE TABLE {table} ({', '.join(columns)})"


_MIGRATION_1: Final = (
    *(_event_table_ddl(kind) for kind in TABLE_OF_KIND),
    """CREATE TABLE dead_letters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at timestamptz NOT NULL,
        topic text NOT NULL,
        reason text NOT NULL,
        payload bytea NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL
    )""",
)
# The fleet table: one row per device, fed by sync.central.fleet.
_MIGRATION_2: Final = (
    """CREATE TABLE fleet (
        store text NOT NULL,
        device text NOT NULL,
        state text,
        last_seen timestamptz,
        state_changed_at timestamptz,
        software text,
        config_version bigint,
        config_hash text,
        config_result text,
        backlog_events bigint,
        backlog_bytes bigint,
        backlog_oldest_age_s double precision,
        clock_offset_s double precision,
        heartbeat_s double precision,
        opening_hours jsonb,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (store, device)
    )""",
)
# Integer schema versions, applied in order; never edit a released one, append a new one.
MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = ((1, _MIGRATION_1), (2, _MIGRATION_2))
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
_MIGRATION_LOCK_SQL: Final = (
    b"SELECT pg_advisory_xact_lock(hashtext('omni_central_schema:' || current_schema()))"
)


def _stage(kind: str) -> str:
    return f"stage_{TABLE_OF_KIND[kind]}"


def _staging_ddl(kind: str) -> str:
    columns = ", ".join(f"{c} {_SQL_TYPES[c]}" for c in kind_columns(kind))
    # ON COMMIT DELETE ROWS empties it at every commit (and a rollback discards the COPY anyway).
    return f"CREATE TEMP TABLE IF NOT EXISTS {_stage(kind)} ({columns}) ON COMMIT DELETE ROWS"


_COPY_SQL: Final = {
    kind: f"COPY {_stage(kind)} ({', '.join(kind_columns(kind))}) FROM STDIN" for kind in TABLE_OF_KIND
}
_DIRECT_COPY_SQL: Final = {
    kind: f"COPY {TABLE_OF_KIND[kind]} ({', '.join(kind_columns(kind))}) FROM STDIN" for kind in TABLE_OF_KIND
}
_INSERT_SQL: Final = {
    kind: (
        f"INSERT INTO {TABLE_OF_KIND[kind]} ({', '.join(kind_columns(kind))}) "  # noqa: S608 - identifiers come from the fixed layout, never from input
        f"SELECT {', '.join(kind_columns(kind))} FROM {_stage(kind)} ON CONFLICT (event_id) DO NOTHING"
    )
    for kind in TABLE_OF_KIND
}
_INSERT_DEAD_SQL: Final = (
    "INSERT INTO dead_letters (received_at, topic, reason, payload, size, sha256) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
_FLEET_COLUMNS: Final = ("store", "device", "last_seen", "state_changed_at", *FLEET_FIELDS, "updated_at")
_UPSERT_FLEET_SQL: Final = (
    "INSERT INTO fleet "  # noqa: S608 - identifiers come from the fixed layout, never from input
    f"({', '.join(_FLEET_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_FLEET_COLUMNS))}) "
    "ON CONFLICT (store, device) DO UPDATE SET "
    "last_seen = GREATEST(fleet.last_seen, excluded.last_seen), "
    "state_changed_at = CASE WHEN excluded.state IS NOT NULL AND excluded.state IS DISTINCT FROM fleet.state "
    "THEN excluded.updated_at ELSE fleet.state_changed_at END, "
    + ", ".join(f"{c} = coalesce(excluded.{c}, fleet.{c})" for c in FLEET_FIELDS)
    + ", updated_at = excluded.updated_at"
)


# -- COPY text format ------------------------------------------------------------------------
# In text format a row is tab-separated fields ending in newline, NULL is \N, and backslash,
# tab, newline and carriage return inside a value must be written as \\, \t, \n and \r.


def _esc(s: str) -> str:
    # Four substring tests are cheaper than one str.translate (measured 135 vs 650 ns) and the
    # common value has none of these characters.
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\t" in s:
        s = s.replace("\t", "\\t")
    if "\n" in s:
        s = s.replace("\n", "\\n")
    if "\r" in s:
        s = s.replace("\r", "\\r")
    return s


def _esc_null(s: str | None) -> str:
    return "\\N" if s is None else _esc(s)


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the central store only takes timezone-aware times")
    # orjson's RFC 3339 writer is ~3x cheaper than isoformat(); PostgreSQL parses the offset.
    return orjson.dumps(value)[1:-1].decode()


def _bool(value: bool) -> str:
    return "t" if value else "f"


def _json(value: dict[str, Any]) -> str:
    return _esc(orjson.dumps(value).decode()) if value else "{}"


def _scan_line(e: ScanEvent) -> str:
    p = e.payload
    return (
        f"{e.id}\t{_esc(e.store)}\t{_esc(e.device)}\t{int(e.seq)}\t{_ts(e.ts)}\t"
        f"{_esc(p.camera)}\t{_esc(p.code_kind)}\t{_esc_null(p.rule)}\t"
        f"{_esc(p.symbology)}\t{_esc_null(p.text)}\t"
        f"{_esc_null(p.data_b64)}\t{_bool(p.truncated)}\t"
        f"{_bool(p.pseudonymised)}\t{_json(p.fields)}\n"
    )


def _footfall_line(e: FootfallEvent) -> str:
    p = e.payload
    return (
        f"{e.id}\t{_esc(e.store)}\t{_esc(e.device)}\t{int(e.seq)}\t{_ts(e.ts)}\t"
        f"{_esc(p.camera)}\t{_esc(p.line)}\t{_ts(p.window_start)}\t{float(p.window_s)!r}\t"
        f"{int(p.in_count)}\t{int(p.out_count)}\t{_bool(p.covered)}\t"
        f"{float(p.seconds_live)!r}\t{int(p.frames_processed)}\t{int(p.frames_dropped)}\n"
    )


def _health_line(e: HealthEvent) -> str:
    p = e.payload
    return (
        f"{e.id}\t{_esc(e.store)}\t{_esc(e.device)}\t{int(e.seq)}\t{_ts(e.ts)}\t"
        f"{_esc(p.status)}\t{_esc(p.component)}\t{_esc(p.message)}\t"
        f"{_json(p.metrics)}\n"
    )


_LINE_BUILDERS: Final[dict[type, tuple[str, Callable[[Any], str]]]] = {
    ScanEvent: ("scan", _scan_line),
    FootfallEvent: ("footfall", _footfall_line),
    HealthEvent: ("health", _health_line),
}


def encode_copy(events: Sequence[StoredEvent]) -> dict[str, bytes]:
    """The COPY text-format data of a batch, per event kind (exposed for tests and the bench)."""
    lines: dict[str, list[str]] = {}
    for e in events:
        try:
            kind, build = _LINE_BUILDERS[type(e)]
        except KeyError:
            raise ValueError(f"not a stored event: {type(e).__name__}") from None
        kind_lines = lines.get(kind)
        if kind_lines is None:
            kind_lines = lines[kind] = []
        kind_lines.append(build(e))
    return {kind: "".join(kind_lines).encode() for kind, kind_lines in lines.items()}


@dataclass(frozen=True, slots=True)
class PreparedPostgres:
    """The COPY data of one write, encoded ahead (see ``PostgresCentralStore.prepare``)."""

    copy_data: dict[str, bytes]
    dead_rows: list[tuple[Any, ...]]


class _LostBeforeCommit(psycopg.OperationalError):
    """The connection died before COMMIT was sent, so nothing of the batch can be committed."""


class PostgresCentralStore:
    """The CentralStore protocol on PostgreSQL (see the module docstring for failure semantics).

    Safe to share between threads: every call takes the store's lock (one connection).
    """

    # The ingest validates the next group while the server works on this one.
    pipelined_writes = True
    durable_on_commit = True  # a COMMIT returns once PostgreSQL has flushed its WAL (set per session)
    # 5,000 events per COPY and COMMIT with 500-event batches: with 5 the figures dropped (one
    # worker 81.5k against 103.4k events/s, two workers 125.3k against 131.6k; sync_throughput).
    messages_per_write = 10

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self.staged_writes = 0  # writes that found an event already stored (resends)
        self.migrate()

    # -- connection -----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        """The live connection, opening a new one (with its staging tables) when needed."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._discard()
        conn = psycopg.connect(self.url, connect_timeout=max(1, round(self.connect_timeout)))
        try:
            set_json_loads(orjson.loads, conn)
            conn.execute("SET TIME ZONE 'UTC'")  # timestamptz results come back in UTC
            # Acks follow commits: a server configured with synchronous_commit=off must not make
            # this session's commits return before they are durable.
            conn.execute("SET synchronous_commit = on")
            for kind in TABLE_OF_KIND:
                conn.execute(_staging_ddl(kind))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # already dead; nothing left to release
                self._conn.close()
            self._conn = None

    def _rollback(self, conn: psycopg.Connection[Any]) -> None:
        if conn.broken or conn.closed:
            self._discard()
            return
        try:
            conn.rollback()
        except psycopg.Error:
            self._discard()

    # -- schema -------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations (each in its own transaction); return the schema version.

        Running it again is a no-op. A transaction-scoped advisory lock per schema serialises
        concurrent starters, so two ingests cannot both apply the same version.
        """
        with self._lock:
            conn = self._connection()
            try:
                for version, statements in MIGRATIONS:
                    with conn.cursor() as cur:
                        cur.execute(_MIGRATION_LOCK_SQL)
                        cur.execute(
                            "CREATE TABLE IF NOT EXISTS schema_version "
                            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                        )
                        cur.execute("SELECT 1 FROM schema_version WHERE version = %s", (version,))
                        if cur.fetchone() is None:
                            for statement in statements:
                                cur.execute(statement.encode())
                            cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                    conn.commit()
                return self._schema_version(conn)
            except BaseException:
                self._rollback(conn)
                raise

    def schema_version(self) -> int:
        with self._lock:
            return self._schema_version(self._connection())

    def _schema_version(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        conn.commit()
        assert row is not None
        return int(row[0])

    # -- writes -------------------------------------------------------------------------------

    def write(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> int:
        """Store events and dead letters in one transaction; return how many events were new."""
        return self.write_prepared(self.prepare(events, dead))

    def prepare(self, events: Sequence[StoredEvent], dead: Sequence[DeadLetter] = ()) -> PreparedPostgres:
        """Encode the COPY data of a write (pure Python, no database access; any thread)."""
        dead_rows = [
            (d.received_at, d.topic, d.reason, d.payload[:DEAD_LETTER_MAX_BYTES], d.size, d.sha256)
            for d in dead
        ]
        return PreparedPostgres(encode_copy(events), dead_rows)

    def write_prepared(self, prepared: PreparedPostgres) -> int:
        """COPY, insert and commit a prepared write; return how many events were new."""
        data, dead_rows = prepared.copy_data, prepared.dead_rows
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return self._write_batch(conn, data, dead_rows)
                except _LostBeforeCommit:
                    self._discard()
                    if attempt == 1:
                        continue  # died before COMMIT was sent: nothing committed, safe to redo once
                    raise
                except psycopg.Error:
                    self._rollback(conn)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_batch(
        self, conn: psycopg.Connection[Any], data: dict[str, bytes], dead_rows: list[tuple[Any, ...]]
    ) -> int:
        if data:
            try:
                return self._write_direct(conn, data, dead_rows)
            except psycopg.errors.UniqueViolation:
                # Some event is already stored (a resend): nothing of this transaction is
                # committed; the staged path skips what is there and adds the rest.
                conn.rollback()
                self.staged_writes += 1
        return self._write_staged(conn, data, dead_rows)

    def _copy(self, conn: psycopg.Connection[Any], sql: dict[str, str], data: dict[str, bytes]) -> int:
        try:
            rows = 0
            with conn.cursor() as cur:
                for kind, buffer in data.items():
                    with cur.copy(sql[kind].encode()) as copy:
                        copy.write(buffer)
                    rows += cur.rowcount
            return rows
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _LostBeforeCommit(str(exc)) from exc
            raise

    def _write_direct(
        self, conn: psycopg.Connection[Any], data: dict[str, bytes], dead_rows: list[tuple[Any, ...]]
    ) -> int:
        """COPY straight into the event tables, then dead letters and COMMIT pipelined."""
        new = self._copy(conn, _DIRECT_COPY_SQL, data)
        self._after_copy(conn)
        with conn.pipeline():
            if dead_rows:
                with conn.cursor() as dcur:
                    dcur.executemany(_INSERT_DEAD_SQL.encode(), dead_rows)
            conn.commit()
        return new

    def _write_staged(
        self, conn: psycopg.Connection[Any], data: dict[str, bytes], dead_rows: list[tuple[Any, ...]]
    ) -> int:
        """COPY into staging, then insert from staging and COMMIT pipelined (one round trip)."""
        self._copy(conn, _COPY_SQL, data)
        self._after_copy(conn)
        inserts = [(conn.cursor(), kind) for kind in data]
        try:
            with conn.pipeline():
                for cur, kind in inserts:
                    cur.execute(_INSERT_SQL[kind].encode(), prepare=True)
                if dead_rows:
                    with conn.cursor() as dcur:
                        dcur.executemany(_INSERT_DEAD_SQL.encode(), dead_rows)
                conn.commit()
            return sum(cur.rowcount for cur, _ in inserts)
        finally:
            for cur, _ in inserts:
                cur.close()

    def _after_copy(self, conn: psycopg.Connection[Any]) -> None:
        """Fault-injection seam for tests (a no-op): runs after the COPY, before insert + COMMIT."""

    # -- reads --------------------------------------------------------------------------------

    def _query(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(query.encode(), params).fetchall()
                conn.commit()
            except BaseException:
                self._rollback(conn)
                raise
            return rows

    def event_keys(self) -> list[EventKey]:
        query = " UNION ALL ".join(
            f"SELECT event_id::text, store, device, seq, '{kind}' FROM {table}"  # noqa: S608 - identifiers come from the fixed layout, never from input
            for kind, table in TABLE_OF_KIND.items()
        )
        return [EventKey(*row) for row in self._query(query)]

    def count_events(self) -> int:
        query = "SELECT " + " + ".join(f"(SELECT count(*) FROM {t})" for t in TABLE_OF_KIND.values())  # noqa: S608 - identifiers come from the fixed layout, never from input
        return int(self._query(query)[0][0])

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._query(
            "SELECT received_at, topic, reason, payload, size, sha256 FROM dead_letters ORDER BY id"
        )
        return [DeadLetter(r[0].astimezone(UTC), r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def footfall_per_store_hour(self) -> list[tuple[str, datetime, int, int, int, int]]:
        # COLLATE "C" orders stores by code point, the same as SQLite's default BINARY collation.
        rows = self._query("""
            SELECT store, date_trunc('hour', window_start, 'UTC') AS hour,
                   sum(in_count)::bigint, sum(out_count)::bigint,
                   count(*) FILTER (WHERE covered), count(*) FILTER (WHERE NOT covered)
            FROM footfall_windows GROUP BY store, hour ORDER BY store COLLATE "C", hour
        """)
        return [(s, h.astimezone(UTC), int(i), int(o), int(c), int(u)) for s, h, i, o, c, u in rows]

    def scans_per_kind_store_day(self) -> list[tuple[str, str, str, int]]:
        rows = self._query("""
            SELECT store, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, code_kind, count(*)
            FROM scans GROUP BY store, day, code_kind
            ORDER BY store COLLATE "C", day, code_kind COLLATE "C"
        """)
        return [(s, d, k, int(n)) for s, d, k, n in rows]

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """Every stored row of one event kind, decoded to Python types, for tests and tools.

        Same shape as ``SqliteCentralStore.rows``: the table's columns, ``event_id`` as text,
        datetimes timezone-aware UTC, jsonb as dicts. Ordered by (store, device, seq, event_id).
        """
        columns = (*kind_columns(kind), "received_at")
        select = ", ".join("event_id::text" if c == "event_id" else c for c in columns)
        rows = self._query(
            f"SELECT {select} FROM {TABLE_OF_KIND[kind]} "  # noqa: S608 - identifiers come from the fixed layout, never from input
            'ORDER BY store COLLATE "C", device COLLATE "C", seq, event_id'
        )
        out = []
        for r in rows:
            row = dict(zip(columns, r, strict=True))
            for c in ("ts", "window_start", "received_at"):
                if isinstance(row.get(c), datetime):
                    row[c] = row[c].astimezone(UTC)
            out.append(row)
        return out

    # -- fleet -------------------------------------------------------------------------------

    def update_fleet(self, update: FleetUpdate) -> None:
        now = datetime.now(UTC)
        values: list[Any] = [update.store, update.device, update.seen_at, now if update.state else None]
        for c in FLEET_FIELDS:
            v = getattr(update, c)
            values.append(Jsonb(v) if c == "opening_hours" and v is not None else v)
        values.append(now)
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(_UPSERT_FLEET_SQL.encode(), values)
                conn.commit()
            except BaseException:
                self._rollback(conn)
                raise

    def fleet(self) -> list[FleetRow]:
        columns = [c for c in _FLEET_COLUMNS if c != "updated_at"]
        rows = self._query(
            f"SELECT {', '.join(columns)} FROM fleet "  # noqa: S608 - fixed identifiers
            'ORDER BY store COLLATE "C", device COLLATE "C"'
        )
        out = []
        for r in rows:
            d = dict(zip(columns, r, strict=True))
            for c in ("last_seen", "state_changed_at"):
                if d[c] is not None:
                    d[c] = d[c].astimezone(UTC)
            out.append(FleetRow(**d))
        return out

    def sync(self) -> None:
        """Nothing to do: a COMMIT returns once it is durable (the session sets ``synchronous_commit``)."""

    def close(self) -> None:
        with self._lock:
            self._discard()
