"""Net crossings of one track over one line, with a dead band and a commit distance.

A track is counted when it ends up on the other side of the line from where it was last counted,
and only once that is certain: it has gone ``commit`` pixels past the line or the track ended.
Someone who steps over the threshold and turns back (a U-turn, a person lingering on the door mat)
therefore counts nothing, while someone who leaves and comes back later counts out and in.
"""

from __future__ import annotations

from edge_agent.footfall.geometry import Line
from edge_agent.footfall.tracker import LineState, Track

# Crossing the line's axis beyond its endpoints (walking round the end) is not a crossing; a little
# slack keeps people who clip the door frame.
_SEGMENT_SLACK = 0.1


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def step(
    track: Track, line: Line, band: float, commit: float, seen: bool = True, *, seen_only: bool = False
) -> int:
    """Update the track's state for ``line``; +1 / -1 when an in / out crossing is now final.

    ``seen``: the track's position comes from a detection in this frame. A coasting track's
    position is an extrapolation, and it never undoes a crossing that is pending: a person whose
    blob fades into a dark floor just past the line must not be carried back over it by a velocity
    that the fading blob itself corrupted (its bottom rising as the legs vanish). A real detection
    back on the first side still cancels the crossing (U-turn, lingering on the mat).

    ``seen_only``: a coasting track's position does not move it over the line either; only
    detections do. For a finder that separates people who walk together (the feet-point network),
    coasting no longer has to carry people through merged blobs, and a track that coasts on a
    velocity spike (a detection that jumped for one frame) must not count on its own.
    """
    s = line.signed_distance(track.x, track.y)
    st = track.lines.get(line.id)
    if st is None:
        st = LineState(origin=_sign(s), side=_sign(s) if abs(s) > band else 0, last_sign=_sign(s))
        track.lines[line.id] = st
        return 0
    if seen_only and not seen:
        return 0
    sign = _sign(s)
    if not seen and st.side not in (0, st.origin) and sign != st.side:
        return 0
    if sign not in (0, st.last_sign):
        st.flip_ok = -_SEGMENT_SLACK <= line.along(track.x, track.y) <= 1 + _SEGMENT_SLACK
        st.last_sign = sign
    if abs(s) > band and sign != st.side:
        st.side = sign
        st.flip = (track.t, track.x, track.y)
        if not st.flip_ok:  # went round the end of the segment: new baseline, nothing to count
            st.origin = sign
    if st.origin == 0 and st.side != 0:
        st.origin = st.side
    if st.side not in (0, st.origin) and abs(s) >= commit:
        st.origin = st.side
        st.counted_t = track.t
        return st.side
    return 0


def finish(track: Track, line: Line) -> int:
    """The track ended: its pending crossing, if any, is final."""
    st = track.lines.get(line.id)
    if st is None or st.side in (0, st.origin):
        return 0
    st.origin = st.side
    return st.side
