"""The backlog forecast: hours until the outbox's capacity and the disk are reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.backlog import BacklogForecast

LIMITS = {"max_rows": 1_000_000, "max_bytes": 10_000_000, "disk_free_bytes": 3_600_000}


def test_no_forecast_before_the_minimum_span() -> None:
    fc = BacklogForecast(window_s=900, min_span_s=60)
    assert fc.forecast(**LIMITS).hours_to_capacity is None
    fc.observe(0, 0, 0, 0)
    fc.observe(59, 590, 59_000, 59_000)
    f = fc.forecast(**LIMITS)
    assert (f.events_per_s, f.hours_to_capacity, f.hours_to_disk_full) == (None, None, None)


def test_growth_gives_hours_to_the_first_limit() -> None:
    fc = BacklogForecast(window_s=900, min_span_s=60)
    fc.observe(0, 0, 0, 4096)
    fc.observe(120, 1200, 120_000, 4096 + 240_000)  # 10 events, 1,000 bytes, 2,000 on disk per s
    f = fc.forecast(**LIMITS)
    assert (f.events_per_s, f.bytes_per_s, f.disk_bytes_per_s) == (10.0, 1000.0, 2000.0)
    # bytes run out first: (10,000,000 - 120,000) / 1,000 / 3,600; rows would take ~27.7 h
    assert f.hours_to_capacity == pytest.approx(9_880_000 / 1000 / 3600)
    assert f.hours_to_disk_full == pytest.approx(3_600_000 / 2000 / 3600)  # 0.5 h
    rows_first = fc.forecast(max_rows=1300, max_bytes=10_000_000, disk_free_bytes=3_600_000)
    assert rows_first.hours_to_capacity == pytest.approx(100 / 10 / 3600)


def test_a_draining_or_steady_backlog_never_fills() -> None:
    fc = BacklogForecast(window_s=900, min_span_s=60)
    fc.observe(0, 5000, 500_000, 900_000)
    fc.observe(300, 1000, 100_000, 900_000)
    f = fc.forecast(**LIMITS)
    assert f.events_per_s == pytest.approx(-40 / 3)
    assert (f.hours_to_capacity, f.hours_to_disk_full) == (None, None)


def test_a_limit_already_reached_is_zero_hours_even_when_not_growing() -> None:
    fc = BacklogForecast(window_s=900, min_span_s=60)
    fc.observe(0, 2000, 200_000, 0)
    fc.observe(60, 2000, 200_000, 0)
    f = fc.forecast(max_rows=1500, max_bytes=10_000_000, disk_free_bytes=0)
    assert (f.hours_to_capacity, f.hours_to_disk_full) == (0.0, 0.0)


def test_the_window_slides_so_an_outage_shows_within_it() -> None:
    fc = BacklogForecast(window_s=600, min_span_s=60)
    for t in range(0, 3600, 60):  # an hour of a steady, drained backlog
        fc.observe(t, 10, 1000, 50_000)
    for k, t in enumerate(range(3600, 4300, 60), start=1):  # then the uplink is down
        fc.observe(t, 10 + 600 * k, 1000 + 60_000 * k, 50_000 + 90_000 * k)
    f = fc.forecast(**LIMITS)
    assert f.events_per_s == pytest.approx(10.0)  # the window holds only the outage by now
    assert f.bytes_per_s == pytest.approx(1000.0)
    fc.observe(4200, 10, 1000, 50_000)  # the same instant, or a clock going back: ignored
    fc.observe(4100, 10, 1000, 50_000)
    assert fc.forecast(**LIMITS).events_per_s == pytest.approx(10.0)


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="min_span_s"):
        BacklogForecast(window_s=30, min_span_s=60)
    with pytest.raises(ValueError, match="min_span_s"):
        BacklogForecast(window_s=900, min_span_s=0)


def test_the_heartbeat_carries_the_forecast(tmp_path: Path) -> None:
    from device_configs.device import DeviceConfig
    from edge_agent.agent import Agent
    from sync.wire import ScanPayload

    doc = {"store": "s1", "device": "d1", "state_dir": "state", "outbox": {"max_rows": 1000}}
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    try:
        first = agent.health(now=0.0)
        assert first["backlog_growth_eps"] is None and first["backlog_hours_to_capacity"] is None
        for n in range(120):  # nothing is sent (no broker): the backlog grows by 120 in 60 s
            agent.emit(ScanPayload(camera="till", code_kind="product", text=f"p{n}"))
        m = agent.health(now=60.0)
        assert m["backlog_growth_eps"] == 2.0
        assert m["backlog_hours_to_capacity"] == round((1000 - 120) / 2 / 3600, 2)
        assert m["disk_hours_to_full"] is not None and m["disk_hours_to_full"] > 0
    finally:
        agent.outbox.close()


def test_store_it_is_told_how_long_the_store_holds_out_while_the_uplink_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from device_configs.device import DeviceConfig
    from edge_agent.agent import OUTLOOK_LOG_S, Agent

    doc = {"store": "s1", "device": "d1", "state_dir": "state"}
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    down = {
        "mqtt_connected": False,
        "backlog_events": 7200,
        "backlog_oldest_age_s": 5400.0,
        "backlog_growth_eps": 2.0,
        "backlog_hours_to_capacity": 12.5,
        "disk_hours_to_full": 80.25,
    }
    try:
        with caplog.at_level("WARNING", logger="edge_agent.agent"):
            line = agent.log_backlog_outlook(down, now=1000.0)
            assert line == (
                "uplink down: 7200 events waiting (oldest 1.5 h), growing 2.00/s; the outbox reaches "
                "its capacity in 12.5 h (then footfall is folded and health events give way; scans "
                "are kept), the disk is full in 80.2 h"
            )
            assert agent.log_backlog_outlook(down, now=1000.0 + OUTLOOK_LOG_S - 1) is None  # rate limit
            assert agent.log_backlog_outlook({**down, "mqtt_connected": True}, now=5000.0) is None
            assert agent.log_backlog_outlook({**down, "backlog_growth_eps": -3.0}, now=5000.0) is None
            assert agent.log_backlog_outlook({**down, "backlog_growth_eps": None}, now=5000.0) is None
            again = agent.log_backlog_outlook({**down, "disk_hours_to_full": None}, now=5000.0)
            assert again is not None and again.endswith("scans are kept)")
        assert [r.getMessage() for r in caplog.records] == [line, again]
    finally:
        agent.outbox.close()
