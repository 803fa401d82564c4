"""A full edge disk, on a real broker.

First the capacity policy (an outbox capped at ``max_rows``, the uplink down): scans are kept,
footfall windows are folded (visitor counts conserved exactly, checked by the chaos invariant
checker against a footfall ledger), and the agent says so in health events from component
``outbox``.

Then a real full disk (ENOSPC) under the agent's state directory: a 4 MB tmpfs filled with ballast.
Needs permission to mount a tmpfs (root in a container); skipped otherwise. Those two tests come
from findings of the chaos harness (docs/chaos.md, "Findings"), fixed in the uplink: failed deletes
are retried without dropping the connection.
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
from harness.faults import AgentProc, wait_for
from harness.footfall_ledger import tap
from harness.invariants import check, read_outbox
from harness.netproxy import NetProxy
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store
from tests.e2e import device_doc, landed, ledger_numbers, wait_until

pytestmark = pytest.mark.broker

EVENTS = 300
CAP = 30


def outbox_reports(url: str) -> list[dict[str, object]]:
    store = open_central_store(url)
    try:
        return [r for r in store.rows("health") if r["component"] == "outbox"]  # type: ignore[attr-defined]
    finally:
        store.close()


def test_disk_full_keeps_scans_folds_footfall_and_conserves_every_visitor(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The store's uplink first swallows everything (sent, never acknowledged), then goes down,
    while the outbox is capped far below what arrives. Footfall that may have been sent can only be
    evicted (its counts on record); footfall that was not is folded. After the heal every scan is
    stored, the sequence gaps are all explained, and the visitor counts stored centrally are exactly
    those produced minus those evicted and never delivered."""
    url = str(tmp_path / "central.db")
    central = open_central_store(url)
    ingest = Ingest(central, BrokerSettings(port=mosquitto.port), client_id="disk-full-ingest")
    ingest.start()
    assert ingest.wait_connected()
    with NetProxy(("127.0.0.1", mosquitto.port)) as link:
        proc = AgentProc(tmp_path / "a", "s1", "d1", link, scan_eps=100, footfall_eps=40, heartbeat_s=1)
        agent = Agent(DeviceConfig.model_validate(proc.doc(max_rows=CAP)), base_dir=tmp_path)
        tap(agent.outbox, proc.footfall_ledger_path)
        agent.start()
        try:
            wait_until(lambda: agent.uplink.stats.subscribed, what="the agent connected")
            # Bytes vanish: the uplink keeps handing batches out (the sent mark moves), no ack comes.
            link.set_mode("blackhole")
            wait_until(
                lambda: agent.outbox.stats().evicted.get("footfall", 0) > 0,
                what="footfall the uplink had sent evicted under the cap",
            )
            link.set_mode("cut")  # now the link is down: what arrives is never sent, so it folds
            folded_before = agent.outbox.stats().folded.get("footfall", 0)
            wait_until(
                lambda: agent.outbox.stats().folded.get("footfall", 0) > folded_before + 40,
                what="unsent footfall folded",
            )
            assert agent.outbox.stats().over_capacity  # scans are kept beyond the cap
            assert agent.outbox.waiting("footfall") < 10  # the windows went into a handful
            wait_until(
                lambda: any(h["status"] == "degraded" for h in agent_reports(agent)),
                what="an outbox report in the outbox",
            )
            # Heal: the link is back and the limit lifted (as ops would push a config).
            agent.outbox.max_rows = 5_000_000
            link.heal()
            snap = proc.snapshot()
            wait_until(lambda: not read_outbox(proc.outbox_path).holds_upto(snap.upto_seq), what="drained")
            proc.settled(snap, read_outbox(proc.outbox_path))
            wait_until(
                lambda: [h["status"] for h in outbox_reports(url)][-1:] == ["ok"],
                what="the outbox's ok report stored centrally",
            )
        finally:
            agent.stop()
            ingest.stop()
            central.close()
    report = check(url, [snap])
    assert report.ok, report.violations
    device = report.devices[0]
    assert device.scans_expected > 0 and device.scans_lost == 0 and device.scans_twice == 0
    assert device.unexplained_gaps == 0
    assert device.folded > 40
    ff = device.footfall
    assert ff is not None and ff.windows > 0 and ff.refused == 0
    assert ff.unknown == (0, 0)  # no kill: every window's outcome is in the ledger
    # Exactly conserved: stored == produced - evicted-and-never-delivered, in and out.
    assert ff.missing == (0, 0)
    assert ff.landed == (ff.produced[0] - ff.evicted[0], ff.produced[1] - ff.evicted[1])
    # Windows the uplink had handed out gave way; each is on record by seq with its counts, and
    # counted as lost only if it did not land before its ack went missing.
    assert snap.outbox is not None and len(snap.outbox.evicted_footfall) > 0
    assert snap.outbox.evicted["footfall"] == len(snap.outbox.evicted_footfall)
    # The agent said what happened, in plain words, and that it recovered.
    reports = outbox_reports(url)
    degraded = [h for h in reports if h["status"] == "degraded"]
    assert degraded and all(str(h["message"]).startswith("outbox") for h in degraded)
    assert any("folded" in str(h["message"]) and "scans kept" in str(h["message"]) for h in degraded)
    assert sum(int(h["metrics"]["folded"]) for h in degraded) > 0  # type: ignore[index,call-overload]
    assert reports[-1]["status"] == "ok"


def agent_reports(agent: Agent) -> list[dict[str, object]]:
    import orjson

    bodies = [orjson.loads(body) for _, body in agent.outbox.read_after(0, 1_000_000)]
    return [b["payload"] for b in bodies if b["kind"] == "health" and b["payload"]["component"] == "outbox"]


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
