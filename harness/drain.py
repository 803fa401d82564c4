"""Drain one outbox to the broker and exit when everything is acknowledged (benchmarks, tools).

    python -m harness.drain --outbox PATH --port N [--store S --device D]

Prints one JSON line: events acked, seconds, peak RSS, outbox bytes before and after compaction.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from device_configs.device import MqttSettings, SyncSettings
from edge_agent.outbox import SqliteOutbox
from edge_agent.uplink import Uplink


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM). Not ru_maxrss: that survives exec, so a child started
    from a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outbox", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--store", default="bench")
    ap.add_argument("--device", default="d1")
    defaults = SyncSettings()
    ap.add_argument("--batch", type=int, default=defaults.batch_max_events, help="events per message")
    ap.add_argument("--inflight", type=int, default=defaults.max_inflight_batches)
    ap.add_argument("--rate", type=float, default=0, help="drain rate limit, events/s (0 = none)")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)

    outbox = SqliteOutbox(args.outbox, check_on_open=False)
    before = outbox.bytes_on_disk()
    total = outbox.stats().events
    up = Uplink(
        outbox,
        store=args.store,
        device=args.device,
        mqtt=MqttSettings(host=args.host, port=args.port),
        sync=SyncSettings(
            batch_max_events=args.batch,
            max_inflight_batches=args.inflight,
            drain_rate_eps=args.rate,
            ack_timeout_s=60,
        ),
    )
    cpu0 = sum(os.times()[:2])
    t0 = time.perf_counter()
    up.start()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        # The counter first: outbox.stats() takes the outbox lock the uplink is working under.
        if up.stats.events_acked >= total and outbox.stats().events == 0:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    drain_cpu = sum(os.times()[:2]) - cpu0
    up.stop()
    outbox.compact()
    after = outbox.bytes_on_disk()
    left = outbox.count_exact()
    outbox.close()
    print(
        json.dumps(
            {
                "events": total,
                "acked": up.stats.events_acked,
                "left_in_outbox": left,
                "seconds": round(elapsed, 3),
                "resends": up.stats.resends,
                "peak_rss_mb": peak_rss_mb(),
                "cpu_s": round(sum(os.times()[:2]), 2),  # the whole process, start-up included
                "drain_cpu_s": round(drain_cpu, 3),  # from the uplink's start to the last ack
                "outbox_bytes_before": before,
                "outbox_bytes_after": after,
            }
        )
    )
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
