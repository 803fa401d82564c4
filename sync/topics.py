"""The MQTT topic tree, version 1. Every topic the code publishes or subscribes to is built here.

    omni/v1/{store}/{device}/events        device -> central   EventBatch, QoS 1
    omni/v1/{store}/{device}/acks          central -> device   EventAck, QoS 1
    omni/v1/{store}/{device}/status        device -> all       presence, retained (last will: offline)
    omni/v1/{store}/{device}/config        ops -> device       desired config, retained, QoS 1
    omni/v1/{store}/{device}/config/ack    device -> ops       config acknowledgement, QoS 1

docs/topics.md documents each one; tests/test_topics.py checks that every pattern here is
documented there and that no other module spells a topic by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "omni"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    direction: str
    doc: str

    @property
    def pattern(self) -> str:
        return f"{PREFIX}/{{store}}/{{device}}/{self.suffix}"

    def for_device(self, store: str, device: str) -> str:
        return f"{PREFIX}/{store}/{device}/{self.suffix}"

    def wildcard(self) -> str:
        """Every device's topic of this kind: omni/v1/+/+/<suffix>."""
        return f"{PREFIX}/+/+/{self.suffix}"


EVENTS = TopicSpec("events", "device -> central", "Batches of events (EventBatch JSON), QoS 1.")
ACKS = TopicSpec("acks", "central -> device", "End-to-end acknowledgement of committed events.")
STATUS = TopicSpec("status", "device -> all", "Presence: retained online/offline (last will).")
CONFIG = TopicSpec("config", "ops -> device", "Desired device config, retained, QoS 1.")
CONFIG_ACK = TopicSpec("config/ack", "device -> ops", "Result of applying a pushed config.")

ALL_TOPICS: tuple[TopicSpec, ...] = (EVENTS, ACKS, STATUS, CONFIG, CONFIG_ACK)


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription: the broker splits messages among the group's subscribers."""
    return f"$share/{group}/{topic_filter}"


def parse(topic: str) -> tuple[str, str, str] | None:
    """(store, device, suffix) of a topic in this tree, or None when it is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != ROOT or parts[1] != VERSION:
        return None
    suffix = "/".join(parts[4:])
    if not parts[2] or not parts[3] or suffix not in {t.suffix for t in ALL_TOPICS}:
        return None
    return parts[2], parts[3], suffix
