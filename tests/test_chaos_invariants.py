"""The invariant checker catches what it promises to catch (no broker, no processes)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.footfall_ledger import FootfallLedger, read_footfall_ledger
from harness.invariants import (
    DeviceSnapshot,
    InvariantReport,
    InvariantViolation,
    OutboxView,
    check_device,
    check_store,
    ledger_count,
    read_outbox,
)
from sync.central.store import DeadLetter, EventKey


def outbox(evicted: int = 0, rejected: int = 0) -> OutboxView:
    given_up = {"evicted": {"footfall": evicted}, "rejected": {"health": rejected}}
    return OutboxView(next_seq=1, rows=0, min_seq=None, scan_rows=0, **given_up)


def snap(upto: int, scans: int, killed_at: list[int] | None = None, given_up: int = 0) -> DeviceSnapshot:
    return DeviceSnapshot(
        "s1", "d1", upto, {"scans": scans}, {"scans": killed_at or []}, outbox(evicted=given_up)
    )


def keys(seqs: list[int]) -> list[tuple[str, int]]:
    return [(f"id-{s}", s) for s in seqs]


def texts(numbers: list[int]) -> list[str]:
    return [f"sim:d1:scans:{n}" for n in numbers]


def run(s: DeviceSnapshot, k: list[tuple[str, int]], t: list[str]) -> InvariantReport:
    report = InvariantReport()
    check_device(s, k, t, report)
    return report


def test_everything_once_is_ok() -> None:
    report = run(snap(10, 10), keys(list(range(1, 11))), texts(list(range(1, 11))))
    assert report.ok, report.violations
    assert (report.produced, report.lost, report.duplicated) == (10, 0, 0)
    report.raise_if_failed()


def test_events_beyond_the_snapshot_are_fine() -> None:
    # Production goes on after the snapshot: later events may or may not be there yet.
    report = run(snap(10, 10), keys(list(range(1, 14))), texts(list(range(1, 14))))
    assert report.ok, report.violations


def test_a_lost_scan_is_caught_by_sequence_and_by_text() -> None:
    report = run(snap(10, 10), keys([1, 2, 3, 5, 6, 7, 8, 9, 10]), texts([1, 2, 3, 5, 6, 7, 8, 9, 10]))
    assert report.lost == 1
    assert any("missing" in v for v in report.violations)
    assert any("scans of scans lost: [4]" in v for v in report.violations)
    with pytest.raises(InvariantViolation):
        report.raise_if_failed()


def test_gaps_are_allowed_only_as_far_as_the_outbox_gave_events_up() -> None:
    stored = [1, 2, 5, 6, 9, 10]  # 4 footfall events evicted
    assert run(snap(10, 0, given_up=4), keys(stored), []).ok
    report = run(snap(10, 0, given_up=3), keys(stored), [])
    assert report.lost == 1
    assert not report.ok


def test_a_scan_is_never_an_explained_gap() -> None:
    # Evictions explain gaps, but a committed scan that is missing is lost anyway.
    report = run(snap(4, 4, given_up=5), keys([1, 2, 3]), texts([1, 2, 3]))
    assert report.lost == 1
    assert not report.ok


def test_one_sequence_number_under_two_ids_is_a_duplicate() -> None:
    k = [*keys([1, 2, 3]), ("another-id", 3)]
    report = run(snap(3, 0), k, [])
    assert report.duplicated == 1
    assert not report.ok


def test_the_same_id_twice_is_a_duplicate() -> None:
    report = run(snap(2, 0), [*keys([1, 2]), ("id-2", 2)], [])
    assert report.duplicated == 1


def test_a_scan_twice_is_allowed_only_right_after_a_kill() -> None:
    # Killed with 5 scans in the ledger: scan 6 was committed but not recorded, and made again.
    numbers = [1, 2, 3, 4, 5, 6, 6, 7]
    ok = run(snap(8, 7, killed_at=[5]), keys(list(range(1, 9))), texts(numbers))
    assert ok.ok, ok.violations
    assert ok.devices[0].kill_window_rescans == 1
    bad = run(snap(8, 7, killed_at=[4]), keys(list(range(1, 9))), texts(numbers))
    assert bad.duplicated == 1
    assert not bad.ok


class FakeStore:
    def __init__(
        self,
        k: list[EventKey],
        scans: list[str],
        dead: list[DeadLetter],
        footfall: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        self.k, self.scans, self.dead, self.footfall = k, scans, dead, footfall or {}

    def event_keys(self) -> list[EventKey]:
        return self.k

    def rows(self, kind: str) -> list[dict[str, object]]:
        if kind == "footfall":
            return [
                {
                    "store": "s1",
                    "device": "d1",
                    "event_id": f"id-{s}",
                    "seq": s,
                    "in_count": i,
                    "out_count": o,
                }
                for s, (i, o) in self.footfall.items()
            ]
        return [{"store": "s1", "device": "d1", "text": t} for t in self.scans]

    def dead_letters(self) -> list[DeadLetter]:
        return self.dead


def dead(sha: str) -> DeadLetter:
    return DeadLetter(datetime.now(UTC), "omni/v1/s1/d1/events", "not JSON", b"x", 1, sha)


def test_store_level_checks_dead_letters_and_processes() -> None:
    k = [EventKey(f"id-{s}", "s1", "d1", s, "scan") for s in (1, 2)]
    k.append(EventKey("other", "s2", "d9", 1, "scan"))  # other devices are not this check's business
    store = FakeStore(k, texts([1, 2]), [dead("aa"), dead("bb")])
    report = check_store(
        store,  # type: ignore[arg-type]
        [snap(2, 2)],
        hostile_dead={"aa", "bb"},
        hostile_required={"aa"},
        processes={"agent d1": True},
    )
    assert report.ok, report.violations
    report = check_store(
        store,  # type: ignore[arg-type]
        [snap(2, 2)],
        hostile_dead={"aa"},
        hostile_required={"aa", "cc"},
        processes={"ingest 1": False},
    )
    assert report.unexpected_dead_letters == 1
    assert report.missing_hostile_dead_letters == 1
    assert report.not_running == ["ingest 1"]
    assert len(report.violations) == 3


def test_outbox_and_ledger_readers(tmp_path: Path) -> None:
    from edge_agent.outbox import NewEvent, SqliteOutbox

    box = SqliteOutbox(tmp_path / "outbox.db", max_rows=10)
    box.append([NewEvent("scan", 0.0, b'{"seq":', b"}") for _ in range(12)])
    box.append([NewEvent("health", 0.0, b'{"seq":', b"}") for _ in range(3)])  # full: 2 refused
    box.delete([(1, 4)])
    view = read_outbox(tmp_path / "outbox.db")
    assert (view.next_seq, view.rows, view.min_seq, view.scan_rows) == (16, 9, 5, 8)
    assert view.given_up == 2
    assert view.folded == {} and view.evicted_footfall == {}
    assert view.holds_upto(5) and not view.holds_upto(4)
    box.close()
    with pytest.raises(sqlite3.OperationalError):
        read_outbox(tmp_path / "missing.db")
    (tmp_path / "ledger").write_bytes(b"1\n2\n3\n4")  # a torn last line counts as the source counts it
    assert ledger_count(tmp_path / "ledger") == 4
    assert ledger_count(tmp_path / "nothing") == 0


# -- folded gaps and visitor counts -------------------------------------------------------------


def folded_outbox(folded: int, evicted_footfall: dict[int, tuple[int, int]] | None = None) -> OutboxView:
    gone = evicted_footfall or {}
    return OutboxView(
        next_seq=1,
        rows=0,
        min_seq=None,
        scan_rows=0,
        evicted={"footfall": len(gone)} if gone else {},
        rejected={},
        folded={"footfall": folded} if folded else {},
        evicted_footfall=gone,
    )


def test_folded_sequence_numbers_are_explained_gaps() -> None:
    stored = [1, 2, 5, 6, 9, 10]  # 3, 4, 7, 8 folded into earlier windows
    ok = DeviceSnapshot("s1", "d1", 10, {}, {}, folded_outbox(4))
    assert run(ok, keys(stored), []).ok
    short = DeviceSnapshot("s1", "d1", 10, {}, {}, folded_outbox(3))
    report = run(short, keys(stored), [])
    assert report.lost == 1
    assert any("the 3 it folded" in v for v in report.violations)


# Windows 1-6 produced (in, out); 2 and 3 were folded into 1, 5 into 4.
PRODUCED = {1: (1, 0), 2: (2, 1), 3: (3, 0), 4: (4, 2), 5: (5, 0), 6: (6, 3)}
FOLDED_STORED = {1: (6, 1), 4: (9, 2), 6: (6, 3)}


def ledger(
    committed: dict[int, tuple[int, int]] | None = None, open_: dict[str, tuple[int, int]] | None = None
) -> FootfallLedger:
    return FootfallLedger(committed=dict(PRODUCED if committed is None else committed), open=open_ or {})


def conserve(
    stored: dict[int, tuple[int, int]],
    led: FootfallLedger,
    outbox: OutboxView,
    upto: int = 6,
) -> InvariantReport:
    snap = DeviceSnapshot("s1", "d1", upto, {}, {}, outbox, footfall=led)
    store = FakeStore([EventKey(f"id-{s}", "s1", "d1", s, "footfall") for s in stored], [], [], stored)
    return check_store(store, [snap])  # type: ignore[arg-type]


def test_visitor_counts_survive_folding_exactly() -> None:
    report = conserve(FOLDED_STORED, ledger(), folded_outbox(3))
    assert report.ok, report.violations
    result = report.devices[0].footfall
    assert result is not None and result.conserved
    assert (result.produced, result.landed, result.evicted, result.missing) == (
        (21, 6),
        (21, 6),
        (0, 0),
        (0, 0),
    )
    assert report.footfall_totals() == {
        "produced": 27,
        "landed": 27,
        "evicted": 0,
        "not_conserved": 0,
        "folded": 3,
    }


def test_a_count_lost_in_a_fold_is_caught() -> None:
    stored = {**FOLDED_STORED, 1: (5, 1)}  # window 1 absorbed 2 and 3, but one visitor went missing
    report = conserve(stored, ledger(), folded_outbox(3))
    assert not report.ok
    result = report.devices[0].footfall
    assert result is not None and result.missing == (1, 0)
    assert any("visitor counts not conserved: stored in/out 20/6" in v for v in report.violations)


def test_a_window_folded_after_it_was_sent_is_a_double_count() -> None:
    # Window 2 reached central on its own AND inside window 1: central counts it twice.
    stored = {**FOLDED_STORED, 2: (2, 1)}
    report = conserve(stored, ledger(), folded_outbox(2))
    assert not report.ok
    result = report.devices[0].footfall
    assert result is not None and result.missing == (-2, -1)


def test_evicted_windows_count_as_lost_only_if_they_never_landed() -> None:
    # Window 6 was evicted after it was sent. Its ack was lost: did it land?
    not_landed = {1: (6, 1), 4: (9, 2)}
    report = conserve(not_landed, ledger(), folded_outbox(3, {6: (6, 3)}))
    assert report.ok, report.violations
    result = report.devices[0].footfall
    assert result is not None and (result.evicted, result.landed) == ((6, 3), (15, 3))
    landed = conserve(FOLDED_STORED, ledger(), folded_outbox(3, {6: (6, 3)}))
    assert landed.ok, landed.violations
    result = landed.devices[0].footfall
    assert result is not None and result.evicted == (0, 0)
    # An eviction that is not on record does not explain a missing window.
    assert not conserve(not_landed, ledger(), folded_outbox(3)).ok


def test_windows_a_kill_left_open_are_resolved_by_id_or_bounded_by_their_counts() -> None:
    # Window 6 was committed, then the agent was killed before its ledger line: open, id-6.
    committed = {s: c for s, c in PRODUCED.items() if s != 6}
    report = conserve(FOLDED_STORED, ledger(committed, {"id-6": (6, 3)}), folded_outbox(3))
    assert report.ok, report.violations
    result = report.devices[0].footfall
    assert result is not None and result.produced == (21, 6) and result.unknown == (0, 0)
    # Committed and folded into window 4 (so never stored under id-6): its counts are allowed...
    open_6 = ledger(committed, {"id-6": (6, 3)})
    report = conserve({1: (6, 1), 4: (15, 5)}, open_6, folded_outbox(4))
    assert report.ok, report.violations
    result = report.devices[0].footfall
    assert result is not None and result.unknown == (6, 3) and result.missing == (-6, -3)
    # ...as is its absence (killed before the commit: seq 6 was never used)...
    assert conserve({1: (6, 1), 4: (9, 2)}, open_6, folded_outbox(3), upto=5).ok
    # ...but never more than its counts.
    report = conserve({1: (6, 1), 4: (16, 5)}, open_6, folded_outbox(4))
    assert not report.ok
    assert any("+ up to 6/3 of windows a kill -9 left open" in v for v in report.violations)


def test_counts_after_the_snapshot_are_not_counted() -> None:
    # Window 7 (seq above the snapshot) landed too: neither side of the balance counts it.
    stored = {**FOLDED_STORED, 7: (7, 7)}
    report = conserve(stored, ledger({**PRODUCED, 7: (7, 7)}), folded_outbox(3))
    assert report.ok, report.violations
    result = report.devices[0].footfall
    assert result is not None and result.produced == (21, 6)


def test_the_footfall_ledger_reader(tmp_path: Path) -> None:
    path = tmp_path / "footfall.ledger"
    path.write_text(
        "I a 1 2\nC a 3\n"  # committed as seq 3
        "I b 4 0\nC b 0\n"  # refused
        "I c 5 5\nX c\n"  # the append raised
        "I d 7 1\n"  # killed between commit and ledger: open
        "I e 2 2\nC e 9\n"
        "I f 3 3\n"  # in flight while the file was read
        "C f 1"  # torn: not a line yet
    )
    led = read_footfall_ledger(path)
    assert led.committed == {3: (1, 2), 9: (2, 2)}
    assert led.refused == [(4, 0)]
    assert led.failed == 1
    assert led.open == {"d": (7, 1)}
    assert led.in_flight == {"f": (3, 3)}
    assert read_footfall_ledger(tmp_path / "missing") == FootfallLedger()


def test_the_ledger_tap_records_what_the_outbox_committed(tmp_path: Path) -> None:
    from edge_agent.events import encode_event
    from edge_agent.outbox import SqliteOutbox
    from harness.footfall_ledger import tap
    from sync.wire import FootfallPayload, ScanPayload

    def window(n_in: int) -> FootfallPayload:
        return FootfallPayload(
            camera="c",
            line="l",
            window_start=datetime(2026, 1, 1, tzinfo=UTC),
            window_s=60,
            in_count=n_in,
            out_count=1,
            covered=True,
            seconds_live=60,
            frames_processed=1,
            frames_dropped=0,
        )

    box = SqliteOutbox(tmp_path / "outbox.db", max_rows=10)
    tap(box, tmp_path / "footfall.ledger")
    scan = ScanPayload(camera="c", code_kind="other", text="x")
    assert box.append([encode_event("s1", "d1", p) for p in (scan, window(3), scan, window(4))]) == [
        1,
        2,
        3,
        4,
    ]
    box.close()
    with pytest.raises(Exception, match="closed"):
        box.append([encode_event("s1", "d1", window(5))])
    led = read_footfall_ledger(tmp_path / "footfall.ledger")
    assert led.committed == {2: (3, 1), 4: (4, 1)}
    assert (led.failed, led.open, led.refused) == (1, {}, [])
