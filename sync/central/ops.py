"""Central ops over MQTT: read what is published, push configs, wait for the fleet's answers.

``OpsClient`` subscribes to every device's retained ``config``, ``config/ack`` and ``status``
topics and keeps the latest of each in memory; ``push`` publishes envelopes in stages (canaries
first, the rest only if every canary applied in time) and returns one ``Outcome`` per device.
A device that rejects or rolls back gets its previous envelope re-published by default, so the
retained desired config matches what it runs again and nothing is left "in progress".
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from device_configs.content import config_document, document_hash
from device_configs.device import DeviceConfig
from sync import topics
from sync.central.mqtt import BrokerSettings, central_client
from sync.config_wire import ConfigAck, ConfigEnvelope, make_envelope, sign

DeviceKey = tuple[str, str]
OutcomeKind = Literal["applied", "rejected", "rolled_back", "no answer", "not pushed", "unchanged"]


def key_str(key: DeviceKey) -> str:
    return f"{key[0]}/{key[1]}"


OpsBroker = BrokerSettings  # the ops tool's broker connection: same settings as the ingest's


class OpsClient:
    """A connection to the broker that mirrors the fleet's retained config/ack/status messages."""

    def __init__(self, broker: OpsBroker, *, connect_timeout: float = 10.0) -> None:
        self.broker = broker
        self.published: dict[DeviceKey, ConfigEnvelope] = {}
        self.acks: dict[DeviceKey, ConfigAck] = {}
        self.status: dict[DeviceKey, dict[str, Any]] = {}
        self.bad_messages: list[str] = []
        self._cond = threading.Condition()
        self._last_message = time.monotonic()
        self._connack: int | None = None
        self._client = central_client(
            broker, client_id=f"omni-ops-{secrets.token_hex(4)}", clean_session=True
        )
        c = self._client
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=30)
        c.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None, connect_timeout)
        if self._connack != 0:
            self.close()
            why = "no answer" if self._connack is None else f"refused ({self._connack})"
            raise ConnectionError(f"broker {broker.host}:{broker.port}: {why}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> OpsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paho thread --------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self._connack = int(reason.value) if reason.is_failure else 0
            self._cond.notify_all()
        if not reason.is_failure:
            client.subscribe([(t.wildcard(), 1) for t in (topics.CONFIG, topics.CONFIG_ACK, topics.STATUS)])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None:
            return
        store, device, suffix = parsed
        key = (store, device)
        with self._cond:
            self._last_message = time.monotonic()
            try:
                if suffix == topics.CONFIG.suffix:
                    if msg.payload:
                        self.published[key] = ConfigEnvelope.model_validate_json(msg.payload)
                    else:
                        self.published.pop(key, None)
                elif suffix == topics.CONFIG_ACK.suffix and msg.payload:
                    self.acks[key] = ConfigAck.model_validate_json(msg.payload)
                elif suffix == topics.STATUS.suffix and msg.payload:
                    status = orjson.loads(msg.payload)
                    if isinstance(status, dict):
                        self.status[key] = status
            except (ValidationError, orjson.JSONDecodeError) as exc:
                self.bad_messages.append(f"{msg.topic}: {exc}"[:500])
            self._cond.notify_all()

    # -- reading ----------------------------------------------------------------------------

    def settle(self, quiet_s: float = 0.5, max_s: float = 10.0) -> None:
        """Wait until the retained messages stopped arriving (quiet for ``quiet_s``)."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            with self._cond:
                quiet_for = time.monotonic() - self._last_message
            if quiet_for >= quiet_s:
                return
            time.sleep(min(quiet_s - quiet_for, 0.1) + 0.01)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def known_devices(self) -> set[DeviceKey]:
        with self._cond:
            return set(self.published) | set(self.acks) | set(self.status)

    def running_version(self, key: DeviceKey) -> int | None:
        with self._cond:
            ack = self.acks.get(key)
            st = self.status.get(key, {})
        if ack is not None:
            return ack.running_version
        v = st.get("config_version")
        return v if isinstance(v, int) else None

    def online(self, key: DeviceKey) -> bool | None:
        with self._cond:
            st = self.status.get(key)
        return None if st is None else st.get("state") == "online"

    # -- writing ----------------------------------------------------------------------------

    def publish_envelope(self, env: ConfigEnvelope, timeout: float = 10.0) -> None:
        info = self._client.publish(
            topics.CONFIG.for_device(env.store, env.device), env.model_dump_json(), qos=1, retain=True
        )
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise ConnectionError(f"publishing the config of {env.store}/{env.device} was not acknowledged")


@dataclass
class Planned:
    key: DeviceKey
    envelope: ConfigEnvelope
    previous: ConfigEnvelope | None


@dataclass
class Outcome:
    key: DeviceKey
    result: OutcomeKind
    version: int | None = None  # version pushed
    running_version: int | None = None
    online: bool | None = None
    reasons: list[str] = field(default_factory=list)
    restored: int | None = None  # previous version re-published as the desired config


def new_deployment_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def plan(
    client: OpsClient,
    configs: dict[DeviceKey, DeviceConfig],
    *,
    deployment: str,
    force: bool = False,
    sign_key: Ed25519PrivateKey | None = None,
) -> tuple[list[Planned], list[Outcome]]:
    """Envelopes to publish, and outcomes for devices whose published config already matches."""
    now = datetime.now(UTC)
    todo: list[Planned] = []
    unchanged: list[Outcome] = []
    for key in sorted(configs):
        doc = config_document(configs[key])
        prev = client.published.get(key)
        if prev is not None and prev.hash == document_hash(doc) and not force:
            unchanged.append(
                Outcome(key, "unchanged", prev.version, client.running_version(key), client.online(key))
            )
            continue
        version = 1 + max(prev.version if prev else 0, client.running_version(key) or 0)
        env = make_envelope(
            store=key[0], device=key[1], deployment=deployment, version=version, config=doc, issued_at=now
        )
        todo.append(Planned(key, sign(env, sign_key) if sign_key else env, prev))
    return todo, unchanged


Progress = Callable[[str, dict[DeviceKey, Outcome], int], None]


def _answers(client: OpsClient, stage: list[Planned]) -> dict[DeviceKey, Outcome]:
    out: dict[DeviceKey, Outcome] = {}
    for p in stage:
        ack = client.acks.get(p.key)
        if ack is None or ack.hash != p.envelope.hash or ack.deployment != p.envelope.deployment:
            continue
        out[p.key] = Outcome(
            p.key,
            ack.result,
            p.envelope.version,
            ack.running_version,
            client.online(p.key),
            list(ack.reasons),
        )
    return out


def run_stage(
    client: OpsClient, name: str, stage: list[Planned], timeout: float, progress: Progress | None = None
) -> dict[DeviceKey, Outcome]:
    for p in stage:
        client.publish_envelope(p.envelope)
    deadline = time.monotonic() + timeout
    answered: dict[DeviceKey, Outcome] = {}
    shown = -1
    while True:
        with client._cond:
            answered = _answers(client, stage)
        if progress is not None and len(answered) != shown:
            shown = len(answered)
            progress(name, answered, len(stage))
        remaining = deadline - time.monotonic()
        if len(answered) == len(stage) or remaining <= 0:
            break
        client.wait(lambda seen=shown: len(_answers(client, stage)) != seen, min(remaining, 1.0))  # type: ignore[misc]
    for p in stage:
        if p.key not in answered:
            answered[p.key] = Outcome(
                p.key,
                "no answer",
                p.envelope.version,
                client.running_version(p.key),
                client.online(p.key),
                ["offline" if client.online(p.key) is False else f"no acknowledgement within {timeout:g}s"],
            )
    return answered


def push(
    client: OpsClient,
    planned: list[Planned],
    *,
    canaries: Iterable[DeviceKey] = (),
    canary_timeout: float = 60.0,
    timeout: float = 60.0,
    restore_on_failure: bool = True,
    progress: Progress | None = None,
) -> dict[DeviceKey, Outcome]:
    """Publish ``planned`` in two stages and collect one outcome per device."""
    canary_set = set(canaries)
    first = [p for p in planned if p.key in canary_set]
    rest = [p for p in planned if p.key not in canary_set]
    outcomes: dict[DeviceKey, Outcome] = {}
    if first:
        outcomes.update(run_stage(client, "canary", first, canary_timeout, progress))
        failed = sorted(key_str(k) for k, o in outcomes.items() if o.result != "applied")
        if failed:
            for p in rest:
                outcomes[p.key] = Outcome(
                    p.key,
                    "not pushed",
                    None,
                    client.running_version(p.key),
                    client.online(p.key),
                    [f"halted: canaries did not apply it ({', '.join(failed)})"],
                )
            rest = []
    if rest:
        outcomes.update(run_stage(client, "rollout", rest, timeout, progress))
    if restore_on_failure:
        for p in planned:
            o = outcomes[p.key]
            if o.result in ("rejected", "rolled_back") and p.previous is not None:
                client.publish_envelope(p.previous)
                o.restored = p.previous.version
    return outcomes


def format_table(outcomes: Iterable[Outcome]) -> str:
    rows = [("device", "result", "pushed", "running", "online", "details")]
    for o in sorted(outcomes, key=lambda o: o.key):
        details = "; ".join(o.reasons)
        if o.restored is not None:
            details = f"{details}; desired config restored to v{o.restored}".lstrip("; ")
        rows.append(
            (
                key_str(o.key),
                o.result,
                "-" if o.version is None else f"v{o.version}",
                "-" if o.running_version is None else f"v{o.running_version}",
                {True: "online", False: "offline", None: "?"}[o.online],
                details,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows
    )
