"""Turn a pipeline's payload into the outbox row that will travel on the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson

from edge_agent.outbox import NewEvent
from sync.ids import uuid7
from sync.wire import KIND_OF_PAYLOAD, Payload


def encode_event(store: str, device: str, payload: Payload, ts: float | None = None) -> NewEvent:
    """Serialise once, at append time: the uplink splices stored bodies into batches as they are.

    The id is minted here, so a resend carries the same id and the central upsert drops it.
    """
    ts = time.time() if ts is None else ts
    kind = KIND_OF_PAYLOAD[type(payload)]
    head = b'{"id":"%s","store":%s,"device":%s,"seq":' % (
        str(uuid7(int(ts * 1000))).encode(),
        orjson.dumps(store),
        orjson.dumps(device),
    )
    iso = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    tail = b',"ts":"%s","kind":"%s","payload":%s}' % (
        iso.encode(),
        kind.encode(),
        orjson.dumps(payload.model_dump(mode="json")),
    )
    return NewEvent(kind=kind, ts=ts, head=head, tail=tail)
