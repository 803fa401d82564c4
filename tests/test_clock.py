"""Clock jumps on a device: noticed, reported, and harmless to delivery."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from edge_agent.clock import FAULT_CLOCK_ENV, WallClock
from harness.broker import Mosquitto
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store
from tests.e2e import assert_exactly_once, device_doc, landed, ledger_numbers, wait_until


def test_wall_clock_reports_jumps_both_ways(tmp_path: Path) -> None:
    skew = tmp_path / "skew"
    clock = WallClock(str(skew))
    assert clock.jump() is None
    skew.write_text("3600")
    time.sleep(0.25)  # the skew file is re-read at most every 0.2 s
    jump = clock.jump()
    assert jump is not None and jump == pytest.approx(3600, abs=1)
    assert clock.jump() is None  # reported once
    skew.write_text("-86400")
    time.sleep(0.25)
    jump = clock.jump()
    assert jump is not None and jump == pytest.approx(-90000, abs=1)


@pytest.mark.broker
def test_backward_and_forward_jumps_lose_nothing_and_are_reported(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    skew = tmp_path / "skew"
    monkeypatch.setenv(FAULT_CLOCK_ENV, str(skew))
    central = str(tmp_path / "central.db")
    store = open_central_store(central)
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port))
    ingest.start()
    state = tmp_path / "edge"
    agent = Agent(DeviceConfig.model_validate(device_doc(state, mosquitto.port, rate=300, total=1500)))
    agent.start()
    try:
        wait_until(lambda: len(ledger_numbers(state)) >= 300, what="events before the jump")
        skew.write_text("-3600")  # an hour back
        wait_until(lambda: len(ledger_numbers(state)) >= 800, what="events after the backward jump")
        skew.write_text("0")  # and forward again
        wait_until(lambda: len(ledger_numbers(state)) == 1500, what="all produced")
        wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained")
    finally:
        agent.stop()
        ingest.stop()
    try:
        assert landed(central) >= 1500
        assert_exactly_once(central, "d1", ledger_numbers(state))
        jumps = [r["metrics"]["jump_s"] for r in store.rows("health") if r["component"] == "clock"]  # type: ignore[attr-defined]
        assert len(jumps) == 2
        assert jumps[0] == pytest.approx(-3600, abs=2) and jumps[1] == pytest.approx(3600, abs=2)
        # The scan times show the hour going back and forward; the sequence numbers never did.
        scans = sorted(store.rows("scan"), key=lambda r: r["seq"])  # type: ignore[attr-defined]
        steps = [(b["ts"] - a["ts"]).total_seconds() for a, b in itertools.pairwise(scans)]
        assert min(steps) < -3500 and max(steps) > 3500
    finally:
        store.close()
