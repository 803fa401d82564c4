"""``omni-ops``: device configs for the fleet, from files in version control to running devices.

    omni-ops validate DIR                      every error, with the file and the field path
    omni-ops diff DIR [--against DIR2]         what would change on each device (vs published)
    omni-ops push DIR --store s001 [--canary s001/door] [--sign-key KEY.pem]
    omni-ops status [--store s001]             desired vs running config, last result, presence
    omni-ops fleet --central URL               last seen, online/offline, config, backlog, alarms
    omni-ops fleet-service --central URL       keep the fleet table up to date from MQTT
    omni-ops keygen --out KEY.pem              an Ed25519 signing key; prints the public key
    omni-ops render DIR --out OUT              complete per-device config files (bootstrap)

DIR holds chain.toml, stores/<store>.toml and devices/<store>/<device>.toml (device_configs.repo).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from device_configs.content import config_document
from device_configs.repo import DeviceKey, load_repo
from sync.central.ops import (
    OpsBroker,
    OpsClient,
    Outcome,
    format_table,
    key_str,
    new_deployment_id,
    plan,
    push,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# -- broker options -------------------------------------------------------------------------------


def _add_broker_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker")
    g.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    g.add_argument("--username", help="MQTT user name")
    g.add_argument(
        "--password-env", default="OMNI_MQTT_PASSWORD", help="environment variable holding the password"
    )
    g.add_argument("--password-file", help="file holding the MQTT password (first line)")
    g.add_argument("--ca-file", help="CA certificate (PEM): connect with TLS")
    g.add_argument("--cert-file", help="client certificate (PEM), for mutual TLS")
    g.add_argument("--key-file", help="client private key (PEM)")


def _broker(args: argparse.Namespace) -> OpsBroker:
    host, _, port = args.broker.rpartition(":")
    password = None
    if args.password_file:
        password = Path(args.password_file).read_text().splitlines()[0]
    elif args.username is not None:
        password = os.environ.get(args.password_env)
    return OpsBroker(
        host=host or "127.0.0.1",
        port=int(port),
        username=args.username,
        password=password,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )


def _parse_key(text: str) -> DeviceKey:
    store, sep, device = text.partition("/")
    if not sep or not store or not device:
        raise argparse.ArgumentTypeError(f"{text!r}: expected store/device")
    return (store, device)


def _select(
    known: Iterable[DeviceKey], devices: list[DeviceKey], stores: list[str], everything: bool
) -> set[DeviceKey]:
    known = set(known)
    if everything:
        return known
    return {k for k in known if k in set(devices) or k[0] in set(stores)}


def _add_target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_parse_key, action="append", default=[], help="store/device (repeat)")
    p.add_argument("--store", action="append", default=[], help="every device of a store (repeat)")
    p.add_argument("--all", action="store_true", help="every device")


# -- validate / diff / render ------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    result = load_repo(args.dir)
    for err in result.errors:
        print(err)
    print(f"{len(result.configs)} device(s) valid, {len(result.errors)} error(s)")
    return EXIT_FAILED if result.errors else EXIT_OK


def dict_diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Changed leaves as 'path: old -> new' (lists compared whole, element by element if same length)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{sub}: (unset) -> {json.dumps(new[k])}")
            elif k not in new:
                out.append(f"{sub}: {json.dumps(old[k])} -> (unset)")
            else:
                out.extend(dict_diff(old[k], new[k], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            line
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for line in dict_diff(a, b, f"{path}.{i}")
        ]
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def cmd_diff(args: argparse.Namespace) -> int:
    result = load_repo(args.dir)
    if result.errors:
        for err in result.errors:
            print(err)
        return EXIT_FAILED
    new_docs = {k: config_document(c) for k, c in result.configs.items()}
    if args.against:
        other = load_repo(args.against)
        if other.errors:
            print("\n".join(other.errors))
            return EXIT_FAILED
        old_docs = {k: config_document(c) for k, c in other.configs.items()}
        what = str(args.against)
    else:
        with OpsClient(_broker(args)) as client:
            client.settle()
            old_docs = {k: env.config for k, env in client.published.items()}
        what = "published"
    changed = 0
    for key in sorted(set(new_docs) | set(old_docs)):
        if key not in old_docs:
            print(f"{key_str(key)}: new (not {what})")
            changed += 1
        elif key not in new_docs:
            print(f"{key_str(key)}: {what} but not in {args.dir} (left as it is)")
        else:
            lines = dict_diff(old_docs[key], new_docs[key])
            if lines:
                changed += 1
                print(f"{key_str(key)}:")
                for line in lines:
                    print(f"    {line}")
            elif args.verbose:
                print(f"{key_str(key)}: unchanged")
    print(f"{changed} device(s) would change")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    result = load_repo(args.dir)
    if result.errors:
        print("\n".join(result.errors))
        return EXIT_FAILED
    out = Path(args.out)
    for (store, device), cfg in sorted(result.configs.items()):
        path = out / store / f"{device}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config_document(cfg), indent=2, sort_keys=True) + "\n")
        print(path)
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from sync.config_wire import public_key_b64

    key = Ed25519PrivateKey.generate()
    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; not overwriting a signing key", file=sys.stderr)
        return EXIT_USAGE
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    print(f"private key written to {out} (keep it secret)")
    print(f'put the public key in config_push.trusted_keys: "{public_key_b64(key)}"')
    return EXIT_OK


# -- push / status -----------------------------------------------------------------------------


def _load_sign_key(path: str | None) -> Any:
    if path is None:
        return None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{path}: not an Ed25519 private key")
    return key


def _progress(stage: str, answered: dict[DeviceKey, Outcome], total: int) -> None:
    counts: dict[str, int] = {}
    for o in answered.values():
        counts[o.result] = counts.get(o.result, 0) + 1
    detail = ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) or "waiting"
    print(f"[{stage}] {len(answered)}/{total} answered: {detail}", file=sys.stderr, flush=True)


def cmd_push(args: argparse.Namespace) -> int:
    result = load_repo(args.dir)
    if result.errors:
        print("\n".join(result.errors))
        print("nothing pushed: fix the errors first")
        return EXIT_FAILED
    targets = _select(result.configs, args.device, args.store, args.all)
    missing = sorted(set(args.device) - set(result.configs))
    if missing:
        print(f"not in {args.dir}: {', '.join(key_str(k) for k in missing)}")
        return EXIT_USAGE
    if not targets:
        print("no target: give --device, --store or --all")
        return EXIT_USAGE
    canaries = set(args.canary) & targets
    if args.canary_count:
        canaries |= set(sorted(targets)[: args.canary_count])
    sign_key = _load_sign_key(args.sign_key)
    deployment = new_deployment_id()
    with OpsClient(_broker(args)) as client:
        client.settle()
        todo, unchanged = plan(
            client,
            {k: result.configs[k] for k in targets},
            deployment=deployment,
            force=args.force,
            sign_key=sign_key,
        )
        print(
            f"deployment {deployment}: {len(todo)} device(s) to update, {len(unchanged)} already published"
            + (f", canaries first: {', '.join(sorted(key_str(k) for k in canaries))}" if canaries else ""),
            file=sys.stderr,
        )
        outcomes = push(
            client,
            todo,
            canaries=canaries,
            canary_timeout=args.canary_timeout,
            timeout=args.timeout,
            restore_on_failure=not args.keep_failed,
            progress=_progress,
        )
    all_outcomes = [*outcomes.values(), *unchanged]
    print(format_table(all_outcomes))
    ok = all(o.result in ("applied", "unchanged") for o in all_outcomes)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    with OpsClient(_broker(args)) as client:
        client.settle()
        keys = _select(client.known_devices(), args.device, args.store, not (args.device or args.store))
        rows = [("device", "presence", "desired", "running", "last result", "details")]
        for key in sorted(keys):
            env = client.published.get(key)
            ack = client.acks.get(key)
            online = client.online(key)
            running = client.running_version(key)
            last = "-"
            details = ""
            if ack is not None:
                last = ack.result + (" (noop)" if ack.noop else "")
                details = "; ".join(ack.reasons)
                if env is not None and ack.hash != env.hash:
                    last = f"{last} v{ack.version}, v{env.version} not acknowledged yet"
            rows.append(
                (
                    key_str(key),
                    {True: "online", False: "offline", None: "?"}[online],
                    f"v{env.version}" if env else "-",
                    f"v{running}" if running is not None else "-",
                    last,
                    details,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    return EXIT_OK


# -- fleet ------------------------------------------------------------------------------------


def cmd_fleet(args: argparse.Namespace) -> int:
    from sync.central.fleet import as_fleet_store, fleet_report
    from sync.central.stores import open_central_store

    store = open_central_store(args.central)
    try:
        report = fleet_report(as_fleet_store(store), stale_s=args.stale_s)
    finally:
        store.close()
    print(report.table())
    return EXIT_FAILED if report.alarms and args.fail_on_alarm else EXIT_OK


def cmd_fleet_service(args: argparse.Namespace) -> int:
    from sync.central.fleet import FleetService, as_fleet_store
    from sync.central.stores import open_central_store

    store = open_central_store(args.central)
    service = FleetService(as_fleet_store(store), _broker(args))
    stopping = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    while not stopping[0]:
        time.sleep(0.2)
    service.stop()
    store.close()
    return EXIT_OK


# -- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("validate", help="validate every device config in DIR")
    p.add_argument("dir", type=Path)
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("diff", help="what would change on each device")
    p.add_argument("dir", type=Path)
    p.add_argument("--against", type=Path, help="compare with another config DIR instead of the broker")
    p.add_argument("-v", "--verbose", action="store_true", help="list unchanged devices too")
    _add_broker_options(p)
    p.set_defaults(fn=cmd_diff)

    p = sub.add_parser("push", help="publish configs and wait for the devices' answers")
    p.add_argument("dir", type=Path)
    _add_target_options(p)
    p.add_argument("--canary", type=_parse_key, action="append", default=[], help="push here first (repeat)")
    p.add_argument("--canary-count", type=int, default=0, help="the first N targets are canaries")
    p.add_argument("--canary-timeout", type=float, default=60.0, help="seconds the canaries have to apply")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds the other devices have to answer")
    p.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the configs with")
    p.add_argument("--force", action="store_true", help="publish even where the same config is published")
    p.add_argument(
        "--keep-failed",
        action="store_true",
        help="leave a rejected config as the desired one (default: re-publish the previous one)",
    )
    _add_broker_options(p)
    p.set_defaults(fn=cmd_push)

    p = sub.add_parser("status", help="desired vs running config and presence of each device")
    p.add_argument("--device", type=_parse_key, action="append", default=[], help="store/device (repeat)")
    p.add_argument("--store", action="append", default=[], help="one store (repeat)")
    _add_broker_options(p)
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("fleet", help="the fleet table from the central store")
    p.add_argument("--central", required=True, help="central store URL or SQLite path")
    p.add_argument(
        "--stale-s", type=float, default=None, help="silence that counts as offline (default 3 heartbeats)"
    )
    p.add_argument(
        "--fail-on-alarm", action="store_true", help="exit 1 when a device is down in opening hours"
    )
    p.set_defaults(fn=cmd_fleet)

    p = sub.add_parser("fleet-service", help="feed the fleet table from status and config acks")
    p.add_argument("--central", required=True, help="central store URL or SQLite path")
    _add_broker_options(p)
    p.set_defaults(fn=cmd_fleet_service)

    p = sub.add_parser("keygen", help="create an Ed25519 key for signing configs")
    p.add_argument("--out", required=True, help="file for the private key (PEM, mode 600)")
    p.set_defaults(fn=cmd_keygen)

    p = sub.add_parser("render", help="write each device's complete config (bootstrap files)")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(fn=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConnectionError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
