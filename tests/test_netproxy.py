"""The fault proxy: each mode does what it says, on raw sockets and between a real agent and broker."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from harness.broker import Mosquitto
from harness.netproxy import LinkParams, NetProxy, parse_script
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store
from tests.e2e import assert_exactly_once, device_doc, landed, ledger_numbers, wait_until


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket = conn) -> None:
                try:
                    while data := c.recv(4096):
                        c.sendall(data)
                except OSError:
                    pass
                finally:
                    c.close()

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()
    stop.set()
    srv.close()


@pytest.fixture
def proxy(echo_server: tuple[str, int]) -> Iterator[NetProxy]:
    p = NetProxy(echo_server, seed=1).start()
    yield p
    p.stop()


def connect(proxy: NetProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s.settimeout(5)
    return s


def test_pass_forwards_both_ways(proxy: NetProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == 5


def test_cut_resets_connections_and_refuses_new_ones_until_healed(proxy: NetProxy) -> None:
    s = connect(proxy)
    s.sendall(b"x")
    assert s.recv(10) == b"x"
    proxy.set_mode("cut")
    with pytest.raises(ConnectionResetError):
        s.recv(10)  # RST, not an orderly close
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    proxy.heal()
    with connect(proxy) as s2:
        s2.sendall(b"back")
        assert s2.recv(10) == b"back"


def test_blackhole_keeps_the_connection_but_drops_every_byte(proxy: NetProxy) -> None:
    s = connect(proxy)
    proxy.set_mode("blackhole")
    s.sendall(b"into the void")
    s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        s.recv(10)  # no answer, and no RST or FIN either
    late = connect(proxy)  # new connections are accepted and swallowed too
    late.sendall(b"also lost")
    late.settimeout(0.5)
    with pytest.raises(TimeoutError):
        late.recv(10)
    wait_until(lambda: proxy.stats.bytes_dropped >= len(b"into the voidalso lost"), 5, "bytes dropped")
    assert proxy.stats.bytes_up == 0
    proxy.heal()  # a stream that lost bytes cannot resume: it is reset
    s.settimeout(5)
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    s.close()
    late.close()
    with connect(proxy) as fresh:
        fresh.sendall(b"ok")
        assert fresh.recv(10) == b"ok"


def test_blackhole_can_leave_dead_connections_silent_after_heal(echo_server: tuple[str, int]) -> None:
    with NetProxy(echo_server, close_dead_on_heal=False) as p:
        s = connect(p)
        p.set_mode("blackhole")
        s.sendall(b"lost")
        wait_until(lambda: p.stats.bytes_dropped >= 4, 5, "bytes dropped")
        p.heal()
        s.sendall(b"still lost")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)  # the peer has to find out by itself (MQTT keepalive)
        s.close()


def test_slow_delivers_everything_in_order(proxy: NetProxy) -> None:
    proxy.set_mode("slow", LinkParams(latency_s=0.05))
    with connect(proxy) as s:
        for i in range(5):
            s.sendall(b"%d;" % i)
            assert s.recv(10) == b"%d;" % i


def test_lossy_resets_at_random(proxy: NetProxy) -> None:
    proxy.set_mode("lossy", LinkParams(reset_p=1.0, stall_p=0.0))
    with connect(proxy) as s:
        s.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    assert proxy.stats.resets >= 1


def test_fault_is_bounded_and_heals(proxy: NetProxy) -> None:
    proxy.fault("cut", 0.2)
    assert proxy.mode == "pass"
    assert [m for _, m in proxy.history] == ["cut", "pass"]
    with connect(proxy) as s:
        s.sendall(b"y")
        assert s.recv(10) == b"y"


def test_script_syntax() -> None:
    assert parse_script("cut:3, pass:1.5,blackhole") == [("cut", 3.0), ("pass", 1.5), ("blackhole", 1.0)]
    with pytest.raises(ValueError, match="unknown mode"):
        parse_script("flood:1")


# -- between a real agent and a real broker ----------------------------------------------------------


@pytest.fixture
def central(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[str]:
    url = str(tmp_path / "central.db")
    store = open_central_store(url)
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port), client_id="netproxy-ingest")
    ingest.start()
    assert ingest.wait_connected()
    yield url
    ingest.stop()
    store.close()


@pytest.mark.broker
def test_blackhole_agent_sees_no_ack_resends_and_delivers_after_heal(
    tmp_path: Path, mosquitto: Mosquitto, central: str
) -> None:
    state = tmp_path / "edge"
    with NetProxy(("127.0.0.1", mosquitto.port)) as link:
        doc = device_doc(state, link.port, rate=200, total=800, ack_timeout_s=0.5)
        agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
        agent.start()
        try:
            wait_until(lambda: landed(central) >= 50, what="first events landed")
            link.set_mode("blackhole")
            up = agent.uplink.stats
            first = up.resends
            wait_until(lambda: up.resends > first, what="a resend into the blackhole")
            acked = up.events_acked
            wait_until(lambda: up.resends > first + 2, what="more resends into the blackhole")
            assert up.events_acked == acked  # nothing came back
            assert up.connected  # and nothing told the agent: no RST, no FIN
            assert link.stats.bytes_dropped > 0
            connects = up.connects
            link.heal()
            wait_until(lambda: len(ledger_numbers(state)) == 800, what="all produced")
            wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained after heal")
            assert up.connects > connects  # the poisoned connection was reset; the agent came back
        finally:
            agent.stop()
    assert_exactly_once(central, "d1", ledger_numbers(state))


@pytest.mark.broker
def test_cut_agent_buffers_and_drains_after_heal(tmp_path: Path, mosquitto: Mosquitto, central: str) -> None:
    state = tmp_path / "edge"
    with NetProxy(("127.0.0.1", mosquitto.port)) as link:
        doc = device_doc(state, link.port, rate=300, total=900, ack_timeout_s=0.5)
        agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
        agent.start()
        try:
            wait_until(lambda: landed(central) >= 50, what="first events landed")
            with link.applied("cut"):
                wait_until(lambda: not agent.uplink.stats.connected, what="agent notices the cut")
                failures = agent.uplink.stats.connect_failures
                wait_until(lambda: agent.uplink.stats.connect_failures > failures, what="a refused reconnect")
                held = agent.outbox.stats().events
                wait_until(lambda: agent.outbox.stats().events > held, what="events buffered offline")
            wait_until(lambda: len(ledger_numbers(state)) == 900, what="all produced")
            wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained after heal")
        finally:
            agent.stop()
    assert_exactly_once(central, "d1", ledger_numbers(state))


@pytest.mark.broker
def test_a_silently_dead_connection_is_found_by_keepalive(
    tmp_path: Path, mosquitto: Mosquitto, central: str
) -> None:
    """After a blackhole the old connection stays dead and silent (nobody resets it): the agent
    has to find out by itself (MQTT keepalive, 5 s here), reconnect and drain."""
    state = tmp_path / "edge"
    with NetProxy(("127.0.0.1", mosquitto.port), close_dead_on_heal=False) as link:
        doc = device_doc(state, link.port, rate=100, total=600, ack_timeout_s=1)
        doc["mqtt"]["keepalive_s"] = 5
        agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
        agent.start()
        try:
            wait_until(lambda: landed(central) >= 50, what="first events landed")
            link.fault("blackhole", 1.0)
            assert agent.uplink.stats.connected  # nothing told it
            wait_until(lambda: agent.uplink.stats.connects >= 2, timeout=30, what="keepalive, reconnect")
            wait_until(lambda: len(ledger_numbers(state)) == 600, what="all produced")
            wait_until(lambda: agent.outbox.stats().events == 0, timeout=60, what="outbox drained")
        finally:
            agent.stop()
    assert_exactly_once(central, "d1", ledger_numbers(state))
