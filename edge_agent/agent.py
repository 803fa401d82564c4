"""The agent: one long-lived process per store PC.

It owns the outbox, the uplink and the pipelines (supervised: a crashing pipeline is restarted with
backoff and reported, never taking the process down), and emits a health event every
``sync.heartbeat_s``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from device_configs.device import DeviceConfig
from edge_agent import __version__
from edge_agent.events import encode_event
from edge_agent.outbox import SqliteOutbox
from edge_agent.pipeline import Pipeline
from edge_agent.qr.pipeline import build_qr_pipeline
from edge_agent.sim.events import SimulatedEventSource
from edge_agent.supervisor import Supervisor
from edge_agent.uplink import Uplink
from sync.wire import HealthPayload, Payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    fingerprint: str
    build: Callable[[], Pipeline]


def fingerprint(*models: BaseModel) -> str:
    """A stable hash of the settings a pipeline is built from."""
    h = hashlib.sha256()
    for m in models:
        h.update(m.model_dump_json().encode())
    return h.hexdigest()[:16]


class Agent:
    def __init__(self, cfg: DeviceConfig, *, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.base_dir = base_dir or Path.cwd()
        self.state_dir = (self.base_dir / cfg.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
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
            status_extra=lambda: {"config_hash": None},
        )
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._emit_lock = threading.Lock()

    # -- events -----------------------------------------------------------------------------

    def emit(self, payload: Payload) -> None:
        """Commit one event to the outbox; returns once it is durable (raises OutboxError if not)."""
        self.outbox.append([encode_event(self.cfg.store, self.cfg.device, payload)])

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
            specs.append(
                PipelineSpec(
                    f"qr:{q.camera}",
                    fingerprint(q, cam),
                    lambda q=q, cam=cam: build_qr_pipeline(q, cam),  # type: ignore[misc]
                )
            )
        return specs

    def reconcile(self, cfg: DeviceConfig) -> dict[str, list[str]]:
        """Make the running pipelines match ``cfg``: start new ones, stop removed ones, restart
        only those whose own settings changed. Returns what was done, by name."""
        wanted = {spec.name: spec for spec in self.pipeline_specs(cfg)}
        done: dict[str, list[str]] = {"started": [], "stopped": [], "restarted": [], "unchanged": []}
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
        self.cfg = cfg
        return done

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
        self.supervisor.stop_all()
        self.uplink.stop()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        self.outbox.close()
        log.info("agent stopped")

    def wait(self) -> None:
        self._stop.wait()

    # -- health -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        st = self.outbox.stats()
        up = self.uplink.stats
        disk = shutil.disk_usage(self.state_dir)
        metrics: dict[str, Any] = {
            "backlog_events": st.events,
            "backlog_bytes": st.bytes_on_disk,
            "backlog_oldest_age_s": st.oldest_age_s,
            "evicted_total": sum(st.evicted.values()),
            "rejected_total": sum(st.rejected.values()),
            "outbox_over_capacity": st.over_capacity,
            "disk_free_bytes": disk.free,
            "mqtt_connected": up.connected,
            "mqtt_connects": up.connects,
            "events_acked": up.events_acked,
            "resends": up.resends,
        }
        for name, h in self.supervisor.health().items():
            for k, v in h.items():
                if isinstance(v, str | int | float | bool) or v is None:
                    metrics[f"{name}.{k}"] = v
        return metrics

    def _beat(self) -> None:
        while not self._stop.wait(self.cfg.sync.heartbeat_s):
            try:
                m = self.health()
                failing = any(k.endswith(".state") and v == "backoff" for k, v in m.items())
                status = "degraded" if failing or m["outbox_over_capacity"] else "ok"
                self.emit(
                    HealthPayload(status=status, component="agent", metrics=dict(list(m.items())[:200]))
                )
            except Exception:
                log.exception("heartbeat failed")
