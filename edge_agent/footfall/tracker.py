"""Multi-person tracking of anchor points with constant-velocity prediction.

Association is greedy on distance between a track's predicted anchor and each detection,
measured in person heights so the gate means the same near and far from the camera. A track that
loses its detection (occluded by another person, merged blob under-counted) coasts on its velocity
for a short while instead of dying, so it keeps its side of the line.

Where a coasting track is lost matters. Inside someone else's blob it is merged or occluded and
reappears close to where it is predicted. In empty space its blob has faded (a still person
learned into the background, dark trousers on a dark floor) and the person may reappear farther
off: such a track waits where it was last seen (extrapolating a fading blob's velocity carries it
away: its bottom rises as the legs vanish), and its gate grows with the time since it was last
seen (its position is less and less certain), so the person gets their old track back, with its
side of the line, instead of a new one born on the wrong side. Only established tracks
(``reid_min_hits``) are re-acquired that way, not fragments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.footfall.blobs import Detection


@dataclass
class LineState:
    origin: int  # side (+1 in, -1 out) the track last counted from; 0 = unknown
    side: int  # side with hysteresis; 0 = inside the dead band since birth
    flip_ok: bool = True  # the last time the anchor crossed the line's axis, it was within the segment
    last_sign: int = 0


@dataclass
class Track:
    id: int
    x: float
    y: float
    h: float
    t: float
    vx: float = 0.0
    vy: float = 0.0
    hits: int = 1
    last_seen: float = 0.0
    hidden: bool = False  # while coasting: its anchor lies inside someone else's blob
    lines: dict[str, LineState] = field(default_factory=dict)

    def predict(self, t: float) -> tuple[float, float]:
        dt = t - self.t
        return self.x + self.vx * dt, self.y + self.vy * dt


class Tracker:
    def __init__(
        self, *, gate: float = 0.8, max_missed_s: float = 0.6, min_hits: int = 3,
        reid_gain: float = 0.6, reid_min_hits: int = 10,
    ) -> None:
        self.gate = gate
        self.max_missed_s = max_missed_s
        self.min_hits = min_hits
        self.reid_gain = reid_gain  # person heights per second of coasting in empty space
        self.reid_min_hits = reid_min_hits
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, dets: list[Detection], t: float) -> tuple[list[Track], list[Track]]:
        """Returns (tracks alive after this frame, tracks that ended in it)."""
        pairs: list[tuple[float, int, int]] = []
        preds = [tr.predict(t) for tr in self.tracks]
        for ti, tr in enumerate(self.tracks):
            px, py = preds[ti]
            gate = self.gate
            missed = t - tr.last_seen
            if missed > 0.05 and not tr.hidden and tr.hits >= self.reid_min_hits:
                gate += self.reid_gain * (missed - 0.04)  # a single missed frame (25 fps) is not "lost"
            for di, d in enumerate(dets):
                scale = max(d.h, tr.h, 1.0)
                # horizontal error weighs less: walking people sway and merged blobs are cut unevenly
                dist = (((px - d.x) * 0.8) ** 2 + (py - d.y) ** 2) ** 0.5 / scale
                if dist < gate:
                    pairs.append((dist, ti, di))
        pairs.sort()
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._correct(self.tracks[ti], dets[di], t)
        ended: list[Track] = []
        alive: list[Track] = []
        for ti, tr in enumerate(self.tracks):
            if ti not in used_t:
                self._coast(tr, preds[ti], dets, t)
                if t - tr.last_seen > self.max_missed_s:
                    ended.append(tr)
                    continue
            alive.append(tr)
        for di, d in enumerate(dets):
            if di not in used_d:
                alive.append(Track(self._next, d.x, d.y, d.h, t, last_seen=t))
                self._next += 1
        self.tracks = alive
        return alive, ended

    def _coast(self, tr: Track, pred: tuple[float, float], dets: list[Detection], t: float) -> None:
        tr.x, tr.y = pred
        tr.t = t
        tr.hidden = self._hidden(tr, dets)
        if tr.hidden:
            # merged with / behind someone: keep walking, damped so it does not fly off
            tr.vx *= 0.8
            tr.vy *= 0.8
        else:
            # lost in empty space: the blob faded (the person stopped, or melted into a dark
            # floor), so the track waits where it was last seen while its gate grows
            tr.vx = tr.vy = 0.0

    @staticmethod
    def _hidden(tr: Track, dets: list[Detection]) -> bool:
        """Is the track's anchor inside (or at the edge of) a detected blob's box?"""
        for d in dets:
            m = 0.15 * d.h
            if abs(tr.x - d.x) <= d.w / 2 + m and d.y - d.h - m <= tr.y <= d.y + m:
                return True
        return False

    @staticmethod
    def _correct(tr: Track, d: Detection, t: float) -> None:
        dt = max(t - tr.t, 1e-3)
        px, py = tr.predict(t)
        a, b = 0.6, 0.3  # alpha-beta filter gains: smooth the anchor, follow speed changes
        rx, ry = d.x - px, d.y - py
        tr.x, tr.y = px + a * rx, py + a * ry
        tr.vx += b * rx / dt
        tr.vy += b * ry / dt
        tr.h += 0.2 * (d.h - tr.h)
        tr.t = t
        tr.last_seen = t
        tr.hits += 1
