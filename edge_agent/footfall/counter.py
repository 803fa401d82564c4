"""The counter: frames in, door-line crossings out. No I/O, so it runs on synthetic frames in tests."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from device_configs.footfall import FootfallConfig
from edge_agent.camera.base import Frame
from edge_agent.footfall import lines as line_logic
from edge_agent.footfall.background import BackgroundModel
from edge_agent.footfall.blobs import Detection, clean_mask, find_people
from edge_agent.footfall.detector import PersonDetector, make_detector
from edge_agent.footfall.flux import FluxEvent, FluxLine
from edge_agent.footfall.geometry import Line, polygon_mask
from edge_agent.footfall.points import FeetPointFinder
from edge_agent.footfall.sizes import PersonSizeModel
from edge_agent.footfall.tracker import Track, Tracker

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Crossing:
    line: str
    direction: Literal["in", "out"]
    t: float  # frame time at which the crossing became final
    track: int
    # Where and when the track's anchor went over the line (frame pixels; its time may be earlier
    # than ``t``): lets a benchmark match counted crossings to true ones.
    x: float = math.nan
    y: float = math.nan
    crossed_t: float = math.nan


class Counter(Protocol):
    def process(self, frame: Frame) -> list[Crossing]: ...

    def flush(self) -> list[Crossing]:
        """End of stream: settle every pending crossing."""
        ...


def _make_points(cfg: FootfallConfig) -> FeetPointFinder | None:
    if cfg.finder != "points":
        return None
    return FeetPointFinder(cfg.points_model, threshold=cfg.points_threshold, aspect=cfg.person_aspect)


@dataclass(frozen=True, slots=True)
class FinderTracking:
    """How tracks and lines treat what a finder gives (person heights; docs/footfall.md, sessions
    15 and 16). A blob's bottom jumps when people merge, split or fade into the floor, and a blob may
    be over-split into two tracks; the feet-point network places each person's feet to about a tenth
    of their height and gives one detection per person."""

    gate: float  # how far a track's predicted feet and a detection may be apart to be one person
    reid_gain: float  # how fast the gate of an established track lost in empty space grows (per s)
    exit_at_edges: bool  # a track whose person walked out of the zone ends there (Tracker._leaving)
    merge_duplicates: bool  # two tracks inside one body are one over-split person
    hysteresis: float  # the dead band round a line, when the config leaves it to the finder


TRACKING = {
    # Wide gate, growing while a faded blob's person is waited for; tracks wait at the edges (the
    # edge exit gave the blob split no fewer matched errors and more total ones, session 15).
    "blobs": FinderTracking(gate=0.8, reid_gain=0.6, exit_at_edges=False, merge_duplicates=True,
                            hysteresis=0.12),
    # A tight, fixed gate: a track does not jump to someone passing close by, nor, while it waits,
    # to whoever walks past later; two tracks in one body are two people side by side.
    "points": FinderTracking(gate=0.65, reid_gain=0.0, exit_at_edges=True, merge_duplicates=False,
                             hysteresis=0.08),
}


def _tune(tracker: Tracker, cfg: FootfallConfig) -> None:
    """Apply ``cfg``'s tracking settings (at start and on every live config change)."""
    tracker.max_missed_s, tracker.max_lost_s = cfg.max_missed_s, cfg.max_lost_s
    own = TRACKING[cfg.finder]
    tracker.gate, tracker.reid_gain = own.gate, own.reid_gain
    tracker.exit_at_edges, tracker.merge_duplicates = own.exit_at_edges, own.merge_duplicates


class MotionCounter:
    """Background subtraction + person splitting + tracking + net line crossings."""

    def __init__(self, cfg: FootfallConfig, detector: PersonDetector | None = None) -> None:
        self.cfg = cfg
        self._detector = detector if detector is not None else make_detector(cfg.detector)
        self._bg = BackgroundModel(
            learning_rate=cfg.bg_learning_rate, threshold=cfg.fg_threshold,
            noise_factor=cfg.noise_factor, relearn_fraction=cfg.relearn_fraction,
            saturation_level=cfg.saturation_level,
        )
        self._tracker = Tracker()
        _tune(self._tracker, cfg)
        self._points = _make_points(cfg)
        self._shape: tuple[int, int] | None = None  # working (w, h)
        self._frames = 0
        self.tracks: list[Track] = []
        self.last_detections: list[Detection] = []
        self.last_mask: U8 | None = None  # the zone's cleaned foreground mask (for training and tools)
        self.sizes: PersonSizeModel | None = None
        self.lines: list[Line] = []
        self._flux: dict[str, FluxLine] = {}
        self._closed_events: list[tuple[str, FluxEvent]] = []
        self._held: list[tuple[Crossing, float]] = []  # tracker crossings waiting for their flux event
        self._cross_pos: dict[tuple[int, str], float] = {}  # (track, line) -> along-line index
        self._unit: dict[str, list[float]] = {}  # flux samples of one person, per line
        self.flux_events: list[tuple[str, FluxEvent, int, int]] = []  # (line, event, in, out): diagnostics

    def reconfigure(self, cfg: FootfallConfig) -> None:
        """Apply a new config; the background is kept unless the analysis size changes."""
        old = self.cfg
        self.cfg = cfg
        self._bg.saturation_level = cfg.saturation_level
        _tune(self._tracker, cfg)
        if cfg.work_width != old.work_width:
            self._shape = None
            self._bg.reset()
        elif self._shape is not None:
            self._setup(*self._shape)
        if cfg.detector != old.detector:
            self._detector = make_detector(cfg.detector)
        if (cfg.finder, cfg.points_model, cfg.points_threshold, cfg.person_aspect) != (
                old.finder, old.points_model, old.points_threshold, old.person_aspect):
            self._points = _make_points(cfg)

    def _setup(self, w: int, h: int) -> None:
        cfg = self.cfg
        self._shape = (w, h)
        self.lines = [Line.from_config(lc, w, h) for lc in cfg.lines]
        prior = cfg.person_height * h
        if self.sizes is None or self.sizes.prior_height != prior:
            self.sizes = PersonSizeModel(
                prior_height=prior, prior_aspect=cfg.person_aspect, learn=cfg.learn_sizes
            )
        if cfg.zone is not None:
            zone = polygon_mask(list(cfg.zone), w, h)
        else:
            zone = np.zeros((h, w), np.uint8)
            m = cfg.zone_margin * prior
            xs = [p for ln in self.lines for p in (ln.ax, ln.bx)]
            ys = [p for ln in self.lines for p in (ln.ay, ln.by)]
            x0, x1 = int(max(0, min(xs) - m)), int(min(w, max(xs) + m + 1))
            # Feet are the anchor: the zone must hold the body of someone standing at its top edge.
            y0, y1 = int(max(0, min(ys) - m - 1.2 * prior)), int(min(h, max(ys) + m + 1))
            zone[y0:y1, x0:x1] = 255
        ys_nz, xs_nz = np.nonzero(zone)
        # Work on the zone's bounding box only: most of a door camera's frame is irrelevant.
        self._crop = (int(xs_nz.min()), int(ys_nz.min()), int(xs_nz.max()) + 1, int(ys_nz.max()) + 1)
        x0, y0, x1, y1 = self._crop
        self._tracker.bounds = (float(x0), float(y0), float(x1), float(y1))
        self._zone = np.ascontiguousarray(zone[y0:y1, x0:x1])
        if self.cfg.flux:
            self._flux = {
                ln.id: FluxLine(ln, self._crop, margin=0.4 * self.sizes.height(0.5 * (ln.ay + ln.by)))
                for ln in self.lines
            }
        else:
            self._flux = {}

    def _prepare(self, image: U8) -> U8:
        if image.ndim == 2:
            image = np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
        H, W = image.shape[:2]
        w = min(self.cfg.work_width, W)
        h = max(1, round(H * w / W))
        if self._shape != (w, h):
            self._setup(w, h)
            self._bg.reset()
        self._scale = W / w
        if (w, h) != (W, H):
            image = np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), np.uint8)
        return image

    @property
    def _sizes(self) -> PersonSizeModel:
        assert self.sizes is not None, "set up on the first frame"
        return self.sizes

    def process(self, frame: Frame) -> list[Crossing]:
        small = self._prepare(frame.image)
        x0, y0, x1, y1 = self._crop
        crop = small[y0:y1, x0:x1]
        mask = self._bg.apply(crop, self._zone)
        self._frames += 1
        pw = self._sizes.width(sum(ln.ay + ln.by for ln in self.lines) / (2 * len(self.lines)))
        mask = clean_mask(mask, pw)
        self.last_mask = mask
        dets = find_people(mask, self._sizes, min_blob=self.cfg.min_blob, offset=(x0, y0))
        if self._points is not None:  # the blobs above still teach the size model
            frame_n, bg = self._bg.last_frame, self._bg.background
            assert frame_n is not None and bg is not None  # set by apply()
            dets = self._points.find(frame_n, bg, mask, (x0, y0))
        if self._detector is not None and self._frames % self.cfg.detector.every_n_frames == 0:
            found = self._detector.detect(small)
            if found is not None:
                dets = found
        self.last_detections = dets
        alive, ended = self._tracker.update(dets, frame.t)
        self.tracks = alive
        out: list[Crossing] = []
        for tr in alive:
            out += self._step(tr, frame.t)
        for tr in ended:
            if not self._absorbed(tr, alive):
                out += self._finish(tr, frame.t)
        if not self._flux:
            return out
        grey = np.asarray(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), np.uint8)
        for lid, fl in self._flux.items():
            self._closed_events += [(lid, ev) for ev in fl.update(grey, mask, frame.t)]
        return self._reconcile(out, frame.t)

    # --- tracker + flux ---------------------------------------------------------------------
    _LATE_S = 1.5  # a track's crossing is final up to this long after its body left the line

    def _reconcile(self, crossings: list[Crossing], t: float, final: bool = False) -> list[Crossing]:
        """Tracker crossings say *whether* people crossed; the flux event around them says how many."""
        for c in crossings:
            self._held.append((c, self._cross_pos.pop((c.track, c.line), 0.0)))
        out: list[Crossing] = []
        self._closed_events.sort(key=lambda le: le[1].t1)
        keep: list[tuple[str, FluxEvent]] = []
        for lid, ev in self._closed_events:
            if not final and t - ev.t1 < self._LATE_S:
                keep.append((lid, ev))
                continue
            out += self._resolve(lid, ev)
        self._closed_events = keep
        # Crossings no flux event claimed (the body never covered the sampled line, e.g. it walked
        # round a segment end inside the slack) count as one person each.
        held: list[tuple[Crossing, float]] = []
        for c, pos in self._held:
            if final or (t - c.t > self._LATE_S + 0.5 and not self._could_claim(c, pos)):
                out.append(c)
            else:
                held.append((c, pos))
        self._held = held
        return out

    def _could_claim(self, c: Crossing, pos: float) -> bool:
        m = self._match_margin(c.line)
        evs = [ev for lid, ev in self._closed_events if lid == c.line]
        evs += self._flux[c.line].open_events()
        return any(ev.lo - m <= pos <= ev.hi + m for ev in evs)

    def _match_margin(self, lid: str) -> float:
        ln = next(x for x in self.lines if x.id == lid)
        return 0.6 * self._sizes.width(0.5 * (ln.ay + ln.by)) / max(self._flux[lid].spacing, 1e-6)

    def unit_flux(self, lid: str) -> float | None:
        """Area one person sweeps through this line, learned from lone crossings; None until known."""
        samples = self._unit.get(lid, [])
        if len(samples) >= 3:
            return float(np.median(samples))
        return None

    def _resolve(self, lid: str, ev: FluxEvent) -> list[Crossing]:
        m = self._match_margin(lid)
        mine = [(c, p) for c, p in self._held if c.line == lid and ev.lo - m <= p <= ev.hi + m
                and ev.t0 - 0.5 <= c.t <= ev.t1 + self._LATE_S]
        if not mine:
            self.flux_events.append((lid, ev, 0, 0))
            return []
        self._held = [h for h in self._held if h not in mine]
        k_in = [c for c, _ in mine if c.direction == "in"]
        k_out = [c for c, _ in mine if c.direction == "out"]
        unit = self.unit_flux(lid)
        if len(k_in) + len(k_out) == 1:
            v = ev.pos if k_in else ev.neg
            other = ev.neg if k_in else ev.pos
            # A lone track's event teaches the unit if it is about one person's silhouette area
            # (a generous band around the size model: the flow scale is what is being learned).
            ln = next(x for x in self.lines if x.id == lid)
            y = 0.5 * (ln.ay + ln.by)
            area = self._sizes.height(y) * self._sizes.width(y)
            if other < 0.3 * v and 0.2 * area < v < 1.5 * area:
                self._unit.setdefault(lid, []).append(v)
                self._unit[lid] = self._unit[lid][-25:]
        out: list[Crossing] = []
        for ks, flux in ((k_in, ev.pos), (k_out, ev.neg)):
            if not ks:
                continue
            # The tracker says someone crossed; the flux says how many when the tracker saw fewer
            # (people merged into one blob). Flux never removes a tracked crossing: on real footage
            # the flow under-reads dark, low-texture bodies, so it is trusted only to add.
            n = len(ks) if unit is None else max(len(ks), int(flux / unit + 0.5))
            out += ks
            out += [ks[-1]] * (n - len(ks))  # frozen: the same crossing counted again
        self.flux_events.append((lid, ev, sum(c.direction == "in" for c in out),
                                 sum(c.direction == "out" for c in out)))
        return out

    def _absorbed(self, tr: Track, alive: list[Track]) -> bool:
        """A track that ends right on top of another was a fragment of that person (a leg, a shadow).

        Its pending crossing is the other track's crossing and must not be counted twice.
        """
        reach = 0.5 * self._sizes.height(tr.y)
        return any(
            o.hits >= tr.hits and abs(o.x - tr.x) < reach and abs(o.y - tr.y) < reach for o in alive
        )

    def _bands(self, tr: Track) -> tuple[float, float]:
        ph = self._sizes.height(tr.y)
        band = self.cfg.hysteresis
        if band is None:
            band = TRACKING[self.cfg.finder].hysteresis
        return band * ph, self.cfg.commit_distance * ph

    def _step(self, tr: Track, t: float) -> list[Crossing]:
        out: list[Crossing] = []
        band, commit = self._bands(tr)
        for ln in self.lines:
            d = line_logic.step(
                tr, ln, band, commit, seen=tr.last_seen >= t, seen_only=self._points is not None
            )
            if d and tr.hits >= self._tracker.min_hits:
                out.append(self._crossing(tr, ln, d, t))
                self._note_pos(tr, ln)
        return out

    def _finish(self, tr: Track, t: float) -> list[Crossing]:
        out: list[Crossing] = []
        if tr.hits < self._tracker.min_hits:
            return out
        for ln in self.lines:
            d = line_logic.finish(tr, ln)
            if d:
                out.append(self._crossing(tr, ln, d, t))
                self._note_pos(tr, ln)
        return out

    def _crossing(self, tr: Track, ln: Line, d: int, t: float) -> Crossing:
        st = tr.lines[ln.id]
        at, x, y = st.flip if st.flip is not None else (tr.t, tr.x, tr.y)
        s = self._scale
        return Crossing(ln.id, "in" if d > 0 else "out", t, tr.id, x * s, y * s, at)

    def _note_pos(self, tr: Track, ln: Line) -> None:
        if ln.id in self._flux:
            self._cross_pos[(tr.id, ln.id)] = self._flux[ln.id].along_index(tr.x, tr.y)

    def flush(self) -> list[Crossing]:
        t = max((tr.t for tr in self._tracker.tracks), default=0.0)
        out: list[Crossing] = []
        for tr in self._tracker.tracks:
            out += self._finish(tr, t)
        self._tracker.tracks = []
        self.tracks = []
        if not self._flux:
            return out
        for lid, fl in self._flux.items():
            self._closed_events += [(lid, ev) for ev in fl.flush()]
        return self._reconcile(out, t, final=True)
