"""``omni-edge``: run the agent, inspect its backlog, check a config."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from device_configs.loader import ConfigError, load_device_config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.agent import Agent
    from edge_agent.config_manager import load_bootstrap

    # The file is the bootstrap; a persisted last known good config with a newer version wins.
    running, base_dir = load_bootstrap(Path(args.config))
    agent = Agent(running.cfg, base_dir=base_dir, running=running)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("edge_agent").info("signal %d: stopping", signum)
        agent._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    agent.wait()
    agent.stop()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from edge_agent.outbox import SqliteOutbox

    cfg = load_device_config(args.config)
    base = Path(args.config).resolve().parent / cfg.state_dir
    outbox = SqliteOutbox(
        base / cfg.outbox.path, max_bytes=cfg.outbox.max_bytes, max_rows=cfg.outbox.max_rows
    )
    st = outbox.stats()
    outbox.close()
    print(
        json.dumps(
            {
                "events": st.events,
                "bytes_on_disk": st.bytes_on_disk,
                "oldest_age_s": st.oldest_age_s,
                "oldest_seq": st.oldest_seq,
                "next_seq": st.next_seq,
                "evicted": st.evicted,
                "rejected": st.rejected,
                "folded": st.folded,
                "footfall_evicted_in": st.footfall_evicted_in,
                "footfall_evicted_out": st.footfall_evicted_out,
                "sent_mark": st.sent_mark,
                "over_capacity": st.over_capacity,
            },
            indent=2,
        )
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_device_config(args.config)
    print(f"{args.config}: ok (store {cfg.store}, device {cfg.device}, schema {cfg.schema_version})")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """One frame from a footfall camera with its line, 'in' arrow and zone drawn, for placement."""
    from edge_agent.camera.factory import open_source
    from edge_agent.footfall.snapshot import save_snapshot

    cfg = load_device_config(args.config)
    counters = {f.camera: f for f in cfg.footfall}
    camera_id = args.camera or (next(iter(counters)) if len(counters) == 1 else None)
    if camera_id is None or camera_id not in counters:
        known = ", ".join(sorted(counters)) or "none"
        print(f"name a camera with a footfall counter (--camera); configured: {known}", file=sys.stderr)
        return 2
    camera = next(c for c in cfg.cameras if c.id == camera_id)
    out = save_snapshot(open_source(camera), counters[camera_id], args.out)
    print(f"snapshot of {camera_id} written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-edge", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, fn, text in (
        ("run", cmd_run, "run the agent until SIGTERM"),
        ("stats", cmd_stats, "print the outbox backlog"),
        ("check-config", cmd_check, "validate a device config file"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="device config file (.toml or .json)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("snapshot", help="save a frame of a footfall camera with its counting line drawn")
    p.add_argument("--config", required=True, help="device config file (.toml or .json)")
    p.add_argument("--camera", default=None, help="camera id (needed when several count footfall)")
    p.add_argument("--out", default="snapshot.png", help="PNG file to write")
    p.set_defaults(fn=cmd_snapshot)
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
