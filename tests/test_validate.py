"""The ingest's fast validator accepts exactly what the wire models accept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.events import encode_event
from sync.stored import MESSAGE_DECODER, canonical_uuids, kind_of
from sync.validate import validate_message
from sync.wire import EVENT_ADAPTER, FootfallPayload, HealthPayload, ScanPayload

TOPIC = "omni/v1/s1/d1/events"

texts = st.text(max_size=40)
scan_payloads = st.fixed_dictionaries(
    {
        "camera": st.text(min_size=0, max_size=70),
        "code_kind": st.sampled_from(["product", "member", "bogus"]),
    },
    optional={
        "text": st.none() | texts,
        "truncated": st.booleans() | st.integers(-3, 3),
        "fields": st.dictionaries(texts, texts | st.integers(-3, 3), max_size=3),
        "rule": st.none() | texts,
        "extra_key": texts,
    },
)
footfall_payloads = st.fixed_dictionaries(
    {
        "camera": st.just("door"),
        "line": st.text(min_size=0, max_size=3),
        "window_start": st.sampled_from(["2026-11-24T10:00:00Z", "2026-11-24T10:00:00", "nope"]),
        "window_s": st.sampled_from([60, 0, -1, 90000]),
        "in_count": st.integers(-2, 3),
        "out_count": st.integers(0, 3),
        "covered": st.booleans(),
        "seconds_live": st.floats(-1, 100, allow_nan=False),
        "frames_processed": st.integers(-1, 10),
        "frames_dropped": st.integers(0, 10),
    }
)
metric_values = st.none() | st.integers(-9, 9) | texts | st.lists(st.integers(0, 3))
health_payloads = st.fixed_dictionaries(
    {"status": st.sampled_from(["ok", "bad"])},
    optional={"metrics": st.dictionaries(texts, metric_values)},
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["scan", "footfall", "health"]))
    payload = draw({"scan": scan_payloads, "footfall": footfall_payloads, "health": health_payloads}[kind])
    return {
        "id": draw(
            st.sampled_from(
                [
                    "01a20bfe-8cfd-7000-a346-eb10b0c482de",
                    "not-a-uuid",
                    "01A20BFE-8CFD-7000-A346-EB10B0C482DE",  # a UUID, but not canonical text
                    "01a20bfe-8cfd-7000-a346-eb10b0c482dg",
                    "01a20bfe8-cfd-7000-a346-eb10b0c482de",
                ]
            )
        ),
        "store": "s1",
        "device": "d1",
        "seq": draw(st.integers(-1, 5)),
        "ts": draw(st.sampled_from(["2026-11-24T10:00:00.5Z", "2026-11-24T10:00:00+01:00", "yesterday"])),
        "kind": kind,
        "payload": payload,
    }


def model_accepts(ev: dict[str, Any]) -> bool:
    try:
        EVENT_ADAPTER.validate_python(orjson.loads(orjson.dumps(ev)))
        return True
    except ValidationError:
        return False


@settings(max_examples=400, deadline=None)
@given(events())
def test_fast_validator_agrees_with_the_wire_models(ev: dict[str, Any]) -> None:
    result = validate_message(
        TOPIC, orjson.dumps({"v": 1, "batch": "b", "store": "s1", "device": "d1", "events": [ev]})
    )
    fast_accepts = len(result.events) == 1
    assert fast_accepts == model_accepts(ev), result.rejected


NUL_CAMERA = {
    "id": "01a20bfe-8cfd-7000-a346-eb10b0c482de",
    "store": "s1",
    "device": "d1",
    "seq": 1,
    "ts": "2026-11-24T10:00:00.5Z",
    "kind": "scan",
    "payload": {"camera": "\x00", "code_kind": "product"},
}


@settings(max_examples=400, deadline=None)
@given(events())
@example(NUL_CAMERA)  # msgspec decodes NUL; the fast path's per-message check must refuse it
def test_the_msgspec_fast_path_never_accepts_what_the_wire_models_refuse(ev: dict[str, Any]) -> None:
    raw = orjson.dumps({"v": 1, "batch": "b", "store": "s1", "device": "d1", "events": [ev]})
    try:
        msg = MESSAGE_DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return  # the slow path decides; the test above checks its verdict
    # With canonical ids validate_message takes the fast path (decoder + per-message checks such
    # as NUL): whatever it stores, the wire models must accept.
    if canonical_uuids([e.id for e in msg.events]) and validate_message(TOPIC, raw).events:
        assert model_accepts(ev)


def test_canonical_uuids() -> None:
    good = ["01a20bfe-8cfd-7000-a346-eb10b0c482de", "01a20bff-0000-7000-8000-000000000001"]
    assert canonical_uuids(good)
    assert canonical_uuids([])
    for bad in [
        "01A20BFE-8CFD-7000-A346-EB10B0C482DE",
        "01a20bfe-8cfd-7000-a346-eb10b0c482dg",
        "01a20bfe8-cfd-7000-a346-eb10b0c482de",
        "01a20bfe-8cfd-7000-a346-eb10b0c482d\u00e9",
        "01a20bfe-8cfd-7000-a346-eb10b0c482",
        "01a20bfe-8cfd-7000-a346-eb10b0c482de-",
    ]:
        assert not canonical_uuids([good[0], bad]), bad


def test_events_built_by_the_agent_pass_unchanged() -> None:
    payloads = [
        ScanPayload(camera="till", code_kind="coupon", text="C-1", fields={"coupon": "1"}),
        FootfallPayload(
            camera="door", line="main", window_start=datetime(2026, 11, 24, 10, tzinfo=UTC), window_s=60,
            in_count=3, out_count=2, covered=True, seconds_live=60, frames_processed=1500, frames_dropped=4,
        ),
        HealthPayload(status="degraded", metrics={"backlog_events": 12, "camera": "down"}),
    ]  # fmt: skip
    bodies = [encode_event("s1", "d1", p).body(i + 1) for i, p in enumerate(payloads)]
    msg = b'{"v":1,"batch":"b","store":"s1","device":"d1","events":[' + b",".join(bodies) + b"]}"
    assert len(MESSAGE_DECODER.decode(msg).events) == 3  # the fast path takes them as they are
    result = validate_message(TOPIC, msg)
    assert result.rejected == []
    assert [kind_of(e) for e in result.events] == ["scan", "footfall", "health"]
    assert result.events[1].payload.window_start == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert result.settled_seqs == [1, 2, 3]


def test_non_events_topics_are_refused() -> None:
    assert validate_message("omni/v1/s1/d1/acks", b"{}").rejected[0].reason.startswith("not an events topic")
    assert validate_message("other/thing", b"{}").rejected[0].reason.startswith("not an events topic")


def test_a_non_canonical_uuid_lands_in_canonical_text() -> None:
    ev = {
        "id": "01A20BFE8CFD7000A346EB10B0C482DE",
        "store": "s1",
        "device": "d1",
        "seq": 7,
        "ts": "2026-11-24T10:00:00Z",
        "kind": "health",
        "payload": {"status": "ok"},
    }
    result = validate_message(
        TOPIC, orjson.dumps({"v": 1, "batch": "b", "store": "s1", "device": "d1", "events": [ev]})
    )
    assert result.rejected == []
    assert [e.id for e in result.events] == ["01a20bfe-8cfd-7000-a346-eb10b0c482de"]
    assert result.settled_seqs == [7]
