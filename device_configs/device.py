"""The device config: everything one edge agent needs, validated strictly.

This is the document ops push to a device. Every field has bounds and a description;
unknown keys are errors. ``schema_version`` is an integer; older documents are migrated by
``device_configs.migrations`` before validation.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from device_configs.base import StrictModel
from device_configs.camera import CameraConfig
from device_configs.footfall import FootfallConfig
from device_configs.hours import OpeningHours
from device_configs.qr import KeyRef, QrConfig

# Version 2 added ``opening_hours``, ``config_push`` and ``privacy`` (see device_configs.migrations).
SCHEMA_VERSION = 2

Ident = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Letters, digits, '_', '.', '-'; used inside MQTT topics.",
    ),
]


class TlsSettings(StrictModel):
    """TLS to the broker; the certificate must name `mqtt.host` (it is what gets verified)."""

    ca_file: str = Field(min_length=1, max_length=4096, description="CA certificate (PEM) for the broker.")
    cert_file: str | None = Field(
        default=None, max_length=4096, description="Client certificate (PEM), for mutual TLS."
    )
    key_file: str | None = Field(default=None, max_length=4096, description="Client private key (PEM).")


class MqttSettings(StrictModel):
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253, description="Broker host name.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    username: str | None = Field(default=None, max_length=256, description="MQTT user name.")
    password_env: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the MQTT password (never the password).",
    )
    password_file: str | None = Field(
        default=None, max_length=4096, description="File holding the MQTT password (first line)."
    )
    tls: TlsSettings | None = Field(default=None, description="TLS settings; None for plain TCP.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    reconnect_min_s: float = Field(
        default=0.5, ge=0.05, le=60, description="First reconnect delay; doubles up to the max, jittered."
    )
    reconnect_max_s: float = Field(default=60, ge=0.1, le=3600, description="Longest reconnect delay.")


class SyncSettings(StrictModel):
    batch_max_events: int = Field(
        default=500,
        ge=1,
        le=1000,
        description="Most events per MQTT message (a batch takes what is queued, up to this).",
    )
    batch_max_bytes: int = Field(
        default=262_144, ge=1024, le=1_000_000, description="Bytes per MQTT message (wire limit 1 MiB)."
    )
    max_inflight_batches: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Batches sent and not yet acknowledged end to end. More keeps the uplink busy "
        "while acks travel back; each one may wait in the broker (figures: docs/central_store.md).",
    )
    ack_timeout_s: float = Field(
        default=15, ge=0.2, le=3600, description="Resend a batch when no ack arrived within this time."
    )
    drain_rate_eps: float = Field(
        default=5000,
        ge=0,
        le=10_000_000,
        description="Most events per second sent while draining a backlog (0 = unlimited), so a "
        "fleet reconnecting after an outage does not flatten the broker.",
    )
    heartbeat_s: float = Field(default=60, ge=1, le=3600, description="Seconds between health events.")


class OutboxSettings(StrictModel):
    path: str = Field(
        default="outbox.db", min_length=1, max_length=4096, description="SQLite file, relative to state_dir."
    )
    max_bytes: int = Field(
        default=1 << 30, ge=1 << 16, le=1 << 40, description="Capacity of the outbox in event bytes."
    )
    max_rows: int = Field(default=5_000_000, ge=10, le=500_000_000, description="Capacity in events.")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL survives power loss with every committed event; NORMAL may lose the last "
        "commits on power loss (never on a process crash).",
    )


class SimulatedEvents(StrictModel):
    """A synthetic event source, for demos, tests and fleet simulation."""

    id: Ident
    rate_eps: float = Field(default=1.0, gt=0, le=100_000, description="Events per second.")
    scan_share: float = Field(
        default=0.8, ge=0, le=1, description="Share of scan events; the rest are footfall windows."
    )
    total: int | None = Field(default=None, ge=1, le=1_000_000_000, description="Stop after this many.")
    ledger: str | None = Field(
        default=None,
        max_length=4096,
        description="File where each committed event id is appended (for end-to-end checks).",
    )
    fail_every: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Raise after this many events (tests supervision)."
    )


class ConfigPushSettings(StrictModel):
    """How the agent takes configs pushed by central ops (docs/config.md)."""

    trusted_keys: list[Annotated[str, Field(min_length=44, max_length=44)]] = Field(
        default_factory=list,
        max_length=8,
        description="Ed25519 public keys (base64 of the 32 raw bytes) allowed to sign pushed configs; "
        "when any is set, unsigned or badly signed configs are rejected. Several allow key rotation.",
    )
    apply_timeout_s: float = Field(
        default=20.0,
        ge=0.5,
        le=600,
        description="A pipeline (re)started by a new config must be up within this time, or the agent "
        "rolls back to the last known good config.",
    )


class PrivacySettings(StrictModel):
    member_key: KeyRef | None = Field(
        default=None,
        description="Default key for member-code pseudonyms, used by QR readers that name none.",
    )


class DeviceConfig(StrictModel):
    schema_version: Literal[2] = Field(
        default=2, description="Config schema version (integer); older ones are migrated."
    )
    store: Ident
    device: Ident
    state_dir: str = Field(
        default="var/edge",
        min_length=1,
        max_length=4096,
        description="Directory for the outbox and the last known good config (relative to the config).",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker connection.")
    sync: SyncSettings = Field(default_factory=SyncSettings, description="Uplink behaviour.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="Local buffer.")
    simulated_sources: list[SimulatedEvents] = Field(
        default_factory=list, max_length=16, description="Synthetic event sources."
    )
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=16, description="Cameras.")
    qr: list[QrConfig] = Field(
        default_factory=list, max_length=16, description="QR readers, each on one of the cameras."
    )
    footfall: list[FootfallConfig] = Field(
        default_factory=list, max_length=16, description="Footfall counters, each on one of the cameras."
    )
    privacy: PrivacySettings = Field(default_factory=PrivacySettings, description="Privacy keys.")
    opening_hours: OpeningHours = Field(
        default_factory=lambda: OpeningHours(always_open=True),
        description="Store opening hours: a device silent while the store is closed is not an alarm.",
    )
    config_push: ConfigPushSettings = Field(
        default_factory=ConfigPushSettings, description="Verification and apply rules for pushed configs."
    )

    @model_validator(mode="after")
    def _check_references(self) -> DeviceConfig:
        _unique("cameras", [c.id for c in self.cameras])
        _unique("simulated_sources", [s.id for s in self.simulated_sources])
        _unique("qr", [q.camera for q in self.qr])
        _known_cameras("qr", [q.camera for q in self.qr], {c.id for c in self.cameras})
        _unique("footfall", [f.camera for f in self.footfall])
        _known_cameras("footfall", [f.camera for f in self.footfall], {c.id for c in self.cameras})
        _one_pipeline_per_camera({q.camera for q in self.qr}, {f.camera for f in self.footfall})
        return self


def _unique(where: str, ids: list[str]) -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{where}: duplicate id(s) {', '.join(dupes)}")


def _one_pipeline_per_camera(qr: set[str], footfall: set[str]) -> None:
    # Each pipeline opens its camera; a USB camera cannot be opened twice, and a door camera is
    # mounted for counting, a till camera for reading codes.
    both = sorted(qr & footfall)
    if both:
        raise ValueError(
            f"camera {', '.join(both)} is used by both a QR reader and a footfall counter; "
            "give each pipeline its own camera"
        )


def _known_cameras(where: str, refs: list[str], cameras: set[str]) -> None:
    unknown = sorted(set(refs) - cameras)
    if unknown:
        raise ValueError(f"{where}: unknown camera(s) {', '.join(unknown)} (define them under cameras)")
