"""Central ingest workers as processes, and pre-filled outboxes: shared by benchmarks, the fleet
simulator, the fault harness and the tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from edge_agent.outbox import SqliteOutbox
from sync.ids import uuid7

ROOT = Path(__file__).resolve().parents[1]


def ingest_argv(
    store_url: str,
    broker: str,
    *,
    client_id: str,
    group: str = "ingest",
    extra: Sequence[str] = (),
    log_level: str = "WARNING",
) -> list[str]:
    """``python -m sync.central ingest`` for one worker of a shared-subscription group."""
    return [
        sys.executable, "-m", "sync.central", "--log-level", log_level, "ingest",
        "--store", store_url, "--broker", broker, "--group", group, "--client-id", client_id, *extra,
    ]  # fmt: skip


def start_ingest(
    store_url: str,
    broker: str,
    *,
    client_id: str,
    group: str = "ingest",
    extra: Sequence[str] = (),
    log: IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    argv = ingest_argv(store_url, broker, client_id=client_id, group=group, extra=extra)
    return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)


def prefill_outbox(path: Path, n: int, store: str, device: str, *, chunk: int = 50_000) -> float:
    """Append ``n`` scan events to an outbox (NORMAL sync, bulk); return the seconds it took."""
    ob = SqliteOutbox(path, synchronous="NORMAL")
    t0 = time.perf_counter()
    seq = ob.next_seq
    ts = time.time()
    iso = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            body = orjson.dumps(
                {
                    "id": str(uuid7()),
                    "store": store,
                    "device": device,
                    "seq": seq,
                    "ts": iso,
                    "kind": "scan",
                    "payload": {
                        "camera": "till-1",
                        "code_kind": "product",
                        "text": f"https://shop.example/p/{i:08d}",
                        "fields": {"sku": f"{i:08d}"},
                    },
                }
            )
            rows.append(("scan", ts, body))
            seq += 1
        ob.append_bodies(rows)
    ob.close()
    return time.perf_counter() - t0
