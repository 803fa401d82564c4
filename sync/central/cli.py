"""``omni-central``: run an ingest worker, read reports and dead letters from the central store."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from types import FrameType

from sync.central.ingest import BrokerSettings, Ingest


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _broker(args: argparse.Namespace) -> BrokerSettings:
    host, _, port = args.broker.rpartition(":")
    return BrokerSettings(
        host=host or "127.0.0.1",
        port=int(port),
        username=args.username,
        password=args.password,
        ca_file=args.ca_file,
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from sync.central.stores import open_central_store

    # SQLite: one fsync for the commits of several groups, before their acks (see the ingest).
    store = open_central_store(args.store, group_commit=True)
    ingest = Ingest(
        store,
        _broker(args),
        group=args.group,
        client_id=args.client_id,
        crash_after_commits=args.fault_crash_after_commits,
        max_messages_per_write=args.max_messages_per_write,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fleet = None
    if args.fleet:
        # The fleet table (presence, config versions, backlog) from the same process, on its own
        # connection and its own store handle.
        from sync.central.fleet import FleetService, as_fleet_store

        fleet_store = open_central_store(args.store)
        fleet = FleetService(as_fleet_store(fleet_store), _broker(args))
        fleet.start()
    ingest.start()
    last = 0.0
    while not stop.wait(0.2):
        if ingest.failed:
            logging.critical("ingest stopped: %s", ingest.failed)
            break
        if args.progress and time.monotonic() - last >= args.progress:
            last = time.monotonic()
            s = ingest.stats
            logging.info(
                "messages=%d new=%d duplicate=%d dead=%d connected=%s",
                s.messages,
                s.events_new,
                s.events_duplicate,
                s.dead_letters,
                s.connected,
            )
    ingest.stop()
    if fleet is not None:
        fleet.stop()
        fleet_store.close()
    store.close()
    return 1 if ingest.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from sync.central.stores import open_central_store

    store = open_central_store(args.store)
    print("footfall per store per hour (UTC)")
    print(f"  {'store':<12} {'hour':<17} {'in':>6} {'out':>6} {'covered':>8} {'uncovered':>9}")
    for st, hour, n_in, n_out, cov, uncov in store.footfall_per_store_hour():
        print(f"  {st:<12} {hour:%Y-%m-%d %H:00} {n_in:>6} {n_out:>6} {cov:>8} {uncov:>9}")
    print("scans per kind per store per day (UTC)")
    for st, day, kind, n in store.scans_per_kind_store_day():
        print(f"  {st:<12} {day:<10} {kind:<8} {n:>8}")
    store.close()
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    from sync.central.stores import open_central_store

    store = open_central_store(args.store)
    for d in store.dead_letters():
        print(f"{d.received_at:%Y-%m-%dT%H:%M:%S} {d.topic} {d.size}B sha256={d.sha256[:12]} {d.reason}")
    store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-central", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ingest", help="run one ingest worker (start several for scale-out)")
    p.add_argument("--store", required=True, help="sqlite file path or postgresql:// URL")
    p.add_argument("--broker", default="127.0.0.1:1883", help="host:port")
    p.add_argument("--group", default="ingest", help="shared-subscription group")
    p.add_argument("--client-id", default=None, help="unique per worker (default ingest-<group>-1)")
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--ca-file", default=None)
    p.add_argument("--progress", type=float, default=0, help="log stats every N seconds")
    p.add_argument("--fleet", action="store_true", help="also keep the fleet table (presence, versions)")
    p.add_argument(
        "--max-messages-per-write",
        type=_positive_int,
        default=None,
        help="at most this many MQTT messages validated and committed as one transaction "
        "(default: the store's, 5 for SQLite and 10 for PostgreSQL)",
    )
    p.add_argument(
        "--fault-crash-after-commits",
        type=int,
        default=None,
        help="fault injection: kill -9 this worker right after its Nth commit, before acking",
    )
    p.set_defaults(fn=cmd_ingest)
    for name, fn in (("report", cmd_report), ("dead-letters", cmd_dead)):
        q = sub.add_parser(name)
        q.add_argument("--store", required=True)
        q.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
