"""A background model that survives lights switching on, daylight drift, noise and camera shake.

Why not MOG2: a light switched on changes every pixel at once and MOG2 then reports the whole frame
as foreground for seconds. Here each frame is first divided by the global per-channel gain that
best maps the background onto it (a median of ratios, so people covering part of the frame do not
bias it), which absorbs lights and drift. Comparing each pixel with the darkest and brightest
background value in its 3x3 neighbourhood makes a one-pixel shake invisible, and the threshold
follows the measured noise level, so sensor noise and compression blocks do not become people.

Someone who stands still (a shopper lingering at the door) is slowly learned into the background, and
when they walk on, the place they stood shows as a person-shaped ghost for seconds, which a track can
stay on while the real person walks over the line. A second, slow background that learns only away
from foreground remembers the floor from before: a blob that mostly matches it is a ghost, is dropped
from the mask, and the background takes the frame there at once.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

_KERNEL = np.ones((3, 3), np.uint8)
_NEAR = np.ones((5, 5), np.uint8)
LONG_RATE = 0.1  # the slow background learns at this fraction of the learning rate
GHOST_MATCH = 0.7  # a blob is a ghost when at least this share of it matches the slow background


# numpy reduces over a short last axis (the 3 colour channels) one pixel at a time, ~30x slower
# than elementwise operations on the channel planes; these give the same values bit for bit.
def _max3(a: F32) -> F32:
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _sum3(a: F32) -> F32:
    return a[..., 0] + a[..., 1] + a[..., 2]


class BackgroundModel:
    def __init__(
        self,
        *,
        learning_rate: float = 0.02,
        threshold: float = 18.0,
        noise_factor: float = 4.0,
        relearn_fraction: float = 0.5,
        warmup_frames: int = 25,
        saturation_level: int = 255,
        ghost_match: float = GHOST_MATCH,
    ) -> None:
        self.learning_rate = learning_rate
        self.threshold = threshold
        self.noise_factor = noise_factor
        self.relearn_fraction = relearn_fraction
        self.warmup_frames = warmup_frames
        self.saturation_level = saturation_level
        self.ghost_match = ghost_match  # above 1: no blob is ever a ghost (the test is off)
        self._bg: F32 | None = None
        self._long: F32 | None = None  # the floor before anyone stood on it (learns away from people)
        self._frames = 0
        self._noise = 2.0
        self._prev: F32 | None = None
        self.last_frame: F32 | None = None  # the last image applied, divided by the lighting gain
        self.relearned = 0  # how many times a sudden global change forced a relearn (a health figure)
        self.ghosts = 0  # how many ghost blobs were dropped and learned at once (a health figure)

    def reset(self) -> None:
        self._bg = None
        self._long = None
        self._frames = 0

    @property
    def background(self) -> F32 | None:
        return self._bg

    def apply(self, image: U8, roi: U8 | None = None) -> U8:
        """Foreground mask (0/255) of a BGR image; ``roi`` (0/255) limits where people can be."""
        frame = image.astype(np.float32)
        clipped = image >= self.saturation_level
        self._frames += 1
        if self._bg is None or self._bg.shape != frame.shape:
            self._bg = frame.copy()
            self._prev = None
            self.last_frame = frame
            return np.zeros(image.shape[:2], np.uint8)
        bg = self._bg
        gain = self._gain(frame, bg)
        frame /= gain
        self.last_frame = frame  # gain-normalised, comparable with ``background``
        lo = cv2.erode(bg, _KERNEL)
        hi = cv2.dilate(bg, _KERNEL)
        # A clipped channel is only a lower bound of the true value: after a light gets brighter a
        # saturated sign or window reads darker than the background once divided by the gain.
        # Such a channel can show a body brighter than the background, never one darker.
        darker = lo - frame
        darker[clipped] = 0.0
        diff = _max3(np.maximum(frame - hi, darker))
        self._track_noise(frame, bg)
        thr = max(self.threshold, self.noise_factor * self._noise)
        fg = diff > thr
        if roi is not None:
            fg &= roi > 0
        # The shadow test only matters where the threshold found something.
        cand = np.nonzero(fg)
        if len(cand[0]):
            fg[cand] = ~self._shadow(frame[cand], bg[cand])
        ghost = self._ghosts(frame, fg, thr)
        if ghost is not None:
            fg[ghost] = False
        area = float(cv2.countNonZero(roi)) if roi is not None else float(fg.size)
        # Nearly everything changed at once and the gain did not explain it (e.g. one bank of lights,
        # or the camera was moved): start over rather than report a crowd.
        if area > 0 and np.count_nonzero(fg) > self.relearn_fraction * area:
            self._bg = frame
            self._frames = 0
            self.relearned += 1
            return np.zeros(image.shape[:2], np.uint8)
        rate = self.learning_rate if self._frames > self.warmup_frames else max(self.learning_rate, 0.1)
        fg8: U8 = np.asarray(fg, np.uint8) * np.uint8(255)
        near = cv2.dilate(fg8, _NEAR) > 0
        self._update(frame, near, rate, thr)
        if ghost is not None:
            self._bg[ghost] = frame[ghost]
        self._learn_long(frame, near, rate)
        return fg8

    def _ghosts(
        self, frame: F32, fg: npt.NDArray[np.bool_], thr: float
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None:
        """Pixels of the blobs in ``fg`` that mostly match the slow background, or None.

        A person walking over a spot where someone stood still differs from the slow background (it
        never learned either of them), so only the place left behind matches it. Judged per blob:
        pixel by pixel, parts of real people whose clothes match the floor would be cut out.
        """
        if self._long is None or self._frames <= self.warmup_frames:
            return None
        cand = np.nonzero(fg)
        if not len(cand[0]):
            return None
        lg = self._long
        px = frame[cand]
        off = np.maximum(px - cv2.dilate(lg, _KERNEL)[cand], cv2.erode(lg, _KERNEL)[cand] - px)
        match = _max3(off) <= thr
        if not match.any():
            return None
        n, labels = cv2.connectedComponents(np.asarray(fg, np.uint8), connectivity=8)
        lab = labels[cand]
        size = np.bincount(lab, minlength=n)
        matched = np.bincount(lab, weights=match.astype(np.float64), minlength=n)
        ghost = (matched >= self.ghost_match * np.maximum(size, 1))[lab]
        if not ghost.any():
            return None
        self.ghosts += int(np.count_nonzero(np.unique(lab[ghost])))
        return cand[0][ghost], cand[1][ghost]

    def _learn_long(self, frame: F32, near: npt.NDArray[np.bool_], rate: float) -> None:
        """The slow background copies the fast one through the warm-up (after a start or a relearn),
        then learns only away from foreground, at a tenth of the rate: someone standing still for a
        minute stays out of it. Nothing reads it during the warm-up."""
        assert self._bg is not None
        if self._long is None or self._frames <= self.warmup_frames:
            self._long = self._bg.copy()
            return
        w = np.full(near.shape, rate * LONG_RATE, np.float32)
        w[near] = 0.0
        self._long += w[..., None] * (frame - self._long)

    def _update(self, frame: F32, near: npt.NDArray[np.bool_], rate: float, thr: float) -> None:
        """Learn where nothing is; near foreground learn only what stands still.

        The thresholded mask misses a person's faint edges, so learning right next to it would smear
        people into the background and leave ghosts behind them. What is foreground but no longer
        moves (a ghost, a parked trolley, someone who stopped) is learned 4x slower: it fades out in
        seconds, long enough that a person pausing on the door mat keeps their track. "Moving" is
        judged at the detection threshold: below it, on a noisy camera, noise alone would look like
        motion and what stands still would never be learned.
        """
        assert self._bg is not None
        if self._prev is None:
            moving = near
        else:
            moving = cv2.dilate(
                (_max3(np.abs(frame - self._prev)) > thr).astype(np.uint8), _KERNEL
            ) > 0
        self._prev = frame
        w = np.full(near.shape, rate, np.float32)
        w[near] = rate / 4.0
        w[near & moving] = 0.0
        self._bg += w[..., None] * (frame - self._bg)

    @staticmethod
    def _gain(frame: F32, bg: F32) -> F32:
        f = frame[::4, ::4].reshape(-1, 3)
        b = bg[::4, ::4].reshape(-1, 3)
        # ratios of near-black pixels are only noise
        ok = np.minimum(np.minimum(b[:, 0], b[:, 1]), b[:, 2]) > 8
        if ok.sum() < 16:
            return np.ones(3, np.float32)
        g = np.median(f[ok] / b[ok], axis=0).astype(np.float32)
        return np.asarray(np.clip(g, 0.1, 10.0), np.float32)

    def _track_noise(self, frame: F32, bg: F32) -> None:
        # The median absolute difference (every 3rd pixel, largest channel) is dominated by background
        # pixels; 1.4826 turns it into a sigma.
        absdiff = _max3(np.abs(frame[::3, ::3] - bg[::3, ::3]))
        sigma = float(np.median(absdiff)) * 1.4826
        self._noise += 0.05 * (sigma - self._noise)

    @staticmethod
    def _shadow(frame: F32, bg: F32) -> npt.NDArray[np.bool_]:
        """Darker than the background by a similar factor in every channel: a shadow, not a person.

        ``frame`` and ``bg`` are (..., 3) pixel arrays of the same shape."""
        fs = _sum3(frame) + 1.0
        bs = _sum3(bg) + 1.0
        ratio = fs / bs
        chroma = _sum3(np.abs(frame / fs[..., None] - bg / bs[..., None]))
        return np.asarray((ratio > 0.45) & (ratio < 0.92) & (chroma < 0.06), np.bool_)
