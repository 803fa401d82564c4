"""Takes configs pushed by ops: verify, validate, apply live, confirm the pipelines came up, or roll
back; acknowledge every outcome; persist the last known good (LKG) config.

Runs on its own thread: the uplink hands over raw payloads from the retained config topic and
goes straight back to its network loop, because applying a config may wait up to
``config_push.apply_timeout_s`` for a camera to deliver frames.

Rules (docs/config.md has the table):

* The same config again (retained redelivery after a reconnect, a re-push) is compared by hash and
  changes nothing, but is acknowledged again so ops see where every device stands.
* A config that failed (rejected or rolled back) is remembered with its deployment id, so a
  retained bad config is not retried on every reconnect; a new push of it (new deployment) is.
* What cannot change live: ``store``/``device`` (the config is for another device) and
  ``state_dir``/``outbox.path`` (events queued in the old outbox would be stranded) are rejected;
  ``mqtt`` and ``outbox.synchronous`` are accepted, persisted, and take effect at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from device_configs.content import config_hash
from device_configs.device import DeviceConfig
from device_configs.loader import ConfigError, read_document, validate_document
from sync.config_wire import AckResult, ConfigAck, ConfigEnvelope, integrity_error, verify

log = logging.getLogger(__name__)

LKG_FILE = "config/lkg.json"
FAILED_FILE = "config/failed.json"
MAX_REMEMBERED_FAILURES = 32
POLL_S = 0.05

# Changes that are refused, and why.
REFUSED_CHANGES: dict[tuple[str, ...], str] = {
    ("store",): "store id cannot change: this config is for another device",
    ("device",): "device id cannot change: this config is for another device",
    ("state_dir",): "state_dir cannot change remotely: events queued in the old outbox would be stranded",
    ("outbox", "path"): "outbox.path cannot change remotely: events queued in the old file would be stranded",
}
# Changes accepted and persisted, applied at the next start of the agent.
AT_NEXT_START: tuple[tuple[str, ...], ...] = (("mqtt",), ("outbox", "synchronous"))


@dataclass(frozen=True)
class Running:
    """The config an agent runs: version 0 is the bootstrap file given on the command line."""

    cfg: DeviceConfig
    version: int
    hash: str
    deployment: str | None = None

    @classmethod
    def bootstrap(cls, cfg: DeviceConfig) -> Running:
        return cls(cfg, 0, config_hash(cfg))


class ConfigTarget(Protocol):
    """What the manager drives (the Agent)."""

    def reconcile(self, cfg: DeviceConfig) -> dict[str, list[str]]: ...

    def pipeline_up(self, name: str) -> tuple[bool | None, str]:
        """True: up; False: failed (with the reason); None: not yet known (with what it waits for)."""

    def apply_live_settings(self, cfg: DeviceConfig) -> None: ...


# -- persistence ------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    """Write, fsync, rename over, fsync the directory: after a power cut the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_lkg(state_dir: Path, env: ConfigEnvelope) -> None:
    atomic_write(state_dir / LKG_FILE, env.model_dump_json().encode())


def load_lkg(state_dir: Path) -> tuple[ConfigEnvelope, DeviceConfig] | None:
    """The persisted last known good config, or None (missing or unusable: logged)."""
    path = state_dir / LKG_FILE
    if not path.exists():
        return None
    try:
        env = ConfigEnvelope.model_validate_json(path.read_bytes())
        if (why := integrity_error(env)) is not None:
            raise ValueError(why)
        return env, validate_document(env.config, str(path))
    except (OSError, ValueError, ConfigError) as exc:
        log.error("last known good config %s is unusable, ignoring it: %s", path, exc)
        return None


def load_bootstrap(config_file: Path) -> tuple[Running, Path]:
    """The config to boot on, and the base directory for relative paths.

    The file on the command line is the bootstrap (a config document, version 0, or a config
    envelope, e.g. saved from the broker). A persisted last known good config for the same
    device with a newer version wins: an agent that boots while the broker is unreachable runs on
    what it last applied, not on what it was installed with.
    """
    base_dir = config_file.resolve().parent
    doc = read_document(config_file)
    if {"v", "hash", "config"} <= doc.keys():
        try:
            env = ConfigEnvelope.model_validate(doc)
        except ValidationError as exc:
            raise ConfigError(f"{config_file}: not a valid config envelope: {exc}") from exc
        if (why := integrity_error(env)) is not None:
            raise ConfigError(f"{config_file}: {why}")
        running = Running(
            validate_document(env.config, str(config_file)), env.version, env.hash, env.deployment
        )
    else:
        running = Running.bootstrap(validate_document(doc, str(config_file)))
    lkg = load_lkg(base_dir / running.cfg.state_dir)
    if lkg is not None:
        env, cfg = lkg
        same_device = (cfg.store, cfg.device, cfg.state_dir) == (
            running.cfg.store,
            running.cfg.device,
            running.cfg.state_dir,
        )
        if not same_device:
            log.warning("last known good config is for %s/%s; ignoring it", cfg.store, cfg.device)
        elif env.version > running.version:
            log.info("booting on the last known good config v%d (%s)", env.version, env.hash[:12])
            running = Running(cfg, env.version, env.hash, env.deployment)
    return running, base_dir


# -- the manager --------------------------------------------------------------------------------


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


@dataclass
class _Failure:
    deployment: str
    result: AckResult
    reasons: list[str]
    version: int


@dataclass
class ConfigManager:
    target: ConfigTarget
    running: Running
    state_dir: Path
    publish_ack: Callable[[dict[str, Any]], None]
    software: str
    on_change: Callable[[str, str], None] | None = None  # (status, message): audit trail events
    clock: Callable[[], float] = time.time
    _queue: queue.Queue[bytes] = field(default_factory=queue.Queue)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _failed: dict[str, _Failure] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_ack: ConfigAck | None = None

    def __post_init__(self) -> None:
        self._failed = self._load_failures()

    # -- threading --------------------------------------------------------------------------

    def submit(self, payload: bytes) -> None:
        """Called by the uplink thread for every message on the config topic; never blocks."""
        self._queue.put(payload)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="config", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                payload = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            # Retained semantics: only the latest desired config matters.
            with contextlib.suppress(queue.Empty):
                while True:
                    payload = self._queue.get_nowait()
            try:
                self.handle(payload)
            except Exception:
                log.exception("config handling failed; the running config stays")

    def status_fields(self) -> dict[str, Any]:
        r = self.running
        return {"config_version": r.version, "config_hash": r.hash}

    # -- one message ----------------------------------------------------------------------

    def handle(self, payload: bytes) -> ConfigAck | None:
        """Process one message from the config topic; returns the ack it published (None: ignored)."""
        if not payload:
            return None  # retained config cleared by ops: keep running what we have
        with self._lock:
            try:
                env = ConfigEnvelope.model_validate_json(payload)
            except ValidationError as exc:
                reasons = [
                    f"envelope {'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                ][:20]
                return self._ack(None, "rejected", reasons)
            if env.hash == self.running.hash:
                self._adopt_version(env)
                return self._ack(env, "applied", [], noop=True)
            failed = self._failed.get(env.hash)
            if failed is not None and failed.deployment == env.deployment:
                return self._ack(env, failed.result, failed.reasons)
            reasons, new_cfg = self._check(env)
            if reasons or new_cfg is None:
                return self._fail(env, "rejected", reasons)
            return self._apply(env, new_cfg)

    def _adopt_version(self, env: ConfigEnvelope) -> None:
        """The config we run, under a newer version number (e.g. the bootstrap file, now pushed):
        take the number, persist it, restart nothing."""
        keys = self.running.cfg.config_push.trusted_keys
        if env.version <= self.running.version or (keys and verify(env, keys) is not None):
            return
        if integrity_error(env) is None and (env.store, env.device) == (
            self.running.cfg.store,
            self.running.cfg.device,
        ):
            save_lkg(self.state_dir, env)
            self.running = Running(self.running.cfg, env.version, env.hash, env.deployment)

    def _check(self, env: ConfigEnvelope) -> tuple[list[str], DeviceConfig | None]:
        cur = self.running.cfg
        if (env.store, env.device) != (cur.store, cur.device):
            return [f"envelope is for {env.store}/{env.device}, this is {cur.store}/{cur.device}"], None
        keys = cur.config_push.trusted_keys
        if keys and (why := verify(env, keys)) is not None:
            return [why], None
        if (why := integrity_error(env)) is not None:
            return [why], None
        if env.version <= self.running.version:
            return [
                f"version {env.version} is not newer than the running version {self.running.version}"
            ], None
        try:
            new = validate_document(env.config, "config")
        except ConfigError as exc:
            return [line.strip() for line in str(exc).splitlines()[1:]] or [str(exc)], None
        old_doc, new_doc = cur.model_dump(mode="json"), new.model_dump(mode="json")
        refused = [why for path, why in REFUSED_CHANGES.items() if _get(old_doc, path) != _get(new_doc, path)]
        return refused, new

    def _apply(self, env: ConfigEnvelope, new: DeviceConfig) -> ConfigAck:
        old = self.running
        old_doc, new_doc = old.cfg.model_dump(mode="json"), new.model_dump(mode="json")
        later = [".".join(p) for p in AT_NEXT_START if _get(old_doc, p) != _get(new_doc, p)]
        try:
            changes = self.target.reconcile(new)
            self.target.apply_live_settings(new)
        except Exception as exc:
            log.exception("applying config v%d failed", env.version)
            self._restore(old.cfg)
            return self._fail(env, "rolled_back", [f"apply failed: {type(exc).__name__}: {exc}"])
        problems = self._wait_up(
            [*changes["started"], *changes["restarted"]], new.config_push.apply_timeout_s
        )
        if problems:
            log.error(
                "config v%d: pipelines not up (%s); rolling back to v%d", env.version, problems, old.version
            )
            self._restore(old.cfg)
            return self._fail(env, "rolled_back", [*problems, f"rolled back to version {old.version}"])
        save_lkg(self.state_dir, env)
        self.running = Running(new, env.version, env.hash, env.deployment)
        self._failed.pop(env.hash, None)
        log.info("config v%d (%s) applied: %s", env.version, env.hash[:12], changes)
        if self.on_change is not None:
            self.on_change("ok", f"config v{env.version} applied ({env.hash[:12]})")
        return self._ack(env, "applied", [], changes=changes, restart_required=later)

    def _restore(self, cfg: DeviceConfig) -> None:
        try:
            self.target.reconcile(cfg)
            self.target.apply_live_settings(cfg)
        except Exception:
            log.exception("restoring the previous config failed")

    def _wait_up(self, names: list[str], timeout_s: float) -> list[str]:
        """Reasons the named pipelines are not up within the timeout (empty: all up)."""
        deadline = time.monotonic() + timeout_s
        pending = dict.fromkeys(names, "")
        failed: list[str] = []
        while pending and not failed:
            for name in list(pending):
                up, why = self.target.pipeline_up(name)
                if up:
                    del pending[name]
                elif up is False:
                    failed.append(f"{name}: {why}")
                else:
                    pending[name] = why
            if not pending or failed or time.monotonic() >= deadline:
                break
            if self._stop.wait(POLL_S):
                failed.append("agent stopping")
        failed.extend(
            f"{n}: not up within {timeout_s:g}s ({why or 'no report'})" for n, why in pending.items()
        )
        return failed

    def _fail(self, env: ConfigEnvelope, result: AckResult, reasons: list[str]) -> ConfigAck:
        self._failed[env.hash] = _Failure(env.deployment, result, reasons, env.version)
        while len(self._failed) > MAX_REMEMBERED_FAILURES:
            self._failed.pop(next(iter(self._failed)))
        self._save_failures()
        log.warning("config v%d %s: %s", env.version, result, "; ".join(reasons))
        if self.on_change is not None:
            self.on_change("degraded", f"config v{env.version} {result}: {'; '.join(reasons)}"[:2000])
        return self._ack(env, result, reasons)

    def _ack(
        self,
        env: ConfigEnvelope | None,
        result: AckResult,
        reasons: list[str],
        *,
        noop: bool = False,
        changes: dict[str, list[str]] | None = None,
        restart_required: list[str] | None = None,
    ) -> ConfigAck:
        cfg = self.running.cfg
        ack = ConfigAck(
            v=1,
            store=cfg.store,
            device=cfg.device,
            deployment=env.deployment if env else None,
            version=env.version if env else None,
            hash=env.hash if env else None,
            result=result,
            noop=noop,
            reasons=[r[:2000] for r in reasons[:50]],
            changes=changes or {},
            restart_required=restart_required or [],
            running_version=self.running.version,
            running_hash=self.running.hash,
            software=self.software,
            ts=self.clock(),
        )
        self.last_ack = ack
        self.publish_ack(ack.model_dump(mode="json"))
        return ack

    # -- remembered failures ----------------------------------------------------------------

    def _load_failures(self) -> dict[str, _Failure]:
        path = self.state_dir / FAILED_FILE
        try:
            raw = orjson.loads(path.read_bytes())
            return {h: _Failure(**f) for h, f in raw.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return {}

    def _save_failures(self) -> None:
        data = {
            h: {"deployment": f.deployment, "result": f.result, "reasons": f.reasons, "version": f.version}
            for h, f in self._failed.items()
        }
        atomic_write(self.state_dir / FAILED_FILE, orjson.dumps(data))
