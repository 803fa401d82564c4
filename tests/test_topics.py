"""Every MQTT topic the code uses is built in sync/topics.py and documented in docs/topics.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sync import topics
from sync.wire import seq_ranges

ROOT = Path(__file__).resolve().parents[1]


def test_every_topic_is_documented() -> None:
    doc = (ROOT / "docs" / "topics.md").read_text()
    for spec in topics.ALL_TOPICS:
        assert f"`{spec.pattern}`" in doc, f"{spec.pattern} is not in docs/topics.md"


def test_no_module_spells_a_topic_by_hand() -> None:
    literal = re.compile(r"[\"']omni/v\d")
    offenders = []
    for pkg in ("edge_agent", "sync", "device_configs", "harness"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path == ROOT / "sync" / "topics.py":
                continue
            if literal.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_parse_round_trips_and_refuses_foreign_topics() -> None:
    for spec in topics.ALL_TOPICS:
        assert topics.parse(spec.for_device("s-1", "d.2")) == ("s-1", "d.2", spec.suffix)
    assert topics.parse("omni/v2/s/d/events") is None
    assert topics.parse("omni/v1/s/d/unknown") is None
    assert topics.parse("omni/v1//d/events") is None
    assert topics.shared("ingest", topics.EVENTS.wildcard()) == "$share/ingest/omni/v1/+/+/events"


@pytest.mark.parametrize(
    ("seqs", "ranges"),
    [
        ([], []),
        ([7], [(7, 7)]),
        ([3, 4, 5, 6], [(3, 6)]),  # the usual batch: one run
        ([6, 5, 4, 3], [(3, 6)]),
        ([1, 2, 2, 3], [(1, 3)]),  # a repeated seq is not a longer run
        ([1, 2, 4], [(1, 2), (4, 4)]),
        ([1, 3, 2, 9, 10, 12], [(1, 3), (9, 10), (12, 12)]),
    ],
)
def test_seq_ranges(seqs: list[int], ranges: list[tuple[int, int]]) -> None:
    assert seq_ranges(seqs) == ranges
