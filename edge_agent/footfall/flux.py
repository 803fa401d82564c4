"""Line flux: how much foreground crosses a door line, and which way, whatever the blobs look like.

Tracking one blob per person fails when people merge (side by side, one behind the other,
groups): the merged blob is one track and counts once. Counting what flows *through the line*
does not care about merging. Along the line, every sample point carries the foreground mask and
the optical flow normal to the line (Farneback, on a thin grey strip around the line only). Over
the time a body covers a point, ``sum(flow_normal)`` is the body's extent along the normal at that
point, so summed over the points of the line it is the body's silhouette area: a pair crossing
shoulder to shoulder gives twice the area of one person, whatever its blob looks like.

Flux is grouped into *events*: connected regions of the (position along the line, time) plane
where the mask is on, so people crossing at different places or times stay apart. Within an
event each contiguous run of one point contributes its net flux to the 'in' or the 'out' sum; a
body that steps over the line and back at the same place nets zero.

How many people an event holds is decided with the tracker in ``counter.py``: the flux sums are
divided by the area one person sweeps at that line (learned from events that one track crossed
alone), and the tracker says whether anyone's feet actually crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.footfall.geometry import Line

U8 = npt.NDArray[np.uint8]


@dataclass
class FluxEvent:
    id: int
    t0: float
    t1: float
    lo: int  # first sample index along the line touched by the event
    hi: int  # last sample index touched
    pos: float = 0.0  # area that went 'in' (px^2, working resolution)
    neg: float = 0.0  # area that went 'out'
    active: int = 0  # sample points whose run is still open
    runs: list[float] = field(default_factory=list)


class FluxLine:
    """Flux events of one line over a crop of the working frame."""

    def __init__(
        self, line: Line, crop: tuple[int, int, int, int], margin: float, gap_s: float = 0.12
    ) -> None:
        x0, y0, x1, y1 = crop
        self.line = line
        n = max(2, int(line.length) + 1)
        self.n = n
        self.spacing = line.length / (n - 1)
        k = np.arange(n, dtype=np.float64) / (n - 1)
        xs = np.clip(np.round(line.ax + k * (line.bx - line.ax)) - x0, 0, x1 - x0 - 1).astype(np.intp)
        ys = np.clip(np.round(line.ay + k * (line.by - line.ay)) - y0, 0, y1 - y0 - 1).astype(np.intp)
        m = int(np.ceil(margin))
        self._box = (
            max(0, int(xs.min()) - m), max(0, int(ys.min()) - m),
            min(x1 - x0, int(xs.max()) + m + 1), min(y1 - y0, int(ys.max()) + m + 1),
        )
        bx0, by0, _, _ = self._box
        self._xs, self._ys = xs, ys
        self._sx, self._sy = xs - bx0, ys - by0
        self._prev: U8 | None = None
        self._on = np.zeros(n, bool)
        self._run = np.zeros(n, np.float64)
        self._ev = np.full(n, -1, np.intp)
        self._events: dict[int, FluxEvent] = {}
        self._next = 0
        self.gap_s = gap_s

    def update(self, grey: U8, mask: U8, t: float) -> list[FluxEvent]:
        """Feed one frame (grey crop and its foreground mask); returns the events that closed."""
        bx0, by0, bx1, by1 = self._box
        strip = np.ascontiguousarray(grey[by0:by1, bx0:bx1])
        on = mask[self._ys, self._xs] > 0
        if self._prev is None or self._prev.shape != strip.shape:
            flow_n = np.zeros(self.n, np.float64)
        else:
            flow = np.asarray(cv2.calcOpticalFlowFarneback(
                self._prev, strip, None, 0.5, 2, 11, 2, 5, 1.1, 0  # type: ignore[call-overload, unused-ignore]  # stubs of opencv < 5.1 reject None
            ), np.float32)
            f = flow[self._sy, self._sx].astype(np.float64)
            flow_n = f[:, 0] * self.line.nx + f[:, 1] * self.line.ny
        self._prev = strip
        flux = np.where(on, flow_n * self.spacing, 0.0)
        self._close_runs(self._on & ~on, t)
        self._open_runs(on, t)
        self._run[on] += flux[on]
        self._on = on
        return self._closed(t)

    def flush(self) -> list[FluxEvent]:
        self._close_runs(self._on, float("inf"))
        self._on[:] = False
        return self._closed(float("inf"))

    def _close_runs(self, ending: npt.NDArray[np.bool_], t: float) -> None:
        for i in np.flatnonzero(ending):
            ev = self._events.get(int(self._ev[i]))
            if ev is not None:
                r = float(self._run[i])
                if r > 0:
                    ev.pos += r
                else:
                    ev.neg -= r
                ev.active -= 1
                if t != float("inf"):
                    ev.t1 = t
            self._run[i] = 0.0
            self._ev[i] = -1

    def _open_runs(self, on: npt.NDArray[np.bool_], t: float) -> None:
        # Contiguous segments of 'on' points (gaps of 2 samples bridged) form one piece of an event.
        bridged = on.copy()
        bridged[1:] |= on[:-1]
        bridged[:-1] |= on[1:]
        idx = np.flatnonzero(bridged)
        if len(idx) == 0:
            return
        splits = np.flatnonzero(np.diff(idx) > 1) + 1
        for seg in np.split(idx, splits):
            pts = seg[on[seg]]
            if len(pts) == 0:
                continue
            cont = {int(e) for e in self._ev[pts] if e >= 0}
            lo, hi = int(seg[0]), int(seg[-1])
            if not cont:
                ev = self._pending_near(lo, hi, t)
                if ev is None:
                    ev = FluxEvent(self._next, t, t, lo, hi)
                    self._events[ev.id] = ev
                    self._next += 1
            else:
                ids = sorted(cont)
                ev = self._events[ids[0]]
                for other in ids[1:]:
                    self._merge(ev, self._events.pop(other))
            new = pts[self._ev[pts] < 0]
            self._ev[new] = ev.id
            ev.active += len(new)
            ev.lo, ev.hi = min(ev.lo, lo), max(ev.hi, hi)
            ev.t1 = t

    def _merge(self, into: FluxEvent, other: FluxEvent) -> None:
        into.pos += other.pos
        into.neg += other.neg
        into.active += other.active
        into.t0 = min(into.t0, other.t0)
        into.t1 = max(into.t1, other.t1)
        into.lo, into.hi = min(into.lo, other.lo), max(into.hi, other.hi)
        self._ev[self._ev == other.id] = into.id

    def _pending_near(self, lo: int, hi: int, t: float) -> FluxEvent | None:
        """An event whose points all went off moments ago at about this place (mask flicker)."""
        for ev in self._events.values():
            if ev.active == 0 and t - ev.t1 <= self.gap_s and lo <= ev.hi + 2 and hi >= ev.lo - 2:
                return ev
        return None

    def _closed(self, t: float) -> list[FluxEvent]:
        done = [ev for ev in self._events.values() if ev.active <= 0 and t - ev.t1 > self.gap_s]
        for ev in done:
            del self._events[ev.id]
        return done

    def open_events(self) -> list[FluxEvent]:
        return list(self._events.values())

    def along_index(self, x: float, y: float) -> float:
        """Sample index along this line of the foot of the perpendicular from (x, y)."""
        return self.line.along(x, y) * (self.n - 1)
