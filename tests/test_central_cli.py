"""``omni-central``: one ingest process that also keeps the fleet table, and the reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from harness.broker import Mosquitto
from harness.processes import start_ingest
from sync.central.cli import main
from sync.central.stores import open_central_store
from tests.e2e import device_doc, landed, wait_until

pytestmark = pytest.mark.broker


def fleet_states(central: str) -> dict[tuple[str, str], str | None]:
    store = open_central_store(central)
    try:
        return {(r.store, r.device): r.state for r in store.fleet()}  # type: ignore[attr-defined]
    finally:
        store.close()


def test_ingest_with_fleet_tracks_presence_and_reports_read_back(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    central = str(tmp_path / "central.db")
    open_central_store(central).close()
    proc = start_ingest(central, f"127.0.0.1:{mosquitto.port}", client_id="ingest-f", extra=["--fleet"])
    agent = Agent(DeviceConfig.model_validate(device_doc(tmp_path / "edge", mosquitto.port, total=200)))
    agent.start()
    try:
        wait_until(lambda: fleet_states(central).get(("s1", "d1")) == "online", what="device online")
        wait_until(lambda: landed(central) >= 200, what="events landed")
        agent.stop()  # a clean stop publishes offline
        wait_until(lambda: fleet_states(central).get(("s1", "d1")) == "offline", what="device offline")
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
    assert main(["report", "--store", central]) == 0
    out = capsys.readouterr().out
    scans = [line.split() for line in out.splitlines() if line.startswith("  s1 ") and len(line.split()) == 4]
    assert sum(int(cols[3]) for cols in scans) == 200


def test_ingest_refuses_a_group_size_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--store", str(tmp_path / "c.db"), "--max-messages-per-write", "0"])
    assert exit_info.value.code == 2
    assert "--max-messages-per-write: must be 1 or more, not 0" in capsys.readouterr().err
    assert not (tmp_path / "c.db").exists()  # refused before anything was opened
