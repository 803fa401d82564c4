"""Event and message models on the wire (JSON, version 1).

An MQTT message on an events topic is one ``EventBatch``: many events, so the per-message cost of
MQTT (measured: ~13.5k messages/s on 2 cores) is paid once per batch rather than once per event.
The central side answers each batch it has committed with an ``EventAck`` naming the sequence
numbers it stored (or dead-lettered), and only then may the device delete them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

WIRE_VERSION = 1
# Largest MQTT payload the central side accepts on an events topic; larger ones are dead-lettered.
MAX_MESSAGE_BYTES = 1_048_576
MAX_EVENTS_PER_BATCH = 1000

Ident = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Store or device id: letters, digits, '_', '.', '-' (safe inside an MQTT topic).",
    ),
]
CodeKind = Literal["product", "coupon", "member", "payment", "other"]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _no_nul(self) -> WireModel:
        # PostgreSQL text cannot hold NUL; binary payloads travel as base64 instead.
        for name in type(self).model_fields:
            if _has_nul(getattr(self, name)):
                raise ValueError(f"{name}: NUL character in text")
        return self


class ScanPayload(WireModel):
    """One presentation of a code to a camera (after debouncing and privacy rules)."""

    camera: str = Field(min_length=1, max_length=64, description="Camera id from the device config.")
    code_kind: CodeKind = Field(description="Class from the device's QR rules; payment codes never leave.")
    rule: str | None = Field(default=None, max_length=64, description="Name of the rule that matched.")
    symbology: str = Field(default="QRCode", max_length=32, description="Barcode symbology reported.")
    text: str | None = Field(
        default=None, max_length=8192, description="Decoded text (pseudonym for member codes)."
    )
    data_b64: str | None = Field(
        default=None, max_length=11000, description="Base64 of the raw bytes when they are not text."
    )
    truncated: bool = Field(default=False, description="True when the payload was cut to the size limit.")
    pseudonymised: bool = Field(default=False, description="True when text is a keyed hash of the code.")
    fields: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="Fields extracted by the rule (sku, coupon id...)."
    )


class FootfallPayload(WireModel):
    """Counts across one door line over one window, with the coverage that makes zero meaningful."""

    camera: str = Field(min_length=1, max_length=64, description="Camera id from the device config.")
    line: str = Field(min_length=1, max_length=64, description="Counting line id.")
    window_start: AwareDatetime = Field(description="Start of the window (UTC).")
    window_s: float = Field(gt=0, le=86400, description="Window length in seconds.")
    in_count: int = Field(ge=0, le=1_000_000, description="People who crossed inwards.")
    out_count: int = Field(ge=0, le=1_000_000, description="People who crossed outwards.")
    covered: bool = Field(description="False when the camera was down for (part of) the window.")
    seconds_live: float = Field(ge=0, le=86400, description="Seconds of the window the camera delivered.")
    frames_processed: int = Field(ge=0, description="Frames counted in this window.")
    frames_dropped: int = Field(ge=0, description="Frames dropped under load in this window.")


class HealthPayload(WireModel):
    """A device or pipeline health report."""

    status: Literal["ok", "degraded", "error"] = Field(description="Overall status.")
    component: str = Field(default="agent", max_length=64, description="What reports.")
    message: str = Field(default="", max_length=2000, description="Human-readable detail.")
    metrics: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, max_length=200, description="Gauges and counters."
    )


Payload = ScanPayload | FootfallPayload | HealthPayload
EventKind = Literal["scan", "footfall", "health"]
KIND_OF_PAYLOAD: dict[type[WireModel], EventKind] = {
    ScanPayload: "scan",
    FootfallPayload: "footfall",
    HealthPayload: "health",
}


class _EventBase(WireModel):
    id: uuid.UUID = Field(description="UUIDv7, unique across the fleet; the central store upserts on it.")
    store: Ident
    device: Ident
    seq: int = Field(ge=1, description="Per-device sequence number; gaps show lost or evicted events.")
    ts: AwareDatetime = Field(description="Device time (UTC) when the event happened.")


class ScanEvent(_EventBase):
    kind: Literal["scan"]
    payload: ScanPayload


class FootfallEvent(_EventBase):
    kind: Literal["footfall"]
    payload: FootfallPayload


class HealthEvent(_EventBase):
    kind: Literal["health"]
    payload: HealthPayload


Event = Annotated[ScanEvent | FootfallEvent | HealthEvent, Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[ScanEvent | FootfallEvent | HealthEvent] = TypeAdapter(Event)


def make_event(
    *, id: uuid.UUID, store: str, device: str, seq: int, ts: datetime, payload: Payload
) -> ScanEvent | FootfallEvent | HealthEvent:
    kind = KIND_OF_PAYLOAD[type(payload)]
    return EVENT_ADAPTER.validate_python(
        {"id": id, "store": store, "device": device, "seq": seq, "ts": ts, "kind": kind, "payload": payload}
    )


class BatchHeader(WireModel):
    """The envelope fields of an events message, validated before its events."""

    v: Literal[1] = Field(description="Wire version.")
    batch: str = Field(min_length=1, max_length=64, description="Batch id, echoed in the ack.")
    store: Ident
    device: Ident
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class EventAck(WireModel):
    """Central -> device: these sequence numbers are committed (stored or dead-lettered)."""

    v: Literal[1] = Field(description="Wire version.")
    batch: str = Field(min_length=1, max_length=64, description="Batch id from the events message.")
    seqs: list[tuple[int, int]] = Field(description="Inclusive ranges of committed sequence numbers.")


def seq_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Compress sorted-or-not sequence numbers into inclusive ranges."""
    if seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))):
        return [(seqs[0], seqs[-1])]  # the usual batch: one run, checked in C
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
