"""The durable outbox: every event is committed here before anything else happens to it.

SQLite in WAL mode with ``synchronous=FULL`` by default, so a committed event survives kill -9 and
power loss. Events leave only when the central store has acknowledged them (``delete``), or when
the outbox is full (``max_rows``/``max_bytes``) and the capacity policy makes room. In this order,
inside the append transaction (so a kill -9 at any point leaves all of it or none):

1. **footfall is folded**: unsent footfall windows of the same camera, line, ``covered`` value and
   UTC hour of ``window_start`` are merged into the one with the lowest sequence number (counts,
   seconds live and frames summed, the window stretched to cover them all; that event keeps its id,
   seq and ts). Visitor counts survive, only the time resolution goes, and the hourly report
   central makes stays exact. The folded-away sequence numbers are gaps at the central side,
   counted in ``folded``;
2. **health events are evicted**: heartbeats first (the next one supersedes them), then reports
   of what happened (outbox, config, clock), each oldest first (counted in ``evicted``); then
   arriving ones are **refused** (counted in ``rejected``). The newest health event of each
   component always stays: the latest heartbeat and the latest outbox report (it says why the
   outbox is full) reach central;
3. **footfall windows that may have been sent already are evicted**, oldest first (counted in
   ``evicted``, with their in/out counts, and kept by seq in ``evicted_footfall`` so a checker can
   tell whether they landed before the ack got lost).

Scans are never evicted or refused, and neither is an unsent footfall window that nothing could be
folded into (after folding, one per camera, line, coverage and hour) nor the newest health event
of a component: the outbox goes over its limit for them and says so (``over_capacity``).

Never counted twice: an event the uplink may have handed to the broker can have landed centrally
although its ack has not come back, so it must not be folded into another. The uplink reads what it
sends with ``read_after(..., mark_sent=True)``, which persists the highest sequence number handed
out for sending (``sent_mark``, in ``meta``) before returning the rows, under the same lock as the
appends that fold; only footfall above that mark is folded.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlite_utils
from pydantic import ValidationError
from sqlite_utils.migrations import Migrations

from sync.wire import FootfallPayload

log = logging.getLogger(__name__)

SEQ_BLOCK = 100_000
NEVER_EVICTED = frozenset({"scan"})
FOLDABLE = "footfall"
# Most unsent footfall rows one append reads to fold (oldest first): bounds the work of the first
# fold after a long outage; later appends fold what is left.
FOLD_SCAN_MAX = 20_000
# The wire contract's limits on a footfall window (sync.wire.FootfallPayload); a fold that would
# exceed one starts a new window instead. The merged payload is validated against the model too.
MAX_WINDOW_S = 86_400.0
MAX_COUNT = 1_000_000
PRESSURE_LOG_S = 10.0  # the capacity policy at work is logged at most this often (the agent reports it)
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


@migrations()
def m002_evicted_footfall(db: sqlite_utils.Database) -> None:
    # Footfall windows evicted after they may have been sent: by seq, with their counts, so a check
    # can tell the ones that landed centrally (ack lost) from the ones that did not.
    db.execute(
        "CREATE TABLE evicted_footfall ("
        " seq INTEGER PRIMARY KEY, in_count INTEGER NOT NULL, out_count INTEGER NOT NULL)"
    )


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
    over_capacity: bool  # scans (and unfoldable footfall) exceed the limit (they are still accepted)
    folded: dict[str, int]  # events merged into an earlier one of their kind (their seqs are gaps)
    footfall_evicted_in: int  # visitor counts of the evicted footfall windows
    footfall_evicted_out: int
    sent_mark: int  # highest seq ever handed to the uplink for sending


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


_Row = tuple[int, str, float, int, bytes]  # seq, kind, ts, size, body


@dataclass(slots=True)
class _Room:
    """What the capacity policy did to the incoming rows of one append."""

    refused: set[int] = field(default_factory=set)  # not stored: seq 0 to the caller
    absorbed: set[int] = field(default_factory=set)  # folded into an earlier window on arrival
    rewritten: dict[int, bytes] = field(default_factory=dict)  # incoming windows that absorbed others


@dataclass(slots=True)
class _Shortfall:
    """Rows and bytes still to free for an append to fit."""

    rows: int
    bytes: int

    def any(self) -> bool:
        return self.rows > 0 or self.bytes > 0

    def free(self, rows: int, nbytes: int) -> None:
        self.rows -= rows
        self.bytes -= nbytes


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if t.tzinfo is None else t.astimezone(UTC)


def _component(body: bytes) -> str | None:
    """The component of a stored health event (None if it has none we can read)."""
    try:
        component = orjson.loads(body)["payload"]["component"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return component if isinstance(component, str) else None


def _counts(body: bytes) -> tuple[int, int]:
    """(in_count, out_count) of a stored footfall event; (0, 0) if the body is not one."""
    try:
        p = orjson.loads(body)["payload"]
        return int(p["in_count"]), int(p["out_count"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.error("outbox: footfall event without readable counts: %r", body[:200])
        return 0, 0


@dataclass(slots=True)
class _Window:
    """A footfall window being folded: the stored (or arriving) event and its merged payload."""

    seq: int
    size: int
    stored: bool  # a row of the outbox already (else it arrives in this append)
    doc: dict[str, Any]  # the whole wire event
    payload: dict[str, Any]  # its payload, merged with whatever it absorbed
    start: datetime
    end_ts: float
    key: tuple[object, ...]  # camera, line, covered, UTC hour of window_start

    @classmethod
    def parse(cls, seq: int, size: int, body: bytes, *, stored: bool) -> _Window | None:
        """None for a body that is not a footfall event with a readable window (never folded)."""
        try:
            doc = orjson.loads(body)
            p = doc["payload"]
            start = _parse_time(p["window_start"])
            end_ts = None if start is None else start.timestamp() + float(p["window_s"])
            group = (p["camera"], p["line"], p["covered"])
            hash(group)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if start is None or end_ts is None:
            return None
        hour = start.replace(minute=0, second=0, microsecond=0)
        return cls(seq, size, stored, doc, dict(p), start, end_ts, (*group, hour))

    def absorb(self, other: _Window) -> bool:
        """Merge ``other`` into this window if the result stays within the wire contract."""
        a, b = self.payload, other.payload
        try:
            start = min(self.start, other.start)
            end_ts = max(self.end_ts, other.end_ts)
            window_s = round(end_ts - start.timestamp(), 6)
            n_in, n_out = int(a["in_count"]) + int(b["in_count"]), int(a["out_count"]) + int(b["out_count"])
            live = float(a["seconds_live"]) + float(b["seconds_live"])
            frames = int(a["frames_processed"]) + int(b["frames_processed"])
            dropped = int(a["frames_dropped"]) + int(b["frames_dropped"])
        except (KeyError, TypeError, ValueError):
            return False
        if window_s > MAX_WINDOW_S or n_in > MAX_COUNT or n_out > MAX_COUNT:
            return False
        self.payload = {
            **a,
            "window_start": start,
            "window_s": window_s,
            "in_count": n_in,
            "out_count": n_out,
            # Summed; no more than the merged window (only overlapping windows reach that).
            "seconds_live": min(live, window_s),
            "frames_processed": frames,
            "frames_dropped": dropped,
        }
        self.start, self.end_ts = start, end_ts
        return True

    def encode(self) -> bytes | None:
        """The event with the merged payload, validated against the wire model; same id/seq/ts."""
        try:
            payload = FootfallPayload.model_validate(self.payload).model_dump(mode="json")
        except ValidationError as exc:
            log.error("outbox: folded footfall window %d does not validate, not folded: %s", self.seq, exc)
            return None
        return orjson.dumps({**self.doc, "payload": payload})


def _fold_group(members: list[_Window]) -> list[tuple[_Window, list[_Window]]]:
    """Greedy, in seq order: each window goes into the current target, or starts a new one when
    the merge would break a limit of the wire contract. Returns targets that absorbed something."""
    out: list[tuple[_Window, list[_Window]]] = []
    target, taken = members[0], []
    for w in members[1:]:
        if target.absorb(w):
            taken.append(w)
            continue
        if taken:
            out.append((target, taken))
        target, taken = w, []
    if taken:
        out.append((target, taken))
    return out


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
        self._mark_warned = -1e9
        self._pressure_logged = -1e9
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
        self._sent_mark = int(meta.get("sent_mark", 0))
        self._counters_from(meta)
        if self._next_seq > self._reserved:
            self._reserve(self._next_seq + SEQ_BLOCK)

    def _counters_from(self, meta: dict[str, int]) -> None:
        def prefixed(prefix: str) -> dict[str, int]:
            return {k[len(prefix) :]: int(v) for k, v in meta.items() if k.startswith(prefix)}

        self.evicted = prefixed("evicted_")
        self.rejected = prefixed("rejected_")
        self.folded = prefixed("folded_")
        self.footfall_evicted_in = int(meta.get("footfall_evicted_in", 0))
        self.footfall_evicted_out = int(meta.get("footfall_evicted_out", 0))

    # -- appending ----------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Commit events in one transaction; return their sequence numbers.

        An event refused by the capacity policy (a health event while the outbox is full) gets
        seq 0. A footfall window folded into an earlier one on arrival keeps its (now empty) seq:
        its counts are committed, inside that earlier window.
        Raises OutboxError when nothing could be committed (e.g. the disk is full).
        """
        with self._lock:
            rows: list[_Row] = []
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
                room = self._make_room(rows, incoming_bytes)
                keep: list[_Row] = []
                for row in rows:
                    seq = row[0]
                    if seq in room.refused or seq in room.absorbed:
                        continue
                    folded = room.rewritten.get(seq)
                    keep.append(row if folded is None else (seq, row[1], row[2], len(folded), folded))
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
            return [0 if r[0] in room.refused else r[0] for r in rows]

    def _load_counters_after_rollback(self) -> None:
        # Counters may have been bumped in memory inside the failed transaction.
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self._counters_from(meta)
        rows, size = self._conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._rows, self._bytes = int(rows), int(size)

    def _make_room(self, rows: list[_Row], incoming_bytes: int) -> _Room:
        """Apply the capacity policy (module docstring) so the new rows fit, as far as it may.

        Runs inside the append transaction. Scans and unsent footfall are never evicted or refused.
        """
        room = _Room()
        short = _Shortfall(
            rows=self._rows + len(rows) - self.max_rows,
            bytes=self._bytes + incoming_bytes - self.max_bytes,
        )
        if not short.any():
            return room
        folded = self._fold(rows, room, short)
        evicted, rejected = self._evict_health(rows, room, short)
        lost = self._evict_sent_footfall(short)
        if lost:
            evicted[FOLDABLE] = len(lost)
        for kind, n in evicted.items():
            self.evicted[kind] = self.evicted.get(kind, 0) + n
            self._bump_meta(f"evicted_{kind}", self.evicted[kind])
        for kind, n in rejected.items():
            self.rejected[kind] = self.rejected.get(kind, 0) + n
            self._bump_meta(f"rejected_{kind}", self.rejected[kind])
        now = time.monotonic()
        if (evicted or rejected or folded) and now - self._pressure_logged >= PRESSURE_LOG_S:
            self._pressure_logged = now
            log.warning(
                "outbox over its limit (%d events, limit %d): so far folded %s, evicted %s (footfall "
                "in/out %d/%d), refused %s; scans are kept",
                self._rows + len(rows) - len(room.refused) - len(room.absorbed),
                self.max_rows,
                self.folded,
                self.evicted,
                self.footfall_evicted_in,
                self.footfall_evicted_out,
                self.rejected,
            )
        return room

    def _delete(self, victims: list[tuple[int, int]]) -> None:
        """Delete rows by (seq, size) inside the current transaction, keeping the gauges right."""
        self._conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq, _ in victims])
        self._rows -= len(victims)
        self._bytes -= sum(size for _, size in victims)

    def _evict_health(
        self, rows: list[_Row], room: _Room, short: _Shortfall
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Health events (and any kind but scans and footfall) give way, except the newest of each
        component (agent, outbox, config, clock: a handful), stored or arriving: the device's latest
        word on each reaches central. Stored ones are evicted first, heartbeats (component
        ``agent``, superseded by the next one) before reports of what happened, each oldest first;
        then arriving ones are refused. Returns (evicted, refused) per kind."""
        if not short.any():
            return {}, {}
        cursor = self._conn.execute(
            "SELECT seq, kind, size, body FROM outbox WHERE kind != 'scan' AND kind != ? ORDER BY seq",
            (FOLDABLE,),
        )
        stored = [(seq, kind, size, _component(body)) for seq, kind, size, body in cursor]
        arriving = [
            (seq, kind, size, _component(body))
            for seq, kind, _ts, size, body in rows
            if kind not in NEVER_EVICTED and kind != FOLDABLE
        ]
        newest = {(kind, comp): seq for seq, kind, _, comp in stored + arriving}  # in seq order
        keep = set(newest.values())
        evicted: dict[str, int] = {}
        victims: list[tuple[int, int]] = []
        for seq, kind, size, _ in sorted(
            (e for e in stored if e[0] not in keep), key=lambda e: (e[3] != "agent", e[0])
        ):
            if not short.any():
                break
            victims.append((seq, size))
            short.free(1, size)
            evicted[kind] = evicted.get(kind, 0) + 1
        self._delete(victims)
        refused: dict[str, int] = {}
        for seq, kind, size, _ in reversed(arriving):
            if not short.any():
                break
            if seq in keep:
                continue
            room.refused.add(seq)
            short.free(1, size)
            refused[kind] = refused.get(kind, 0) + 1
        return evicted, refused

    def _evict_sent_footfall(self, short: _Shortfall) -> list[tuple[int, int, int]]:
        """Footfall windows at or below the sent mark, oldest first: (seq, in, out) of each.

        They may have landed centrally already, so they cannot be folded; they give way, and are
        recorded by seq with their counts.
        """
        if not short.any():
            return []
        c = self._conn
        gone: list[tuple[int, int, int]] = []
        victims: list[tuple[int, int]] = []
        cursor = c.execute(
            "SELECT seq, size, body FROM outbox WHERE kind != 'scan' AND kind = ? AND seq <= ? ORDER BY seq",
            (FOLDABLE, self._sent_mark),
        )
        for seq, size, body in cursor:
            if not short.any():
                break
            gone.append((seq, *_counts(body)))
            victims.append((seq, size))
            short.free(1, size)
        cursor.close()
        if not gone:
            return gone
        self._delete(victims)
        c.executemany(
            "INSERT OR REPLACE INTO evicted_footfall (seq, in_count, out_count) VALUES (?, ?, ?)", gone
        )
        self.footfall_evicted_in += sum(n_in for _, n_in, _ in gone)
        self.footfall_evicted_out += sum(n_out for _, _, n_out in gone)
        self._bump_meta("footfall_evicted_in", self.footfall_evicted_in)
        self._bump_meta("footfall_evicted_out", self.footfall_evicted_out)
        return gone

    def _foldable(self, rows: list[_Row]) -> dict[tuple[object, ...], list[_Window]]:
        """Unsent footfall windows (stored above the sent mark, oldest first, and arriving) by group."""
        pool: list[_Window | None] = []
        cursor = self._conn.execute(
            "SELECT seq, size, body FROM outbox WHERE kind != 'scan' AND kind = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (FOLDABLE, self._sent_mark, FOLD_SCAN_MAX),
        )
        for seq, size, body in cursor:
            pool.append(_Window.parse(seq, size, body, stored=True))
        cursor.close()
        pool += [
            _Window.parse(seq, size, body, stored=False)
            for seq, kind, _, size, body in rows
            if kind == FOLDABLE
        ]
        groups: dict[tuple[object, ...], list[_Window]] = {}
        for w in pool:
            if w is not None:
                groups.setdefault(w.key, []).append(w)
        return groups

    def _fold(self, rows: list[_Row], room: _Room, short: _Shortfall) -> int:
        """Fold unsent footfall windows per camera, line, coverage and UTC hour into the lowest seq
        of each group; return how many were folded away.

        Folds every group it reads, not just enough for this append: the next appends under the same
        pressure then find a handful of windows to read instead of the whole backlog again.
        """
        updates: list[tuple[bytes, int, int]] = []
        deletes: list[tuple[int, int]] = []
        folded = 0
        for members in self._foldable(rows).values():
            if len(members) < 2:
                continue
            for target, taken in _fold_group(sorted(members, key=lambda w: w.seq)):
                body = target.encode()
                if body is None:  # the merge does not validate: leave these windows as they are
                    continue
                folded += len(taken)
                short.free(len(taken), sum(w.size for w in taken) + target.size - len(body))
                if target.stored:
                    updates.append((body, len(body), target.seq))
                    self._bytes += len(body) - target.size
                else:
                    room.rewritten[target.seq] = body
                deletes += [(w.seq, w.size) for w in taken if w.stored]
                room.absorbed.update(w.seq for w in taken if not w.stored)
        if not folded:
            return 0
        self._conn.executemany("UPDATE outbox SET body = ?, size = ? WHERE seq = ?", updates)
        self._delete(deletes)
        self.folded[FOLDABLE] = self.folded.get(FOLDABLE, 0) + folded
        self._bump_meta(f"folded_{FOLDABLE}", self.folded[FOLDABLE])
        return folded

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

    def read_after(self, seq: int, limit: int, *, mark_sent: bool = False) -> list[tuple[int, bytes]]:
        """Events above ``seq``, oldest first, at most ``limit``.

        ``mark_sent``: the caller is about to publish them. The highest seq returned is persisted
        as the sent mark before they are returned, under the lock the folding appends take, so a
        window the broker may have seen is never folded into another (central would count it
        twice). One small UPDATE per call, and only when the mark moves; its commit is fsynced
        (``synchronous=FULL``) only when the newly marked range holds footfall, the one kind whose
        mark matters. If the mark cannot be persisted (disk full), only the rows before the first
        footfall window in the range are returned: scans and health can go out, footfall waits.
        """
        with self._lock:
            rows: list[tuple[int, bytes]] = self._conn.execute(
                "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
            if mark_sent and rows and rows[-1][0] > self._sent_mark:
                rows = self._mark_sent(rows)
            return rows

    def _mark_sent(self, rows: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        c = self._conn
        lo, hi = self._sent_mark, rows[-1][0]
        first_footfall = c.execute(
            "SELECT min(seq) FROM outbox WHERE kind != 'scan' AND kind = ? AND seq > ? AND seq <= ?",
            (FOLDABLE, lo, hi),
        ).fetchone()[0]
        relaxed = first_footfall is None and self._synchronous == "FULL"
        try:
            if relaxed:
                c.execute("PRAGMA synchronous=NORMAL")
            self._bump_meta("sent_mark", hi)
        except sqlite3.Error as exc:
            if first_footfall is None:
                return rows  # nothing the mark protects: send them, mark them next time
            now = time.monotonic()
            if now - self._mark_warned >= 30:
                self._mark_warned = now
                log.warning(
                    "cannot persist the sent mark (%s): footfall from seq %d waits", exc, first_footfall
                )
            return [r for r in rows if r[0] < first_footfall]
        finally:
            if relaxed:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("PRAGMA synchronous=FULL")
        self._sent_mark = hi
        return rows

    @property
    def sent_mark(self) -> int:
        return self._sent_mark

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
                folded=dict(self.folded),
                footfall_evicted_in=self.footfall_evicted_in,
                footfall_evicted_out=self.footfall_evicted_out,
                sent_mark=self._sent_mark,
            )

    def waiting(self, kind: str) -> int:
        """Events of one kind (not scans: they are not indexed by kind) waiting in the outbox."""
        if kind in NEVER_EVICTED:
            raise ValueError("count scans as stats().events minus the other kinds")
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM outbox WHERE kind != 'scan' AND kind = ?", (kind,)
                ).fetchone()[0]
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
