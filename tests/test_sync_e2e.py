"""End to end on a real mosquitto and real central stores: every event lands exactly once.

Agents, the broker and ingest workers are killed and restarted in the middle; the checks compare
what the simulated source committed (its ledger) with what the central store holds, by id, by
sequence number and by scan text.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from harness.broker import Mosquitto
from harness.processes import start_ingest
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store
from tests.e2e import (
    AgentProcess,
    assert_exactly_once,
    device_doc,
    landed,
    ledger_numbers,
    wait_until,
)

pytestmark = pytest.mark.broker


@pytest.fixture(params=["sqlite", "postgres"])
def central_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def ingest(central_url: str, mosquitto: Mosquitto) -> Iterator[Ingest]:
    store = open_central_store(central_url)
    ing = Ingest(store, BrokerSettings(port=mosquitto.port), client_id="test-ingest")
    ing.start()
    assert ing.wait_connected()
    yield ing
    ing.stop()
    store.close()


def run_agent(tmp_path: Path, doc: dict[str, object]) -> Agent:
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    agent.start()
    return agent


def test_every_event_lands_exactly_once(
    tmp_path: Path, mosquitto: Mosquitto, ingest: Ingest, central_url: str
) -> None:
    state = tmp_path / "edge"
    agent = run_agent(tmp_path, device_doc(state, mosquitto.port, rate=2000, total=3000))
    try:
        wait_until(lambda: len(ledger_numbers(state)) == 3000, what="3000 events produced")
        wait_until(lambda: landed(central_url) == 3000, what="3000 events landed")
        wait_until(lambda: agent.outbox.stats().events == 0, what="outbox drained")
    finally:
        agent.stop()
    assert_exactly_once(central_url, "d1", ledger_numbers(state))
    assert ingest.stats.dead_letters == 0


def test_broker_stop_and_start_mid_run(
    tmp_path: Path, mosquitto: Mosquitto, ingest: Ingest, central_url: str
) -> None:
    state = tmp_path / "edge"
    agent = run_agent(tmp_path, device_doc(state, mosquitto.port, rate=500, total=3000))
    try:
        wait_until(lambda: landed(central_url) >= 500, what="first events landed")
        mosquitto.stop()
        # Events keep being produced into the outbox while the broker is down.
        produced_at_stop = len(ledger_numbers(state))
        wait_until(lambda: len(ledger_numbers(state)) >= produced_at_stop + 300, what="offline production")
        assert agent.uplink.stats.connected is False
        mosquitto.start()
        wait_until(lambda: len(ledger_numbers(state)) == 3000, timeout=60, what="all produced")
        wait_until(lambda: landed(central_url) == 3000, timeout=60, what="all landed after restart")
        wait_until(lambda: agent.outbox.stats().events == 0, what="outbox drained")
        assert agent.uplink.stats.connects >= 2
    finally:
        agent.stop()
    assert_exactly_once(central_url, "d1", ledger_numbers(state))


def test_kill_9_of_the_agent_during_batches(
    tmp_path: Path, mosquitto: Mosquitto, ingest: Ingest, central_url: str
) -> None:
    state = tmp_path / "edge"
    proc = AgentProcess(tmp_path / "agent", device_doc(state, mosquitto.port, rate=1000, total=4000))
    proc.start()
    wait_until(lambda: landed(central_url) >= 1200, what="first events landed")
    proc.kill9()  # mid-stream: batches in flight, appends in progress
    at_kill = len(ledger_numbers(state))
    assert 1200 <= at_kill < 4000
    proc.start()  # the same outbox, the same ledger: production continues after the last entry
    try:
        wait_until(lambda: len(ledger_numbers(state)) == 4000, timeout=60, what="all produced")
        wait_until(lambda: landed(central_url) >= 4000, timeout=60, what="all landed")
    finally:
        assert proc.terminate() == 0
    assert_exactly_once(central_url, "d1", ledger_numbers(state), killed_at=(at_kill,))


def test_kill_9_of_the_ingest_between_commit_and_ack(tmp_path: Path, mosquitto: Mosquitto) -> None:
    central = str(tmp_path / "central.db")
    open_central_store(central).close()

    def ingest_process(*extra: str) -> subprocess.Popen[bytes]:
        return start_ingest(central, f"127.0.0.1:{mosquitto.port}", client_id="ingest-a", extra=extra)

    doomed = ingest_process("--fault-crash-after-commits", "5")
    state = tmp_path / "edge"
    agent = run_agent(tmp_path, device_doc(state, mosquitto.port, rate=1000, total=2000, ack_timeout_s=1))
    try:
        assert doomed.wait(30) == -9  # it really died by SIGKILL after its 5th commit
        stored_by_doomed = landed(central)
        assert stored_by_doomed > 0
        # Those events are committed but unacknowledged: the device still holds them.
        assert agent.outbox.stats().events >= 1
        survivor = ingest_process()  # same client id: its persistent session gets the redelivery
        try:
            wait_until(lambda: len(ledger_numbers(state)) == 2000, what="all produced")
            wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained")
        finally:
            survivor.terminate()
            survivor.wait(10)
    finally:
        agent.stop()
    assert landed(central) == 2000
    assert_exactly_once(central, "d1", ledger_numbers(state))


def test_broker_queue_overflow_is_made_harmless_by_end_to_end_acks(tmp_path: Path) -> None:
    """A broker that drops queued QoS 1 messages (after PUBACKing them) loses nothing."""
    broker = Mosquitto(tmp_path / "mq", max_queued_messages=5)
    broker.start()
    central = str(tmp_path / "central.db")
    store = open_central_store(central)
    ingest = Ingest(store, BrokerSettings(port=broker.port), client_id="slow-ingest")
    try:
        ingest.start()
        assert ingest.wait_connected()
        ingest.stop()  # persistent session: the broker queues for it, but only 5 messages
        state = tmp_path / "edge"
        # A window wide enough for every event to be published once while the ingest is away: the
        # uplink sends what the outbox holds at each pass, so batches can be as small as a few
        # events, and with a narrow window "everything published" would wait on resends.
        agent = run_agent(
            tmp_path,
            device_doc(
                state,
                broker.port,
                rate=5000,
                total=3000,
                batch=50,
                ack_timeout_s=1,
                max_inflight_batches=1000,
            ),
        )
        try:
            wait_until(
                lambda: agent.uplink.stats.events_sent >= 3000, timeout=60, what="everything published"
            )
            time.sleep(0.5)
            ingest = Ingest(store, BrokerSettings(port=broker.port), client_id="slow-ingest")
            ingest.start()
            wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained")
            assert agent.uplink.stats.resends > 0  # the broker dropped some: resends made up for it
        finally:
            agent.stop()
            ingest.stop()
        assert landed(central) == 3000
        assert_exactly_once(central, "d1", ledger_numbers(state))
    finally:
        store.close()
        broker.stop()


def test_agent_starts_while_the_broker_is_down(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mq")  # not started yet
    state = tmp_path / "edge"
    agent = run_agent(tmp_path, device_doc(state, broker.port, rate=500, total=500))
    central = str(tmp_path / "central.db")
    store = open_central_store(central)
    ingest = Ingest(store, BrokerSettings(port=broker.port), client_id="late-ingest")
    try:
        wait_until(lambda: len(ledger_numbers(state)) == 500, what="events produced offline")
        assert agent.uplink.stats.connected is False
        assert agent.uplink.stats.connect_failures >= 1
        assert agent.outbox.stats().events == 500
        broker.start()
        ingest.start()
        wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained")
    finally:
        agent.stop()
        ingest.stop()
        broker.stop()
        store.close()
    assert landed(central) == 500
    assert_exactly_once(central, "d1", ledger_numbers(state))
