"""Grab frames on their own thread into a bounded queue that drops the OLDEST frame.

Decoding must work on what the camera shows now, not on a backlog: when the consumer is slow,
the oldest queued frame is dropped (and counted) so the consumer is never more than
``queue_size`` frames behind. A source that fails (cannot open, unplugged, stream dropped) is
closed and re-created after a jittered exponential backoff; the grabber thread never dies.
Shared by the QR and footfall pipelines; ``seconds_live`` lets a footfall window report how much
of itself the camera actually covered.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edge_agent.camera.base import CameraError, Frame, FrameSource

log = logging.getLogger(__name__)

Status = Literal["starting", "live", "reconnecting", "ended", "stopped"]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random) -> float:
        """Wait before attempt number ``failures`` (1-based)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, failures - 1))
        return max(0.0, base * (1.0 + rng.uniform(-self.jitter, self.jitter)))


class FrameGrabber:
    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        *,
        queue_size: int = 2,
        backoff: Backoff | None = None,
        fps_limit: float | None = None,
        name: str = "camera",
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        drop_oldest: bool = True,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self._factory = source_factory
        self._queue: deque[Frame] = deque()
        self._queue_size = queue_size
        self._backoff = backoff or Backoff()
        self._min_interval = 1.0 / fps_limit if fps_limit else 0.0
        self._clock = clock
        # Live cameras drop the oldest frame; replays (files, simulations in tests) may instead
        # wait for the consumer, since their media time does not run away.
        self._drop_oldest = drop_oldest
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.name = name
        # Counters, read by pipelines for health gauges.
        self.frames_in = 0
        self.frames_dropped = 0
        self.frames_skipped = 0  # above fps_limit, never queued
        self.reconnects = 0
        self.status: Status = "starting"
        self.last_error: str | None = None
        self._live_since: float | None = None
        self._live_total = 0.0

    # -- consumer side -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"grab-{self.name}", daemon=True)
        self._thread.start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """Oldest queued frame, or None after ``timeout`` or once the source ended and is drained."""
        with self._cond:
            if not self._queue and not self.finished_locked():
                self._cond.wait_for(lambda: bool(self._queue) or self.finished_locked(), timeout)
            frame = self._queue.popleft() if self._queue else None
            self._cond.notify_all()  # room for a producer waiting in no-drop mode
            return frame

    @property
    def finished(self) -> bool:
        """The source ended (finite file/folder/simulation) or the grabber was stopped."""
        with self._cond:
            return self.finished_locked()

    def finished_locked(self) -> bool:
        return self.status in ("ended", "stopped")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            self._set_status("stopped")
            self._cond.notify_all()

    @property
    def seconds_live(self) -> float:
        """Cumulative seconds during which the source was open and delivering."""
        with self._cond:
            extra = self._clock() - self._live_since if self._live_since is not None else 0.0
            return self._live_total + extra

    # -- grabber thread ------------------------------------------------------------------
    def _set_status(self, status: Status) -> None:
        # Caller holds self._cond. Live-time accounting follows status transitions.
        now = self._clock()
        if status == "live" and self._live_since is None:
            self._live_since = now
        elif status != "live" and self._live_since is not None:
            self._live_total += now - self._live_since
            self._live_since = None
        self.status = status

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            source: FrameSource | None = None
            try:
                source = self._factory()
                source.open()
                with self._cond:
                    self._set_status("live")
                if self._pump(source):
                    return
                failures = 0
            except CameraError as exc:
                failures += 1
                self._failed(str(exc), failures)
            except Exception as exc:  # a driver bug must not kill the grabber
                failures += 1
                log.exception("camera %s: unexpected error", self.name)
                self._failed(f"{type(exc).__name__}: {exc}", failures)
            finally:
                if source is not None:
                    _close_quietly(source, self.name)
            if failures:
                self._stop.wait(self._backoff.delay(failures, self._rng))
                if not self._stop.is_set():
                    self.reconnects += 1

    def _failed(self, message: str, failures: int) -> None:
        log.warning("camera %s failed (attempt %d): %s", self.name, failures, message)
        with self._cond:
            self.last_error = message[:500]
            self._set_status("reconnecting")

    def _pump(self, source: FrameSource) -> bool:
        """Move frames into the queue; True when the source ended or we were stopped."""
        last_t: float | None = None
        while not self._stop.is_set():
            frame = source.read()
            if frame is None:
                with self._cond:
                    self._set_status("ended")
                    self._cond.notify_all()
                return True
            if self._min_interval and last_t is not None and frame.t - last_t < self._min_interval - 1e-9:
                self.frames_skipped += 1
                continue
            last_t = frame.t
            with self._cond:
                if not self._drop_oldest:
                    self._cond.wait_for(lambda: len(self._queue) < self._queue_size or self._stop.is_set())
                if len(self._queue) >= self._queue_size:
                    self._queue.popleft()
                    self.frames_dropped += 1
                self._queue.append(frame)
                self.frames_in += 1
                self._cond.notify()
        return True


def _close_quietly(source: FrameSource, name: str) -> None:
    try:
        source.close()
    except Exception:  # closing a broken source may fail too; nothing to do
        log.debug("camera %s: close failed", name, exc_info=True)
