"""Helpers for end-to-end tests: device configs, agents in subprocesses, waiting, exactly-once checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sync.central.stores import open_central_store

ROOT = Path(__file__).resolve().parents[1]


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def device_doc(
    state_dir: Path,
    port: int,
    *,
    store: str = "s1",
    device: str = "d1",
    rate: float = 1000,
    total: int = 2000,
    ack_timeout_s: float = 2.0,
    heartbeat_s: float = 3600,
    batch: int = 100,
    **sync: Any,
) -> dict[str, Any]:
    return {
        "store": store,
        "device": device,
        "state_dir": str(state_dir),
        "mqtt": {"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        "sync": {
            "ack_timeout_s": ack_timeout_s,
            "heartbeat_s": heartbeat_s,
            "batch_max_events": batch,
            "drain_rate_eps": 0,
            **sync,
        },
        "simulated_sources": [
            {"id": "sim1", "rate_eps": rate, "total": total, "ledger": "ledger.txt", "scan_share": 1.0}
        ],
    }


def ledger_numbers(state_dir: Path) -> list[int]:
    path = state_dir / "ledger.txt"
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split() if x.isdigit()]


class AgentProcess:
    """``python -m edge_agent run --config FILE`` in a subprocess, so it can be kill -9'd."""

    def __init__(self, workdir: Path, doc: dict[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "device.json"
        self.config.write_text(json.dumps(doc))
        self.log = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config)],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)


def central_keys(url: str) -> list[tuple[str, str, str, int, str]]:
    store = open_central_store(url)
    try:
        return [(k.id, k.store, k.device, k.seq, k.kind) for k in store.event_keys()]
    finally:
        store.close()


def assert_exactly_once(url: str, device: str, produced: list[int], killed_at: tuple[int, ...] = ()) -> None:
    """Every produced event is stored once; the device's sequence numbers have no gap or repeat.

    ``killed_at``: ledger lengths at which the agent was kill -9'd. The source writes its ledger
    right after each commit, so a kill between the two leaves scan n+1 committed but unrecorded,
    and the restarted source produces a second scan numbered n+1 (a distinct event with its own
    id and seq). That number, and only that one, may appear twice.
    """
    keys = [k for k in central_keys(url) if k[2] == device]
    ids = Counter(k[0] for k in keys)
    assert not [i for i, n in ids.items() if n > 1], "duplicate event ids in the central store"
    seqs = sorted(k[3] for k in keys)
    assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers have gaps or repeats"
    # Every scan the source saw committed is there, once. The ledger is written after each
    # commit, so one more scan, committed just before a kill -9, may be in the store too.
    store = open_central_store(url)
    try:
        texts = [r["text"] for r in store.rows("scan") if r["device"] == device]  # type: ignore[attr-defined]
    finally:
        store.close()
    numbers = Counter(int(t.rsplit(":", 1)[1]) for t in texts)
    twice = {n for n, c in numbers.items() if c > 1}
    assert max(numbers.values(), default=1) <= 2
    assert twice <= {k + 1 for k in killed_at}, f"scans landed twice: {sorted(twice)[:10]}"
    assert set(produced) <= set(numbers), f"lost scans: {sorted(set(produced) - set(numbers))[:10]}"
    extra = set(numbers) - set(produced)
    assert extra <= {len(produced) + 1}, f"scans nobody produced: {sorted(extra)[:10]}"


def landed(url: str, device: str = "d1") -> int:
    return sum(1 for k in central_keys(url) if k[2] == device)
