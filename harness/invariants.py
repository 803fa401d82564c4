"""The invariant checker: after a scenario, with faults healed and backlogs drained, nothing was
lost or counted twice.

What it checks, per device (``DeviceSnapshot``, taken when the faults were healed):

1. **exactly once by id**: no event id is stored twice (the store's unique key says it cannot be;
   this checks the store, too);
2. **exactly once by sequence number**: no sequence number of the device is stored under two ids
   (a duplicate the id key cannot catch: the same event re-created under a new id);
3. **no unexplained gaps**: every sequence number up to the snapshot's ``upto_seq`` is stored,
   except at most as many as the outbox reports evicted or refused (scans are never evicted, so
   the only gaps allowed are footfall and health events the capacity policy gave up);
4. **every scan the source committed is stored once**, by scan text (``sim:<device>:<source>:<n>``
   from ``edge_agent.sim.events``): every ``n`` up to the ledger length at the snapshot is there;
   a number is there twice only at a kill -9 between the outbox commit and the ledger write (the
   restarted source makes a second, distinct scan with that number: ``killed_at`` names those);
5. **dead letters hold only the injected hostile messages** (by sha256 of the whole message:
   ``hostile_dead``), and every one in ``hostile_required`` is there (the caller leaves out those a
   broker fault may have dropped in flight);
6. **agents and ingest workers still run** (``processes``: name -> running).

``check`` returns an ``InvariantReport``; ``report.raise_if_failed()`` raises ``InvariantViolation``.
``read_outbox`` reads an agent's outbox file without disturbing the running agent.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sync.central.store import CentralStore
from sync.central.stores import open_central_store

# How many offending values a violation message lists.
SHOW = 10


class InvariantViolation(AssertionError):
    def __init__(self, report: InvariantReport) -> None:
        super().__init__("; ".join(report.violations))
        self.report = report


@dataclass(frozen=True)
class OutboxView:
    """What an agent's outbox says about itself (read from its SQLite file)."""

    next_seq: int  # the next sequence number it will hand out
    rows: int  # events still waiting
    min_seq: int | None  # oldest waiting event
    scan_rows: int
    evicted: dict[str, int]
    rejected: dict[str, int]

    @property
    def given_up(self) -> int:
        """Sequence numbers the capacity policy consumed without delivering (evicted or refused)."""
        return sum(self.evicted.values()) + sum(self.rejected.values())

    def holds_upto(self, seq: int) -> bool:
        """Whether any event numbered ``seq`` or lower still waits in the outbox."""
        return self.min_seq is not None and self.min_seq <= seq


def read_outbox(path: str | Path) -> OutboxView:
    """Read an outbox file (WAL) alongside the agent that owns it: short read transactions only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("PRAGMA query_only=1")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        rows, min_seq, max_seq, scans = conn.execute(
            "SELECT count(*), min(seq), max(seq), coalesce(sum(kind = 'scan'), 0) FROM outbox"
        ).fetchone()
    finally:
        conn.close()
    next_seq = max(int(meta.get("next_seq", 1)), int(max_seq or 0) + 1)
    return OutboxView(
        next_seq=next_seq,
        rows=int(rows),
        min_seq=None if min_seq is None else int(min_seq),
        scan_rows=int(scans),
        evicted={k[len("evicted_") :]: int(v) for k, v in meta.items() if k.startswith("evicted_")},
        rejected={k[len("rejected_") :]: int(v) for k, v in meta.items() if k.startswith("rejected_")},
    )


def ledger_count(path: str | Path) -> int:
    """Events a simulated source committed, as it counts them itself (complete digit lines)."""
    with contextlib.suppress(FileNotFoundError):
        return sum(1 for ln in Path(path).read_bytes().split(b"\n") if ln.strip().isdigit())
    return 0


@dataclass
class DeviceSnapshot:
    """One device at the moment its faults were healed."""

    store: str
    device: str
    upto_seq: int  # every sequence number up to here must be settled (stored or explained)
    scan_ledgers: dict[str, int]  # scan-only source id -> events committed (ledger length)
    killed_at: dict[str, list[int]] = field(default_factory=dict)  # source -> ledger lengths at kill -9
    outbox: OutboxView | None = None  # read after the drain: eviction counters


@dataclass
class DeviceResult:
    store: str
    device: str
    produced: int  # sequence numbers handed out up to the snapshot
    stored: int  # of those, stored centrally
    given_up: int  # evicted or refused by the outbox capacity policy
    gaps: int  # missing sequence numbers up to the snapshot
    unexplained_gaps: int
    duplicate_ids: int
    duplicate_seqs: int
    scans_expected: int
    scans_lost: int
    scans_twice: int  # stored twice where no kill -9 explains it
    kill_window_rescans: int  # stored twice, explained by a kill -9 between commit and ledger


@dataclass
class InvariantReport:
    devices: list[DeviceResult] = field(default_factory=list)
    dead_letters: int = 0
    unexpected_dead_letters: int = 0
    missing_hostile_dead_letters: int = 0
    not_running: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def produced(self) -> int:
        return sum(d.produced for d in self.devices)

    @property
    def lost(self) -> int:
        # A lost scan is also a gap; count each lost event once (at least).
        return sum(max(d.unexplained_gaps, d.scans_lost) for d in self.devices)

    @property
    def duplicated(self) -> int:
        return sum(d.duplicate_ids + d.duplicate_seqs + d.scans_twice for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ok=self.ok, produced=self.produced, lost=self.lost, duplicated=self.duplicated)
        return out

    def raise_if_failed(self) -> None:
        if self.violations:
            raise InvariantViolation(self)


def _scan_number(text: str, prefix: str) -> int | None:
    if not text.startswith(prefix):
        return None
    tail = text[len(prefix) :]
    return int(tail) if tail.isdigit() else None


def check_device(
    snap: DeviceSnapshot,
    keys: Sequence[tuple[str, int]],
    scan_texts: Sequence[str],
    report: InvariantReport,
) -> DeviceResult:
    """``keys``: (event id, seq) of every stored event of the device; ``scan_texts``: its scans."""
    name = f"{snap.store}/{snap.device}"
    ids = Counter(i for i, _ in keys)
    dup_ids = sorted(i for i, n in ids.items() if n > 1)
    ids_per_seq: dict[int, set[str]] = {}
    for i, s in keys:
        ids_per_seq.setdefault(s, set()).add(i)
    dup_seqs = sorted(s for s, group in ids_per_seq.items() if len(group) > 1)
    stored_seqs = {s for s in ids_per_seq if s <= snap.upto_seq}
    gaps = snap.upto_seq - len(stored_seqs)
    given_up = snap.outbox.given_up if snap.outbox is not None else 0
    unexplained = max(0, gaps - given_up)
    if dup_ids:
        report.violations.append(f"{name}: {len(dup_ids)} event ids stored twice: {dup_ids[:SHOW]}")
    if dup_seqs:
        report.violations.append(f"{name}: {len(dup_seqs)} sequence numbers under two ids: {dup_seqs[:SHOW]}")
    if unexplained:
        missing = sorted(set(range(1, snap.upto_seq + 1)) - stored_seqs)
        report.violations.append(
            f"{name}: {unexplained} sequence numbers missing beyond the {given_up} the outbox gave up: "
            f"{missing[:SHOW]}"
        )
    scans_expected = scans_lost = scans_twice = rescans = 0
    for source, produced in snap.scan_ledgers.items():
        prefix = f"sim:{snap.device}:{source}:"
        numbers = Counter(n for t in scan_texts if (n := _scan_number(t, prefix)) is not None)
        allowed_twice = {k + 1 for k in snap.killed_at.get(source, [])}
        lost = sorted(set(range(1, produced + 1)) - set(numbers))
        twice = sorted(n for n, c in numbers.items() if c > 2 or (c == 2 and n not in allowed_twice))
        rescans += sum(1 for n, c in numbers.items() if c == 2 and n in allowed_twice)
        scans_expected += produced
        scans_lost += len(lost)
        scans_twice += len(twice)
        if lost:
            report.violations.append(f"{name}: {len(lost)} committed scans of {source} lost: {lost[:SHOW]}")
        if twice:
            report.violations.append(f"{name}: {len(twice)} scans of {source} stored twice: {twice[:SHOW]}")
    result = DeviceResult(
        store=snap.store,
        device=snap.device,
        produced=snap.upto_seq,
        stored=len(stored_seqs),
        given_up=given_up,
        gaps=gaps,
        unexplained_gaps=unexplained,
        duplicate_ids=len(dup_ids),
        duplicate_seqs=len(dup_seqs),
        scans_expected=scans_expected,
        scans_lost=scans_lost,
        scans_twice=scans_twice,
        kill_window_rescans=rescans,
    )
    report.devices.append(result)
    return result


def check_store(
    store: CentralStore,
    devices: Iterable[DeviceSnapshot],
    *,
    hostile_dead: Iterable[str] = (),
    hostile_required: Iterable[str] = (),
    processes: Mapping[str, bool] | None = None,
) -> InvariantReport:
    """Check ``devices`` against an open central store (see the module docstring)."""
    report = InvariantReport()
    snaps = list(devices)
    wanted = {(s.store, s.device) for s in snaps}
    keys: dict[tuple[str, str], list[tuple[str, int]]] = {k: [] for k in wanted}
    for k in store.event_keys():
        if (k.store, k.device) in wanted:
            keys[(k.store, k.device)].append((k.id, k.seq))
    texts: dict[tuple[str, str], list[str]] = {k: [] for k in wanted}
    rows = getattr(store, "rows", None)
    if rows is None:
        report.notes.append("the central store cannot list scan rows: scan-text checks skipped")
    else:
        for r in rows("scan"):
            key = (r["store"], r["device"])
            if key in texts and r.get("text") is not None:
                texts[key].append(r["text"])
    for snap in snaps:
        check_device(snap, keys[(snap.store, snap.device)], texts[(snap.store, snap.device)], report)
    _check_dead_letters(store, set(hostile_dead), set(hostile_required), report)
    for name, running in sorted((processes or {}).items()):
        if not running:
            report.not_running.append(name)
            report.violations.append(f"{name} is not running")
    return report


def missing_dead_letters(store: CentralStore, required: Iterable[str]) -> set[str]:
    """The sha256 digests in ``required`` that no dead letter has (yet)."""
    return set(required) - {d.sha256 for d in store.dead_letters()}


def _check_dead_letters(
    store: CentralStore, allowed: set[str], required: set[str], report: InvariantReport
) -> None:
    dead = store.dead_letters()
    report.dead_letters = len(dead)
    unexpected = [d for d in dead if d.sha256 not in allowed | required]
    report.unexpected_dead_letters = len(unexpected)
    if unexpected:
        shown = "; ".join(f"{d.topic}: {d.reason[:120]}" for d in unexpected[:3])
        report.violations.append(f"{len(unexpected)} dead letters nobody injected: {shown}")
    missing = required - {d.sha256 for d in dead}
    report.missing_hostile_dead_letters = len(missing)
    if missing:
        report.violations.append(f"{len(missing)} injected hostile messages are not in the dead letters")


def check(
    central_url: str,
    devices: Iterable[DeviceSnapshot],
    *,
    hostile_dead: Iterable[str] = (),
    hostile_required: Iterable[str] = (),
    processes: Mapping[str, bool] | None = None,
) -> InvariantReport:
    """``check_store`` on the central store at ``central_url`` (a path or a postgresql:// URL)."""
    store = open_central_store(central_url)
    try:
        return check_store(
            store,
            devices,
            hostile_dead=hostile_dead,
            hostile_required=hostile_required,
            processes=processes,
        )
    finally:
        store.close()
