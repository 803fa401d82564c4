"""The SQLite outbox: sequence numbers, capacity policy, stats, corruption and crash durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from edge_agent.events import encode_event
from edge_agent.outbox import NewEvent, SqliteOutbox
from sync.wire import FootfallPayload, HealthPayload, ScanPayload

ROOT = Path(__file__).resolve().parents[1]


def scan(n: int) -> ScanPayload:
    return ScanPayload(camera="till", code_kind="product", text=f"p{n}")


def footfall(n: int, line: str | None = None) -> FootfallPayload:
    from datetime import UTC, datetime

    return FootfallPayload(
        camera="door",
        line=line or f"l{n}",
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_s=60,
        in_count=n,
        out_count=0,
        covered=True,
        seconds_live=60,
        frames_processed=10,
        frames_dropped=0,
    )


def ev(payload: ScanPayload | FootfallPayload | HealthPayload, ts: float = 1000.0) -> NewEvent:
    return encode_event("s1", "d1", payload, ts=ts)


def test_append_read_delete_round_trip(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db")
    seqs = ob.append([ev(scan(i)) for i in range(5)])
    assert seqs == [1, 2, 3, 4, 5]
    rows = ob.read_after(2, 10)
    assert [s for s, _ in rows] == [3, 4, 5]
    body = orjson.loads(rows[0][1])
    assert body["seq"] == 3 and body["store"] == "s1" and body["device"] == "d1"
    assert body["kind"] == "scan" and body["payload"]["text"] == "p2"
    assert ob.delete([(1, 2), (4, 4)]) == 3
    assert [s for s, _ in ob.read_after(0, 10)] == [3, 5]
    assert ob.delete([(1, 2)]) == 0  # a repeated ack deletes nothing more
    assert ob.stats().events == 2
    ob.close()


def test_sequence_numbers_never_reused_after_drain_and_reopen(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db")
    ob.append([ev(scan(i)) for i in range(3)])
    ob.delete([(1, 3)])
    ob.close()
    ob = SqliteOutbox(tmp_path / "o.db")
    assert ob.append([ev(scan(9))]) == [4]
    ob.close()


def test_stats_are_exact(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db")
    events = [ev(scan(0), ts=1000.0), ev(footfall(1), ts=1010.0), ev(scan(2), ts=1020.0)]
    ob.append(events)
    st = ob.stats(now=1100.0)
    assert st.events == 3
    assert st.bytes_payload == sum(len(e.body(i + 1)) for i, e in enumerate(events))
    assert st.oldest_age_s == pytest.approx(100.0)
    assert st.oldest_seq == 1
    assert st.next_seq == 4
    assert st.bytes_on_disk >= os.path.getsize(tmp_path / "o.db")
    ob.delete([(1, 1)])
    st = ob.stats(now=1100.0)
    assert (st.events, st.oldest_seq, st.oldest_age_s) == (2, 2, pytest.approx(90.0))
    ob.close()
    # Counters survive a restart.
    ob = SqliteOutbox(tmp_path / "o.db")
    assert ob.stats(now=1100.0).events == 2
    ob.close()


def test_full_outbox_evicts_health_and_sent_footfall_never_scans_or_unsent_footfall(tmp_path: Path) -> None:
    # Two footfall windows of different lines: nothing to fold them into.
    ok = HealthPayload(status="ok")
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=5)
    ob.append([ev(footfall(1)), ev(scan(2)), ev(ok), ev(footfall(4)), ev(ok)])
    # Two more scans: the older health event (seq 3) gives way; the newest heartbeat and the unsent
    # footfall windows stay, and the outbox goes one over its limit rather than lose a count or a scan.
    assert ob.append([ev(scan(6)), ev(scan(7))]) == [6, 7]
    assert [s for s, _ in ob.read_after(0, 100)] == [1, 2, 4, 5, 6, 7]
    st = ob.stats()
    assert st.evicted == {"health": 1}
    assert st.rejected == {} and st.folded == {}
    assert st.over_capacity is True
    # The uplink hands out seqs 1-2 for sending: footfall 1 may now be at the central store, so it
    # can give way, with its counts on record (in_count 1).
    assert [s for s, _ in ob.read_after(0, 2, mark_sent=True)] == [1, 2]
    assert ob.append([ev(scan(8))]) == [8]
    assert [s for s, _ in ob.read_after(0, 100)] == [2, 4, 5, 6, 7, 8]
    st = ob.stats()
    assert st.evicted == {"footfall": 1, "health": 1}
    assert (st.footfall_evicted_in, st.footfall_evicted_out) == (1, 0)
    # Nothing left to evict: scans are still accepted; a new heartbeat replaces the old one.
    assert ob.append([ev(scan(9)), ev(HealthPayload(status="degraded"))]) == [9, 10]
    assert [s for s, _ in ob.read_after(0, 100)] == [2, 4, 6, 7, 8, 9, 10]
    # Of two heartbeats arriving together, the older is refused and counted.
    assert ob.append([ev(ok), ev(HealthPayload(status="degraded"))]) == [0, 12]
    st = ob.stats()
    assert st.evicted == {"footfall": 1, "health": 3}  # health 3, 5 and 10
    assert st.rejected == {"health": 1}
    ob.close()
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=5)
    st = ob.stats()
    assert st.evicted == {"footfall": 1, "health": 3}  # counters are persisted
    assert st.rejected == {"health": 1}
    assert (st.footfall_evicted_in, st.footfall_evicted_out, st.sent_mark) == (1, 0, 2)
    ob.close()


def test_byte_capacity_is_enforced_by_folding(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_bytes=1 << 16)
    one = len(ev(footfall(0, "door")).body(1))
    n = (1 << 16) // one + 20
    for i in range(n):  # one window per append, as a counter emits them
        assert ob.append([ev(footfall(i, "door"))]) == [i + 1]
    st = ob.stats()
    assert st.bytes_payload <= 1 << 16
    assert st.evicted == {} and st.rejected == {}
    assert st.folded == {"footfall": n - st.events}
    # Every visitor is still counted (in_count i for window i).
    total = sum(orjson.loads(body)["payload"]["in_count"] for _, body in ob.read_after(0, n))
    assert total == sum(range(n))
    ob.close()


def test_corrupt_outbox_is_moved_aside_and_numbering_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.db"
    ob = SqliteOutbox(path)
    ob.append([ev(scan(i)) for i in range(3)])
    ob.close()
    with open(path, "r+b") as f:  # clobber the header and the first pages
        f.write(b"this is not a database" * 500)
    ob = SqliteOutbox(path)
    assert ob.recovered_from is not None and ob.recovered_from.exists()
    assert "is corrupt" in caplog.text and str(ob.recovered_from) in caplog.text
    assert ob.stats().events == 0
    seq = ob.append([ev(scan(99))])[0]
    assert seq > 3  # above every number the old file may have used
    ob.close()


def test_compact_gives_space_back_after_drain(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", synchronous="NORMAL")
    ob.append([ev(scan(i)) for i in range(20_000)])
    full = ob.bytes_on_disk()
    ob.delete([(1, 20_000)])
    ob.compact()
    assert ob.bytes_on_disk() < full / 20
    ob.close()


APPENDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from edge_agent.events import encode_event
    from edge_agent.outbox import SqliteOutbox
    from sync.wire import ScanPayload
    ob = SqliteOutbox({path!r})
    n = 0
    while True:
        seqs = ob.append([encode_event("s", "d", ScanPayload(camera="c", code_kind="other", text=str(n + i)))
                          for i in range(10)])
        n += 10
        # Reported only after the commit returned: these are promised to be durable.
        sys.stdout.write(f"{{seqs[-1]}}\\n")
        sys.stdout.flush()
    """
)


def test_kill_9_during_appends_loses_no_committed_event(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER.format(root=str(ROOT), path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = 0
    deadline = time.monotonic() + 30
    while last < 2000 and time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last >= 2000
    ob = SqliteOutbox(path)
    seqs = [s for s, _ in ob.read_after(0, 1_000_000)]
    # Every committed event is there, numbered without gaps from 1.
    assert seqs[:last] == list(range(1, last + 1))
    assert seqs == list(range(1, len(seqs) + 1))
    ob.close()
