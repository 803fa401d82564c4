"""What a pipeline (QR reader, footfall counter, simulated source) sees of the agent.

A pipeline is a blocking ``run(ctx)`` executed on its own thread by the agent's supervisor. It
returns when ``ctx.stop`` is set; if it raises, the supervisor logs it, reports it in health and
starts it again with backoff, so one broken camera never takes the agent down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sync.wire import Payload

Emit = Callable[[Payload], None]


@dataclass
class PipelineContext:
    """Handed to ``Pipeline.run``.

    ``emit`` appends one event to the durable outbox and returns only once it is committed, so a
    pipeline that has emitted may forget the event. ``report`` sets health gauges (camera fps,
    frames dropped, status) that the agent publishes with its heartbeat.
    """

    stop: threading.Event
    emit: Emit
    gauges: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, **gauges: float | int | str | bool | None) -> None:
        with self._lock:
            self.gauges.update(gauges)

    def snapshot(self) -> dict[str, float | int | str | bool | None]:
        with self._lock:
            return dict(self.gauges)


class Pipeline(Protocol):
    name: str

    def run(self, ctx: PipelineContext) -> None: ...
