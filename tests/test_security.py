"""Broker security against a real mosquitto: TLS, per-device passwords, the role ACL.

An unauthorised publish is never reported to an MQTT 3.1.1 client: mosquitto acknowledges it and
drops it (2.0.11 then also closes the connection, as MQTT 3.1.1 allows, and the client reconnects).
A denied subscription still gets a granted SUBACK. So every "cannot" here is checked by what a
privileged subscriber receives, with a barrier instead of a sleep: after the forbidden message, the
same client sends a permitted one that the same subscriber receives. The broker handles one
client's messages in order, so when the permitted one has arrived, the forbidden one would have
arrived before it.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from device_configs.device import MqttSettings, SyncSettings, TlsSettings
from edge_agent.events import encode_event
from edge_agent.mqtt import make_client
from edge_agent.outbox import SqliteOutbox
from edge_agent.uplink import Uplink
from harness.pki import TestPki
from harness.security import Account, SecureBroker, acl_text, device_username
from sync import topics
from sync.central.ingest import Ingest
from sync.wire import ScanPayload
from tests.conftest import IN_CI
from tests.fakes import MemoryCentralStore

pytestmark = pytest.mark.broker

WAIT_S = 15.0
FLEET = [("s1", "a"), ("s1", "b"), ("s2", "a")]


def wait_until(cond: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Probe:
    """A paho client that records what happens to it: CONNACK, disconnects, messages."""

    def __init__(self, settings: MqttSettings, client_id: str | None = None) -> None:
        self.settings = settings
        self.client = make_client(settings, client_id or settings.username or "probe", clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(1, 2)
        self.accepted = threading.Event()
        self.refused: Any = None
        self.disconnects = 0
        self.error: Exception | None = None
        self.messages: list[tuple[str, bytes, bool]] = []
        self._subacks: set[int] = set()
        self._lock = threading.Lock()
        self._started = False

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = reason
        else:
            self.accepted.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnects += 1

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._subacks.add(mid)

    def connect(self, timeout: float = WAIT_S) -> bool:
        """True when the broker accepted us; False on a refusal, a TLS error or a closed socket."""
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=30)
        except OSError as exc:  # ssl.SSLError is an OSError
            self.error = exc
            return False
        self.client.loop_start()
        self._started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepted.is_set():
                return True
            if self.refused is not None or self.disconnects:
                return False
            time.sleep(0.02)
        return False

    def subscribe(self, *filters: str) -> None:
        rc, mid = self.client.subscribe([(f, 1) for f in filters])
        assert rc == paho.MQTT_ERR_SUCCESS
        wait_until(lambda: mid in self._subacks, what=f"SUBACK for {filters}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK, reconnecting first when the broker closed the
        connection after a denied publish (paho resends an unacknowledged message on reconnect)."""
        deadline = time.monotonic() + WAIT_S
        while not self.client.is_connected():
            assert time.monotonic() < deadline, f"{self.settings.username} did not reconnect"
            time.sleep(0.02)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        while not info.is_published():
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.02)

    def received(self, topic: str | None = None) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if topic is None or m[0] == topic]

    def wait_for(self, topic: str, payload: bytes | None = None) -> None:
        wait_until(
            lambda: any(p == payload or payload is None for _, p, _r in self.received(topic)),
            what=f"a message on {topic}",
        )

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()


def batch(store: str, device: str, seq: int, text: str) -> bytes:
    """A valid EventBatch message with one scan event, as an uplink would send it."""
    body = encode_event(store, device, ScanPayload(camera="cam1", code_kind="product", text=text)).body(seq)
    head = b'{"v":1,"batch":"%d-%d","store":%s,"device":%s,"events":[' % (
        seq,
        seq,
        orjson.dumps(store),
        orjson.dumps(device),
    )
    return head + body + b"]}"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        if IN_CI:
            pytest.fail("mosquitto binary not installed (CI must run every test)")
        pytest.skip("mosquitto binary not installed")
    sb = SecureBroker.create(
        tmp_path / "secure", FLEET, ingest_users=("ingest", "ingest-2"), ops_users=("ops", "ops-2")
    )
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def probes() -> Iterator[Callable[..., Probe]]:
    made: list[Probe] = []

    def make(settings: MqttSettings, client_id: str | None = None, *, connect: bool = True) -> Probe:
        p = Probe(settings, client_id)
        made.append(p)
        if connect:
            assert p.connect(), f"{settings.username} could not connect: {p.refused or p.error}"
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def ingest(secure: SecureBroker) -> Iterator[tuple[Ingest, MemoryCentralStore]]:
    store = MemoryCentralStore()
    ing = Ingest(store, secure.broker_settings("ingest"))
    ing.start()
    try:
        assert ing.wait_connected(WAIT_S), "the ingest could not connect over TLS"
        yield ing, store
    finally:
        ing.stop()


def uplink_for(tmp_path: Path, settings: MqttSettings, store: str = "s1", device: str = "a") -> Uplink:
    outbox = SqliteOutbox(tmp_path / f"outbox-{store}-{device}.db")
    return Uplink(outbox, store=store, device=device, mqtt=settings, sync=SyncSettings(ack_timeout_s=5))


def events_of(store: MemoryCentralStore, device: tuple[str, str]) -> list[Any]:
    return [k for k in store.event_keys() if (k.store, k.device) == device]


# -- the happy path --------------------------------------------------------------------------------


def test_device_events_land_over_tls_with_real_ingest(
    secure: SecureBroker,
    ingest: tuple[Ingest, MemoryCentralStore],
    probes: Callable[..., Probe],
    tmp_path: Path,
) -> None:
    _, central = ingest
    ops = probes(secure.mqtt_settings("ops"))
    ops.subscribe(topics.STATUS.wildcard())
    uplink = uplink_for(tmp_path, secure.device_mqtt_settings("s1", "a"))
    uplink.outbox.append(
        [
            encode_event("s1", "a", ScanPayload(camera="cam1", code_kind="product", text=f"sku-{i}"))
            for i in range(20)
        ]
    )
    uplink.start()
    try:
        wait_until(lambda: uplink.stats.events_acked == 20, what="20 events acked end to end")
    finally:
        uplink.stop()
    assert uplink.stats.connects == 1 and uplink.stats.connect_failures == 0
    assert len(events_of(central, ("s1", "a"))) == 20
    assert central.count_events() == 20
    assert central.dead_letters() == []
    # The device may write its presence, and ops may read it.
    ops.wait_for(topics.STATUS.for_device("s1", "a"))


# -- authentication and TLS ------------------------------------------------------------------------


def test_wrong_password_is_refused_and_reported_as_refused(secure: SecureBroker, tmp_path: Path) -> None:
    bad = tmp_path / "wrong.password"
    bad.write_text("not-the-password\n")
    uplink = uplink_for(tmp_path, secure.device_mqtt_settings("s1", "a", password_file=str(bad)))
    uplink.start()
    try:
        wait_until(lambda: uplink.stats.connect_failures >= 1, what="a failed connection attempt")
    finally:
        uplink.stop()
    assert uplink.stats.connects == 0
    assert not uplink.stats.connected
    assert "refused" in uplink.stats.last_error


def test_unknown_user_and_anonymous_are_refused(secure: SecureBroker, probes: Callable[..., Probe]) -> None:
    stranger = probes(secure.mqtt_settings("ops", username="mallory"), "mallory", connect=False)
    assert not stranger.connect()
    assert stranger.refused is not None
    anonymous = probes(secure.mqtt_settings("ops", username=None, password_file=None), "anon", connect=False)
    assert not anonymous.connect()
    assert anonymous.refused is not None


def test_plain_tcp_to_the_tls_port_fails(secure: SecureBroker, tmp_path: Path) -> None:
    uplink = uplink_for(tmp_path, secure.device_mqtt_settings("s1", "a", tls=None))
    uplink.start()
    try:
        wait_until(lambda: uplink.stats.connect_failures >= 1, what="a failed connection attempt")
    finally:
        uplink.stop()
    assert uplink.stats.connects == 0
    assert not uplink.stats.connected


def test_client_that_does_not_trust_the_ca_fails(secure: SecureBroker, tmp_path: Path) -> None:
    other = TestPki.create(tmp_path / "other-pki", name="some-other-ca")
    uplink = uplink_for(
        tmp_path, secure.device_mqtt_settings("s1", "a", tls=TlsSettings(ca_file=str(other.ca_file)))
    )
    uplink.start()
    try:
        wait_until(lambda: uplink.stats.connect_failures >= 1, what="a failed connection attempt")
    finally:
        uplink.stop()
    assert uplink.stats.connects == 0
    assert "certificate verify failed" in uplink.stats.last_error


def test_broker_certificate_names_are_checked(secure: SecureBroker, probes: Callable[..., Probe]) -> None:
    by_name = probes(secure.mqtt_settings("ops", host="localhost"), connect=False)
    assert by_name.connect(), by_name.error
    # The certificate names localhost and 127.0.0.1 only; a client expecting another name refuses
    # it (make_client cannot set the expected name yet, so this uses ssl directly).
    context = ssl.create_default_context(cafile=str(secure.ca_file))
    with (
        socket.create_connection((secure.host, secure.port), timeout=WAIT_S) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="broker.example.com")


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, probes: Callable[..., Probe]) -> None:
    with SecureBroker.create(tmp_path / "mtls", FLEET, require_client_cert=True) as sb:
        with_cert = probes(sb.device_mqtt_settings("s1", "a"), connect=False)
        assert with_cert.settings.tls is not None and with_cert.settings.tls.cert_file is not None
        assert with_cert.connect(), with_cert.error
        without = probes(
            sb.device_mqtt_settings("s1", "b", tls=TlsSettings(ca_file=str(sb.ca_file))), connect=False
        )
        assert not without.connect()


# -- the ACL ---------------------------------------------------------------------------------------


def test_device_cannot_publish_events_as_another_device(
    secure: SecureBroker,
    ingest: tuple[Ingest, MemoryCentralStore],
    probes: Callable[..., Probe],
) -> None:
    _, central = ingest
    observer = probes(secure.mqtt_settings("ingest-2"))
    observer.subscribe(topics.EVENTS.wildcard())
    a = probes(secure.device_mqtt_settings("s1", "a"))
    b_events, a_events = topics.EVENTS.for_device("s1", "b"), topics.EVENTS.for_device("s1", "a")

    a.publish(b_events, batch("s1", "b", 1, "forged by a"))  # PUBACKed, then dropped by the ACL
    a.publish(a_events, batch("s1", "a", 1, "barrier"))
    observer.wait_for(a_events)
    wait_until(lambda: len(events_of(central, ("s1", "a"))) == 1, what="a's own event in the store")

    assert observer.received(b_events) == []
    assert events_of(central, ("s1", "b")) == []
    assert central.dead_letters() == []


def test_device_cannot_read_another_devices_config(
    secure: SecureBroker, probes: Callable[..., Probe]
) -> None:
    ops = probes(secure.mqtt_settings("ops"))
    b_config, a_config = topics.CONFIG.for_device("s1", "b"), topics.CONFIG.for_device("s1", "a")
    ops.publish(b_config, b'{"for":"b","n":1}', retain=True)

    b = probes(secure.device_mqtt_settings("s1", "b"))
    b.subscribe(b_config)
    b.wait_for(b_config, b'{"for":"b","n":1}')  # the retained config is there for its owner

    a = probes(secure.device_mqtt_settings("s1", "a"))
    # Mosquitto grants these SUBACKs but filters every message by the read ACL.
    a.subscribe(b_config, topics.CONFIG.wildcard(), "omni/#", "#", a_config)
    ops.publish(b_config, b'{"for":"b","n":2}', retain=True)
    ops.publish(a_config, b'{"for":"a"}', retain=True)
    a.wait_for(a_config)  # the barrier: everything before it (retained or live) has been delivered

    assert [p for _, p, _r in a.received()] == [b'{"for":"a"}'] * len(a.received())
    assert a.received(b_config) == []
    b.wait_for(b_config, b'{"for":"b","n":2}')


def test_devices_cannot_push_configs_and_ops_can(secure: SecureBroker, probes: Callable[..., Probe]) -> None:
    ops = probes(secure.mqtt_settings("ops"))
    ops.subscribe(topics.CONFIG.wildcard(), topics.CONFIG_ACK.wildcard())
    b = probes(secure.device_mqtt_settings("s1", "b"))
    b_config, a_config = topics.CONFIG.for_device("s1", "b"), topics.CONFIG.for_device("s1", "a")
    b.subscribe(b_config, topics.ACKS.for_device("s1", "b"))

    a = probes(secure.device_mqtt_settings("s1", "a"))
    a.publish(b_config, b'{"pushed by":"a"}', retain=True)
    a.publish(a_config, b'{"pushed by":"a to itself"}', retain=True)
    a.publish(topics.CONFIG_ACK.for_device("s1", "a"), b'{"barrier":"a"}')
    ops.wait_for(topics.CONFIG_ACK.for_device("s1", "a"))

    # The ingest may write acks, not configs.
    ing = probes(secure.mqtt_settings("ingest-2"))
    ing.publish(b_config, b'{"pushed by":"ingest"}', retain=True)
    ing.publish(topics.ACKS.for_device("s1", "b"), b'{"v":1,"batch":"barrier","seqs":[]}')
    b.wait_for(topics.ACKS.for_device("s1", "b"))

    assert ops.received(b_config) == [] and ops.received(a_config) == []
    assert b.received(b_config) == []

    ops.publish(b_config, b'{"pushed by":"ops"}', retain=True)
    b.wait_for(b_config, b'{"pushed by":"ops"}')
    ops.wait_for(b_config, b'{"pushed by":"ops"}')

    # What stays retained is the ops config only: a fresh subscriber sees nothing else.
    fresh = probes(secure.mqtt_settings("ops-2"))
    fresh.subscribe(topics.CONFIG.wildcard())
    ops.publish(topics.CONFIG.for_device("s2", "a"), b'{"barrier":"live"}')
    fresh.wait_for(topics.CONFIG.for_device("s2", "a"))
    retained = {(t, p) for t, p, r in fresh.received() if r}
    assert retained == {(b_config, b'{"pushed by":"ops"}')}


def test_client_id_of_another_device_cannot_take_over_its_session(
    secure: SecureBroker, probes: Callable[..., Probe]
) -> None:
    b_config = topics.CONFIG.for_device("s1", "b")
    b = probes(secure.device_mqtt_settings("s1", "b"))
    b.subscribe(b_config)
    # a claims b's client id; the broker replaces it with a's username, so b is not kicked off.
    impostor = probes(secure.device_mqtt_settings("s1", "a"), device_username("s1", "b"))
    impostor.subscribe(b_config)
    ops = probes(secure.mqtt_settings("ops"))
    ops.publish(b_config, b'{"for":"b"}')
    b.wait_for(b_config)
    assert b.disconnects == 0
    assert impostor.received(b_config) == []


# -- provisioning and the rules themselves ---------------------------------------------------------


def test_added_device_can_connect_after_reload(secure: SecureBroker, probes: Callable[..., Probe]) -> None:
    secure.add_device("s3", "new")

    def connects() -> bool:
        p = probes(secure.device_mqtt_settings("s3", "new"), connect=False)
        ok = p.connect()
        p.close()
        return ok

    wait_until(connects, what="the new device to be accepted after SIGHUP")


def test_revoked_device_is_disconnected_and_refused(
    secure: SecureBroker, probes: Callable[..., Probe]
) -> None:
    settings = secure.device_mqtt_settings("s1", "a")  # the password file stays on the "device"
    a = probes(settings)
    secure.remove_device("s1", "a")
    wait_until(lambda: a.disconnects >= 1, what="the revoked device to be disconnected")
    again = probes(settings, connect=False)
    assert not again.connect()
    assert again.refused is not None


def test_plain_listener_only_when_asked(tmp_path: Path, probes: Callable[..., Probe]) -> None:
    with SecureBroker.create(tmp_path / "plain", FLEET, plain_listener=True) as sb:
        assert sb.plain_port is not None
        plain = probes(sb.device_mqtt_settings("s1", "a", port=sb.plain_port, tls=None), connect=False)
        assert plain.connect(), (plain.error, plain.refused, plain.disconnects, sb.broker.log_tail())
        anonymous = probes(MqttSettings(port=sb.plain_port), "anon", connect=False)
        assert not anonymous.connect()


def test_acl_rejects_ids_that_would_widen_a_grant() -> None:
    for bad in ("+", "#", "a/b", "", "-lead"):
        with pytest.raises(ValueError):
            Account.for_device("s1", bad)
    text = acl_text([Account.for_device("s1", "a")])
    assert "topic write omni/v1/s1/a/events" in text
    writes = [ln for ln in text.splitlines() if ln.startswith("topic write")]
    assert not [ln for ln in writes if ln.endswith("/config")]
