"""FrameGrabber: drop-oldest queue, reconnect with backoff after a failing source, counters."""

from __future__ import annotations

import threading

import numpy as np

from edge_agent.camera.base import CameraError, Frame
from edge_agent.camera.grabber import Backoff, FrameGrabber

FAST = Backoff(initial_s=0.001, max_s=0.002, multiplier=2.0, jitter=0.0)


def _frame(i: int) -> Frame:
    return Frame(image=np.zeros((4, 4), np.uint8), t=i / 10, index=i)


class ListSource:
    """Delivers ``n`` frames, optionally raising CameraError once at ``fail_at``."""

    def __init__(self, n: int, fail_at: int | None = None, start: int = 0) -> None:
        self.name = "list"
        self.n = n
        self.fail_at = fail_at
        self.i = start
        self.opened = 0

    def open(self) -> None:
        self.opened += 1

    def read(self) -> Frame | None:
        if self.fail_at is not None and self.i == self.fail_at:
            self.fail_at = None
            raise CameraError("stream dropped")
        if self.i >= self.n:
            return None
        f = _frame(self.i)
        self.i += 1
        return f

    def close(self) -> None:
        pass


def _drain(g: FrameGrabber) -> list[int]:
    out = []
    while (f := g.get(timeout=5)) is not None:
        out.append(f.index)
    return out


def test_drops_oldest_and_counts_drops() -> None:
    gate = threading.Event()

    class GatedSource(ListSource):
        def read(self) -> Frame | None:
            f = super().read()
            if f is None:
                gate.set()
            return f

    g = FrameGrabber(lambda: GatedSource(10), queue_size=3, backoff=FAST)
    g.start()
    assert gate.wait(5)  # the consumer has not read yet: 10 frames into a queue of 3
    assert _drain(g) == [7, 8, 9]
    assert g.frames_in == 10
    assert g.frames_dropped == 7
    assert g.status == "ended"
    g.stop()
    assert g.status == "stopped"


def test_source_failing_mid_stream_recovers_and_counts_reconnect() -> None:
    sources: list[ListSource] = []

    def factory() -> ListSource:
        # The replacement source continues where the stream dropped, like a camera coming back.
        start = sources[-1].i if sources else 0
        sources.append(ListSource(6, fail_at=3 if not sources else None, start=start))
        return sources[-1]

    g = FrameGrabber(factory, queue_size=100, backoff=FAST, drop_oldest=False)
    g.start()
    assert _drain(g) == [0, 1, 2, 3, 4, 5]
    assert g.reconnects == 1
    assert len(sources) == 2
    assert g.last_error == "stream dropped"
    assert g.frames_dropped == 0
    g.stop()


def test_source_that_cannot_open_is_retried_until_it_can() -> None:
    attempts = {"n": 0}

    class Flaky(ListSource):
        def open(self) -> None:
            attempts["n"] += 1
            if attempts["n"] <= 3:
                raise CameraError("no such device")

    g = FrameGrabber(lambda: Flaky(2), queue_size=10, backoff=FAST, drop_oldest=False)
    g.start()
    assert _drain(g) == [0, 1]
    assert g.reconnects == 3
    assert attempts["n"] == 4
    g.stop()


def test_unexpected_exception_does_not_kill_the_grabber() -> None:
    calls = {"n": 0}

    class Buggy(ListSource):
        def read(self) -> Frame | None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ZeroDivisionError("driver bug")
            return super().read()

    g = FrameGrabber(lambda: Buggy(2), queue_size=10, backoff=FAST, drop_oldest=False)
    g.start()
    assert _drain(g) == [0, 1]
    assert g.reconnects == 1
    assert g.last_error == "ZeroDivisionError: driver bug"
    g.stop()


def test_fps_limit_skips_frames_by_frame_time() -> None:
    g = FrameGrabber(lambda: ListSource(10), queue_size=100, fps_limit=5.0, drop_oldest=False)
    g.start()
    assert _drain(g) == [0, 2, 4, 6, 8]  # frames are 0.1 s apart, the limit wants 0.2 s
    assert g.frames_skipped == 5
    g.stop()


def test_backoff_grows_exponentially_caps_and_jitters_within_bounds() -> None:
    import random

    b = Backoff(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [b.delay(n, rng) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    j = Backoff(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=0.5)
    delays = [j.delay(3, rng) for _ in range(200)]
    assert min(delays) >= 2.0
    assert max(delays) <= 6.0
    assert len(set(delays)) > 100


def test_seconds_live_follows_the_clock_while_live() -> None:
    now = {"t": 100.0}
    g = FrameGrabber(lambda: ListSource(1), queue_size=10, clock=lambda: now["t"], drop_oldest=False)
    g.start()
    assert _drain(g) == [0]
    assert g.seconds_live == 0.0  # source opened and ended at clock 100
    g.stop()
