"""The local demo of the whole pipeline on embedded defaults.

    python -m harness.demo [--stores 3] [--devices 2] [--duration 20] [--pg postgresql://...]

Starts a broker (mosquitto when installed, else an embedded Python broker), the central ingest on
SQLite (or PostgreSQL with --pg) and simulated stores: per store one till PC whose simulated camera
shows QR codes to the real QR pipeline, and more devices producing scan and footfall events. Shows
progress while running; at the end drains every outbox and prints a per-store table read back from
the central store, with an exactly-once check (ids unique, no sequence gaps).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from edge_agent.sim.footfall_scene import door_scene
from harness.broker import Mosquitto, mosquitto_binary
from sync.central.ingest import BrokerSettings, Ingest
from sync.central.stores import open_central_store

DOOR: dict[str, Any] = {"width": 640, "height": 360, "fps": 12.5, "seed": 0}
DOOR_SCENE = door_scene("busy", **DOOR)


def device_doc(
    store: str, device: str, port: int, state: Path, *, rate: float, till: bool, door: bool
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "store": store,
        "device": device,
        "state_dir": str(state / store / device),
        "mqtt": {"port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 2},
        "sync": {"heartbeat_s": 5, "ack_timeout_s": 5},
        "simulated_sources": [{"id": "sim", "rate_eps": rate, "scan_share": 0.7}],
    }
    if till:
        doc["cameras"] = [{"id": "till", "source": {"kind": "simulated", "scenario": "qr_demo"}}]
        doc["qr"] = [
            {
                "camera": "till",
                "rules": [
                    {
                        "name": "product",
                        "kind": "product",
                        "regex": r"^https://shop\.example/p/(?P<sku>[\w-]+)$",
                    },
                    {"name": "coupon", "kind": "coupon", "regex": r"^COUPON:(?P<coupon>[\w-]+)$"},
                    {"name": "member", "kind": "member", "prefix": "MEMBER:"},
                ],
                "member_key": {"env": "OMNI_DEMO_MEMBER_KEY"},
            }
        ]
    if door:
        # A door camera: a simulated busy entrance, counted by the real footfall pipeline.
        doc["cameras"] = [
            {"id": "door", "source": {"kind": "simulated", "scenario": "footfall_busy", **DOOR}}
        ]
        x1, y1, x2, y2 = DOOR_SCENE.line
        w, h = DOOR["width"], DOOR["height"]
        line = {"id": "door", "x1": x1 / w, "y1": y1 / h, "x2": x2 / w, "y2": y2 / h}
        doc["footfall"] = [
            {"camera": "door", "window_s": 5, "lines": [line | {"in_direction": DOOR_SCENE.in_direction}]}
        ]
    return doc


def start_broker(workdir: Path) -> tuple[Any, int, bool]:
    """(broker, port, supports shared subscriptions)."""
    if mosquitto_binary() is not None:
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        return broker, broker.port, True
    from harness.embedded_broker import EmbeddedBroker

    print("mosquitto not installed: using the embedded Python broker (amqtt)")
    embedded = EmbeddedBroker()
    embedded.start()
    return embedded, embedded.port, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=int, default=3)
    ap.add_argument("--devices", type=int, default=2, help="devices per store")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of event production")
    ap.add_argument("--rate", type=float, default=20.0, help="simulated events/s per device")
    ap.add_argument("--pg", default=None, help="PostgreSQL URL for the central store (default: SQLite)")
    ap.add_argument("--workdir", default=None, help="where state goes (default: a new temp dir)")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import os

    os.environ.setdefault("OMNI_DEMO_MEMBER_KEY", "demo-only-key-not-secret")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="omni-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    central_url = args.pg or str(work / "central.db")
    print(f"work dir: {work}")
    broker, port, shared = start_broker(work)
    store = open_central_store(central_url, group_commit=True)
    ingest = Ingest(store, BrokerSettings(port=port), client_id="demo-ingest", shared=shared)
    ingest.start()
    agents: list[Agent] = []
    try:
        if not ingest.wait_connected(15):
            print("ingest could not connect to the broker", file=sys.stderr)
            return 1
        for s in range(1, args.stores + 1):
            for d in range(1, args.devices + 1):
                doc = device_doc(
                    f"store-{s:03d}", f"pc-{d}", port, work / "edge", rate=args.rate, till=d == 1, door=d == 2
                )
                agent = Agent(DeviceConfig.model_validate(doc), base_dir=work)
                agent.start()
                agents.append(agent)
        print(f"{len(agents)} devices in {args.stores} stores; broker on port {port}; central: {central_url}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            time.sleep(1)
            backlog = sum(a.outbox.stats().events for a in agents)
            print(
                f"  t={time.monotonic() - t0:4.0f}s  landed {ingest.stats.events_new:7d}  "
                f"backlog {backlog:5d}  dead letters {ingest.stats.dead_letters}",
                flush=True,
            )
        for a in agents:  # stop producing, then drain what is left
            a.supervisor.stop_all()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(a.outbox.stats().events for a in agents):
            time.sleep(0.2)
        left = sum(a.outbox.stats().events for a in agents)
    finally:
        for a in agents:
            a.stop()
        ingest.stop()
        broker.stop()
    report(central_url, left)
    store.close()
    return 0 if left == 0 else 1


def report(central_url: str, left: int) -> None:
    store = open_central_store(central_url)
    try:
        keys = store.event_keys()
        scans: dict[str, Counter[str]] = defaultdict(Counter)
        for row in store.rows("scan"):  # type: ignore[attr-defined]
            scans[row["store"]][row["code_kind"]] += 1
            if row["camera"] == "till":  # read by the QR pipeline from the simulated camera
                scans[row["store"]]["camera"] += 1
        foot: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in store.rows("footfall"):  # type: ignore[attr-defined]
            if row["camera"] == "door":  # counted by the footfall pipeline from the simulated door
                foot[row["store"]][0] += row["in_count"]
                foot[row["store"]][1] += row["out_count"]
    finally:
        store.close()
    per_device: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k in keys:
        per_device[(k.store, k.device)].append(k.seq)
    gaps = sum(1 for seqs in per_device.values() if sorted(seqs) != list(range(1, len(seqs) + 1)))
    dupes = len(keys) - len({k.id for k in keys})
    print()
    print(
        f"{'store':<10} {'events':>7} {'product':>8} {'coupon':>7} {'member':>7} {'other':>6} "
        f"{'from QR camera':>14} {'door in':>8} {'door out':>8}"
    )
    for st in sorted({k.store for k in keys}):
        n = sum(1 for k in keys if k.store == st)
        c = scans[st]
        print(
            f"{st:<10} {n:>7} {c['product']:>8} {c['coupon']:>7} {c['member']:>7} {c['other']:>6} "
            f"{c['camera']:>14} {foot[st][0]:>8} {foot[st][1]:>8}"
        )
    true_in, true_out = DOOR_SCENE.truth()
    print(f"(each store's door camera plays the same simulated scene: truly {true_in} in, {true_out} out)")
    print()
    print(
        f"{len(keys)} events from {len(per_device)} devices; duplicates {dupes}; devices with sequence gaps "
        f"{gaps}; left in outboxes {left}"
    )


if __name__ == "__main__":
    sys.exit(main())
