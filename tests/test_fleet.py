"""The fleet table: both central store backends, the report's alarms, and presence on a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from harness.broker import Mosquitto
from sync.central.fleet import FleetService, fleet_report, update_from_status
from sync.central.ops import OpsBroker
from sync.central.pg_store import PostgresCentralStore
from sync.central.sqlite_store import SqliteCentralStore
from sync.central.store import FleetRow, FleetUpdate
from tests.test_config_support import device_doc, wait_until

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Paris
PARIS_HOURS = {"timezone": "Europe/Paris", "weekly": {"mon": ["09:00-19:00"]}, "margin_min": 0}


@pytest.fixture(params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteCentralStore | PostgresCentralStore]:
    s: SqliteCentralStore | PostgresCentralStore
    if request.param == "sqlite":
        s = SqliteCentralStore(tmp_path / "central.db")
    else:
        s = PostgresCentralStore(request.getfixturevalue("pg_url"))
    yield s
    s.close()


def test_fleet_updates_merge_and_last_seen_only_moves_forward(
    store: SqliteCentralStore | PostgresCentralStore,
) -> None:
    store.update_fleet(
        FleetUpdate(
            "s1",
            "d1",
            seen_at=T0,
            state="online",
            software="0.1.0",
            config_version=3,
            config_hash="ab" * 32,
            backlog_events=12,
            backlog_bytes=4096,
            backlog_oldest_age_s=1.5,
            clock_offset_s=-0.25,
            heartbeat_s=60,
            opening_hours=PARIS_HOURS,
        )
    )
    store.update_fleet(FleetUpdate("s1", "d1", seen_at=T0 - timedelta(hours=1), backlog_events=0))
    store.update_fleet(FleetUpdate("s1", "d1", config_result="rolled_back"))
    store.update_fleet(FleetUpdate("s0", "d9", state="offline"))
    rows = store.fleet()
    assert [(r.store, r.device) for r in rows] == [("s0", "d9"), ("s1", "d1")]
    r = rows[1]
    assert r.last_seen == T0  # the older message did not move it back
    assert (r.state, r.software, r.config_version, r.config_result) == ("online", "0.1.0", 3, "rolled_back")
    assert (r.backlog_events, r.backlog_bytes, r.backlog_oldest_age_s) == (0, 4096, 1.5)
    assert (r.clock_offset_s, r.heartbeat_s, r.opening_hours) == (-0.25, 60, PARIS_HOURS)
    assert r.state_changed_at is not None
    changed_at = r.state_changed_at
    store.update_fleet(FleetUpdate("s1", "d1", state="online"))
    assert store.fleet()[1].state_changed_at == changed_at  # same state: not a change
    store.update_fleet(FleetUpdate("s1", "d1", state="offline"))
    assert store.fleet()[1].state == "offline"
    assert store.migrate() == 2


def test_silence_is_an_alarm_only_while_the_store_is_open(tmp_path: Path) -> None:
    store = SqliteCentralStore(tmp_path / "c.db")
    try:
        for device, state in (("up", "online"), ("down", "offline"), ("quiet", "online")):
            seen = T0 if device != "quiet" else T0 - timedelta(minutes=10)
            store.update_fleet(
                FleetUpdate(
                    "s1", device, seen_at=seen, state=state, heartbeat_s=60, opening_hours=PARIS_HOURS
                )
            )
        store.update_fleet(FleetUpdate("s2", "nohours", seen_at=T0, state="offline"))

        open_now = fleet_report(store, now=T0 + timedelta(seconds=30))
        status = {ln.row.device: (ln.status, ln.alarm) for ln in open_now.lines}
        assert status == {
            "up": ("online", False),
            "down": ("offline", True),
            "quiet": ("silent", True),  # online in the table, but no heartbeat for 3 periods
            "nohours": ("offline", True),  # unknown opening hours count as open
        }
        night = fleet_report(store, now=T0 + timedelta(hours=12))  # 23:00 in Paris
        assert {ln.row.device for ln in night.alarms} == {"nohours"}
        assert "closed" in night.table() and "1 alarm(s)" in night.table()
    finally:
        store.close()


def test_a_retained_status_does_not_count_as_seen_now() -> None:
    now = datetime(2025, 3, 3, 12, tzinfo=UTC)
    msg = orjson.dumps({"v": 1, "state": "online", "ts": T0.timestamp(), "config_version": 2})
    replayed = update_from_status("s1", "d1", msg, retained=True, now=now)
    live = update_from_status("s1", "d1", msg, retained=False, now=now)
    assert replayed is not None and live is not None
    assert replayed.seen_at == T0 and replayed.clock_offset_s is None
    assert live.seen_at == now and live.clock_offset_s == pytest.approx(-7200)
    assert update_from_status("s1", "d1", b"not json", retained=False, now=now) is None


@pytest.mark.broker
def test_presence_flips_to_offline_when_the_agent_is_killed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    central = SqliteCentralStore(tmp_path / "central.db")
    service = FleetService(central, OpsBroker(port=port))
    service.start()
    doc = device_doc(tmp_path, port)
    config = tmp_path / "device.json"
    config.write_text(orjson.dumps(doc).decode())
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def row() -> FleetRow | None:
            rows = [r for r in central.fleet() if (r.store, r.device) == ("s1", "d1")]
            return rows[0] if rows else None

        # Heartbeats refresh the retained status: live messages give last seen and the clock offset.
        wait_until(
            lambda: (r := row()) is not None and r.state == "online" and r.clock_offset_s is not None,
            30,
            "device online with a heartbeat",
        )
        r = row()
        assert r is not None and r.clock_offset_s is not None
        assert r.software == "0.1.0" and r.config_version == 0
        assert r.backlog_events is not None and abs(r.clock_offset_s) < 5
        assert not fleet_report(central).alarms

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # The kernel closes the socket and the broker publishes the retained last will (a link that
        # just vanishes takes 1.5 keepalives, 7.5 s here).
        wait_until(lambda: (r := row()) is not None and r.state == "offline", 30, "last will: offline")
        assert [ln.alarm for ln in fleet_report(central).lines] == [True]  # always open: an alarm
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        service.stop()
        central.close()
