"""A real full disk (ENOSPC) under the agent's state directory: a 4 MB tmpfs filled with ballast.

Needs permission to mount a tmpfs (root in a container); skipped otherwise. Both tests come from
findings of the chaos harness (docs/chaos.md, "Findings"), fixed in the uplink: failed deletes are
retried without dropping the connection.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from harness.broker import Mosquitto
from harness.faults import wait_for
from harness.netproxy import NetProxy
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store
from tests.e2e import device_doc, landed, ledger_numbers, wait_until

pytestmark = pytest.mark.broker

EVENTS = 300


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Write a ballast file until the disk is full; returns it (delete it to free the space)."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return ballast


@dataclass
class Episode:
    connects_while_full: int
    drained_after_freeing: bool


def disk_full_episode(tmp_path: Path, mosquitto: Mosquitto, disk: Path) -> Episode:
    """Events buffered while the link is down; the disk fills; the link comes back (every event
    reaches the central store, but the outbox cannot delete); then the disk has room again."""
    central = str(tmp_path / "central.db")
    store = open_central_store(central)
    ingest = Ingest(store, BrokerSettings(port=mosquitto.port), client_id="disk-ingest")
    ingest.start()
    state = disk / "edge"
    with NetProxy(("127.0.0.1", mosquitto.port)) as link:
        link.set_mode("cut")
        doc = device_doc(state, link.port, rate=1000, total=EVENTS, ack_timeout_s=1)
        agent = Agent(DeviceConfig.model_validate(doc), base_dir=tmp_path)
        agent.start()
        try:
            wait_until(lambda: len(ledger_numbers(state)) == EVENTS, what="events buffered")
            ballast = fill(disk)
            connects = agent.uplink.stats.connects
            link.heal()
            wait_until(lambda: landed(central) == EVENTS, what="every event stored centrally")
            wait_for(lambda: agent.uplink.stats.acks_received > 0, 5)
            wait_for(lambda: False, 2)  # the agent, with acks it cannot apply, for two seconds
            connects_while_full = agent.uplink.stats.connects - connects
            ballast.unlink()
            drained = wait_for(lambda: agent.outbox.stats().events == 0, 8)
        finally:
            agent.stop()
            ingest.stop()
            store.close()
    assert landed(central) == EVENTS  # nothing lost either way: the events are all stored
    return Episode(connects_while_full, drained)


def test_after_a_full_disk_the_backlog_drains_without_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, tiny_disk: Path
) -> None:
    assert disk_full_episode(tmp_path, mosquitto, tiny_disk).drained_after_freeing


def test_a_full_disk_does_not_make_the_uplink_reconnect_in_a_loop(
    tmp_path: Path, mosquitto: Mosquitto, tiny_disk: Path
) -> None:
    assert disk_full_episode(tmp_path, mosquitto, tiny_disk).connects_while_full <= 1
