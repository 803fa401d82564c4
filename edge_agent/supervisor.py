"""Runs each pipeline on its own thread and restarts it with backoff when it fails."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from edge_agent.pipeline import Emit, Pipeline, PipelineContext

log = logging.getLogger(__name__)


@dataclass
class Supervised:
    pipeline: Pipeline
    ctx: PipelineContext
    thread: threading.Thread | None = None
    restarts: int = 0
    last_error: str = ""
    state: str = "starting"  # starting | running | backoff | finished | stopped
    fingerprint: str = ""  # hash of the config the pipeline was built from
    started_at: float = field(default_factory=time.time)


class Supervisor:
    def __init__(self, emit: Emit, *, backoff_min_s: float = 0.5, backoff_max_s: float = 60.0) -> None:
        self.emit = emit
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.children: dict[str, Supervised] = {}

    def start(self, pipeline: Pipeline, name: str | None = None, fingerprint: str = "") -> Supervised:
        name = name or pipeline.name
        if name in self.children:
            raise ValueError(f"pipeline {name!r} is already running")
        ctx = PipelineContext(stop=threading.Event(), emit=self.emit)
        sup = Supervised(pipeline, ctx, fingerprint=fingerprint)
        sup.thread = threading.Thread(target=self._keep_running, args=(sup,), name=name, daemon=True)
        self.children[name] = sup
        sup.thread.start()
        return sup

    def _keep_running(self, sup: Supervised) -> None:
        delay = self.backoff_min_s
        while not sup.ctx.stop.is_set():
            sup.state = "running"
            started = time.monotonic()
            try:
                sup.pipeline.run(sup.ctx)
                if not sup.ctx.stop.is_set():
                    sup.state = "finished"
                    log.info("pipeline %s finished", sup.pipeline.name)
                return
            except Exception as exc:
                sup.restarts += 1
                sup.last_error = f"{type(exc).__name__}: {exc}"[:500]
                sup.state = "backoff"
                if time.monotonic() - started > 60:
                    delay = self.backoff_min_s  # it ran fine for a while: start the backoff afresh
                wait = random.uniform(delay / 2, delay)
                log.error(
                    "pipeline %s crashed (%s); restart %d in %.1fs",
                    sup.pipeline.name,
                    sup.last_error,
                    sup.restarts,
                    wait,
                    exc_info=True,
                )
                sup.ctx.report(status="restarting", last_error=sup.last_error, restarts=sup.restarts)
                delay = min(delay * 2, self.backoff_max_s)
                if sup.ctx.stop.wait(wait):
                    break
        sup.state = "stopped"

    def stop(self, name: str, timeout: float = 10.0) -> None:
        sup = self.children.pop(name, None)
        if sup is None:
            return
        sup.ctx.stop.set()
        if sup.thread is not None:
            sup.thread.join(timeout)
            if sup.thread.is_alive():
                log.error("pipeline %s did not stop within %.0fs", name, timeout)

    def stop_all(self, timeout: float = 10.0) -> None:
        for sup in self.children.values():
            sup.ctx.stop.set()
        for name in list(self.children):
            self.stop(name, timeout)

    def health(self) -> dict[str, dict[str, object]]:
        return {
            name: {"state": s.state, "restarts": s.restarts, "last_error": s.last_error, **s.ctx.snapshot()}
            for name, s in self.children.items()
        }
