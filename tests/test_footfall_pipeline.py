"""Windows from the pipeline: zeros with coverage when nobody passes, no coverage when the camera is dead."""

from __future__ import annotations

import threading

from device_configs.footfall import FootfallConfig, LineConfig
from edge_agent.camera.base import CameraError, Frame, FrameSource
from edge_agent.camera.grabber import Backoff, FrameGrabber
from edge_agent.footfall.pipeline import FootfallPipeline
from edge_agent.footfall.windows import Window
from edge_agent.pipeline import PipelineContext
from edge_agent.sim.footfall_scene import SceneCamera, door_scene
from sync.wire import FootfallPayload, Payload


class StepClock:
    """Fake wall clock: advances by a fixed step each time it is read."""

    def __init__(self, start: float, step: float) -> None:
        self.now, self.step = start, step
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += self.step
            return self.now


def collect() -> tuple[PipelineContext, list[FootfallPayload]]:
    out: list[FootfallPayload] = []

    def emit(p: Payload) -> None:
        assert isinstance(p, FootfallPayload)
        out.append(p)

    return PipelineContext(stop=threading.Event(), emit=emit), out


def test_window_with_no_visitors_is_covered_zero() -> None:
    w = Window(start=1_700_000_040.0, length=60.0, lines=["door"])
    w.frames_processed, w.seconds_live = 1500, 60.0
    (p,) = w.payloads("cam", 0.95)
    assert (p.in_count, p.out_count, p.covered, p.frames_processed) == (0, 0, True, 1500)
    assert p.window_start.isoformat() == "2023-11-14T22:14:00+00:00"


def test_partly_live_window_is_not_covered() -> None:
    w = Window(start=0.0, length=60.0, lines=["door"])
    w.frames_processed, w.seconds_live = 700, 30.0
    (p,) = w.payloads("cam", 0.95)
    assert (p.covered, p.seconds_live) == (False, 30.0)


class DeadCamera:
    name = "dead"

    def open(self) -> None:
        raise CameraError("no such device")

    def read(self) -> Frame | None:
        raise CameraError("not open")

    def close(self) -> None:
        pass


def test_dead_camera_sends_uncovered_windows() -> None:
    cfg = FootfallConfig(camera="cam", window_s=10)
    clock = StepClock(start=1000.0, step=2.0)
    pipe = FootfallPipeline(
        cfg, clock=clock, poll_s=0.01,
        grabber_factory=lambda: FrameGrabber(DeadCamera, backoff=Backoff(initial_s=0.01, max_s=0.02)),
    )
    ctx, out = collect()
    t = threading.Thread(target=pipe.run, args=(ctx,))
    t.start()
    while len(out) < 2:
        ctx.stop.wait(0.01)
    ctx.stop.set()
    t.join(5)
    for p in out[:2]:
        got = (p.covered, p.in_count, p.out_count, p.frames_processed, p.seconds_live)
        assert got == (False, 0, 0, 0, 0.0)
        assert p.window_s == 10


def _scene_pipeline(
    scenario: str, cfg: FootfallConfig | None = None
) -> tuple[FootfallPipeline, FootfallConfig]:
    sc = door_scene(scenario, width=320, height=180, seed=1)
    x1, y1, x2, y2 = sc.line
    cfg = cfg or FootfallConfig(
        camera="cam", window_s=3, person_height=0.28,
        lines=[LineConfig(id="door", x1=x1 / 320, y1=y1 / 180, x2=x2 / 320, y2=y2 / 180, in_direction="up")],
    )

    def source() -> FrameSource:
        return SceneCamera(door_scene(scenario, width=320, height=180, seed=1))

    # Media time drives the clock so window edges fall on the same frames on any machine.
    clock = StepClock(start=0.0, step=0.0)
    pipe = FootfallPipeline(
        cfg, clock=clock, return_at_end=True, poll_s=0.5,
        grabber_factory=lambda: FrameGrabber(source, drop_oldest=False, queue_size=4),
    )
    real = pipe._counter_factory

    def counter(c: FootfallConfig):  # type: ignore[no-untyped-def]
        inner = real(c)
        orig = inner.process

        def process(f: Frame):  # type: ignore[no-untyped-def]
            clock.now = f.t
            return orig(f)

        inner.process = process  # type: ignore[method-assign]
        return inner

    pipe._counter_factory = counter
    return pipe, cfg


def test_pipeline_counts_scene_into_windows() -> None:
    pipe, _ = _scene_pipeline("single_in")
    ctx, out = collect()
    pipe.run(ctx)
    assert [p.line for p in out] == ["door"] * len(out)
    assert (sum(p.in_count for p in out), sum(p.out_count for p in out)) == (1, 0)
    assert sum(p.frames_processed for p in out) == SceneCamera(door_scene("single_in", width=320,
                                                                          height=180, seed=1)).n_frames
    assert all(p.frames_processed > 0 for p in out)


def test_line_change_takes_effect_without_restart() -> None:
    pipe, cfg = _scene_pipeline("single_in")
    away = cfg.model_copy(update={"lines": [LineConfig(id="door", x1=0.0, y1=0.1, x2=0.2, y2=0.1)]})
    pipe.update_config(away)  # applied before the first frame
    ctx, out = collect()
    pipe.run(ctx)
    assert (sum(p.in_count for p in out), sum(p.out_count for p in out)) == (0, 0)
    assert pipe.cfg.lines[0].y1 == 0.1
