"""The central ingest on a real broker: bad input goes to dead letters, the ingest keeps running."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import Mosquitto
from sync import topics
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store
from sync.ids import uuid7_str
from tests.e2e import wait_until
from tests.fakes import MemoryCentralStore

pytestmark = pytest.mark.broker

EVENTS = topics.EVENTS.for_device("s1", "d1")


def event(seq: int, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": uuid7_str(),
        "store": "s1",
        "device": "d1",
        "seq": seq,
        "ts": "2026-11-24T10:00:00Z",
        "kind": "scan",
        "payload": {"camera": "till", "code_kind": "product", "text": f"p{seq}"},
    }
    ev.update(over)
    return ev


def batch(*events: dict[str, Any], **over: Any) -> bytes:
    doc: dict[str, Any] = {"v": 1, "batch": "b1", "store": "s1", "device": "d1", "events": list(events)}
    doc.update(over)
    return orjson.dumps(doc)


class Client:
    """A plain MQTT client that publishes and collects what it receives."""

    def __init__(self, port: int, *subscriptions: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        self.c.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        for sub in subscriptions:
            self.c.subscribe(sub, qos=1)
        wait_until(self.c.is_connected, what="test client connected")

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "central.db")


def test_bad_input_lands_in_dead_letters_and_ingest_keeps_running(mosquitto: Mosquitto, central: str) -> None:
    store = open_central_store(central)
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port))
    ingest.start()
    assert ingest.wait_connected()
    client = Client(mosquitto.port, topics.ACKS.for_device("s1", "d1"))
    try:
        client.publish(EVENTS, b"\x00\xff garbage \x13")
        client.publish(EVENTS, b'{"v": 1, "batch": ')
        client.publish(EVENTS, batch(event(1), v=2))
        client.publish(EVENTS, b'{"v":1,"pad":"' + b"x" * (10 * 1024 * 1024) + b'"}')
        client.publish(EVENTS, batch(event(2), store="s2"))  # envelope claims another store
        # One bad event in a good batch: the good one lands, the bad one is dead-lettered.
        client.publish(
            EVENTS, batch(event(3), {**event(4), "seq": 0}, event(5, kind="nope"), event(6), batch="b2")
        )
        wait_until(lambda: ingest.stats.messages >= 6, what="six messages handled")
        wait_until(lambda: len(client.received) >= 1, what="the ack for the mixed batch")
    finally:
        client.close()
        ingest.stop()
    reasons = [d.reason for d in store.dead_letters()]
    assert len(reasons) == 7
    assert reasons[0].startswith("not JSON")
    assert reasons[1].startswith("not JSON")
    assert reasons[2] == "unsupported wire version 2 (want 1)"
    assert reasons[3] == f"oversized: {10 * 1024 * 1024 + 16} bytes > limit 1048576"
    assert reasons[4] == "envelope says s2/d1 but topic is s1/d1"
    assert reasons[5] == "event 1: scan.seq: Input should be greater than or equal to 1"
    assert reasons[6].startswith("event 2: ")
    big = store.dead_letters()[3]
    assert big.size == 10 * 1024 * 1024 + 16 and len(big.payload) == 65_536
    assert sorted(k.seq for k in store.event_keys()) == [3, 6]
    # The ack settles what the device must stop resending: stored (3, 6) and dead-lettered (5 has
    # a valid seq; seq 0 does not exist on any device).
    assert [orjson.loads(p) for _, p in client.received] == [
        {"v": 1, "batch": "b2", "seqs": [[3, 3], [5, 6]]}
    ]
    store.close()


def test_events_spoofing_another_device_are_refused(mosquitto: Mosquitto, central: str) -> None:
    store = open_central_store(central)
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port))
    ingest.start()
    assert ingest.wait_connected()
    client = Client(mosquitto.port)
    try:
        client.publish(EVENTS, batch(event(1), event(2, device="d9")))
        wait_until(lambda: ingest.stats.messages >= 1, what="message handled")
    finally:
        client.close()
        ingest.stop()
    assert [k.seq for k in store.event_keys()] == [1]
    assert [d.reason.split(" claims ")[1] for d in store.dead_letters()] == ["s1/d9 on s1/d1"]
    store.close()


class RefusingStore(MemoryCentralStore):
    """A store that is up but refuses any event whose text contains 'poison'."""

    def write(self, events: Any, dead: Any = ()) -> int:
        if any("poison" in str(getattr(e.payload, "text", None)) for e in events):
            raise ValueError("invalid byte sequence")
        return super().write(events, dead)


@pytest.mark.parametrize("pipelined", [True, False], ids=["validator+writer", "one-worker"])
def test_a_message_the_store_refuses_is_dead_lettered_not_retried_forever(
    mosquitto: Mosquitto, pipelined: bool
) -> None:
    store = RefusingStore(pipelined_writes=pipelined)
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port))
    ingest.start()
    roles = [t.name.rsplit("-", 1)[1] for t in ingest._threads]
    assert roles == (["validator", "writer"] if pipelined else ["worker"])
    assert ingest.wait_connected()
    client = Client(mosquitto.port, topics.ACKS.for_device("s1", "d1"))
    try:
        client.publish(
            EVENTS, batch(event(1, payload={"camera": "c", "code_kind": "other", "text": "poison"}))
        )
        client.publish(EVENTS, batch(event(2), batch="b2"))
        wait_until(lambda: store.count_events() == 1, what="the good message stored")
        wait_until(lambda: len(client.received) == 2, what="both messages acked")
    finally:
        client.close()
        ingest.stop()
    assert [k.seq for k in store.event_keys()] == [2]
    assert [d.reason for d in store.dead_letters()] == [
        "central store refused the message: ValueError: invalid byte sequence"
    ]


def test_a_store_that_defers_durability_is_synced_before_anything_is_acked(mosquitto: Mosquitto) -> None:
    store = MemoryCentralStore(pipelined_writes=False, durable_on_commit=False)
    store.sync_gate = threading.Event()
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port))
    ingest.start()
    assert [t.name.rsplit("-", 1)[1] for t in ingest._threads] == ["worker", "acker"]
    assert ingest.wait_connected()
    durable_at_ack: list[set[str]] = []
    client = Client(mosquitto.port, topics.ACKS.for_device("s1", "d1"))
    client.c.on_message = lambda c, u, m: (client.received.append((m.topic, bytes(m.payload))),
                                           durable_at_ack.append(set(store.durable)))
    try:
        events = [event(1), event(2)]
        client.publish(EVENTS, batch(*events))
        wait_until(lambda: store.count_events() == 2, what="the batch committed")
        time.sleep(0.5)  # the sync is held: no ack may leave meanwhile
        assert client.received == []
        store.sync_gate.set()
        wait_until(lambda: len(client.received) == 1, what="the ack after the sync")
    finally:
        client.close()
        ingest.stop()
    assert orjson.loads(client.received[0][1]) == {"v": 1, "batch": "b1", "seqs": [[1, 2]]}
    assert durable_at_ack == [{e["id"] for e in events}]
    assert ingest.failed is None and ingest.stats.syncs >= 1


def test_a_failed_sync_acks_nothing_and_the_next_ingest_gets_the_message_again(mosquitto: Mosquitto) -> None:
    store = MemoryCentralStore(pipelined_writes=False, durable_on_commit=False)
    store.sync_error = OSError(5, "Input/output error")
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port), client_id="ingest-sync-fails")
    ingest.start()
    assert ingest.wait_connected()
    client = Client(mosquitto.port, topics.ACKS.for_device("s1", "d1"))
    try:
        client.publish(EVENTS, batch(event(1)))
        wait_until(lambda: ingest.failed is not None, what="the ingest gave up on the sync")
        assert ingest.failed == "central store sync failed: OSError: [Errno 5] Input/output error"
        wait_until(lambda: not any(t.is_alive() for t in ingest._threads), what="the ingest threads stopped")
        ingest.stop()
        assert client.received == []  # committed, never made durable: never acknowledged
        # Same session, a healthy store: the broker hands over the message that was never PUBACKed.
        healthy = MemoryCentralStore(pipelined_writes=False)
        again = Ingest(healthy, BrokerSettings(port=mosquitto.port), client_id="ingest-sync-fails")
        again.start()
        try:
            wait_until(lambda: len(client.received) == 1, what="the ack from the next ingest")
        finally:
            again.stop()
    finally:
        client.close()
    assert [k.seq for k in healthy.event_keys()] == [1]
    assert orjson.loads(client.received[0][1])["seqs"] == [[1, 1]]


def test_the_acker_survives_a_failing_callback(mosquitto: Mosquitto) -> None:
    store = MemoryCentralStore(pipelined_writes=False, durable_on_commit=False)
    seen: list[str | None] = []

    def on_write(r: Any) -> None:
        seen.append(r.batch)
        if len(seen) == 1:
            raise RuntimeError("callback bug")

    ingest = Ingest(store, BrokerSettings(port=mosquitto.port), on_write=on_write)
    ingest.start()
    assert ingest.wait_connected()
    client = Client(mosquitto.port, topics.ACKS.for_device("s1", "d1"))
    try:
        client.publish(EVENTS, batch(event(1), batch="b1"))
        wait_until(lambda: seen == ["b1"], what="the first callback")
        client.publish(EVENTS, batch(event(2), batch="b2"))
        wait_until(lambda: len(client.received) == 2, what="both batches acked")
    finally:
        client.close()
        ingest.stop()
    assert [orjson.loads(p)["batch"] for _, p in client.received] == ["b1", "b2"]
    assert seen == ["b1", "b2"]


def test_group_size_is_the_stores_unless_given(tmp_path: Path) -> None:
    sqlite = open_central_store(str(tmp_path / "c.db"), group_commit=True)
    try:
        assert Ingest(sqlite, BrokerSettings(port=1)).max_messages_per_write == 5
        assert Ingest(sqlite, BrokerSettings(port=1), max_messages_per_write=50).max_messages_per_write == 50
    finally:
        sqlite.close()
    fake = MemoryCentralStore()
    fake.messages_per_write = 7
    assert Ingest(fake, BrokerSettings(port=1)).max_messages_per_write == 7
