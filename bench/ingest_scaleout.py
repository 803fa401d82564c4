"""Ingest scale-out: 1, 2 and 3 ingest workers on one shared subscription.

    python bench/ingest_scaleout.py [--store sqlite|POSTGRESQL_URL] [--devices 6] [--events 40000]
                                    [--workers 1,2,3] [--batch 100]

Pre-fills one outbox per device (``--events`` each, UUIDv7 ids, as the agent writes them), starts a
private mosquitto and N ``omni-central ingest`` processes with distinct client ids in one group
(``$share/<group>/omni/v1/+/+/events``), then drains every outbox at once, one ``harness.drain``
process per device (the agent's uplink), and times until every outbox is acknowledged. Each N gets
fresh outboxes and a fresh central store. Printed per N: events/s, CPU microseconds per event of the
ingest workers, the broker and the drains, and how the messages split among the workers.

Everything shares this machine's cores, so the figures are bounded by it; CPU per event and the load
average are given so runs on a busy machine can be compared. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # type: ignore[import-untyped]  # noqa: E402

from harness.broker import Mosquitto  # noqa: E402
from harness.processes import prefill_outbox, start_ingest  # noqa: E402
from sync.central.stores import open_central_store  # noqa: E402


@contextmanager
def central(store: str, tmp: Path, tag: str) -> Iterator[str]:
    if store == "sqlite":
        yield str(tmp / f"central-{tag}.db")
        return
    import psycopg

    schema = f"scaleout_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(store, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in store else "?"
    try:
        yield f"{store}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def cpu_s(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_one(args: argparse.Namespace, tmp: Path, template: Path, workers: int) -> dict[str, Any]:
    devices = [f"d{i}" for i in range(args.devices)]
    total = args.devices * args.events
    run_dir = tmp / f"w{workers}"
    run_dir.mkdir()
    for d in devices:
        shutil.copy(template / f"{d}.db", run_dir / f"{d}.db")
        shutil.copy(template / f"{d}.db.seq", run_dir / f"{d}.db.seq")
    broker = Mosquitto(run_dir / "mq", persistence=False)
    broker.start()
    ingests: list[subprocess.Popen[bytes]] = []
    drains: list[subprocess.Popen[str]] = []
    try:
        with central(args.store, tmp, f"w{workers}") as url:
            open_central_store(url).close()  # the schema, before several workers race to create it
            group = f"scale{workers}"
            for w in range(workers):
                ingests.append(
                    start_ingest(
                        url, f"127.0.0.1:{broker.port}", client_id=f"{group}-ingest-{w}", group=group
                    )
                )
            time.sleep(1.5)  # connect and subscribe
            ing_ps = [psutil.Process(p.pid) for p in ingests]
            br_ps = [psutil.Process(broker.pid)]
            ing0 = [cpu_s([p]) for p in ing_ps]
            br0 = cpu_s(br_ps)
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            for d in devices:
                drains.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "harness.drain",
                            "--outbox",
                            str(run_dir / f"{d}.db"),
                            "--port",
                            str(broker.port),
                            "--store",
                            "scaleout",
                            "--device",
                            d,
                            "--batch",
                            str(args.batch),
                        ],
                        cwd=ROOT,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            outs = [p.communicate(timeout=args.timeout)[0] for p in drains]
            elapsed = time.perf_counter() - t0
            ing_cpu = [cpu_s([p]) - c0 for p, c0 in zip(ing_ps, ing0, strict=True)]
            br_cpu = cpu_s(br_ps) - br0
            res = [json.loads(o.strip().splitlines()[-1]) for o in outs]
            drain_cpu = sum(float(r["cpu_s"]) for r in res)
            store = open_central_store(url)
            try:
                keys = store.event_keys()
            finally:
                store.close()
            distinct = len({k.id for k in keys})
            load1 = os.getloadavg()
    finally:
        for p in ingests:
            p.terminate()
        for p in ingests:
            p.wait(30)
        for dp in drains:
            if dp.poll() is None:
                dp.kill()
        broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    eps = total / elapsed
    per_event = {
        "ingest": round(sum(ing_cpu) / total * 1e6, 2),
        "broker": round(br_cpu / total * 1e6, 2),
        "drain": round(drain_cpu / total * 1e6, 2),
    }
    share = [round(c / sum(ing_cpu), 2) if sum(ing_cpu) > 0 else 0.0 for c in ing_cpu]
    return {
        "workers": workers,
        "events": total,
        "seconds": round(elapsed, 2),
        "events_per_s": round(eps),
        "cpu_us_per_event": per_event,
        "ingest_cpu_share_per_worker": share,
        "resends": sum(int(r["resends"]) for r in res),
        "left_in_outboxes": sum(int(r["left_in_outbox"]) for r in res),
        "lost": total - distinct,
        "duplicated": len(keys) - distinct,
        "load_avg": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    ap.add_argument("--devices", type=int, default=6)
    ap.add_argument("--events", type=int, default=40_000, help="pre-filled events per device")
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--batch", type=int, default=100, help="events per MQTT message")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="omni-scaleout-"))
    template = tmp / "template"
    template.mkdir()
    print(f"pre-filling {args.devices} outboxes with {args.events:,} events each ...", flush=True)
    for i in range(args.devices):
        prefill_outbox(template / f"d{i}.db", args.events, "scaleout", f"d{i}")
    results = []
    try:
        for w in [int(x) for x in args.workers.split(",")]:
            r = run_one(args, tmp, template, w)
            results.append(r)
            print(
                f"{w} ingest worker(s): {r['events']:,} events in {r['seconds']}s -> "
                f"{r['events_per_s']:,} events/s; CPU us/event {r['cpu_us_per_event']}; "
                f"ingest CPU split {r['ingest_cpu_share_per_worker']}; lost {r['lost']}, "
                f"duplicated {r['duplicated']}; load {r['load_avg']}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    backend = "sqlite" if args.store == "sqlite" else "postgresql"
    print(
        json.dumps(
            {
                "backend": backend,
                "devices": args.devices,
                "events_per_device": args.events,
                "batch": args.batch,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
