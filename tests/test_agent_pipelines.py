"""The agent runs the camera pipelines from its config and commits their events to the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from edge_agent.sim.footfall_scene import door_scene
from harness.broker import free_port
from tests.e2e import wait_until


def outbox_events(agent: Agent) -> list[dict[str, Any]]:
    return [orjson.loads(body) for _, body in agent.outbox.read_after(0, 100_000)]


def base_doc(tmp_path: Path) -> dict[str, Any]:
    # No broker listens on this port: the events stay in the outbox, where the test reads them.
    return {"store": "s1", "device": "d1", "state_dir": str(tmp_path / "edge"), "mqtt": {"port": free_port()}}


def test_footfall_counts_of_a_door_scene_reach_the_outbox_even_when_stopped_mid_window(
    tmp_path: Path,
) -> None:
    width, height, fps = 320, 180, 12.5
    scene = door_scene("single_in", width=width, height=height, fps=fps, seed=0)
    true_in, true_out = scene.truth()
    assert (true_in, true_out) == (1, 0)
    x1, y1, x2, y2 = scene.line
    doc = base_doc(tmp_path) | {
        "cameras": [
            {
                "id": "door",
                "source": {"kind": "simulated", "scenario": "footfall_single_in", "width": width,
                           "height": height, "fps": fps},
            }
        ],
        "footfall": [
            {
                "camera": "door",
                "window_s": 3600,  # one long window: only the stop can close it
                "person_height": 0.28,
                "lines": [{"id": "door", "x1": x1 / width, "y1": y1 / height, "x2": x2 / width,
                           "y2": y2 / height, "in_direction": scene.in_direction}],
            }
        ],
    }  # fmt: skip
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    agent.start()
    try:
        wait_until(lambda: agent.pipeline_up("footfall:door")[0] is True, what="camera live")
        sup = agent.supervisor.children["footfall:door"]
        # "ended" alone is the camera's side: frames may still wait in the grabber's queue.
        wait_until(lambda: sup.ctx.snapshot().get("source_drained") is True, timeout=60, what="scene counted")
    finally:
        agent.stop()
    reopened = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    try:
        footfall = [e["payload"] for e in outbox_events(reopened) if e["kind"] == "footfall"]
    finally:
        reopened.outbox.close()
    assert len(footfall) == 1
    (w,) = footfall
    assert (w["in_count"], w["out_count"]) == (true_in, true_out)
    assert w["covered"] is False  # a few seconds of an hour-long window
    assert w["frames_processed"] > 0 and w["line"] == "door" and w["camera"] == "door"


def test_qr_scans_from_the_simulated_till_camera_reach_the_outbox(tmp_path: Path) -> None:
    doc = base_doc(tmp_path) | {
        "cameras": [{"id": "till", "source": {"kind": "simulated", "scenario": "qr_demo", "fps": 10}}],
        "qr": [{"camera": "till", "rules": [{"name": "coupon", "kind": "coupon", "prefix": "COUPON:"}]}],
    }
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    agent.start()
    try:
        wait_until(
            lambda: sum(e["kind"] == "scan" for e in outbox_events(agent)) >= 4, timeout=60, what="four scans"
        )
    finally:
        agent.stop()
    reopened = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
    try:
        scans = [e["payload"] for e in outbox_events(reopened) if e["kind"] == "scan"]
    finally:
        reopened.outbox.close()
    # The qr_demo script: a product, a coupon, a member code (no key configured: no text), then the
    # product again after a quiet gap, which is a new presentation.
    assert [(s["code_kind"], s["text"]) for s in scans] == [
        ("other", "https://shop.example/p/SKU-10042"),
        ("coupon", "COUPON:SPRING-25"),
        ("other", "MEMBER:0012345678"),
        ("other", "https://shop.example/p/SKU-10042"),
    ]


def test_one_camera_cannot_feed_two_pipelines(tmp_path: Path) -> None:
    doc = base_doc(tmp_path) | {
        "cameras": [{"id": "cam", "source": {"kind": "device", "index": 0}}],
        "qr": [{"camera": "cam"}],
        "footfall": [{"camera": "cam"}],
    }
    with pytest.raises(
        ValidationError, match="camera cam is used by both a QR reader and a footfall counter"
    ):
        DeviceConfig.model_validate(doc)
