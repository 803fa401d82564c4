"""The footfall pipeline: camera -> counter -> one FootfallPayload per line per window.

A window is emitted at its end whatever happened: with zeros and ``covered=True`` when the camera
was live and nobody passed, and with ``covered=False`` when the camera was down for (part of) it.
Images never leave this module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from device_configs.camera import CameraConfig
from device_configs.footfall import FootfallConfig
from edge_agent.camera.factory import make_grabber
from edge_agent.camera.grabber import FrameGrabber
from edge_agent.footfall.counter import Counter, MotionCounter
from edge_agent.footfall.windows import Window, window_start
from edge_agent.pipeline import Pipeline, PipelineContext

log = logging.getLogger(__name__)


class FootfallPipeline:
    def __init__(
        self,
        cfg: FootfallConfig,
        *,
        grabber_factory: Callable[[], FrameGrabber],
        counter_factory: Callable[[FootfallConfig], Counter] = MotionCounter,
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.2,
        return_at_end: bool = False,
    ) -> None:
        self.name = f"footfall:{cfg.camera}"
        self.cfg = cfg
        self._grabber_factory = grabber_factory
        self._counter_factory = counter_factory
        self._clock = clock
        self._poll_s = poll_s
        self._return_at_end = return_at_end
        self._pending_cfg: FootfallConfig | None = None
        self._lock = threading.Lock()
        self.counter: Counter | None = None

    def update_config(self, cfg: FootfallConfig) -> None:
        """Apply a new config (moved line, new zone) from the next frame on, without a restart."""
        if cfg.camera != self.cfg.camera:
            raise ValueError("a footfall pipeline cannot change camera; build a new one")
        with self._lock:
            self._pending_cfg = cfg

    def _apply_pending(self, win: Window) -> Window:
        with self._lock:
            cfg, self._pending_cfg = self._pending_cfg, None
        if cfg is None:
            return win
        self.cfg = cfg
        reconfigure = getattr(self.counter, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(cfg)
        else:
            self.counter = self._counter_factory(cfg)
        for lc in cfg.lines:
            win.counts.setdefault(lc.id, [0, 0])
        return win

    def _new_window(self, start: float) -> Window:
        return Window(start, self.cfg.window_s, [lc.id for lc in self.cfg.lines])

    def run(self, ctx: PipelineContext) -> None:
        grabber = self._grabber_factory()
        self.counter = self._counter_factory(self.cfg)
        grabber.start()
        now = self._clock()
        win = self._new_window(window_start(now, self.cfg.window_s))
        live0, dropped0, last_index = grabber.seconds_live, grabber.frames_dropped, None
        flushed = False
        last_status = ""
        try:
            while not ctx.stop.is_set():
                win = self._apply_pending(win)
                frame = grabber.get(timeout=self._poll_s)
                now = self._clock()
                if frame is not None or grabber.status != last_status:
                    # Camera state for health and for the agent's "did it come up" check.
                    last_status = grabber.status
                    ctx.report(status=grabber.status, last_error=grabber.last_error,
                               frames_dropped=grabber.frames_dropped, reconnects=grabber.reconnects)
                if frame is not None:
                    if last_index is not None and frame.index > last_index + 1:
                        win.frames_dropped += frame.index - last_index - 1  # the source skipped frames
                    last_index = frame.index
                    for c in self.counter.process(frame):
                        win.add(c.line, c.direction)
                    win.frames_processed += 1
                if frame is None and grabber.finished and not flushed:
                    # A finite source (file, simulation) ended: its pending crossings are final.
                    flushed = True
                    for c in self.counter.flush():
                        win.add(c.line, c.direction)
                    ctx.report(source_drained=True)  # every frame of the source is counted
                ended = flushed and self._return_at_end
                if flushed and frame is None and not ended:
                    ctx.stop.wait(self._poll_s)  # nothing more will come: do not spin
                if now >= win.start + win.length or ended:
                    live, dropped = grabber.seconds_live, grabber.frames_dropped
                    win.seconds_live += live - live0
                    win.frames_dropped += dropped - dropped0
                    live0, dropped0 = live, dropped
                    for p in win.payloads(self.cfg.camera, self.cfg.min_coverage):
                        ctx.emit(p)
                    ctx.report(**{
                        f"{self.name}.status": grabber.status,
                        f"{self.name}.frames_dropped": grabber.frames_dropped,
                        f"{self.name}.reconnects": grabber.reconnects,
                    })
                    if ended:
                        return
                    win = self._new_window(window_start(now, self.cfg.window_s))
            self._emit_partial(ctx, win, grabber, since=(live0, dropped0), flushed=flushed)
        finally:
            grabber.stop()


    def _emit_partial(
        self,
        ctx: PipelineContext,
        win: Window,
        grabber: FrameGrabber,
        *,
        since: tuple[float, int],
        flushed: bool,
    ) -> None:
        """Stopped (shutdown or a config change) mid-window: what was counted so far is real and
        must not be lost. The partial window goes out with its true (partial) coverage."""
        assert self.counter is not None
        if not flushed:
            for c in self.counter.flush():
                win.add(c.line, c.direction)
        live0, dropped0 = since
        win.seconds_live += grabber.seconds_live - live0
        win.frames_dropped += grabber.frames_dropped - dropped0
        if win.frames_processed or any(n for c in win.counts.values() for n in c):
            for p in win.payloads(self.cfg.camera, self.cfg.min_coverage):
                ctx.emit(p)


def build_footfall_pipeline(cfg: FootfallConfig, camera: CameraConfig) -> Pipeline:
    """The pipeline the agent runs for one camera's footfall config."""
    if camera.id != cfg.camera:
        raise ValueError(f"footfall config is for camera {cfg.camera!r}, not {camera.id!r}")
    return FootfallPipeline(cfg, grabber_factory=lambda: make_grabber(camera))
