"""One suite for both central store backends (SQLite in tmp_path, PostgreSQL in a private schema).

Every test states the exact rows or aggregates it expects, so a backend that drops, duplicates,
mangles or mis-buckets an event fails here.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import apsw
import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.central.pg_store import PostgresCentralStore
from sync.central.sqlite_store import SqliteCentralStore
from sync.central.store import DeadLetter, EventKey, StoredEvent
from sync.central.stores import open_central_store
from sync.stored import (
    FootfallEvent,
    FootfallPayload,
    HealthEvent,
    HealthPayload,
    ScanEvent,
    ScanPayload,
    kind_of,
    to_builtins,
)

Store = SqliteCentralStore | PostgresCentralStore
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))

# -- event builders -------------------------------------------------------------------------------

_seq = iter(range(1, 10**9))


def scan(
    store: str = "s1", ts: datetime = T0, code_kind: str = "product", device: str = "d1", **payload: Any
) -> ScanEvent:
    p: dict[str, Any] = {
        "camera": "door-1",
        "code_kind": code_kind,
        "rule": None,
        "symbology": "QRCode",
        "text": "https://shop.example/p/1",
        "data_b64": None,
        "truncated": False,
        "pseudonymised": False,
        "fields": {},
    }
    p.update(payload)
    return ScanEvent(
        id=str(uuid.uuid4()), store=store, device=device, seq=next(_seq), ts=ts, payload=ScanPayload(**p)
    )


def footfall(
    store: str = "s1",
    window_start: datetime = T0,
    in_count: int = 0,
    out_count: int = 0,
    covered: bool = True,
    device: str = "d1",
) -> FootfallEvent:
    return FootfallEvent(
        id=str(uuid.uuid4()),
        store=store,
        device=device,
        seq=next(_seq),
        ts=window_start + timedelta(minutes=15),
        payload=FootfallPayload(
            camera="door-1",
            line="entrance",
            window_start=window_start,
            window_s=900.0,
            in_count=in_count,
            out_count=out_count,
            covered=covered,
            seconds_live=900.0 if covered else 312.5,
            frames_processed=13500 if covered else 4687,
            frames_dropped=3,
        ),
    )


def health(store: str = "s1", device: str = "d1", **payload: Any) -> HealthEvent:
    p: dict[str, Any] = {"status": "ok", "component": "agent", "message": "", "metrics": {}}
    p.update(payload)
    return HealthEvent(
        id=str(uuid.uuid4()), store=store, device=device, seq=next(_seq), ts=T0, payload=HealthPayload(**p)
    )


def dead_letter(raw: bytes, reason: str = "invalid json", topic: str = "omni/v1/s1/d1/events") -> DeadLetter:
    return DeadLetter(
        received_at=datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        topic=topic,
        reason=reason,
        payload=raw,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def as_row(e: StoredEvent) -> dict[str, Any]:
    """What ``rows(kind)`` must return for an event (received_at left out)."""
    row: dict[str, Any] = {"event_id": e.id, "store": e.store, "device": e.device, "seq": e.seq, "ts": e.ts}
    row.update(msgspec.structs.asdict(e.payload))
    return row


def stored_rows(store: Store, kind: str) -> list[dict[str, Any]]:
    rows = store.rows(kind)
    for row in rows:
        received_at = row.pop("received_at")
        assert isinstance(received_at, datetime)
        assert received_at.utcoffset() == timedelta(0)
    return rows


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in rows}


# -- fixtures -------------------------------------------------------------------------------------

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (and migrates) a store on the same database each call; all are closed afterwards."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "central.db"

        def make() -> Store:
            opened.append(SqliteCentralStore(path))
            return opened[-1]
    else:
        url: str = request.getfixturevalue("pg_url")

        def make() -> Store:
            opened.append(PostgresCentralStore(url))
            return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()


# -- writes ---------------------------------------------------------------------------------------


def test_write_stores_exact_rows(store: Store) -> None:
    scans = [
        scan(rule="sku", text="0123", fields={"sku": "0123", "lot": "A7"}),
        scan(code_kind="member", text="mbr-hash", pseudonymised=True, truncated=True, symbology="DataMatrix"),
        scan(code_kind="other", text=None, data_b64="AAEC/w==", rule=""),
    ]
    windows = [footfall(in_count=4, out_count=2), footfall(covered=False)]
    beats = [
        health(
            status="degraded",
            component="decoder",
            message="fps low",
            metrics={"fps": 7.5, "frames": 12, "ok": False, "note": "x", "none": None},
        )
    ]
    assert store.write([*scans, *windows, *beats]) == 6

    assert stored_rows(store, "scan") == [as_row(e) for e in scans]
    assert stored_rows(store, "footfall") == [as_row(e) for e in windows]
    assert stored_rows(store, "health") == [as_row(e) for e in beats]
    assert store.count_events() == 6


def test_write_is_idempotent_on_event_id(store: Store) -> None:
    batch = [scan(), scan(), footfall(in_count=1), health()]
    assert store.write(batch) == 4
    before = {kind: stored_rows(store, kind) for kind in ("scan", "footfall", "health")}

    assert store.write(batch) == 0
    assert store.count_events() == 4
    assert {kind: stored_rows(store, kind) for kind in ("scan", "footfall", "health")} == before

    # A resend that overlaps: only the new one counts; a duplicate inside one batch lands once.
    extra = scan()
    assert store.write([batch[0], extra, extra, batch[2]]) == 1
    assert store.count_events() == 5


def test_event_keys_cover_every_kind(store: Store) -> None:
    batch = [scan(store="a", device="a1"), footfall(store="b", device="b1"), health(store="c", device="c1")]
    store.write(batch)
    expected = {EventKey(e.id, e.store, e.device, e.seq, kind_of(e)) for e in batch}
    keys = store.event_keys()
    assert len(keys) == 3
    assert set(keys) == expected


def test_empty_write_is_a_no_op(store: Store) -> None:
    assert store.write([]) == 0
    assert store.count_events() == 0
    assert store.dead_letters() == []


def test_failed_batch_stores_nothing(store: Store) -> None:
    good = [footfall(in_count=1), scan(), health()]
    bad = scan()
    bad.seq = 2**63  # fits neither SQLite INTEGER nor PostgreSQL bigint: fails inside the database
    with pytest.raises((OverflowError, psycopg.Error)):
        store.write([*good, bad], [dead_letter(b"{")])
    assert store.count_events() == 0
    assert store.dead_letters() == []
    # The store is still usable and the same good events then land in full.
    assert store.write(good, [dead_letter(b"{")]) == 3
    assert len(store.dead_letters()) == 1


def test_naive_datetimes_are_refused(store: Store) -> None:
    e = scan(ts=datetime(2025, 3, 1, 10, 0))  # naive on purpose
    with pytest.raises(ValueError, match="naive"):
        store.write([scan(), e])
    assert store.count_events() == 0


def test_unknown_kind_is_refused(store: Store) -> None:
    e = to_builtins(scan())
    e["kind"] = "telemetry"
    with pytest.raises(ValueError, match="not a stored event: dict"):
        store.write([scan(), e])  # type: ignore[list-item]
    assert store.count_events() == 0


# -- dead letters ---------------------------------------------------------------------------------


def test_dead_letters_round_trip_exactly(store: Store) -> None:
    every_byte = bytes(range(256)) * 3
    letters = [
        dead_letter(every_byte, reason="not UTF-8"),
        dead_letter(b"", reason="empty"),
        dead_letter(b'{"v":1,"events":[\\x00]}\n\t\r', reason="bad event: 'seq' < 1\ttab"),
        # A truncated message: payload is a prefix, size and hash describe the full message.
        DeadLetter(T0, "omni/v1/s2/d9/events", "too large", b"x" * 100, 2_000_000, "ab" * 32),
    ]
    assert store.write([scan()], letters) == 1
    assert store.dead_letters() == letters
    assert store.write([], [letters[0]]) == 0
    assert store.dead_letters() == [*letters, letters[0]]  # dead letters are a log, not deduplicated


# -- report queries -------------------------------------------------------------------------------


def h(day: int, hour: int) -> datetime:
    return datetime(2025, 3, day, hour, tzinfo=UTC)


def test_footfall_per_store_hour(store: Store) -> None:
    store.write(
        [
            footfall("s1", h(1, 10), 3, 1),
            footfall("s1", h(1, 10) + timedelta(minutes=15), 2, 2),
            footfall("s1", h(1, 10) + timedelta(minutes=45), 0, 0, covered=False),
            footfall("s1", datetime(2025, 3, 1, 12, 30, tzinfo=PLUS2), 1, 0),  # 10:30 UTC
            footfall("s1", h(1, 11), 5, 4),
            footfall("s1", datetime(2025, 3, 2, 0, 10, tzinfo=timezone(timedelta(hours=1))), 1, 1, False),
            footfall("s2", h(1, 10), 7, 6, device="d2"),
            footfall("S0", datetime(2025, 3, 1, 9, 59, 59, 999999, tzinfo=UTC), 1, 0),
        ]
    )
    # Upper-case 'S0' sorts before 's1' by code point (PostgreSQL must not use a locale collation).
    assert store.footfall_per_store_hour() == [
        ("S0", h(1, 9), 1, 0, 1, 0),
        ("s1", h(1, 10), 6, 3, 3, 1),
        ("s1", h(1, 11), 5, 4, 1, 0),
        ("s1", h(1, 23), 1, 1, 0, 1),
        ("s2", h(1, 10), 7, 6, 1, 0),
    ]
    for row in store.footfall_per_store_hour():
        assert row[1].utcoffset() == timedelta(0)


def test_scans_per_kind_store_day(store: Store) -> None:
    store.write(
        [
            scan("s1", datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), "product"),
            scan("s1", datetime(2025, 3, 2, 0, 30, tzinfo=PLUS2), "product"),  # 1 March 22:30 UTC
            scan("s1", datetime(2025, 3, 2, 0, 0, tzinfo=UTC), "product"),
            scan("s1", h(1, 8), "coupon"),
            scan("s2", h(1, 8), "member"),
            scan("s2", h(1, 9), "member"),
            scan("S0", h(3, 8), "other"),
            footfall("s1", h(1, 8), 9, 9),  # not a scan
        ]
    )
    assert store.scans_per_kind_store_day() == [
        ("S0", "2025-03-03", "other", 1),
        ("s1", "2025-03-01", "coupon", 1),
        ("s1", "2025-03-01", "product", 2),
        ("s1", "2025-03-02", "product", 1),
        ("s2", "2025-03-01", "member", 2),
    ]


def test_report_queries_on_empty_store(store: Store) -> None:
    assert store.footfall_per_store_hour() == []
    assert store.scans_per_kind_store_day() == []


# -- text fidelity (COPY escaping, JSON, SQLite text) -----------------------------------------

NASTY = [
    "tab\there",
    "new\nline",
    "cr\rlf\r\n",
    "back\\slash\\",
    "\\N",
    "\\.",
    "\\t literally",
    "'single' \"double\" `back`",
    "ünïcødé \u2013 中文 \u2013 😀 \u2013 \u200b\ufeff",
    "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "",
    " ",
    "{}",
    '{"json": "in a string"}',
    "tail backslash \\",
]


@pytest.mark.parametrize("value", NASTY)
def test_awkward_text_round_trips(store: Store, value: str) -> None:
    e = scan(
        store=value or "x",
        device=value or "y",
        camera=value or "z",
        rule=value,
        text=value,
        symbology=value,
        fields={value: value, "k": value},
    )
    f = footfall()
    f.payload.camera = value or "z"
    f.payload.line = value or "z"
    hb = health(message=value, component=value, metrics={value: value, "n": 1.5})
    assert store.write([e, f, hb]) == 3
    assert by_id(stored_rows(store, "scan"))[e.id] == as_row(e)
    assert by_id(stored_rows(store, "footfall"))[f.id] == as_row(f)
    assert by_id(stored_rows(store, "health"))[hb.id] == as_row(hb)


# PostgreSQL text cannot hold NUL (U+0000); surrogates cannot be encoded as UTF-8.
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    camera=_text.filter(bool),
    rule=st.none() | _text,
    text=st.none() | _text,
    fields=st.dictionaries(_text, _text, max_size=4),
    message=_text,
    metrics=st.dictionaries(
        _text, st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text, max_size=4
    ),
)
def test_text_fields_round_trip_property(
    store: Store,
    camera: str,
    rule: str | None,
    text: str | None,
    fields: dict[str, str],
    message: str,
    metrics: dict[str, Any],
) -> None:
    e = scan(camera=camera, rule=rule, text=text, fields=fields)
    hb = health(message=message, component=camera, metrics=metrics)
    assert store.write([e, hb]) == 2
    assert by_id(stored_rows(store, "scan"))[e.id] == as_row(e)
    assert by_id(stored_rows(store, "health"))[hb.id] == as_row(hb)


# -- migrations -----------------------------------------------------------------------------------


def schema_snapshot(store: Store) -> list[tuple[Any, ...]]:
    """Every table, column, index and schema_version row: what a migration could change."""
    if isinstance(store, SqliteCentralStore):
        # Through APSW, the store's own driver: one SQLite library per file in this process.
        conn = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            objects = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
            versions = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
        finally:
            conn.close()
        return objects + versions
    with psycopg.connect(store.url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY table_name, column_name"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
        versions = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
    return columns + indexes + versions


def test_migrations_are_idempotent(store: Store, open_store: Opener) -> None:
    version = store.schema_version()
    assert version >= 1
    store.write([scan(), footfall(in_count=2), health()], [dead_letter(b"x")])
    before = schema_snapshot(store)
    rows_before = stored_rows(store, "scan")

    assert store.migrate() == version
    assert store.migrate() == version
    assert schema_snapshot(store) == before

    reopened = open_store()  # a second process starting on the same database migrates again
    assert reopened.schema_version() == version
    assert schema_snapshot(reopened) == before
    assert reopened.count_events() == 3
    assert stored_rows(reopened, "scan") == rows_before
    assert len(reopened.dead_letters()) == 1


# -- factory --------------------------------------------------------------------------------------


def test_factory_opens_sqlite_by_path_and_url(tmp_path: Path) -> None:
    for target in (str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"):
        s = open_central_store(target)
        try:
            assert isinstance(s, SqliteCentralStore)
            assert s.write([scan()]) == 1
        finally:
            s.close()
    assert (tmp_path / "a.db").exists()
    assert (tmp_path / "b.db").exists()
    with pytest.raises(ValueError, match="scheme"):
        open_central_store("mysql://x/y")


def test_sqlite_group_commit_defers_the_fsync_to_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []  # inode of each file fsynced
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_fsync(fd))[1])

    full = open_central_store(str(tmp_path / "full.db"))
    grouped = open_central_store(str(tmp_path / "grouped.db"), group_commit=True)
    try:
        assert isinstance(full, SqliteCentralStore) and isinstance(grouped, SqliteCentralStore)
        assert (full.durable_on_commit, grouped.durable_on_commit) == (True, False)
        assert full._conn.execute("PRAGMA synchronous").fetchall() == [(2,)]  # FULL: SQLite fsyncs
        assert grouped._conn.execute("PRAGMA synchronous").fetchall() == [(1,)]  # NORMAL
        assert full.write([scan()]) == 1
        full.sync()
        assert synced == []  # nothing left to do: the commit was durable when write returned
        assert grouped.write([scan()]) == 1 and grouped.write([scan()]) == 1
        grouped.sync()
        grouped.sync()
        wal = os.stat(tmp_path / "grouped.db-wal").st_ino
        assert synced == [wal, wal]
        assert grouped.count_events() == 2
    finally:
        full.close()
        grouped.close()


def _write_from_another_process(path: str, first_seq: int, n: int, shared_ids: list[str]) -> None:
    """Child process: write ``n`` new scans (plus the shared ids) in batches of 50."""
    s = SqliteCentralStore(path, group_commit=True)
    try:
        events = [scan() for _ in range(n)] + [
            msgspec.structs.replace(scan(), id=i, seq=first_seq + k) for k, i in enumerate(shared_ids)
        ]
        for k in range(0, len(events), 50):
            s.write(events[k : k + 50])
        s.sync()
    finally:
        s.close()


def test_sqlite_writers_in_several_processes_store_every_event_once(tmp_path: Path) -> None:
    import multiprocessing

    path = str(tmp_path / "c.db")
    SqliteCentralStore(path).close()  # the schema, before the writers race
    shared = [str(uuid.uuid4()) for _ in range(40)]  # both processes write these: land once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_from_another_process, args=(path, 1, 700, shared)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    s = SqliteCentralStore(path)
    try:
        assert s.count_events() == 3 * 700 + 40
        ids = [r["event_id"] for r in s.rows("scan")]
        assert len(set(ids)) == len(ids) == 3 * 700 + 40
        assert set(shared) <= set(ids)
    finally:
        s.close()
    assert (tmp_path / "c.db-writer").exists()  # the turn lock the writers queued on


def test_sqlite_event_writes_wait_for_the_writer_turn(tmp_path: Path) -> None:
    import fcntl
    import threading

    path = tmp_path / "c.db"
    other = SqliteCentralStore(path)  # another writer (its own descriptor, as another process)
    s = SqliteCentralStore(path)
    done = threading.Event()
    try:
        assert other.write([scan()]) == 1  # creates the turn lock file
        holder = os.open(f"{path}-writer", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)  # "another process" is writing
        t = threading.Thread(target=lambda: (s.write([scan()]), done.set()))
        t.start()
        assert not done.wait(0.5)  # waits its turn ...
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        assert done.wait(10)  # ... and writes as soon as the turn is free
        t.join()
        assert s.count_events() == 2
    finally:
        other.close()
        s.close()


def test_sqlite_event_write_gives_up_when_the_turn_never_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    from sync.central import sqlite_store

    monkeypatch.setattr(sqlite_store, "TURN_TIMEOUT_S", 0.3)
    path = tmp_path / "c.db"
    s = SqliteCentralStore(path)
    try:
        assert s.write([scan()]) == 1
        holder = os.open(f"{path}-writer", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)  # a writer that hangs holding its turn
        with pytest.raises(apsw.BusyError, match=r"another writer held .*-writer for 0\.3 s"):
            s.write([scan()])
        assert s.count_events() == 1  # nothing half-written
        os.close(holder)
        assert s.write([scan()]) == 1  # the store works again once the turn is free
        assert s.count_events() == 2
    finally:
        s.close()


def test_sqlite_writes_without_a_turn_lock_where_it_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_open = os.open

    def refuse_turn_lock(file: Any, flags: int, mode: int = 0o777) -> int:
        if str(file).endswith("-writer"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, mode)

    s = SqliteCentralStore(tmp_path / "c.db")
    try:
        monkeypatch.setattr(os, "open", refuse_turn_lock)
        assert s.write([scan()]) == 1
        assert s.write([scan()]) == 1
        assert s.count_events() == 2
    finally:
        s.close()
    warnings = [r.getMessage() for r in caplog.records if "turn lock" in r.getMessage()]
    assert len(warnings) == 1 and "Permission denied" in warnings[0]
    assert not (tmp_path / "c.db-writer").exists()


@pytest.mark.postgres
def test_factory_opens_postgres(pg_url: str) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        s = open_central_store(url)
        try:
            assert isinstance(s, PostgresCentralStore)
            assert s.count_events() == 0
        finally:
            s.close()


# -- PostgreSQL: lost connections -------------------------------------------------------------


def _terminate_backend(pg_url: str, store: PostgresCentralStore) -> None:
    conn = store._conn
    assert conn is not None
    pid = conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # The timeout argument makes it wait until the backend has really exited.
        row = admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
    assert row == (True,)


def _ids(store: PostgresCentralStore) -> set[str]:
    return {k.id for k in store.event_keys()}


@pytest.mark.postgres
def test_pg_commits_are_durable_even_where_the_server_default_is_not(pg_url: str) -> None:
    # A server (here: this connection's startup options) with synchronous_commit=off would let a
    # COMMIT return before its WAL is on disk, and the ingest acks right after the commit.
    url = pg_url + ("&" if "?" in pg_url else "?") + "options=-c%20synchronous_commit%3Doff"
    with psycopg.connect(url) as plain:
        assert plain.execute("SHOW synchronous_commit").fetchone() == ("off",)
    store = PostgresCentralStore(url)
    try:
        assert store.durable_on_commit
        with store._lock:
            assert store._connection().execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert store.write([scan()]) == 1
    finally:
        store.close()


@pytest.mark.postgres
def test_pg_write_after_backend_terminated_between_writes(pg_url: str) -> None:
    store = PostgresCentralStore(pg_url)
    try:
        first = [scan(), footfall(in_count=1)]
        assert store.write(first) == 2
        _terminate_backend(pg_url, store)

        second = [scan(), health()]
        try:
            stored_second = store.write(second) == 2
        except psycopg.OperationalError:
            stored_second = False
        third = [scan(), scan()]
        assert store.write(third) == 2

        expected = {e.id for e in first + third + (second if stored_second else [])}
        assert _ids(store) == expected
    finally:
        store.close()


@pytest.mark.postgres
def test_pg_connection_lost_mid_batch_stores_nothing(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresCentralStore(pg_url)
    try:
        assert store.write([scan()]) == 1
        batch = [scan(), footfall(in_count=3), health(), scan()]
        letters = [dead_letter(b"\x00broken")]

        def kill(conn: psycopg.Connection[Any]) -> None:
            _terminate_backend(pg_url, store)

        # The COPY into staging has happened; the connection dies before the insert and COMMIT.
        monkeypatch.setattr(store, "_after_copy", kill)
        with pytest.raises(psycopg.Error):
            store.write(batch, letters)
        monkeypatch.undo()

        assert store.count_events() == 1  # reconnected transparently; nothing of the batch
        assert store.dead_letters() == []
        assert store.write(batch, letters) == 4  # the device's resend lands in full
        assert store.count_events() == 5
        assert store.dead_letters() == letters
    finally:
        store.close()


@pytest.mark.postgres
def test_pg_write_raises_while_server_unreachable() -> None:
    # Nothing listens on port 1: connecting fails and write must raise, never report success.
    with pytest.raises(psycopg.OperationalError):
        PostgresCentralStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)


@pytest.mark.postgres
def test_pg_new_batches_copy_straight_in_and_resends_take_the_staged_path(pg_url: str) -> None:
    store = PostgresCentralStore(pg_url)
    try:
        first = [scan(), footfall(in_count=2), health()]
        assert store.write(first) == 3
        assert store.staged_writes == 0  # all new: the direct COPY took it
        again = [*first, scan()]
        assert store.write(again) == 1  # the resend's old events are skipped, the new one lands
        assert store.staged_writes == 1
        twice = scan()
        assert store.write([twice, twice]) == 1  # a duplicate inside one batch lands once
        assert store.staged_writes == 2
        assert sorted(k.id for k in store.event_keys()) == sorted(e.id for e in [*again, twice])
    finally:
        store.close()
