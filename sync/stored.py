"""The validated event as the central side holds it: msgspec Structs mirroring the wire contract.

The ingest decodes every events message straight into these classes in one pass of msgspec's
validating JSON decoder (measured 0.6 us per event against 3-4.5 us for the pydantic TypedDict
adapter it replaced on the hot path), and the stores build their rows from attributes.

The constraints here are the same as those of ``sync.validate``'s pydantic models and of
``sync.wire``; where the two libraries differ, this side must be the STRICTER one: the ingest tries
this decoder first and, on any error, hands the message to the pydantic path, which decides and
explains. So anything pydantic's lax mode accepts (``1`` for ``true``, ``1.0`` for an integer) still
lands, through the slow path; ``tests/test_validate.py`` checks that this decoder never accepts what
the wire models refuse. Patterns end in ``\\Z``, not ``$``: msgspec uses Python's ``re.search``,
where ``$`` also matches before a trailing newline (pydantic's Rust regex does not).

Two checks cost more per event in msgspec (a Python regex each, ~0.3 us) than the rest of the event
together, so the decoder leaves them to ``sync.validate``, which does them once per message: the
ids are canonical lower-case UUID text (``canonical_uuids``, one C-level pass over all ids), and
every event's store and device equal the topic's (whose envelope fields carry the pattern).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from sync.wire import MAX_EVENTS_PER_BATCH, CodeKind

Short = Annotated[str, Meta(min_length=1, max_length=64)]
Ident = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")]
# Canonical lower-case UUID text, kept as text (a uuid.UUID and back would cost more than the rest);
# the decoder checks the length, ``canonical_uuids`` the characters.
UuidText = Annotated[str, Meta(min_length=36, max_length=36)]
AwareTime = Annotated[datetime, Meta(tz=True)]
Metric = float | int | str | bool | None


class ScanPayload(Struct, forbid_unknown_fields=True, gc=False):
    camera: Short
    code_kind: CodeKind
    rule: Annotated[str, Meta(max_length=64)] | None = None
    symbology: Annotated[str, Meta(max_length=32)] = "QRCode"
    text: Annotated[str, Meta(max_length=8192)] | None = None
    data_b64: Annotated[str, Meta(max_length=11000)] | None = None
    truncated: bool = False
    pseudonymised: bool = False
    fields: Annotated[dict[str, str], Meta(max_length=32)] = {}


class FootfallPayload(Struct, forbid_unknown_fields=True, gc=False):
    camera: Short
    line: Short
    window_start: AwareTime
    window_s: Annotated[float, Meta(gt=0, le=86400)]
    in_count: Annotated[int, Meta(ge=0, le=1_000_000)]
    out_count: Annotated[int, Meta(ge=0, le=1_000_000)]
    covered: bool
    seconds_live: Annotated[float, Meta(ge=0, le=86400)]
    frames_processed: Annotated[int, Meta(ge=0)]
    frames_dropped: Annotated[int, Meta(ge=0)]


class HealthPayload(Struct, forbid_unknown_fields=True, gc=False):
    status: Literal["ok", "degraded", "error"]
    component: Annotated[str, Meta(max_length=64)] = "agent"
    message: Annotated[str, Meta(max_length=2000)] = ""
    metrics: Annotated[dict[str, Metric], Meta(max_length=200)] = {}


class _Event(Struct, tag_field="kind", forbid_unknown_fields=True, gc=False):
    id: UuidText
    store: str  # must equal the topic's (checked per message by sync.validate)
    device: str
    seq: Annotated[int, Meta(ge=1)]
    ts: AwareTime


class ScanEvent(_Event, tag="scan"):
    payload: ScanPayload


class FootfallEvent(_Event, tag="footfall"):
    payload: FootfallPayload


class HealthEvent(_Event, tag="health"):
    payload: HealthPayload


StoredEvent = ScanEvent | FootfallEvent | HealthEvent
KIND_OF: dict[type[_Event], str] = {ScanEvent: "scan", FootfallEvent: "footfall", HealthEvent: "health"}


def kind_of(event: object) -> str:
    """The wire ``kind`` of a stored event; ValueError for anything else."""
    try:
        return KIND_OF[type(event)]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"not a stored event: {type(event).__name__}") from None


class Message(Struct, forbid_unknown_fields=True, gc=False):
    v: Literal[1]
    batch: Annotated[str, Meta(min_length=1, max_length=64)]
    store: Ident
    device: Ident
    events: Annotated[list[StoredEvent], Meta(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


MESSAGE_DECODER: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)


_UUID_CHARS = b"0123456789abcdef-"


def canonical_uuids(ids: list[str]) -> bool:
    """True when every id (each already 36 characters long) is canonical lower-case UUID text.

    One pass over all ids at C speed (~0.04 us per id, against ~0.3 us for a regex per id).
    """
    n = len(ids)
    joined = "".join(ids)
    if len(joined) != 36 * n or joined.count("-") != 4 * n:
        return False
    dashes = "-" * n
    if not (joined[8::36] == joined[13::36] == joined[18::36] == joined[23::36] == dashes):
        return False
    try:
        raw = joined.encode("ascii")
    except UnicodeEncodeError:
        return False
    return not raw.translate(None, _UUID_CHARS)


def from_builtins(event: dict[str, object]) -> StoredEvent:
    """A stored event from Python values (parsed datetimes allowed), checked against the contract.

    For events the pydantic path accepted, and for tools and tests that build events as dicts.
    Raises ``msgspec.ValidationError`` (also for an id that is not canonical UUID text).
    """
    out: StoredEvent = msgspec.convert(event, StoredEvent)
    if not canonical_uuids([out.id]):
        raise msgspec.ValidationError(f"id: not canonical lower-case UUID text: {out.id!r}")
    return out


def to_builtins(event: StoredEvent) -> dict[str, object]:
    """The event as a plain dict with the ``kind`` key (datetimes kept as datetime objects)."""
    out: dict[str, object] = msgspec.structs.asdict(event)
    out["kind"] = kind_of(event)
    out["payload"] = msgspec.structs.asdict(event.payload)
    return out
