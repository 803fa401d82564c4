"""The ingest's hot path in one process, without MQTT: validate, build rows, write, commit.

    .venv/bin/python bench/ingest_hot_path.py [--messages 400] [--batch 500]

Builds the events messages first (scan events with UUIDv7 ids, as a device sends them), then runs
them through ``sync.validate.validate_message`` and a central SQLite store:

- ``apsw, group commit``: the real ``SqliteCentralStore`` opened as the ingest opens it
  (``group_commit=True``): one thread validates and writes with ``synchronous=NORMAL`` while another
  calls ``sync()`` (one fsync of the WAL) for all the commits since its previous call, as the
  ingest's acker does before it acknowledges;
- ``apsw, one thread``: the same store with ``synchronous=FULL`` (every commit waits for its fsync);
- ``apsw, two threads``: the same, validating and preparing on one thread while the other writes
  (the arrangement the ingest uses for PostgreSQL);
- ``sqlite3, one thread``: the same SQL, schema and pragmas through the standard ``sqlite3``
  module, for comparison (the driver the central store used before).

Each variant writes into a fresh file (WAL; ``synchronous=FULL`` unless said otherwise). Prints
events/s and CPU microseconds per event; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync.central.sqlite_store import _INSERT_SQL, SqliteCentralStore
from sync.ids import uuid7_str
from sync.validate import Validated, validate_message

TOPIC = "omni/v1/s1/d1/events"


def messages(n: int, batch: int) -> list[bytes]:
    t0 = datetime.now(UTC)
    out = []
    for k in range(n):
        events = []
        for i in range(batch):
            seq = k * batch + i + 1
            events.append(
                {
                    "id": uuid7_str(),
                    "store": "s1",
                    "device": "d1",
                    "seq": seq,
                    "ts": (t0 + timedelta(microseconds=37 * seq)).isoformat().replace("+00:00", "Z"),
                    "kind": "scan",
                    "payload": {
                        "camera": "till-1",
                        "code_kind": "product",
                        "text": f"https://shop.example/p/{seq:08d}",
                        "fields": {"sku": f"{seq:08d}"},
                    },
                }
            )
        out.append(orjson.dumps({"v": 1, "batch": f"b{k}", "store": "s1", "device": "d1", "events": events}))
    return out


def expected(msgs: list[bytes]) -> int:
    return sum(len(orjson.loads(m)["events"]) for m in msgs)


def events_of(v: Validated) -> list[Any]:
    return list(v.events)


def run_apsw(msgs: list[bytes], *, threads: int, group_commit: bool = False) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        store = SqliteCentralStore(Path(d) / "central.db", group_commit=group_commit)
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        if group_commit:
            committed: queue.SimpleQueue[bool] = queue.SimpleQueue()

            def syncer() -> None:
                while True:
                    more = [committed.get()]
                    while not committed.empty():
                        more.append(committed.get())
                    store.sync()
                    if not all(more):
                        return

            acker = threading.Thread(target=syncer)
            acker.start()
            for m in msgs:
                store.write_prepared(store.prepare(events_of(validate_message(TOPIC, m))))
                committed.put(True)
            committed.put(False)
            acker.join()
        elif threads == 1:
            for m in msgs:
                store.write_prepared(store.prepare(events_of(validate_message(TOPIC, m))))
        else:
            q: queue.Queue[Any] = queue.Queue(maxsize=2)

            def produce() -> None:
                for m in msgs:
                    q.put(store.prepare(events_of(validate_message(TOPIC, m))))
                q.put(None)

            producer = threading.Thread(target=produce)
            producer.start()
            while (prepared := q.get()) is not None:
                store.write_prepared(prepared)
            producer.join()
        wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
        assert store.count_events() == expected(msgs), "events missing from the store"
        store.close()
    return wall, cpu


def run_sqlite3(msgs: list[bytes]) -> tuple[float, float]:
    """Same schema (created by the real store, then closed), same SQL and pragmas, stdlib driver."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "central.db"
        SqliteCentralStore(path).close()
        builder = SqliteCentralStore(Path(d) / "rows-only.db")  # prepare() touches no database
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        for m in msgs:
            prepared = builder.prepare(events_of(validate_message(TOPIC, m)))
            conn.execute("BEGIN IMMEDIATE")
            for kind, rows in prepared.by_kind.items():
                conn.executemany(_INSERT_SQL[kind], rows)
            conn.execute("COMMIT")
        wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
        (count,) = conn.execute("SELECT count(*) FROM scans").fetchone()
        assert count == expected(msgs), "events missing from the store"
        conn.close()
        builder.close()
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--batch", type=int, default=500, help="events per message")
    args = ap.parse_args(argv)
    msgs = messages(args.messages, args.batch)
    n = args.messages * args.batch
    variants: dict[str, Callable[[], tuple[float, float]]] = {
        "apsw, one thread": lambda: run_apsw(msgs, threads=1),
        "apsw, group commit": lambda: run_apsw(msgs, threads=1, group_commit=True),
        "apsw, two threads": lambda: run_apsw(msgs, threads=2),
        "sqlite3, one thread": lambda: run_sqlite3(msgs),
    }
    result: dict[str, Any] = {"events": n, "batch": args.batch, "load_average": os.getloadavg()[0]}
    for name, run in variants.items():
        wall, cpu = run()
        print(f"{name:22s} {n / wall:9,.0f} events/s  {cpu / n * 1e6:5.2f} CPU us/event")
        result[name] = {"events_per_s": round(n / wall), "cpu_us_per_event": round(cpu / n * 1e6, 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
