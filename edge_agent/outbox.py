"""The durable outbox: every event is committed here before anything else happens to it.

SQLite in WAL mode with ``synchronous=FULL`` by default, so a committed event survives kill -9 and
power loss. Events leave only when the central store has acknowledged them (``delete``), or when
the outbox is full and the per-kind policy evicts them: scans are never evicted; footfall and
health give way, oldest first, and every eviction is counted.

Sequence numbers are per device and never reused. They are handed out from a block reserved in a
small sidecar file (``<outbox>.seq``), so even an outbox that had to be replaced after corruption
continues above every number it may have used, and the jump shows at the central side as an
explained gap instead of a silent reuse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlite_utils
from sqlite_utils.migrations import Migrations

log = logging.getLogger(__name__)

SEQ_BLOCK = 100_000
NEVER_EVICTED = frozenset({"scan"})
Synchronous = Literal["FULL", "NORMAL"]

migrations = Migrations("edge_outbox")


@migrations()
def m001_outbox(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE outbox ("
        " seq INTEGER PRIMARY KEY,"  # the per-device sequence number: rowid order = send order
        " kind TEXT NOT NULL,"
        " ts REAL NOT NULL,"  # device time (unix seconds), for the age of the oldest event
        " size INTEGER NOT NULL,"
        " body BLOB NOT NULL)"  # the wire event JSON, ready to splice into a batch
    )
    # Only evictable rows are indexed, so scans (the bulk at high rates) pay nothing for it.
    db.execute("CREATE INDEX outbox_evictable ON outbox(seq) WHERE kind != 'scan'")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")


class OutboxError(Exception):
    """The outbox cannot take the event (disk full, I/O error); nothing was committed."""


@dataclass(frozen=True, slots=True)
class BacklogStats:
    events: int
    bytes_payload: int  # sum of event sizes
    bytes_on_disk: int  # database + WAL files
    oldest_age_s: float | None  # None when empty
    oldest_seq: int | None
    next_seq: int
    evicted: dict[str, int]
    rejected: dict[str, int]  # new events refused because only scans filled the outbox
    over_capacity: bool  # scans alone exceed the limit (they are still accepted)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; its stored body is ``head + str(seq) + tail``.

    The sequence number is only known inside the append transaction, so the serialised event is
    split around it (see ``edge_agent.events.encode_event``).
    """

    kind: str
    ts: float
    head: bytes
    tail: bytes

    def body(self, seq: int) -> bytes:
        return b"%s%d%s" % (self.head, seq, self.tail)


class SqliteOutbox:
    """Thread-safe: pipelines append while the uplink reads and deletes."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 1 << 30,
        max_rows: int = 5_000_000,
        synchronous: Synchronous = "FULL",
        check_on_open: bool = True,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self.recovered_from: Path | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open(check_on_open)
        self._load_counters()

    # -- opening, corruption handling -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint=4000")
        return conn

    def _open(self, check: bool) -> sqlite3.Connection:
        try:
            conn = self._connect()
            if check:
                result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if result != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {result}")
            migrations.apply(sqlite_utils.Database(conn))
            return conn
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                conn.close()
            moved = self._move_aside()
            log.error(
                "outbox %s is corrupt (%s); moved aside to %s and starting a fresh outbox; "
                "events in it that were not yet delivered are lost unless recovered by hand",
                self.path,
                exc,
                moved,
            )
            self.recovered_from = moved
            conn = self._connect()
            migrations.apply(sqlite_utils.Database(conn))
            return conn

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(target) + suffix))
        return target

    # -- sequence numbers ---------------------------------------------------------------------

    @property
    def _seq_file(self) -> Path:
        return self.path.with_name(self.path.name + ".seq")

    def _read_reserved(self) -> int:
        try:
            return int(self._seq_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _reserve(self, upto: int) -> None:
        tmp = self._seq_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(str(upto))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._seq_file)
        self._reserved = upto

    def _load_counters(self) -> None:
        c = self._conn
        meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
        max_seq = c.execute("SELECT max(seq) FROM outbox").fetchone()[0] or 0
        self._reserved = self._read_reserved()
        next_seq = max(meta.get("next_seq", 1), max_seq + 1)
        if self.recovered_from is not None or (next_seq == 1 and self._reserved > 0):
            # A fresh file after corruption (or a deleted outbox): continue above every number
            # that may have been handed out, so no sequence number is ever reused.
            next_seq = max(next_seq, self._reserved + 1)
        self._next_seq = int(next_seq)
        rows, size = c.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._rows = int(rows)
        self._bytes = int(size)
        self.evicted = {k[len("evicted_") :]: v for k, v in meta.items() if k.startswith("evicted_")}
        self.rejected = {k[len("rejected_") :]: v for k, v in meta.items() if k.startswith("rejected_")}
        if self._next_seq > self._reserved:
            self._reserve(self._next_seq + SEQ_BLOCK)

    # -- appending ----------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Commit events in one transaction; return their sequence numbers.

        An event refused by the capacity policy (a non-scan event while scans fill the outbox)
        gets seq 0.
        Raises OutboxError when nothing could be committed (e.g. the disk is full).
        """
        with self._lock:
            seqs: list[int] = []
            rows: list[tuple[int, str, float, int, bytes]] = []
            next_seq = self._next_seq
            incoming_bytes = 0
            for ev in events:
                seq = next_seq
                body = ev.body(seq)
                rows.append((seq, ev.kind, ev.ts, len(body), body))
                incoming_bytes += len(body)
                next_seq += 1
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                refused = self._make_room(rows, incoming_bytes)
                keep = [r for r in rows if r[0] not in refused]
                c.executemany("INSERT INTO outbox (seq, kind, ts, size, body) VALUES (?,?,?,?,?)", keep)
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('next_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (next_seq,),
                )
                if next_seq > self._reserved:
                    self._reserve(next_seq + SEQ_BLOCK)
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                self._load_counters_after_rollback()
                raise OutboxError(f"outbox append failed: {exc}") from exc
            self._next_seq = int(next_seq)
            self._rows += len(keep)
            self._bytes += sum(r[3] for r in keep)
            seqs = [0 if r[0] in refused else r[0] for r in rows]
            return seqs

    def _load_counters_after_rollback(self) -> None:
        # Eviction counters may have been bumped in memory inside the failed transaction.
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self.evicted = {k[len("evicted_") :]: v for k, v in meta.items() if k.startswith("evicted_")}
        self.rejected = {k[len("rejected_") :]: v for k, v in meta.items() if k.startswith("rejected_")}
        rows, size = self._conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._rows, self._bytes = int(rows), int(size)

    def _make_room(self, rows: list[tuple[int, str, float, int, bytes]], incoming_bytes: int) -> set[int]:
        """Evict old footfall/health (oldest first) so the new rows fit; return refused seqs.

        Runs inside the append transaction. Scans are never evicted and never refused.
        """
        over_rows = self._rows + len(rows) - self.max_rows
        over_bytes = self._bytes + incoming_bytes - self.max_bytes
        if over_rows <= 0 and over_bytes <= 0:
            return set()
        c = self._conn
        freed_rows = freed_bytes = 0
        evicted: dict[str, int] = {}
        cursor = c.execute("SELECT seq, kind, size FROM outbox WHERE kind != 'scan' ORDER BY seq")
        victims: list[int] = []
        for seq, kind, size in cursor:
            if freed_rows >= over_rows and freed_bytes >= over_bytes:
                break
            victims.append(seq)
            freed_rows += 1
            freed_bytes += size
            evicted[kind] = evicted.get(kind, 0) + 1
        cursor.close()
        if victims:
            c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in victims])
            self._rows -= freed_rows
            self._bytes -= freed_bytes
        refused: set[int] = set()
        rejected: dict[str, int] = {}
        still_rows, still_bytes = over_rows - freed_rows, over_bytes - freed_bytes
        # Incoming non-scan events that still do not fit are refused, newest first kept out.
        for seq, kind, _ts, size, _body in reversed(rows):
            if still_rows <= 0 and still_bytes <= 0:
                break
            if kind in NEVER_EVICTED:
                continue
            refused.add(seq)
            still_rows -= 1
            still_bytes -= size
            rejected[kind] = rejected.get(kind, 0) + 1
        for kind, n in evicted.items():
            self.evicted[kind] = self.evicted.get(kind, 0) + n
            self._bump_meta(f"evicted_{kind}", self.evicted[kind])
        for kind, n in rejected.items():
            self.rejected[kind] = self.rejected.get(kind, 0) + n
            self._bump_meta(f"rejected_{kind}", self.rejected[kind])
        if evicted or rejected:
            log.warning("outbox full: evicted %s, refused new %s (scans are kept)", evicted, rejected)
        return refused

    def _bump_meta(self, key: str, value: int) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def append_bodies(self, bodies: Iterable[tuple[str, float, bytes]]) -> int:
        """Bulk-load pre-built events (kind, ts, body with seq already inside); for benchmarks.

        The caller is responsible for bodies whose seq matches ``next_seq`` order.
        """
        with self._lock:
            rows = []
            seq = self._next_seq
            for kind, ts, body in bodies:
                rows.append((seq, kind, ts, len(body), body))
                seq += 1
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            c.executemany("INSERT INTO outbox (seq, kind, ts, size, body) VALUES (?,?,?,?,?)", rows)
            self._bump_meta("next_seq", seq)
            if seq > self._reserved:
                self._reserve(seq + SEQ_BLOCK)
            c.execute("COMMIT")
            self._next_seq = seq
            self._rows += len(rows)
            self._bytes += sum(r[3] for r in rows)
            return len(rows)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    # -- reading and deleting (the uplink) ----------------------------------------------------

    def read_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._conn.execute(
                "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def read_range(self, lo: int, hi: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._conn.execute(
                "SELECT seq, body FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi)
            ).fetchall()

    def delete(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete acknowledged events; return how many rows went (already-gone ones are fine).

        Deletes commit without an fsync of their own (``synchronous=NORMAL`` for this transaction):
        a delete lost to a power cut only means those events are sent again, and the central
        store ignores ids it has. The next append's FULL commit syncs the log anyway.
        """
        with self._lock:
            c = self._conn
            n = freed = 0
            if self._synchronous == "FULL":
                c.execute("PRAGMA synchronous=NORMAL")
            c.execute("BEGIN IMMEDIATE")
            try:
                for lo, hi in ranges:
                    rows, size = c.execute(
                        "SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE seq BETWEEN ? AND ?",
                        (lo, hi),
                    ).fetchone()
                    if rows:
                        c.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi))
                        n += rows
                        freed += size
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                raise OutboxError(f"outbox delete failed: {exc}") from exc
            finally:
                if self._synchronous == "FULL":
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("PRAGMA synchronous=FULL")
            self._rows -= n
            self._bytes -= freed
            return n

    def compact(self, *, max_pages: int = 20_000) -> int:
        """Give free pages back to the file system (incremental vacuum) and truncate the WAL.

        Returns the number of free pages left. Cheap to call often: it does nothing while most of
        the file is still in use (vacuuming in the middle of draining a backlog would move pages
        that are about to be freed anyway), and gives the space back once the backlog is small.
        """
        with self._lock:
            try:
                return self._compact(max_pages)
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox compaction failed: {exc}") from exc

    def _compact(self, max_pages: int) -> int:
        c = self._conn
        free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        total = int(c.execute("PRAGMA page_count").fetchone()[0])
        if free > 256 and (self._rows == 0 or free * 10 > total * 9):
            # executescript steps the pragma to completion; execute() frees a single page. An
            # empty outbox gives everything back at once; otherwise in steps, between sends.
            pages = 0 if self._rows == 0 else int(max_pages)
            c.executescript(f"PRAGMA incremental_vacuum({pages});")
            free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        if self._rows == 0 or free == 0:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return free

    # -- stats --------------------------------------------------------------------------------

    def stats(self, now: float | None = None) -> BacklogStats:
        with self._lock:
            row = self._conn.execute("SELECT seq, ts FROM outbox ORDER BY seq LIMIT 1").fetchone()
            now = time.time() if now is None else now
            return BacklogStats(
                events=self._rows,
                bytes_payload=self._bytes,
                bytes_on_disk=self.bytes_on_disk(),
                oldest_age_s=None if row is None else max(0.0, now - row[1]),
                oldest_seq=None if row is None else int(row[0]),
                next_seq=self._next_seq,
                evicted=dict(self.evicted),
                rejected=dict(self.rejected),
                over_capacity=self._rows > self.max_rows or self._bytes > self.max_bytes,
            )

    def bytes_on_disk(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(str(self.path) + suffix)
        return total

    def count_exact(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
