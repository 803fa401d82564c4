"""Focused faults on a real broker: hostile traffic on every subscribed topic, and a full outbox.

Also two findings of the chaos harness, now fixed: malformed acks are logged without their
content, and acks delete only inside the batch they answer (batch ids carry a random part).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import apsw
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from harness.broker import Mosquitto
from harness.faults import SCAN_SOURCE, AgentProc, hostile_messages, wait_for
from harness.invariants import check, read_outbox
from harness.netproxy import NetProxy
from sync import topics
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.store import CentralStore
from sync.central.stores import TABLE_OF_KIND, open_central_store
from tests.e2e import assert_exactly_once, central_keys, device_doc, ledger_numbers, wait_until

pytestmark = pytest.mark.broker


class Rogue:
    """A client with no business on these topics, publishing at QoS 1 and waiting for PUBACK."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="rogue", clean_session=True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def rogue(mosquitto: Mosquitto) -> Iterator[Rogue]:
    r = Rogue(mosquitto.port)
    yield r
    r.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, CentralStore]]:
    url = str(tmp_path / "central.db")
    s = open_central_store(url)
    yield url, s
    s.close()


def start_ingest(store: CentralStore, port: int, client_id: str = "hostile-ingest") -> Ingest:
    ingest = Ingest(store, BrokerSettings(port=port), client_id=client_id)
    ingest.start()
    assert ingest.wait_connected()
    return ingest


def test_hostile_traffic_on_every_subscribed_topic(
    tmp_path: Path, mosquitto: Mosquitto, rogue: Rogue, store: tuple[str, CentralStore]
) -> None:
    url, central = store
    state = tmp_path / "edge"
    doc = device_doc(state, mosquitto.port, rate=2000, total=300)
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    agent.start()
    ingest: Ingest | None = None
    rng = random.Random(6)
    messages = [*hostile_messages("s1", "d1", rng), *hostile_messages("s1-rogue", "nobody", rng)]
    try:
        wait_until(lambda: len(ledger_numbers(state)) == 300, what="300 events committed")
        wait_until(lambda: agent.uplink.stats.subscribed, what="agent subscribed")
        # Acks and config first, with no ingest running: nothing legitimate can delete anything.
        acks = [m for m in messages if m[1] == topics.ACKS.for_device("s1", "d1")]
        for _label, topic, payload, _dead in acks:
            rogue.publish(topic, payload)
        wait_until(lambda: agent.uplink.stats.bad_acks >= len(acks), what="every hostile ack refused")
        for _label, topic, payload, _dead in messages:
            if topic == topics.CONFIG.for_device("s1", "d1"):
                rogue.publish(topic, payload, retain=True)
                # The agent handles the latest retained config only: one at a time.
                wait_for(lambda: agent.config.last_ack is not None and agent.config.last_ack.ts > 0, 2)
        rogue.publish(topics.CONFIG.for_device("s1", "d1"), b"", retain=True)
        # Nothing deleted by a hostile ack (a rejected config adds a health event: the audit trail).
        assert len(agent.outbox.read_range(1, 300)) == 300
        assert agent.config.running.version == 0  # no hostile config applied
        assert agent.uplink.stats.connected
        assert all(c.restarts == 0 for c in agent.supervisor.children.values())  # no pipeline crashed

        # Now the events topics, with the ingest running.
        ingest = start_ingest(central, mosquitto.port)
        wait_until(lambda: agent.outbox.stats().events < 300, what="the ingest consumes")
        expected = set()
        for _label, topic, payload, dead in messages:
            if topic.endswith("/events"):
                assert dead
                rogue.publish(topic, payload)
                expected.add(hashlib.sha256(payload).hexdigest())
        wait_until(lambda: agent.outbox.stats().events == 0, what="outbox drained")

        def dead_lettered() -> bool:
            return {d.sha256 for d in central.dead_letters()} >= expected

        wait_until(dead_lettered, what="hostile events dead-lettered")
    finally:
        agent.stop()
        if ingest is not None:
            ingest.stop()
    assert {d.sha256 for d in central.dead_letters()} == expected  # those, and nothing else
    assert_exactly_once(url, "d1", ledger_numbers(state))


def test_full_outbox_keeps_scans_folds_footfall_and_reports_it(
    tmp_path: Path, mosquitto: Mosquitto, store: tuple[str, CentralStore]
) -> None:
    url, central = store
    ingest = start_ingest(central, mosquitto.port)
    with NetProxy(("127.0.0.1", mosquitto.port)) as link:
        link.set_mode("cut")  # the store's uplink is down: the outbox fills
        proc = AgentProc(tmp_path / "a", "s1", "d1", link, scan_eps=100, footfall_eps=40, heartbeat_s=1)
        agent = Agent(DeviceConfig.model_validate(proc.doc(max_rows=30)), base_dir=tmp_path)
        agent.start()
        try:
            wait_until(lambda: agent.outbox.stats().events > 60, what="scans beyond the cap")
            health = agent.health()
            assert health["outbox_over_capacity"] is True
            assert health["folded_total"] > 0  # footfall is folded, not evicted
            view = read_outbox(proc.outbox_path)
            assert view.rows - view.scan_rows <= 4  # folded window(s) + newest health per component
            assert view.scan_rows >= proc.ledger(SCAN_SOURCE)  # and every committed scan is there
            link.heal()
            snap = proc.snapshot()
            wait_until(lambda: not read_outbox(proc.outbox_path).holds_upto(snap.upto_seq), what="drained")
            snap.outbox = read_outbox(proc.outbox_path)
        finally:
            agent.stop()
            ingest.stop()
    report = check(url, [snap])
    assert report.ok, report.violations
    assert report.devices[0].folded > 0  # footfall was folded, and the gaps are all explained
    assert report.devices[0].scans_lost == 0
    # And the checker is not blind on real data: one scan removed behind its back is caught.
    table = TABLE_OF_KIND["scan"]
    db = apsw.Connection(url)  # the central store's own driver (one SQLite library per file)
    db.execute(f"DELETE FROM {table} WHERE rowid = (SELECT min(rowid) FROM {table})")
    db.close()
    report = check(url, [snap])
    assert report.lost == 1
    assert not report.ok


def test_an_oversized_hostile_ack_does_not_flood_the_agent_log(
    tmp_path: Path, mosquitto: Mosquitto, rogue: Rogue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.uplink")
    state = tmp_path / "edge"
    agent = Agent(
        DeviceConfig.model_validate(device_doc(state, mosquitto.port, rate=100, total=10)), base_dir=tmp_path
    )
    agent.start()
    try:
        # Subscribed, not just connected: an ack published before the SUBACK would never arrive.
        wait_until(lambda: agent.uplink.stats.subscribed, what="agent subscribed")
        rogue.publish(topics.ACKS.for_device("s1", "d1"), orjson.dumps({"v": 1, "pad": "x" * 1_100_000}))
        wait_until(lambda: agent.uplink.stats.bad_acks >= 1, what="the ack refused")
    finally:
        agent.stop()
    longest = max(len(r.getMessage()) for r in caplog.records if r.name == "edge_agent.uplink")
    assert longest < 10_000


def test_a_malformed_rogue_event_cannot_make_the_device_drop_an_unsent_event(
    tmp_path: Path, mosquitto: Mosquitto, rogue: Rogue, store: tuple[str, CentralStore]
) -> None:
    url, central = store
    ingest = start_ingest(central, mosquitto.port)
    state = tmp_path / "edge"
    # One event per second leaves the outbox: event 50 will wait there for almost a minute.
    doc = device_doc(state, mosquitto.port, rate=2000, total=60, batch=1, drain_rate_eps=1)
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    agent.start()
    victim = 50
    try:
        wait_until(lambda: len(ledger_numbers(state)) == 60, what="60 events committed")
        wait_until(lambda: agent.uplink.stats.events_acked >= 1, what="the first event acked")
        assert agent.outbox.read_range(victim, victim)  # unsent, waiting
        bad_event = {"seq": victim, "kind": "scan", "id": "not-a-uuid"}
        rogue.publish(
            topics.EVENTS.for_device("s1", "d1"),
            orjson.dumps({"v": 1, "batch": "rogue", "store": "s1", "device": "d1", "events": [bad_event]}),
        )
        wait_until(lambda: len(central.dead_letters()) == 1, what="the rogue event dead-lettered")
        deleted = wait_for(lambda: not agent.outbox.read_range(victim, victim), timeout=3)
        stored = any(k[2] == "d1" and k[3] == victim for k in central_keys(url))
    finally:
        agent.stop()
        ingest.stop()
    assert stored or not deleted, f"event {victim} deleted from the outbox but never stored: lost"
