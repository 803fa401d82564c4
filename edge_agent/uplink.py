"""The uplink: drains the outbox to the broker and deletes events only on the central ack.

One thread owns the paho client (network I/O, callbacks, publishing), so there is no shared state
between paho's thread and ours. The loop:

1. connect (jittered exponential backoff; a refused CONNACK is a failure, not a connection);
2. send batches of outbox events at QoS 1, at most ``max_inflight_batches`` unacknowledged and at
   most ``drain_rate_eps`` events per second;
3. on an ``acks`` message, delete the named sequence numbers from the outbox;
4. resend a batch that has no ack after ``ack_timeout_s``: the broker's PUBACK is not enough (a
   broker queue overflow or restart without persistence loses it silently) and a resend is
   harmless because the central store upserts on the event id.

Other threads never touch the client: ``send`` (config acks, status refreshes) queues the latest
message per topic, and this thread publishes it once connected. ``on_config`` is called on this
thread and must return quickly (the config manager only queues the payload).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
from pydantic import ValidationError

from device_configs.device import MqttSettings, SyncSettings
from edge_agent import __version__
from edge_agent.mqtt import Backoff, make_client
from edge_agent.outbox import BacklogStats, OutboxError, SqliteOutbox
from sync import topics
from sync.wire import EventAck

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 10.0
RECONNECT_GRACE_S = 3.0
# A batch still unacknowledged after a resend waits twice as long before the next, up to this
# many ack timeouts: a saturated central side is not answered with ever more resends.
MAX_RESEND_BACKOFF = 8
COMPACT_EVERY_S = 5.0


@dataclass
class _Inflight:
    lo: int
    hi: int
    events: int
    sent_at: float
    attempts: int = 1


@dataclass
class UplinkStats:
    connected: bool = False
    subscribed: bool = False  # the broker confirmed the acks/config subscriptions
    connects: int = 0
    connect_failures: int = 0
    batches_sent: int = 0
    events_sent: int = 0
    resends: int = 0
    events_acked: int = 0
    acks_received: int = 0
    bad_acks: int = 0
    unknown_acks: int = 0
    last_error: str = ""


def link_metrics(st: BacklogStats, stats: UplinkStats) -> dict[str, float | int | str | bool | None]:
    """The backlog and uplink gauges every heartbeat carries."""
    return {
        "backlog_events": st.events,
        "backlog_bytes": st.bytes_on_disk,
        "backlog_oldest_age_s": st.oldest_age_s,
        "evicted_total": sum(st.evicted.values()),
        "rejected_total": sum(st.rejected.values()),
        "outbox_over_capacity": st.over_capacity,
        "mqtt_connected": stats.connected,
        "mqtt_connects": stats.connects,
        "events_acked": stats.events_acked,
        "resends": stats.resends,
    }


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.t = time.monotonic()

    def take(self, n: int) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= n or self.tokens >= self.burst:
            self.tokens -= n
            return True
        return False


class Uplink:
    def __init__(
        self,
        outbox: SqliteOutbox,
        *,
        store: str,
        device: str,
        mqtt: MqttSettings,
        sync: SyncSettings,
        client_id: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        on_config: Callable[[bytes], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.store = store
        self.device = device
        self.mqtt = mqtt
        self.sync = sync
        self.client_id = client_id or f"edge-{store}-{device}"
        self.status_extra = status_extra
        self.on_config = on_config
        self.stats = UplinkStats()
        self._events_topic = topics.EVENTS.for_device(store, device)
        self._acks_topic = topics.ACKS.for_device(store, device)
        self._status_topic = topics.STATUS.for_device(store, device)
        self._config_topic = topics.CONFIG.for_device(store, device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acks: deque[EventAck] = deque()
        self._configs: deque[bytes] = deque()
        # Latest small message per topic (config ack, status), published by this thread.
        self._outgoing: dict[str, tuple[bytes, bool]] = {}
        self._outgoing_lock = threading.Lock()
        self._inflight: dict[str, _Inflight] = {}
        self._cursor = 0  # highest sequence number handed to the broker in this process
        self._bucket = TokenBucket(sync.drain_rate_eps, max(sync.drain_rate_eps / 10, sync.batch_max_events))
        self._backoff = Backoff(mqtt.reconnect_min_s, mqtt.reconnect_max_s)
        self._client: paho.Client | None = None
        self._connack: int | None = None  # None: waiting; 0: accepted; >0: refused
        self._header = b'{"v":1,"batch":"%s","store":%s,"device":%s,"events":['
        self._ids = (orjson.dumps(store), orjson.dumps(device))
        self._last_compact = 0.0
        self._warned: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"uplink-{self.device}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def publish_status(self, payload: dict[str, Any], topic: str | None = None) -> None:
        """Queue a small retained message (status by default, or a config ack) from any thread.

        Only the latest message per topic is kept; it is published once connected.
        """
        self.send(topic or self._status_topic, payload, retain=True)

    def send(self, topic: str, payload: dict[str, Any], *, retain: bool) -> None:
        with self._outgoing_lock:
            self._outgoing[topic] = (orjson.dumps(payload), retain)

    def refresh_status(self) -> None:
        """Publish a fresh retained ``online`` message (heartbeat: last seen, backlog, versions)."""
        self.send(self._status_topic, self.online_message(), retain=True)

    def online_message(self) -> dict[str, Any]:
        online: dict[str, Any] = {"v": 1, "state": "online", "software": __version__, "ts": time.time()}
        if self.status_extra is not None:
            online.update(self.status_extra())
        return online

    def update_sync(self, sync: SyncSettings) -> None:
        """Take new sync settings live (batch sizes, inflight, ack timeout, drain rate)."""
        if sync == self.sync:
            return
        self._bucket = TokenBucket(sync.drain_rate_eps, max(sync.drain_rate_eps / 10, sync.batch_max_events))
        self.sync = sync

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.stats.connected:
                    if not self._connect():
                        self._stop.wait(self._backoff.next_delay())
                        continue
                    self._backoff.reset()
                busy = bool(self._inflight) or self._cursor < self.outbox.next_seq - 1
                rc = self._client.loop(timeout=0.002 if busy else 0.05) if self._client else 1
                if rc != paho.MQTT_ERR_SUCCESS:
                    self._lost(f"network loop: {paho.error_string(rc)}")
                    continue
                self._process_acks()
                self._process_configs()
                self._flush_outgoing()
                self._resend_timed_out()
                self._send_more()
                self._maybe_compact()
            except Exception as exc:
                log.exception("uplink error; reconnecting")
                self._lost(f"{type(exc).__name__}: {exc}")
                self._stop.wait(self._backoff.next_delay())
        self._shutdown()

    def _connect(self) -> bool:
        if self._client is None:
            self._client = make_client(self.mqtt, self.client_id)
            c = self._client
            c.on_connect = self._on_connect
            c.on_message = self._on_message
            c.on_subscribe = self._on_subscribe
            c.max_inflight_messages_set(self.sync.max_inflight_batches + 20)
            c.max_queued_messages_set(0)
            c.will_set(self._status_topic, orjson.dumps({"v": 1, "state": "offline"}), qos=1, retain=True)
        client = self._client
        self._connack = None
        try:
            client.connect(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
            deadline = time.monotonic() + CONNACK_TIMEOUT_S
            while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
                if client.loop(timeout=0.1) != paho.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:
            self.stats.connect_failures += 1
            self.stats.last_error = f"connect: {exc}"
            log.warning("broker %s:%s unreachable: %s", self.mqtt.host, self.mqtt.port, exc)
            return False
        if self._connack != 0:
            self.stats.connect_failures += 1
            self.stats.last_error = (
                "no CONNACK" if self._connack is None else f"connection refused ({self._connack})"
            )
            log.warning("broker did not accept the connection: %s", self.stats.last_error)
            client.disconnect()
            return False
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.subscribed = False
        client.subscribe([(self._acks_topic, 1), (self._config_topic, 1)])
        client.publish(self._status_topic, orjson.dumps(self.online_message()), qos=1, retain=True)
        # Acks for what was in flight may still be queued for us; give them a short grace, then
        # resend. Waiting a full ack timeout would make every broker restart cost that long: a
        # message published while no ingest was subscribed is never delivered to it.
        grace = min(self.sync.ack_timeout_s, RECONNECT_GRACE_S)
        restart = time.monotonic() - self.sync.ack_timeout_s + grace
        for b in self._inflight.values():
            b.sent_at = restart
            b.attempts = 1
        log.info("connected to %s:%s as %s", self.mqtt.host, self.mqtt.port, self.client_id)
        return True

    def _lost(self, why: str) -> None:
        if self.stats.connected:
            log.warning("connection to broker lost: %s", why)
        self.stats.connected = False
        self.stats.subscribed = False
        self.stats.last_error = why
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:
                log.debug("disconnect after loss failed", exc_info=True)

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self.stats.connected:
            info = client.publish(
                self._status_topic, orjson.dumps({"v": 1, "state": "offline"}), qos=1, retain=True
            )
            deadline = time.monotonic() + 2
            while not info.is_published() and time.monotonic() < deadline:
                client.loop(timeout=0.05)
            client.disconnect()
        self.stats.connected = False

    # -- callbacks (run inside client.loop on this thread) -----------------------------------

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        # Acks and configs reach the device only from here on (the broker confirmed the filters).
        self.stats.subscribed = not any(r.is_failure for r in reasons)
        if not self.stats.subscribed:
            log.error("broker refused the ack/config subscriptions: %s", reasons)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack = int(reason.value) if reason.is_failure else 0

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self._acks_topic:
            try:
                self._acks.append(EventAck.model_validate_json(msg.payload))
            except ValidationError as exc:
                self.stats.bad_acks += 1
                first = exc.errors(include_url=False, include_input=False, include_context=False)[:1]
                log.warning("ignoring malformed ack (%d bytes): %s", len(msg.payload), first)
        elif msg.topic == self._config_topic:
            self._configs.append(bytes(msg.payload))

    # -- the work --------------------------------------------------------------------------

    def _process_acks(self) -> None:
        """Delete what acks name, but only inside the batch each ack answers.

        The batch id carries a random part, so only someone who saw the batch can name it: a rogue
        ack (or a rogue batch on this device's events topic, which the ingest dead-letters and
        acks) cannot make the device delete events it has not delivered. Acks for batches this
        process does not know (sent before a restart) are ignored: those events are resent, and
        the central store ignores ids it has. If the delete fails (disk full), the acks are kept
        and tried again; nothing is forgotten and the connection stays up.
        """
        if not self._acks:
            return
        acks = list(self._acks)
        ranges: list[tuple[int, int]] = []
        answered: list[str] = []
        for ack in acks:
            b = self._inflight.get(ack.batch)
            if b is None:
                self.stats.unknown_acks += 1
                continue
            answered.append(ack.batch)
            for a_lo, a_hi in ack.seqs:
                lo, hi = max(a_lo, b.lo), min(a_hi, b.hi)
                if lo <= hi:
                    ranges.append((lo, hi))
        try:
            deleted = self.outbox.delete(ranges) if ranges else 0
        except OutboxError as exc:
            self._warn_every("delete", 30, "cannot delete acknowledged events (%s); will retry", exc)
            return
        for _ in acks:
            self._acks.popleft()
        self.stats.acks_received += len(acks)
        self.stats.events_acked += deleted
        for bid in answered:
            self._inflight.pop(bid, None)

    def _warn_every(self, key: str, period_s: float, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= period_s:
            self._warned[key] = now
            log.warning(msg, *args)

    def _process_configs(self) -> None:
        while self._configs:
            payload = self._configs.popleft()
            if self.on_config is not None:
                self.on_config(payload)

    def _flush_outgoing(self) -> None:
        if not self._outgoing or self._client is None:
            return
        with self._outgoing_lock:
            pending, self._outgoing = self._outgoing, {}
        for topic, (body, retain) in pending.items():
            info = self._client.publish(topic, body, qos=1, retain=retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                with self._outgoing_lock:
                    self._outgoing.setdefault(topic, (body, retain))
                return

    def _resend_timed_out(self) -> None:
        if not self._inflight:
            return
        now = time.monotonic()
        for bid, b in list(self._inflight.items()):
            backoff = min(2 ** (b.attempts - 1), MAX_RESEND_BACKOFF)
            if now - b.sent_at < self.sync.ack_timeout_s * backoff:
                continue
            rows = self.outbox.read_range(b.lo, b.hi)
            if not rows:  # acked through another batch, or evicted
                del self._inflight[bid]
                continue
            if not self._bucket.take(len(rows)):
                return  # resends count against the drain rate too
            if not self._publish(bid, [body for _, body in rows]):
                return
            b.sent_at = now
            b.attempts += 1
            self.stats.resends += 1
            log.info("resent batch %s (%d events, attempt %d): no ack in time", bid, len(rows), b.attempts)

    def _send_more(self) -> None:
        limit = self.sync.batch_max_events
        while len(self._inflight) < self.sync.max_inflight_batches:
            if self._cursor >= self.outbox.next_seq - 1:
                return  # nothing new: skip the query
            rows = self.outbox.read_after(self._cursor, limit, mark_sent=True)  # before publishing
            if not rows:
                return
            size = 0
            take = 0
            for _, body in rows:
                size += len(body) + 1
                if take and size > self.sync.batch_max_bytes:
                    break
                take += 1
            rows = rows[:take]
            if not self._bucket.take(len(rows)):
                return
            lo, hi = rows[0][0], rows[-1][0]
            bid = f"{lo}-{hi}-{secrets.token_hex(4)}"
            if not self._publish(bid, [body for _, body in rows]):
                return
            self._inflight[bid] = _Inflight(lo, hi, len(rows), time.monotonic())
            self._cursor = hi

    def _publish(self, bid: str, bodies: list[bytes]) -> bool:
        assert self._client is not None
        message = self._header % (bid.encode(), *self._ids) + b",".join(bodies) + b"]}"
        info = self._client.publish(self._events_topic, message, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            # NO_CONN, QUEUE_SIZE (65,535 unacknowledged ids), ...: try again after reconnecting.
            self._lost(f"publish refused: {paho.error_string(info.rc)}")
            return False
        self.stats.batches_sent += 1
        self.stats.events_sent += len(bodies)
        return True

    def _maybe_compact(self) -> None:
        now = time.monotonic()
        if now - self._last_compact >= COMPACT_EVERY_S:
            self._last_compact = now
            try:
                self.outbox.compact()
            except OutboxError as exc:
                self._warn_every("compact", 300, "outbox compaction failed (%s); will retry", exc)
