"""The invariant checker catches what it promises to catch (no broker, no processes)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

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
    def __init__(self, k: list[EventKey], scans: list[str], dead: list[DeadLetter]) -> None:
        self.k, self.scans, self.dead = k, scans, dead

    def event_keys(self) -> list[EventKey]:
        return self.k

    def rows(self, kind: str) -> list[dict[str, object]]:
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
    box.append([NewEvent("footfall", 0.0, b'{"seq":', b"}") for _ in range(3)])  # refused: full
    box.delete([(1, 4)])
    view = read_outbox(tmp_path / "outbox.db")
    assert (view.next_seq, view.rows, view.min_seq, view.scan_rows) == (16, 8, 5, 8)
    assert view.given_up == 3
    assert view.holds_upto(5) and not view.holds_upto(4)
    box.close()
    with pytest.raises(sqlite3.OperationalError):
        read_outbox(tmp_path / "missing.db")
    (tmp_path / "ledger").write_bytes(b"1\n2\n3\n4")  # a torn last line counts as the source counts it
    assert ledger_count(tmp_path / "ledger") == 4
    assert ledger_count(tmp_path / "nothing") == 0
