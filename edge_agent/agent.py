"""The agent: one long-lived process per store PC.

It owns the outbox, the uplink and the pipelines (supervised: a crashing pipeline is restarted with
backoff and reported, never taking the process down), and emits a health event every
``sync.heartbeat_s`` (and refreshes its retained ``online`` status with the same summary).
Configs pushed by ops arrive through the uplink and are applied by ``ConfigManager``, which calls
back ``reconcile``, ``pipeline_up`` and ``apply_live_settings``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from device_configs.device import DeviceConfig
from edge_agent import __version__
from edge_agent.backlog import BacklogForecast
from edge_agent.clock import WallClock
from edge_agent.config_manager import ConfigManager, Running
from edge_agent.events import encode_event
from edge_agent.footfall.pipeline import build_footfall_pipeline
from edge_agent.outbox import BacklogStats, SqliteOutbox
from edge_agent.pipeline import Pipeline
from edge_agent.qr.pipeline import build_qr_pipeline
from edge_agent.sim.events import SimulatedEventSource
from edge_agent.supervisor import Supervisor
from edge_agent.uplink import Uplink, link_metrics
from sync import topics
from sync.wire import HealthPayload, Payload

log = logging.getLogger(__name__)

OUTLOOK_LOG_S = 600.0  # the "uplink down, the store holds out N hours" line, at most this often
CLOCK_CHECK_S = 1.0  # how often the wall clock is compared with the monotonic one (and the outbox)


@dataclass(frozen=True)
class OutboxPressure:
    """The capacity policy's counters, to report what changed since the last outbox report."""

    folded: int = 0  # footfall windows folded into earlier ones
    evicted_health: int = 0  # health (and any other kind but footfall) evicted
    evicted_footfall: int = 0  # footfall windows that may have been sent, evicted
    footfall_in: int = 0  # visitor counts of those
    footfall_out: int = 0
    refused: int = 0  # incoming events refused

    @classmethod
    def of(cls, st: BacklogStats) -> OutboxPressure:
        return cls(
            folded=sum(st.folded.values()),
            evicted_health=sum(n for k, n in st.evicted.items() if k != "footfall"),
            evicted_footfall=st.evicted.get("footfall", 0),
            footfall_in=st.footfall_evicted_in,
            footfall_out=st.footfall_evicted_out,
            refused=sum(st.rejected.values()),
        )

    def since(self, before: OutboxPressure) -> OutboxPressure:
        return OutboxPressure(*(getattr(self, f) - getattr(before, f) for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    fingerprint: str
    build: Callable[[], Pipeline]
    # Up only once its camera delivered a frame (gauge status "live"), not merely once started.
    needs_frames: bool = False


def fingerprint(*models: BaseModel) -> str:
    """A stable hash of the settings a pipeline is built from."""
    h = hashlib.sha256()
    for m in models:
        h.update(m.model_dump_json().encode())
    return h.hexdigest()[:16]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Agent:
    def __init__(
        self, cfg: DeviceConfig, *, base_dir: Path | None = None, running: Running | None = None
    ) -> None:
        self.cfg = cfg
        self.base_dir = base_dir or Path.cwd()
        self.state_dir = (self.base_dir / cfg.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = WallClock()
        self.outbox = SqliteOutbox(
            self.state_dir / cfg.outbox.path,
            max_bytes=cfg.outbox.max_bytes,
            max_rows=cfg.outbox.max_rows,
            synchronous=cfg.outbox.synchronous,
        )
        self.supervisor = Supervisor(self.emit)
        self.uplink = Uplink(
            self.outbox,
            store=cfg.store,
            device=cfg.device,
            mqtt=cfg.mqtt,
            sync=cfg.sync,
            status_extra=self._status_extra,
        )
        self.config = ConfigManager(
            target=self,
            running=running if running is not None and running.cfg == cfg else Running.bootstrap(cfg),
            state_dir=self.state_dir,
            publish_ack=lambda ack: self.uplink.send(
                topics.CONFIG_ACK.for_device(cfg.store, cfg.device), ack, retain=True
            ),
            software=__version__,
            on_change=self._config_changed,
        )
        self.uplink.on_config = self.config.submit
        self._reconcile_lock = threading.Lock()
        self._specs: dict[str, PipelineSpec] = {}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._emit_lock = threading.Lock()
        # Outbox reports (health events of component "outbox"): at most one per heartbeat interval.
        self._outbox_reported = OutboxPressure.of(self.outbox.stats())
        self._outbox_degraded = False
        self._outbox_next_report = 0.0
        # Hours until the outbox's capacity and the disk are reached, from the heartbeats' samples.
        self.backlog_forecast = BacklogForecast()
        self._outlook_next_log = 0.0

    # -- events -----------------------------------------------------------------------------

    def emit(self, payload: Payload) -> None:
        """Commit one event to the outbox; returns once it is durable (raises OutboxError if not)."""
        self.outbox.append([encode_event(self.cfg.store, self.cfg.device, payload, ts=self.clock.now())])

    # -- lifecycle --------------------------------------------------------------------------

    def pipeline_specs(self, cfg: DeviceConfig) -> list[PipelineSpec]:
        """What should run under ``cfg``: a name, a fingerprint of its settings, and a builder."""
        specs = [
            PipelineSpec(
                f"sim:{s.id}",
                fingerprint(s),
                lambda s=s: SimulatedEventSource(s, cfg.device, self.state_dir),  # type: ignore[misc]
            )
            for s in cfg.simulated_sources
        ]
        cameras = {c.id: c for c in cfg.cameras}
        for q in cfg.qr:
            cam = cameras[q.camera]
            if q.member_key is None and cfg.privacy.member_key is not None:
                q = q.model_copy(update={"member_key": cfg.privacy.member_key})  # noqa: PLW2901
            specs.append(
                PipelineSpec(
                    f"qr:{q.camera}",
                    fingerprint(q, cam),
                    lambda q=q, cam=cam: build_qr_pipeline(q, cam),  # type: ignore[misc]
                    needs_frames=True,
                )
            )
        for f in cfg.footfall:
            cam = cameras[f.camera]
            specs.append(
                PipelineSpec(
                    f"footfall:{f.camera}",
                    fingerprint(f, cam),
                    lambda f=f, cam=cam: build_footfall_pipeline(f, cam),  # type: ignore[misc]
                    needs_frames=True,
                )
            )
        return specs

    def reconcile(self, cfg: DeviceConfig) -> dict[str, list[str]]:
        """Make the running pipelines match ``cfg``: start new ones, stop removed ones, restart
        only those whose own settings changed. Returns what was done, by name."""
        wanted = {spec.name: spec for spec in self.pipeline_specs(cfg)}
        done: dict[str, list[str]] = {"started": [], "stopped": [], "restarted": [], "unchanged": []}
        with self._reconcile_lock:
            for name in list(self.supervisor.children):
                if name not in wanted:
                    self.supervisor.stop(name)
                    done["stopped"].append(name)
            for name, spec in wanted.items():
                running = self.supervisor.children.get(name)
                if running is not None and running.fingerprint == spec.fingerprint:
                    done["unchanged"].append(name)
                    continue
                if running is not None:
                    self.supervisor.stop(name)
                self.supervisor.start(spec.build(), name=name, fingerprint=spec.fingerprint)
                done["restarted" if running is not None else "started"].append(name)
            self._specs = wanted
            self.cfg = cfg
        return done

    def pipeline_up(self, name: str) -> tuple[bool | None, str]:
        """Whether a pipeline came up: True, False (crashed, with why) or None (still waiting)."""
        sup = self.supervisor.children.get(name)
        spec = self._specs.get(name)
        if sup is None or spec is None:
            return False, "not running"
        if sup.state == "finished":
            return True, ""
        if sup.restarts or sup.state == "backoff":
            return False, f"crashed: {sup.last_error}"
        if spec.needs_frames:
            gauges = sup.ctx.snapshot()
            status = gauges.get("status")
            if status in ("live", "ended"):
                return True, ""
            detail = f"camera status {status}" if status else "no frame from the camera yet"
            error = gauges.get("last_error")
            return None, f"{detail}: {error}" if error else detail
        return (True, "") if sup.state == "running" else (None, f"state {sup.state}")

    def apply_live_settings(self, cfg: DeviceConfig) -> None:
        """Settings other than pipelines that take effect without a restart."""
        self.uplink.update_sync(cfg.sync)
        self.outbox.max_bytes = cfg.outbox.max_bytes
        self.outbox.max_rows = cfg.outbox.max_rows
        self.uplink.refresh_status()

    def _config_changed(self, status: str, message: str) -> None:
        """Audit trail: every config outcome also lands in the central store as a health event."""
        try:
            self.emit(
                HealthPayload(
                    status="ok" if status == "ok" else "degraded",
                    component="config",
                    message=message,
                    metrics=dict(self.config.status_fields()),
                )
            )
        except Exception:
            log.exception("could not record the config change")

    def _status_extra(self) -> dict[str, Any]:
        """Fields of the retained online message: versions, opening hours, backlog."""
        st = self.outbox.stats()
        return {
            **self.config.status_fields(),
            "opening_hours": self.cfg.opening_hours.model_dump(mode="json"),
            "heartbeat_s": self.cfg.sync.heartbeat_s,
            "backlog_events": st.events,
            "backlog_bytes": st.bytes_on_disk,
            "backlog_oldest_age_s": st.oldest_age_s,
        }

    def start(self) -> None:
        if self.outbox.recovered_from is not None:
            self.emit(
                HealthPayload(
                    status="degraded",
                    component="outbox",
                    message=f"outbox was corrupt and replaced; old file kept at {self.outbox.recovered_from}",
                    metrics={"next_seq": self.outbox.next_seq},
                )
            )
        self.uplink.start()
        self.reconcile(self.cfg)
        self.config.start()  # after the first reconcile: pushed configs queue up until then
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat.start()
        log.info(
            "agent %s/%s %s started (state in %s)",
            self.cfg.store,
            self.cfg.device,
            __version__,
            self.state_dir,
        )

    def stop(self) -> None:
        self._stop.set()
        self.config.stop()
        self.supervisor.stop_all()
        self.uplink.stop()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        self.outbox.close()
        log.info("agent stopped")

    def wait(self) -> None:
        self._stop.wait()

    # -- health -----------------------------------------------------------------------------

    def health(self, now: float | None = None) -> dict[str, Any]:
        """The heartbeat's metrics (``now``: a monotonic time for the backlog forecast)."""
        disk = shutil.disk_usage(self.state_dir)
        st = self.outbox.stats()
        pressure = OutboxPressure.of(st)
        fc = self.backlog_forecast
        fc.observe(time.monotonic() if now is None else now, st.events, st.bytes_payload, st.bytes_on_disk)
        f = fc.forecast(
            max_rows=self.outbox.max_rows, max_bytes=self.outbox.max_bytes, disk_free_bytes=disk.free
        )
        metrics: dict[str, Any] = {
            **link_metrics(st, self.uplink.stats),
            "backlog_growth_eps": _rounded(f.events_per_s, 3),
            "backlog_hours_to_capacity": _rounded(f.hours_to_capacity, 2),
            "disk_hours_to_full": _rounded(f.hours_to_disk_full, 2),
            "folded_total": pressure.folded,
            "footfall_evicted_in": pressure.footfall_in,
            "footfall_evicted_out": pressure.footfall_out,
            "disk_free_bytes": disk.free,
            "config_version": self.config.running.version,
            "config_hash": self.config.running.hash[:16],
            "device_time": time.time(),
        }
        for name, h in self.supervisor.health().items():
            for k, v in h.items():
                if isinstance(v, str | int | float | bool) or v is None:
                    metrics[f"{name}.{k}"] = v
        return metrics

    def _check_clock(self) -> None:
        jump = self.clock.jump()
        if jump is None:
            return
        log.warning("the wall clock jumped %+.1f s; event times around now are suspect", jump)
        try:
            self.emit(
                HealthPayload(
                    status="degraded",
                    component="clock",
                    message=f"wall clock jumped {jump:+.1f} s",
                    metrics={"jump_s": round(jump, 3)},
                )
            )
        except Exception:
            log.exception("could not record the clock jump")

    def check_outbox(self, now: float | None = None) -> HealthPayload | None:
        """Report the capacity policy at work: a ``degraded`` health event from component
        ``outbox`` saying what it did (folded, evicted, refused) while the outbox is over its limit
        or its counters moved, and ``ok`` once it is back. At most one report per heartbeat
        interval, whatever the append rate; returns the report it emitted, if any."""
        now = time.monotonic() if now is None else now
        if now < self._outbox_next_report:
            return None
        st = self.outbox.stats()
        delta = OutboxPressure.of(st).since(self._outbox_reported)
        if st.over_capacity or delta != OutboxPressure():
            report = self._outbox_report(st, delta)
            self._outbox_degraded = True
        elif self._outbox_degraded:
            report = HealthPayload(
                status="ok",
                component="outbox",
                message=f"outbox back under its limit ({st.events} events waiting)",
                metrics={
                    "events": st.events,
                    "over_capacity": False,
                    "folded_total": sum(st.folded.values()),
                },
            )
            self._outbox_degraded = False
        else:
            return None
        self._outbox_next_report = now + self.cfg.sync.heartbeat_s
        self.emit(report)
        # What the report itself cost (it may have evicted an older health event) is not news.
        self._outbox_reported = OutboxPressure.of(self.outbox.stats())
        return report

    def _outbox_report(self, st: BacklogStats, d: OutboxPressure) -> HealthPayload:
        waiting = self.outbox.waiting("footfall")
        state = "outbox full" if st.over_capacity else "outbox was full"
        message = (
            f"{state}: folded {d.folded} footfall windows into the {waiting} waiting, "
            f"evicted {d.evicted_health} health events and {d.evicted_footfall} footfall windows "
            f"that may have been sent (in {d.footfall_in}, out {d.footfall_out}), "
            f"refused {d.refused} health events; scans kept ({st.events} events waiting, "
            f"limit {self.outbox.max_rows} events / {self.outbox.max_bytes} bytes)"
        )
        return HealthPayload(
            status="degraded",
            component="outbox",
            message=message,
            metrics={
                "over_capacity": st.over_capacity,
                "events": st.events,
                "bytes": st.bytes_payload,
                "max_rows": self.outbox.max_rows,
                "max_bytes": self.outbox.max_bytes,
                "footfall_waiting": waiting,
                "folded": d.folded,
                "evicted_health": d.evicted_health,
                "evicted_footfall": d.evicted_footfall,
                "evicted_footfall_in": d.footfall_in,
                "evicted_footfall_out": d.footfall_out,
                "refused": d.refused,
                "folded_total": sum(st.folded.values()),
                "evicted_total": sum(st.evicted.values()),
            },
        )

    def log_backlog_outlook(self, m: dict[str, Any], now: float | None = None) -> str | None:
        """While the backlog grows with the uplink down, tell store IT how long the store holds out.

        At most one line every ``OUTLOOK_LOG_S``; returns the line it logged, if any.
        """
        now = time.monotonic() if now is None else now
        growth, to_capacity = m.get("backlog_growth_eps"), m.get("backlog_hours_to_capacity")
        if m.get("mqtt_connected") or not growth or growth <= 0 or to_capacity is None:
            return None
        if now < self._outlook_next_log:
            return None
        self._outlook_next_log = now + OUTLOOK_LOG_S
        age = m.get("backlog_oldest_age_s")
        disk = m.get("disk_hours_to_full")
        line = (
            f"uplink down: {m.get('backlog_events')} events waiting"
            + (f" (oldest {age / 3600:.1f} h)" if age is not None else "")
            + f", growing {growth:.2f}/s; the outbox reaches its capacity in {to_capacity:.1f} h"
            " (then footfall is folded and health events give way; scans are kept)"
            + (f", the disk is full in {disk:.1f} h" if disk is not None else "")
        )
        log.warning("%s", line)
        return line

    def _beat(self) -> None:
        next_beat = time.monotonic() + self.cfg.sync.heartbeat_s
        while not self._stop.wait(min(CLOCK_CHECK_S, self.cfg.sync.heartbeat_s)):
            self._check_clock()
            try:
                self.check_outbox()
            except Exception:
                log.exception("could not report the outbox state")
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.cfg.sync.heartbeat_s
            try:
                m = self.health()
                failing = any(k.endswith(".state") and v == "backoff" for k, v in m.items())
                status = "degraded" if failing or m["outbox_over_capacity"] else "ok"
                self.emit(
                    HealthPayload(status=status, component="agent", metrics=dict(list(m.items())[:200]))
                )
                self.log_backlog_outlook(m)
                self.uplink.refresh_status()
            except Exception:
                log.exception("heartbeat failed")
