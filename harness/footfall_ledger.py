"""The footfall ledger: every footfall window an agent handed to its outbox, with its counts.

The invariant checker proves visitor counts are conserved through folding, eviction, resends and
kills (``harness.invariants``: what landed centrally equals what was produced minus what the
outbox evicted). "Produced" has to come from outside the outbox, so the harness runs its agents
with the outbox's ``append`` wrapped (``tap``): before each append that holds footfall windows it
writes their ids and counts, after it the outcome. One line per fact, each batch of lines one
``write`` to a file opened with ``O_APPEND`` (a kill -9 cannot lose a write that returned):

    I <id> <in> <out>    about to append this window
    C <id> <seq>         committed under this seq (0: refused by the capacity policy)
    X <id>               the append raised (disk full, ...): nothing committed

A window with an ``I`` line and no outcome met a kill -9 between the two writes: it may or may not
be committed (``open``); the checker resolves it by its id in the central store where it can and
otherwise allows for its counts. Open windows after the last outcome in the file are appends in
flight while the ledger was read (``in_flight``).

    python -m harness.footfall_ledger --ledger FILE run --config device.json

runs ``omni-edge`` with the tap on the agent's outbox. Keep the ledger off a disk the test fills:
a window whose lines could not be written is reported as unknown, never invented.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edge_agent.outbox import NewEvent, SqliteOutbox

Counts = tuple[int, int]  # (in_count, out_count)


def _write(fd: int, lines: list[str]) -> None:
    # A full disk: the window shows as open (unknown), which the checker allows for.
    with contextlib.suppress(OSError):
        os.write(fd, "".join(lines).encode())


def tap(outbox: SqliteOutbox, path: str | Path) -> None:
    """Record every footfall window appended to ``outbox`` from now on in the ledger at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    append = outbox.append

    def tapped(events: Sequence[NewEvent]) -> list[int]:
        windows: list[tuple[int, str]] = []
        intents: list[str] = []
        for i, ev in enumerate(events):
            if ev.kind != "footfall":
                continue
            doc = orjson.loads(ev.body(0))
            p = doc["payload"]
            windows.append((i, doc["id"]))
            intents.append(f"I {doc['id']} {int(p['in_count'])} {int(p['out_count'])}\n")
        if not windows:
            return append(events)
        _write(fd, intents)
        try:
            seqs = append(events)
        except BaseException:
            _write(fd, [f"X {event_id}\n" for _, event_id in windows])
            raise
        _write(fd, [f"C {event_id} {seqs[i]}\n" for i, event_id in windows])
        return seqs

    setattr(outbox, "append", tapped)  # noqa: B010 - an instance attribute over the method


@dataclass
class FootfallLedger:
    committed: dict[int, Counts] = field(default_factory=dict)  # seq -> counts
    refused: list[Counts] = field(default_factory=list)  # appended, refused by the capacity policy
    failed: int = 0  # appends that raised: never committed
    open: dict[str, Counts] = field(default_factory=dict)  # id -> counts: cut short by a kill -9
    in_flight: dict[str, Counts] = field(default_factory=dict)  # open at the end of the file

    def summary(self) -> dict[str, Any]:
        return {
            "committed": len(self.committed),
            "in": sum(c[0] for c in self.committed.values()),
            "out": sum(c[1] for c in self.committed.values()),
            "refused": len(self.refused),
            "failed": self.failed,
            "open": len(self.open),
        }


def read_footfall_ledger(path: str | Path) -> FootfallLedger:
    """Parse a ledger (a torn last line, from a kill -9 mid-write, is ignored); missing: empty."""
    ledger = FootfallLedger()
    try:
        text = Path(path).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ledger
    pending: dict[str, Counts] = {}
    since_outcome: list[str] = []  # intents after the last outcome line
    for line in text.split("\n")[:-1]:  # the part after the last newline is torn (or empty)
        parts = line.split()
        if len(parts) == 4 and parts[0] == "I" and parts[2].isdigit() and parts[3].isdigit():
            pending[parts[1]] = (int(parts[2]), int(parts[3]))
            since_outcome.append(parts[1])
            continue
        if len(parts) == 3 and parts[0] == "C" and parts[2].isdigit() and parts[1] in pending:
            counts = pending.pop(parts[1])
            if int(parts[2]) > 0:
                ledger.committed[int(parts[2])] = counts
            else:
                ledger.refused.append(counts)
        elif len(parts) == 2 and parts[0] == "X" and parts[1] in pending:
            del pending[parts[1]]
            ledger.failed += 1
        else:
            continue
        since_outcome.clear()
    for event_id, counts in pending.items():
        if event_id in since_outcome:
            ledger.in_flight[event_id] = counts
        else:
            ledger.open[event_id] = counts
    return ledger


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.footfall_ledger", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--ledger", required=True, type=Path, help="ledger file (appended to)")
    ap.add_argument("omni_edge", nargs=argparse.REMAINDER, help="omni-edge arguments, e.g. run --config FILE")
    args = ap.parse_args(argv)
    import edge_agent.agent as agent_module
    from edge_agent.cli import main as omni_edge

    def tapped_outbox(*a: Any, **kw: Any) -> SqliteOutbox:
        outbox = SqliteOutbox(*a, **kw)
        tap(outbox, args.ledger)
        return outbox

    setattr(agent_module, "SqliteOutbox", tapped_outbox)  # noqa: B010 - the agent builds its outbox here
    return omni_edge(args.omni_edge)


if __name__ == "__main__":
    sys.exit(main())
