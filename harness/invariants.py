"""The invariant checker: after a scenario, with faults healed and backlogs drained, nothing was
lost or counted twice.

What it checks, per device (``DeviceSnapshot``, taken when the faults were healed):

1. **exactly once by id**: no event id is stored twice (the store's unique key says it cannot be;
   this checks the store, too);
2. **exactly once by sequence number**: no sequence number of the device is stored under two ids
   (a duplicate the id key cannot catch: the same event re-created under a new id);
3. **no unexplained gaps**: every sequence number up to the snapshot's ``upto_seq`` is stored,
   except at most as many as the outbox reports evicted, refused or folded (scans are never
   evicted, so the only gaps allowed are footfall and health events the capacity policy gave up
   and footfall windows it folded into earlier ones);
4. **every scan the source committed is stored once**, by scan text (``sim:<device>:<source>:<n>``
   from ``edge_agent.sim.events``): every ``n`` up to the ledger length at the snapshot is there;
   a number is there twice only at a kill -9 between the outbox commit and the ledger write (the
   restarted source makes a second, distinct scan with that number: ``killed_at`` names those);
5. **dead letters hold only the injected hostile messages** (by sha256 of the whole message:
   ``hostile_dead``), and every one in ``hostile_required`` is there (the caller leaves out those a
   broker fault may have dropped in flight);
6. **agents and ingest workers still run** (``processes``: name -> running);
7. **visitor counts are conserved** (with a footfall ledger, ``harness.footfall_ledger``): for each
   device, the in_count and out_count of the footfall stored centrally up to ``upto_seq`` sum to
   what the ledger says was committed up to there, minus exactly what the outbox evicted and did
   not deliver (``evicted_footfall``, by seq, with counts). Folding must not lose a count nor
   deliver one twice. Windows a kill -9 left open in the ledger are resolved by their id in the
   central store; the rest widen the allowed range by their counts, and nothing else does.

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

from harness.footfall_ledger import Counts, FootfallLedger
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
    folded: dict[str, int] = field(default_factory=dict)  # merged into an earlier event: seq is a gap
    evicted_footfall: dict[int, Counts] = field(default_factory=dict)  # seq -> counts, evicted

    @property
    def given_up(self) -> int:
        """Sequence numbers the capacity policy consumed without delivering (evicted or refused)."""
        return sum(self.evicted.values()) + sum(self.rejected.values())

    @property
    def explained_gaps(self) -> int:
        """Sequence numbers that may be missing centrally: given up, or folded into another event."""
        return self.given_up + sum(self.folded.values())

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
        try:
            evicted_footfall = {
                int(seq): (int(i), int(o))
                for seq, i, o in conn.execute("SELECT seq, in_count, out_count FROM evicted_footfall")
            }
        except sqlite3.OperationalError:  # an outbox from before folding: nothing recorded
            evicted_footfall = {}
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
        folded={k[len("folded_") :]: int(v) for k, v in meta.items() if k.startswith("folded_")},
        evicted_footfall=evicted_footfall,
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
    footfall: FootfallLedger | None = None  # read after the drain: counts check skipped if None
    folded_at_snapshot: int | None = None  # the outbox's folded counter at the snapshot


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
    folded: int = 0  # footfall windows folded into earlier ones (explained gaps)
    footfall: FootfallResult | None = None  # the counts check (with a footfall ledger)


@dataclass
class FootfallResult:
    """Visitor counts of one device up to the snapshot: (in, out) pairs."""

    produced: Counts  # committed, as the ledger says (open windows resolved by id included)
    landed: Counts  # stored centrally
    evicted: Counts  # evicted by the outbox and not stored centrally
    unknown: Counts  # open windows the central store cannot resolve: allowed either way
    refused: int  # windows the outbox refused (the capacity policy never refuses footfall)
    windows: int  # committed windows
    conserved: bool

    @property
    def missing(self) -> Counts:
        """Produced minus evicted minus landed: what went missing (negative: counted twice)."""
        return (
            self.produced[0] - self.evicted[0] - self.landed[0],
            self.produced[1] - self.evicted[1] - self.landed[1],
        )


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

    def footfall_totals(self) -> dict[str, int]:
        """Visitor counts over the devices checked: produced, landed, evicted (in + out), folded."""
        checked = [d.footfall for d in self.devices if d.footfall is not None]
        return {
            "produced": sum(f.produced[0] + f.produced[1] for f in checked),
            "landed": sum(f.landed[0] + f.landed[1] for f in checked),
            "evicted": sum(f.evicted[0] + f.evicted[1] for f in checked),
            "not_conserved": sum(not f.conserved for f in checked),
            "folded": sum(d.folded for d in self.devices),
        }

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


def _sum(counts: Iterable[Counts]) -> Counts:
    total_in = total_out = 0
    for n_in, n_out in counts:
        total_in += n_in
        total_out += n_out
    return total_in, total_out


def check_footfall(
    snap: DeviceSnapshot,
    ledger: FootfallLedger,
    stored: Mapping[str, tuple[int, Counts]],
    report: InvariantReport,
) -> FootfallResult:
    """Invariant 7. ``stored``: event id -> (seq, counts) of the device's footfall in the central
    store (any seq: open windows are looked up by id)."""
    name = f"{snap.store}/{snap.device}"
    upto = snap.upto_seq
    by_seq = dict(stored.values())
    committed = {seq: c for seq, c in ledger.committed.items() if seq <= upto}
    # An open window found centrally was committed (a stored event is never one folded away).
    found = {event_id: stored[event_id] for event_id in ledger.open if event_id in stored}
    committed.update({seq: ledger.open[event_id] for event_id, (seq, _) in found.items() if seq <= upto})
    unknowns = [c for event_id, c in ledger.open.items() if event_id not in found]
    produced = _sum(committed.values())
    landed = _sum(c for seq, c in by_seq.items() if seq <= upto)
    view = snap.outbox
    # Evicted after it was sent: lost unless it landed before the ack went missing.
    evicted = _sum(
        c for seq, c in (view.evicted_footfall.items() if view else ()) if seq <= upto and seq not in by_seq
    )
    # Windows above the snapshot folded into one at or below it after the snapshot (only while the
    # outbox is still over its limit) would land above what was produced up to it: allow for them.
    before = snap.folded_at_snapshot
    if view is not None and before is not None and sum(view.folded.values()) > before:
        unknowns += [c for seq, c in ledger.committed.items() if seq > upto]
        report.notes.append(f"{name}: footfall folded after the snapshot; counts checked within a range")
    unknown = _sum(unknowns)
    extra = (landed[0] - (produced[0] - evicted[0]), landed[1] - (produced[1] - evicted[1]))
    conserved = 0 <= extra[0] <= unknown[0] and 0 <= extra[1] <= unknown[1]
    if not conserved:
        report.violations.append(
            f"{name}: visitor counts not conserved: stored in/out {landed[0]}/{landed[1]}, produced "
            f"{produced[0]}/{produced[1]} minus evicted {evicted[0]}/{evicted[1]} = "
            f"{produced[0] - evicted[0]}/{produced[1] - evicted[1]}"
            + (f" (+ up to {unknown[0]}/{unknown[1]} of windows a kill -9 left open)" if any(unknown) else "")
        )
    if ledger.refused:
        report.violations.append(f"{name}: {len(ledger.refused)} footfall windows refused by the outbox")
    return FootfallResult(
        produced=produced,
        landed=landed,
        evicted=evicted,
        unknown=unknown,
        refused=len(ledger.refused),
        windows=len(committed),
        conserved=conserved and not ledger.refused,
    )


def check_device(
    snap: DeviceSnapshot,
    keys: Sequence[tuple[str, int]],
    scan_texts: Sequence[str],
    report: InvariantReport,
    footfall: Mapping[str, tuple[int, Counts]] | None = None,
) -> DeviceResult:
    """``keys``: (event id, seq) of every stored event of the device; ``scan_texts``: its scans;
    ``footfall``: event id -> (seq, (in, out)) of its stored footfall (needed with a ledger)."""
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
    folded = sum(snap.outbox.folded.values()) if snap.outbox is not None else 0
    unexplained = max(0, gaps - given_up - folded)
    if dup_ids:
        report.violations.append(f"{name}: {len(dup_ids)} event ids stored twice: {dup_ids[:SHOW]}")
    if dup_seqs:
        report.violations.append(f"{name}: {len(dup_seqs)} sequence numbers under two ids: {dup_seqs[:SHOW]}")
    if unexplained:
        missing = sorted(set(range(1, snap.upto_seq + 1)) - stored_seqs)
        report.violations.append(
            f"{name}: {unexplained} sequence numbers missing beyond the {given_up} the outbox gave up "
            f"and the {folded} it folded: {missing[:SHOW]}"
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
        folded=folded,
    )
    if snap.footfall is not None:
        if footfall is None:
            report.notes.append(f"{name}: no footfall rows from the central store: counts not checked")
        else:
            result.footfall = check_footfall(snap, snap.footfall, footfall, report)
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
    footfall: dict[tuple[str, str], dict[str, tuple[int, Counts]]] | None = None
    if rows is not None and any(s.footfall is not None for s in snaps):
        footfall = {k: {} for k in wanted}
        for r in rows("footfall"):
            key = (r["store"], r["device"])
            if key in footfall:
                footfall[key][str(r["event_id"])] = (int(r["seq"]), (int(r["in_count"]), int(r["out_count"])))
    for snap in snaps:
        key = (snap.store, snap.device)
        check_device(snap, keys[key], texts[key], report, None if footfall is None else footfall[key])
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
