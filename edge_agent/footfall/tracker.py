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
seen (its position is less and less certain; ``reid_gain``, zero for a finder whose detections are
people rather than blobs that fade), so the person gets their old track back, with its side of the
line, instead of a new one born on the wrong side. Only established tracks
(``reid_min_hits``) are re-acquired that way, not fragments. With a finder that gives one
detection per person (``exit_at_edges``), a track lost while walking out over the zone's edge does
not wait: its person has left, and whoever enters there next must get a track of their own.

One person can end up with two tracks (a blob over-split while the size model is still at its
prior, a fragment at a light step). Two tracks whose feet rows stay within 0.2 person heights inside
one detection's box for 0.3 s, while only one of them has a detection, are merged into the more
established one; the person's last counted side of each line survives the merge, so neither the
dropped track nor the survivor counts the same crossing again. A finder that gives one detection per
person does not over-split, and there the same sight means two people side by side, one of them
missed for a moment: ``merge_duplicates`` is off for it, so the missed one keeps their track.
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
    counted_t: float | None = None  # when the track last made a crossing final on this line
    flip: tuple[float, float, float] | None = None  # (t, x, y) when ``side`` last changed


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
    born: float = 0.0
    lines: dict[str, LineState] = field(default_factory=dict)

    def predict(self, t: float) -> tuple[float, float]:
        dt = t - self.t
        return self.x + self.vx * dt, self.y + self.vy * dt


def _in_box(tr: Track, d: Detection) -> bool:
    """Is the track's anchor inside (or at the edge of, 0.15 of its height) the detection's box?"""
    m = 0.15 * d.h
    return abs(tr.x - d.x) <= d.w / 2 + m and d.y - d.h - m <= tr.y <= d.y + m


class Tracker:
    def __init__(
        self, *, gate: float = 0.8, max_missed_s: float = 0.6, min_hits: int = 3,
        reid_gain: float = 0.6, reid_min_hits: int = 10, max_lost_s: float = 0.0,
    ) -> None:
        self.gate = gate
        self.max_missed_s = max_missed_s
        # An established track lost in empty space waits this long (if longer than max_missed_s).
        self.max_lost_s = max_lost_s
        self.min_hits = min_hits
        self.reid_gain = reid_gain  # person heights per second of coasting in empty space
        self.reid_min_hits = reid_min_hits
        self.tracks: list[Track] = []
        # The zone's box (x0, y0, x1, y1) in the detections' pixels: a person leaves view there.
        self.bounds: tuple[float, float, float, float] | None = None
        self.exit_at_edges = False  # end a track whose person walked out of ``bounds`` (_leaving)
        self.edge_margin = 0.15  # person heights from the box's edge ...
        self.edge_speed = 0.2  # ... moving outward faster than this (person heights per second)
        self.merge_duplicates = True  # merge two tracks that stay inside one body (_merge_duplicates)
        self._next = 1
        self.dup_dist = 0.2  # two anchors whose feet rows are this close (in person heights) ...
        self.dup_s = 0.3  # ... inside one person's box for this long are one person
        # track id pair -> (seconds seen together in one body, time of the last check)
        self._together: dict[tuple[int, int], tuple[float, float]] = {}

    def update(self, dets: list[Detection], t: float) -> tuple[list[Track], list[Track]]:
        """Returns (tracks alive after this frame, tracks that ended in it)."""
        preds = [tr.predict(t) for tr in self.tracks]
        pairs = self._candidates(preds, dets, t)
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
                leaving = self._leaving(tr)  # before _coast, which stops a track lost in the open
                self._coast(tr, preds[ti], dets, t)
                if leaving or t - tr.last_seen > self._limit(tr):
                    ended.append(tr)
                    continue
            alive.append(tr)
        for di, d in enumerate(dets):
            if di not in used_d:
                alive.append(Track(self._next, d.x, d.y, d.h, t, last_seen=t, born=t))
                self._next += 1
        self.tracks = alive
        if self.merge_duplicates:
            self._merge_duplicates(dets, t)
        return self.tracks, ended

    def _leaving(self, tr: Track) -> bool:
        """Did ``tr``'s person just walk out of view? Its anchor was within ``edge_margin`` person
        heights of the zone's edge, moving outward at a walking pace, when its detection stopped.

        Such a track must not wait for its person: whoever steps in at that edge next (a common
        sight at a busy door or the side of a street) would take it over and walk it back over the
        line, cancelling both crossings. It ends at once, so its pending crossing counts.
        """
        if self.bounds is None or not self.exit_at_edges:
            return False
        m, v = self.edge_margin * tr.h, self.edge_speed * tr.h
        x0, y0, x1, y1 = self.bounds
        return (
            (tr.x - x0 < m and tr.vx < -v) or (x1 - tr.x < m and tr.vx > v)
            or (tr.y - y0 < m and tr.vy < -v) or (y1 - tr.y < m and tr.vy > v)
        )

    def _lost_in_open(self, tr: Track) -> bool:
        """An established track whose person vanished where no one else's body explains it (someone
        who stopped and faded into the background, legs lost on a dark floor): the person is likely
        still there, so its gate grows and it may wait ``max_lost_s``."""
        return not tr.hidden and tr.hits >= self.reid_min_hits

    def _limit(self, tr: Track) -> float:
        """How long ``tr`` may go without a detection."""
        return max(self.max_missed_s, self.max_lost_s) if self._lost_in_open(tr) else self.max_missed_s

    def _candidates(
        self, preds: list[tuple[float, float]], dets: list[Detection], t: float
    ) -> list[tuple[float, int, int]]:
        """(distance, track index, detection index) of every pair inside the gate."""
        pairs: list[tuple[float, int, int]] = []
        for ti, tr in enumerate(self.tracks):
            px, py = preds[ti]
            gate = self.gate
            missed = t - tr.last_seen
            if missed > 0.05 and self._lost_in_open(tr):
                gate += self.reid_gain * (missed - 0.04)  # a single missed frame (25 fps) is not "lost"
            for di, d in enumerate(dets):
                scale = max(d.h, tr.h, 1.0)
                # horizontal error weighs less: walking people sway and merged blobs are cut unevenly
                dist = (((px - d.x) * 0.8) ** 2 + (py - d.y) ** 2) ** 0.5 / scale
                if dist < gate:
                    pairs.append((dist, ti, di))
        return pairs

    def _merge_duplicates(self, dets: list[Detection], t: float) -> None:
        """Two tracks that stay together inside one person's box for ``dup_s`` are one person.

        Duplicates are born when one body is over-split (the size model still at its prior) or
        from fragments; left alone, both count the person's crossing. Inside one detection's box
        (one body, by the blob's width), with their feet rows within ``dup_dist`` heights and not
        walking in opposite directions (two people passing in depth do, and only briefly share a
        feet row), they are merged into the more established track.
        """
        together: dict[tuple[int, int], tuple[float, float]] = {}
        gone: set[int] = set()
        for d in dets:
            inside = [tr for tr in self.tracks if _in_box(tr, d)]
            for i, a in enumerate(inside):
                for b in inside[i + 1:]:
                    if a.id in gone or b.id in gone or (a.last_seen < t and b.last_seen < t):
                        continue
                    h = max(a.h, b.h, 1.0)
                    if abs(a.y - b.y) > self.dup_dist * h:
                        continue
                    if a.vy * b.vy < 0 and min(abs(a.vy), abs(b.vy)) > 0.2 * h:
                        continue
                    key = (min(a.id, b.id), max(a.id, b.id))
                    acc, last = self._together.get(key, (0.0, t))
                    if a.last_seen < t or b.last_seen < t:
                        acc += t - last  # one body, one detection: only one of them can have it
                    # (each with a detection of its own, they may be two people side by side: the
                    # pair stays under watch, but that frame is no evidence)
                    together[key] = (acc, t)
                    if acc >= self.dup_s:
                        keep, drop = (a, b) if (a.hits, -a.id) >= (b.hits, -b.id) else (b, a)
                        self._absorb(keep, drop)
                        gone.add(drop.id)
        self._together = {k: v for k, v in together.items() if k[0] not in gone and k[1] not in gone}
        if gone:
            self.tracks = [tr for tr in self.tracks if tr.id not in gone]

    @staticmethod
    def _absorb(keep: Track, drop: Track) -> None:
        """``drop`` is a duplicate of ``keep``'s person: one track, one count, one side of each line."""
        donor, other = (drop, keep) if drop.last_seen > keep.last_seen else (keep, drop)
        if donor is drop:  # the position and motion of the one seen last
            keep.x, keep.y, keep.vx, keep.vy, keep.h = drop.x, drop.y, drop.vx, drop.vy, drop.h
            keep.t, keep.last_seen = drop.t, drop.last_seen
            keep.hidden = drop.hidden
        first = keep if keep.born <= drop.born else drop
        lines: dict[str, LineState] = {}
        for lid in set(keep.lines) | set(drop.lines):
            a, b = donor.lines.get(lid), other.lines.get(lid)
            st = LineState(**vars(a if a is not None else b))
            if a is not None and b is not None:
                # The person's last counted side: the latest crossing either track made final;
                # if neither did, the side the earlier-born track first saw them on.
                done = [x for x in (a, b) if x.counted_t is not None]
                src = max(done, key=lambda x: x.counted_t or 0.0) if done else first.lines[lid]
                st.origin, st.counted_t = src.origin, src.counted_t
            lines[lid] = st
        keep.lines = lines

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
        return any(_in_box(tr, d) for d in dets)

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
