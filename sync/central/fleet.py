"""The fleet table: which device is where, last seen, online or not, on which config, how far behind.

``FleetService`` subscribes (plain, not shared: it needs the retained messages) to every device's
``status`` and ``config/ack`` topics and merges each message into the central store's fleet table:

* ``status`` online (on connect and at every heartbeat): software and config versions, backlog,
  opening hours; ``status`` offline (clean stop, or the broker's last will after a crash).
* ``config/ack``: the result of the last push and the version the device runs.

Clock offset (device clock minus central clock) is measured on live messages only: a retained
message replayed on subscribe carries an old device time. ``fleet_report`` turns the table into
alarms: a device that is offline or silent for three heartbeats is an alarm only while its store
is open (opening hours from its config; unknown hours count as open).
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import orjson
import paho.mqtt.client as paho
from pydantic import ValidationError

from device_configs.hours import OpeningHours
from sync import topics
from sync.central.mqtt import central_client
from sync.central.ops import OpsBroker
from sync.central.store import FleetRow, FleetStore, FleetUpdate
from sync.config_wire import ConfigAck

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 60.0
STALE_HEARTBEATS = 3


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def update_from_status(
    store: str, device: str, payload: bytes, *, retained: bool, now: datetime
) -> FleetUpdate | None:
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or msg.get("state") not in ("online", "offline"):
        return None
    if msg["state"] == "offline":
        return FleetUpdate(store, device, seen_at=None if retained else now, state="offline")
    device_ts = _num(msg.get("ts"))
    seen = now
    if retained:
        # Replayed on subscribe: the device was last heard at its own timestamp, not now.
        seen = datetime.fromtimestamp(device_ts, UTC) if device_ts is not None else None  # type: ignore[assignment]
    hours = msg.get("opening_hours")
    return FleetUpdate(
        store,
        device,
        seen_at=seen,
        state="online",
        software=str(msg["software"])[:64] if "software" in msg else None,
        config_version=_int(msg.get("config_version")),
        config_hash=str(msg["config_hash"])[:64] if msg.get("config_hash") else None,
        backlog_events=_int(msg.get("backlog_events")),
        backlog_bytes=_int(msg.get("backlog_bytes")),
        backlog_oldest_age_s=_num(msg.get("backlog_oldest_age_s")),
        clock_offset_s=None if retained or device_ts is None else device_ts - now.timestamp(),
        heartbeat_s=_num(msg.get("heartbeat_s")),
        opening_hours=hours if isinstance(hours, dict) else None,
    )


def update_from_ack(
    store: str, device: str, payload: bytes, *, retained: bool, now: datetime
) -> FleetUpdate | None:
    try:
        ack = ConfigAck.model_validate_json(payload)
    except ValidationError:
        return None
    return FleetUpdate(
        store,
        device,
        seen_at=None if retained else now,
        config_version=ack.running_version,
        config_hash=ack.running_hash,
        config_result=ack.result,
        software=ack.software,
        clock_offset_s=None if retained else ack.ts - now.timestamp(),
    )


def as_fleet_store(store: object) -> FleetStore:
    """The fleet side of a central store opened with ``open_central_store`` (both backends have it)."""
    if not (hasattr(store, "update_fleet") and hasattr(store, "fleet")):
        raise TypeError(f"{type(store).__name__} has no fleet table")
    return cast(FleetStore, store)


class FleetService:
    """Keeps the fleet table up to date from MQTT (its own connection; paho's thread writes)."""

    def __init__(self, store: FleetStore, broker: OpsBroker) -> None:
        self.store = store
        self.broker = broker
        self.updates = 0
        self.connected = threading.Event()
        self._client = central_client(
            broker, client_id=f"omni-fleet-{secrets.token_hex(4)}", clean_session=True
        )
        c = self._client
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message

    def start(self) -> None:
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the fleet service: %s", reason)
            return
        client.subscribe([(topics.STATUS.wildcard(), 1), (topics.CONFIG_ACK.wildcard(), 1)])
        self.connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None or not msg.payload:
            return
        store, device, suffix = parsed
        now = datetime.now(UTC)
        if suffix == topics.STATUS.suffix:
            update = update_from_status(store, device, bytes(msg.payload), retained=bool(msg.retain), now=now)
        elif suffix == topics.CONFIG_ACK.suffix:
            update = update_from_ack(store, device, bytes(msg.payload), retained=bool(msg.retain), now=now)
        else:
            return
        if update is None:
            log.warning("ignoring malformed %s message from %s/%s", suffix, store, device)
            return
        try:
            self.store.update_fleet(update)
            self.updates += 1
        except Exception:
            log.exception("fleet table update failed for %s/%s", store, device)


# -- the report -------------------------------------------------------------------------------------


class _FleetReader(Protocol):
    def fleet(self) -> list[FleetRow]: ...


@dataclass(frozen=True)
class FleetLine:
    row: FleetRow
    status: str  # online | offline | silent
    store_open: bool
    alarm: bool


@dataclass(frozen=True)
class FleetReport:
    lines: list[FleetLine]
    now: datetime

    @property
    def alarms(self) -> list[FleetLine]:
        return [ln for ln in self.lines if ln.alarm]

    def table(self) -> str:
        head = ("device", "status", "last seen", "store", "software", "config", "backlog", "oldest", "clock")
        rows = [head]
        for ln in self.lines:
            r = ln.row
            ago = "-" if r.last_seen is None else _ago((self.now - r.last_seen).total_seconds())
            status = ln.status.upper() + " (ALARM)" if ln.alarm else ln.status
            rows.append(
                (
                    f"{r.store}/{r.device}",
                    status,
                    ago,
                    "open" if ln.store_open else "closed",
                    r.software or "-",
                    "-" if r.config_version is None else f"v{r.config_version} {(r.config_hash or '')[:8]}",
                    "-" if r.backlog_events is None else str(r.backlog_events),
                    "-" if r.backlog_oldest_age_s is None else _ago(r.backlog_oldest_age_s),
                    "-" if r.clock_offset_s is None else f"{r.clock_offset_s:+.1f}s",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        out.append(f"{len(self.lines)} device(s), {len(self.alarms)} alarm(s)")
        return "\n".join(out)


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def store_open(row: FleetRow, now: datetime) -> bool:
    if row.opening_hours is None:
        return True
    try:
        return OpeningHours.model_validate(row.opening_hours).is_open(now)
    except ValidationError:
        return True


def fleet_report(
    store: _FleetReader, *, now: datetime | None = None, stale_s: float | None = None
) -> FleetReport:
    now = now or datetime.now(UTC)
    lines = []
    for row in store.fleet():
        limit = (
            stale_s if stale_s is not None else STALE_HEARTBEATS * (row.heartbeat_s or DEFAULT_HEARTBEAT_S)
        )
        if row.state == "offline":
            status = "offline"
        elif row.last_seen is None or now - row.last_seen > timedelta(seconds=limit):
            status = "silent"
        else:
            status = "online"
        is_open = store_open(row, now)
        lines.append(FleetLine(row, status, is_open, alarm=status != "online" and is_open))
    return FleetReport(lines, now)
