"""Central store write throughput: synthetic scan events, 100 per write call, as the ingest does.

    .venv/bin/python bench/central_store.py --store sqlite --events 200000
    .venv/bin/python bench/central_store.py --store postgresql://postgres@127.0.0.1:5432/test

SQLite writes to a file in a temporary directory; PostgreSQL writes into a private schema that is
dropped afterwards. Events are built before the clock starts, so the figure is the store's own
cost (row encoding + database). The last line is one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync.central.store import CentralStore, StoredEvent
from sync.ids import uuid7_str
from sync.stored import from_builtins

CODE_KINDS = ("product", "coupon", "member", "other")


def synthetic_scans(n: int, stores: int = 50) -> list[StoredEvent]:
    start = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    events: list[StoredEvent] = []
    for i in range(n):
        kind = CODE_KINDS[i % len(CODE_KINDS)]
        events.append(
            from_builtins({
                "id": uuid7_str(),
                "store": f"store-{i % stores:03d}",
                "device": f"dev-{i % stores:03d}-a",
                "seq": i // stores + 1,
                "ts": start + timedelta(milliseconds=7 * i),
                "kind": "scan",
                "payload": {
                    "camera": "door-1",
                    "code_kind": kind,
                    "rule": "sku" if kind == "product" else None,
                    "symbology": "QRCode",
                    "text": f"https://shop.example/p/{i:08d}?src=qr",
                    "data_b64": None,
                    "truncated": False,
                    "pseudonymised": kind == "member",
                    "fields": {"sku": f"{i:08d}"} if kind == "product" else {},
                },
            })
        )
    return events


def open_store(target: str, workdir: Path, synchronous: str) -> tuple[CentralStore, Any]:
    """The store under test and a clean-up callable."""
    if target == "sqlite":
        from sync.central.sqlite_store import SqliteCentralStore

        sync_mode: Any = synchronous
        return SqliteCentralStore(workdir / "central.db", synchronous=sync_mode), lambda: None
    import psycopg

    from sync.central.pg_store import PostgresCentralStore

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(target, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in target else "?"
    store = PostgresCentralStore(f"{target}{sep}options=-csearch_path%3D{schema}")

    def drop() -> None:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()

    return store, drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100, help="events per write call (the ingest's batch)")
    ap.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = ap.parse_args()
    backend = "sqlite" if args.store == "sqlite" else "postgres"

    events = synthetic_scans(args.events)
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        store, cleanup = open_store(args.store, Path(tmp), args.sqlite_synchronous)
        try:
            t0 = time.perf_counter()
            new = sum(store.write(b) for b in batches)
            elapsed = time.perf_counter() - t0
            assert new == len(events), f"stored {new} of {len(events)}"
            assert store.count_events() == len(events)
            t1 = time.perf_counter()
            again = sum(store.write(b) for b in batches)
            dup_elapsed = time.perf_counter() - t1
            assert again == 0
        finally:
            store.close()
            cleanup()

    rate = len(events) / elapsed
    dup_rate = len(events) / dup_elapsed
    print(f"{backend}: {len(events)} scans, {len(batches)} writes of {args.batch}: {rate:,.0f} events/s")
    print(f"{backend}: the same {len(events)} again (all duplicates): {dup_rate:,.0f} events/s")
    result: dict[str, Any] = {"backend": backend, "events": len(events), "events_per_s": round(rate)}
    if backend == "sqlite":
        result["synchronous"] = args.sqlite_synchronous
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
