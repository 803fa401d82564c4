"""The fleet simulator end to end: a small fleet on a real mosquitto, restarted mid-run.

Exactly once, checked against the central store: every event every device committed is there once,
and each device's sequence numbers run 1..n without a gap. No timing assertions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.broker import mosquitto_binary
from harness.fleet import FleetOptions, FleetReport, run_fleet
from tests.conftest import _unavailable

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    if mosquitto_binary() is None:
        _unavailable("mosquitto binary not installed")


def _check_exactly_once(r: FleetReport, devices: int) -> None:
    assert r.produced > 0
    assert r.landed == r.produced
    assert r.lost == 0
    assert r.duplicated == 0
    assert r.duplicated_seq == 0
    assert r.devices_with_gaps == 0
    per_device = r.per_device
    assert len(per_device) == devices
    for name, d in per_device.items():
        assert d["contiguous"], f"{name}: sequence numbers not 1..{d['produced']}"
        assert d["landed"] == d["produced"] > 0, name


def test_small_fleet_survives_a_broker_restart(tmp_path: Path) -> None:
    report = run_fleet(
        FleetOptions(
            stores=10,
            devices=2,
            rate=5,
            duration=7,
            processes=2,
            restart_broker_at=3,
            restart_downtime=0.5,
            heartbeat_s=1,
            ack_timeout_s=2,
            reconnect_min_s=0.1,
            reconnect_max_s=1,
            drain_timeout=60,
            workdir=str(tmp_path),
            quiet=True,
        )
    )
    _check_exactly_once(report, 20)
    assert report.reconnects >= 20  # every device lost the broker once and came back
    assert report.restart_drain_s is not None  # the backlog of the outage was drained


def test_agent_driver_small_fleet(tmp_path: Path) -> None:
    """The same checks with one full Agent per device (uplink, heartbeat and pipeline threads)."""
    report = run_fleet(
        FleetOptions(
            stores=2,
            devices=2,
            rate=5,
            duration=3,
            processes=1,
            driver="agent",
            heartbeat_s=1,
            ack_timeout_s=2,
            drain_timeout=60,
            workdir=str(tmp_path),
            quiet=True,
        )
    )
    _check_exactly_once(report, 4)
