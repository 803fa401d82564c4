"""Under disk pressure the outbox folds footfall windows instead of losing visitor counts.

Folding merges unsent windows of one camera, line, coverage and UTC hour into the lowest seq of
the group; nothing the uplink may have sent is ever folded (central would count it twice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.events import encode_event
from edge_agent.outbox import NewEvent, SqliteOutbox
from sync import topics
from sync.validate import validate_message
from sync.wire import EVENT_ADAPTER, FootfallPayload, HealthPayload, ScanPayload

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def window(
    minute: float,
    n_in: int,
    n_out: int = 0,
    *,
    camera: str = "door",
    line: str = "main",
    covered: bool = True,
    window_s: float = 60,
    live: float = 60,
    frames: int = 1500,
    dropped: int = 0,
) -> FootfallPayload:
    return FootfallPayload(
        camera=camera,
        line=line,
        window_start=T0 + timedelta(minutes=minute),
        window_s=window_s,
        in_count=n_in,
        out_count=n_out,
        covered=covered,
        seconds_live=live,
        frames_processed=frames,
        frames_dropped=dropped,
    )


def ev(payload: ScanPayload | FootfallPayload | HealthPayload, ts: float = 1_772_445_600.0) -> NewEvent:
    return encode_event("s1", "d1", payload, ts=ts)


def scan(n: int) -> NewEvent:
    return ev(ScanPayload(camera="till", code_kind="product", text=f"p{n}"))


def rows(ob: SqliteOutbox) -> dict[int, dict[str, Any]]:
    return {seq: orjson.loads(body) for seq, body in ob.read_after(0, 1_000_000)}


def footfall_rows(ob: SqliteOutbox) -> dict[int, dict[str, Any]]:
    return {s: d["payload"] for s, d in rows(ob).items() if d["kind"] == "footfall"}


def test_windows_of_one_camera_line_and_hour_fold_into_the_lowest_seq_with_exact_sums(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=10)
    # Six consecutive minutes at the door, one window per append (as the counter emits them),
    # between four scans: ten rows, the outbox is exactly full.
    events = [scan(0), scan(1)]
    events += [ev(window(m, n_in=m + 1, n_out=m, live=60 - m, dropped=m)) for m in range(6)]
    events += [scan(2), scan(3)]
    for e in events:
        ob.append([e])
    original = rows(ob)[3]
    assert ob.stats().events == 10 and ob.stats().folded == {}
    # One more scan: the six unsent windows (seqs 3-8) fold into seq 3.
    assert ob.append([scan(4)]) == [11]
    assert sorted(rows(ob)) == [1, 2, 3, 9, 10, 11]
    merged = rows(ob)[3]
    assert merged["payload"] == {
        "camera": "door",
        "line": "main",
        "window_start": "2026-03-02T10:00:00Z",
        "window_s": 360.0,  # 10:00 to 10:06
        "in_count": 1 + 2 + 3 + 4 + 5 + 6,
        "out_count": 0 + 1 + 2 + 3 + 4 + 5,
        "covered": True,
        "seconds_live": 60.0 * 6 - 15,
        "frames_processed": 1500 * 6,
        "frames_dropped": 15,
    }
    # Same id, seq and ts as the lowest window: it was never sent, central sees one event.
    assert {k: merged[k] for k in ("id", "seq", "ts", "store", "device", "kind")} == {
        k: original[k] for k in ("id", "seq", "ts", "store", "device", "kind")
    }
    st = ob.stats()
    assert st.folded == {"footfall": 5}
    assert st.evicted == {} and st.rejected == {}
    assert st.events == 6 and st.over_capacity is False
    assert st.bytes_payload == sum(len(b) for _, b in ob.read_after(0, 100))
    ob.close()


def test_only_the_same_camera_line_coverage_and_utc_hour_are_merged(tmp_path: Path) -> None:
    windows = [
        window(0, 1),  # door/main covered, hour 10 ...
        window(30, 2),
        window(59, 4),  # ... the last minute of hour 10
        window(60, 8),  # hour 11: its own hour in the central report
        window(10, 16, line="side"),
        window(20, 32, camera="till"),
        window(40, 64, covered=False, live=30),
        window(61, 128),  # joins the hour 11 window
    ]
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=len(windows))
    for w in windows:
        ob.append([ev(w)])

    def per_group_hour(payloads: list[dict[str, Any]]) -> dict[tuple[Any, ...], int]:
        out: dict[tuple[Any, ...], int] = defaultdict(int)
        for p in payloads:
            out[(p["camera"], p["line"], p["covered"], p["window_start"][:13])] += p["in_count"]
        return dict(out)

    before = per_group_hour(list(footfall_rows(ob).values()))
    assert ob.append([scan(0)]) == [9]
    after = footfall_rows(ob)
    assert sorted(after) == [1, 4, 5, 6, 7]  # 2, 3 went into 1; 8 into 4
    assert [after[s]["in_count"] for s in (1, 4, 5, 6, 7)] == [1 + 2 + 4, 8 + 128, 16, 32, 64]
    assert after[1]["window_start"] == "2026-03-02T10:00:00Z" and after[1]["window_s"] == 3600.0
    assert after[4]["window_start"] == "2026-03-02T11:00:00Z" and after[4]["window_s"] == 120.0
    # The central "footfall per store per hour" report comes out the same.
    assert per_group_hour(list(after.values())) == before
    assert ob.stats().folded == {"footfall": 3}
    ob.close()


def test_windows_at_or_below_the_sent_mark_are_never_folded_they_are_evicted(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=6)
    for n in (1, 2, 3):
        ob.append([ev(window(n, n_in=n, n_out=10 * n))])
    # The uplink takes seqs 1-2 to publish: they may land centrally before any ack comes back.
    assert [s for s, _ in ob.read_after(0, 2, mark_sent=True)] == [1, 2]
    assert ob.stats().sent_mark == 2
    for n in (4, 5, 6):
        ob.append([scan(n)])
    # A new window arrives at a full outbox: it folds into seq 3 (unsent), not into 1 or 2.
    assert ob.append([ev(window(7, n_in=7, n_out=70))]) == [7]
    ff = footfall_rows(ob)
    assert sorted(ff) == [1, 2, 3]
    assert [(ff[s]["in_count"], ff[s]["out_count"]) for s in (1, 2, 3)] == [(1, 10), (2, 20), (10, 100)]
    assert ob.stats().folded == {"footfall": 1}
    # Two scans more: nothing left to fold, so the sent windows give way, counts on record.
    assert ob.append([scan(8), scan(9)]) == [8, 9]
    assert sorted(rows(ob)) == [3, 4, 5, 6, 8, 9]
    st = ob.stats()
    assert st.evicted == {"footfall": 2}
    assert (st.footfall_evicted_in, st.footfall_evicted_out) == (1 + 2, 10 + 20)
    # One more scan: the unsent window 3 (counts of 3 and 7) stays, the outbox goes over its limit.
    assert ob.append([scan(10)]) == [10]
    assert ob.stats().over_capacity is True
    assert footfall_rows(ob)[3]["in_count"] == 10
    ob.close()
    # Everything survives a restart: the mark, the counters, the evicted windows by seq.
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=6)
    st = ob.stats()
    assert (st.sent_mark, st.folded, st.evicted) == (2, {"footfall": 1}, {"footfall": 2})
    assert (st.footfall_evicted_in, st.footfall_evicted_out) == (3, 30)
    ob.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "o.db")
    assert conn.execute("SELECT seq, in_count, out_count FROM evicted_footfall ORDER BY seq").fetchall() == [
        (1, 1, 10),
        (2, 2, 20),
    ]
    conn.close()


def test_the_sent_mark_only_moves_up_and_only_when_asked(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db")
    ob.append([scan(n) for n in range(10)])
    ob.read_after(0, 5)  # inspection, not a send
    assert ob.sent_mark == 0
    assert [s for s, _ in ob.read_after(3, 4, mark_sent=True)] == [4, 5, 6, 7]
    assert ob.sent_mark == 7
    ob.read_after(0, 3, mark_sent=True)  # a restarted uplink reads from the start: no step back
    assert ob.sent_mark == 7
    ob.close()
    assert SqliteOutbox(tmp_path / "o.db").sent_mark == 7


MARKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from datetime import UTC, datetime
    from edge_agent.events import encode_event
    from edge_agent.outbox import SqliteOutbox
    from sync.wire import FootfallPayload
    ob = SqliteOutbox({path!r})
    w = FootfallPayload(camera="door", line="main", window_start=datetime(2026, 3, 2, 10, tzinfo=UTC),
                        window_s=60, in_count=1, out_count=0, covered=True, seconds_live=60,
                        frames_processed=1, frames_dropped=0)
    ob.append([encode_event("s1", "d1", w) for _ in range(5)])
    rows = ob.read_after(0, 3, mark_sent=True)
    # What the uplink publishes right after this returns.
    sys.stdout.write(f"{{rows[-1][0]}}\\n")
    sys.stdout.flush()
    import time
    time.sleep(60)
    """
)


def test_the_sent_mark_survives_a_kill_9_right_after_it_is_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", MARKER.format(root=str(ROOT), path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    published = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert published == 3
    ob = SqliteOutbox(path, max_rows=5)
    assert ob.sent_mark == 3
    ob.append([ev(window(1, n_in=1))])  # over the cap: only 4, 5 and the new 6 may fold
    assert sorted(footfall_rows(ob)) == [1, 2, 3, 4]
    assert footfall_rows(ob)[4]["in_count"] == 3
    ob.close()


def test_scans_are_never_evicted_or_refused_under_folding_pressure(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=5)
    for n in range(40):
        seqs = ob.append([scan(n), ev(window(n % 60, n_in=1, line=f"l{n % 3}"))])
        assert 0 not in seqs
    kinds = [d["kind"] for d in rows(ob).values()]
    assert kinds.count("scan") == 40
    assert kinds.count("footfall") == 3  # one window per line, each holding its share of the counts
    assert sorted(p["in_count"] for p in footfall_rows(ob).values()) == [13, 13, 14]
    st = ob.stats()
    assert st.folded == {"footfall": 37} and st.evicted == {} and st.rejected == {}
    assert st.over_capacity is True
    ob.close()


def test_windows_arriving_together_fold_on_arrival(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=2)
    ob.append([scan(0), scan(1)])
    # Three windows in one append at a full outbox: they fold into the first of them; every seq is
    # reported committed (its counts are, inside seq 3).
    assert ob.append([ev(window(m, n_in=m + 1)) for m in range(3)]) == [3, 4, 5]
    ff = footfall_rows(ob)
    assert list(ff) == [3] and ff[3]["in_count"] == 6 and ff[3]["window_s"] == 180.0
    assert ob.stats().folded == {"footfall": 2}
    ob.close()


def test_a_fold_never_breaks_the_wire_limits(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=2)
    ob.append([scan(0), scan(1)])
    big = [ev(window(m, n_in=600_000)) for m in range(3)] + [ev(window(3, n_in=1))]
    ob.append(big)
    ff = footfall_rows(ob)
    # 600k + 600k would exceed 1,000,000: the second window starts a new group member.
    assert {s: p["in_count"] for s, p in ff.items()} == {3: 600_000, 4: 600_000, 5: 600_001}
    assert ob.stats().folded == {"footfall": 1}
    ob.close()


def test_a_folded_event_passes_the_wire_model_and_the_central_validator(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=1)
    # Overlapping windows (a simulator's): seconds live is summed but capped at the merged window.
    ob.append([ev(window(m / 2, n_in=m, n_out=1, window_s=59.5, live=59.5)) for m in range(100)])
    (seq, body), *_ = ob.read_after(0, 10)
    merged = EVENT_ADAPTER.validate_json(body)
    assert merged.kind == "footfall" and isinstance(merged.payload, FootfallPayload)
    assert (merged.payload.in_count, merged.payload.out_count) == (sum(range(100)), 100)
    assert merged.payload.window_s == pytest.approx(49.5 * 60 + 59.5)
    assert merged.payload.seconds_live == merged.payload.window_s
    message = b'{"v":1,"batch":"b-1","store":"s1","device":"d1","events":[%s]}' % body
    result = validate_message(topics.EVENTS.for_device("s1", "d1"), message)
    assert result.rejected == []
    assert [(e.seq, e.payload.in_count) for e in result.events] == [(seq, sum(range(100)))]  # type: ignore[union-attr]
    ob.close()


def test_health_gives_way_before_footfall_that_may_have_been_sent(tmp_path: Path) -> None:
    beat = HealthPayload(status="ok")
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=4)
    ob.append([ev(window(0, n_in=5)), ev(beat), scan(0), ev(beat)])
    ob.read_after(0, 4, mark_sent=True)
    assert ob.append([scan(1)]) == [5]  # the older heartbeat goes
    assert sorted(rows(ob)) == [1, 3, 4, 5]
    assert ob.stats().evicted == {"health": 1}
    assert ob.append([scan(2)]) == [6]  # the newest stays: the sent window goes, counts on record
    assert sorted(rows(ob)) == [3, 4, 5, 6]
    assert ob.stats().evicted == {"health": 1, "footfall": 1}
    assert ob.stats().footfall_evicted_in == 5
    ob.close()


def test_heartbeats_give_way_first_and_the_newest_report_of_each_component_stays(tmp_path: Path) -> None:
    ob = SqliteOutbox(tmp_path / "o.db", max_rows=5)
    report = HealthPayload(status="degraded", component="outbox", message="outbox full")
    beat = HealthPayload(status="degraded", component="agent")
    ob.append([ev(report), ev(report), ev(beat), scan(0), ev(beat)])  # seqs 1-5
    assert ob.append([scan(1)]) == [6]  # the older heartbeat (3) goes first...
    assert sorted(rows(ob)) == [1, 2, 4, 5, 6]
    assert ob.append([scan(2)]) == [7]  # ...then the older report (1)
    assert sorted(rows(ob)) == [2, 4, 5, 6, 7]
    # The newest heartbeat (5) and outbox report (2) stay: the outbox goes over its limit for them.
    assert ob.append([scan(3)]) == [8]
    assert sorted(rows(ob)) == [2, 4, 5, 6, 7, 8]
    # A new report replaces the older one; so does a new heartbeat.
    assert ob.append([ev(report)]) == [9]
    assert ob.append([ev(beat)]) == [10]
    assert sorted(rows(ob)) == [4, 6, 7, 8, 9, 10]
    assert ob.stats().evicted == {"health": 4} and ob.stats().rejected == {}
    ob.close()


FOLDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from datetime import UTC, datetime, timedelta
    from edge_agent.events import encode_event
    from edge_agent.outbox import SqliteOutbox
    from sync.wire import FootfallPayload, ScanPayload
    ob = SqliteOutbox({path!r}, max_rows=20)
    t0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
    total = 0
    n = 0
    while True:
        n += 1
        start = t0 + timedelta(seconds=n % 3000)
        w = FootfallPayload(camera="door", line="l%d" % (n % 2), window_start=start, window_s=60,
                            in_count=n % 7, out_count=1, covered=True, seconds_live=60,
                            frames_processed=10, frames_dropped=0)
        ob.append([encode_event("s", "d", ScanPayload(camera="c", code_kind="other", text=str(n))),
                   encode_event("s", "d", w)])
        total += n % 7
        # Reported only after the commit returned: these counts are promised to be durable.
        sys.stdout.write(f"{{n}} {{total}}\\n")
        sys.stdout.flush()
    """
)


def test_kill_9_while_folding_loses_or_doubles_no_count(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", FOLDER.format(root=str(ROOT), path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    n = total = 0
    deadline = time.monotonic() + 30
    while n < 300 and time.monotonic() < deadline:
        n, total = (int(x) for x in proc.stdout.readline().split())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout.read().splitlines():  # what it reported until the kill
        if len(parts := line.split()) == 2:
            n, total = int(parts[0]), int(parts[1])
    assert n >= 300
    ob = SqliteOutbox(path, max_rows=20)
    ff = footfall_rows(ob)
    scans = [d for d in rows(ob).values() if d["kind"] == "scan"]
    stored_in = sum(p["in_count"] for p in ff.values())
    stored_out = sum(p["out_count"] for p in ff.values())
    # Committed up to window n (one more may have committed before the kill, unreported).
    assert stored_out in (n, n + 1)
    assert stored_in == total + ((n + 1) % 7 if stored_out == n + 1 else 0)
    assert len(scans) == stored_out  # one scan per window, none lost
    st = ob.stats()
    assert st.events == len(ff) + len(scans)
    assert st.folded == {"footfall": stored_out - len(ff)}  # every folded seq is counted
    assert st.evicted == {} and st.rejected == {}
    ob.close()


def test_the_agent_reports_the_outbox_state_at_most_once_per_interval(tmp_path: Path) -> None:
    from device_configs.device import DeviceConfig
    from edge_agent.agent import Agent

    doc = {
        "store": "s1",
        "device": "d1",
        "state_dir": "state",
        "sync": {"heartbeat_s": 30},
        "outbox": {"max_rows": 10},
    }
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    try:
        assert agent.check_outbox(now=0.0) is None  # nothing to say
        for m in range(10):
            agent.emit(window(m, n_in=m, n_out=1))
        assert agent.check_outbox(now=1.0) is None  # full, not over: nothing happened yet
        for n in range(5):  # the first scan makes the ten windows fold into one
            agent.emit(ScanPayload(camera="till", code_kind="product", text=f"p{n}"))
        report = agent.check_outbox(now=2.0)
        assert report is not None and report.status == "degraded" and report.component == "outbox"
        assert report.message == (
            "outbox was full: folded 9 footfall windows into the 1 waiting, evicted 0 health events and "
            "0 footfall windows that may have been sent (in 0, out 0), refused 0 health events; scans kept "
            "(6 events waiting, limit 10 events / 1073741824 bytes)"
        )
        assert report.metrics["folded"] == 9 and report.metrics["folded_total"] == 9
        # More folding within the interval: no new report (not one per append)...
        for m in range(10, 16):
            agent.emit(window(m, n_in=1, n_out=0))
        # (the fourth window made the target, three waiting windows and itself fold into one)
        assert agent.outbox.stats().folded == {"footfall": 13}
        assert agent.check_outbox(now=31.0) is None
        # ...but one at the next interval, with what happened since the last report.
        report = agent.check_outbox(now=32.0)
        assert report is not None and report.status == "degraded"
        assert report.message.startswith("outbox was full: folded 4 footfall windows into the 3 waiting,")
        # Capacity back (ops raised the limit): one "ok" once the interval is over, then silence.
        agent.outbox.max_rows = 1000
        assert agent.check_outbox(now=61.0) is None
        report = agent.check_outbox(now=62.0)
        assert report is not None and report.status == "ok"
        assert report.message == "outbox back under its limit (10 events waiting)"
        assert agent.check_outbox(now=200.0) is None
        health = [d["payload"] for d in rows(agent.outbox).values() if d["kind"] == "health"]
        assert [(h["component"], h["status"]) for h in health] == [
            ("outbox", "degraded"),
            ("outbox", "degraded"),
            ("outbox", "ok"),
        ]
        assert agent.health()["folded_total"] == 13
    finally:
        agent.outbox.close()
