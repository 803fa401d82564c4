"""The decoder the pipeline uses: cheap passes on every frame, expensive ones only on evidence.

Every frame gets two cheap zxing-cpp passes:

1. LocalAverage binarizer at full resolution, dark-on-light and inverted (small and normal codes);
2. GlobalHistogram binarizer, dark-on-light and inverted, on a 2x area-downscaled copy. Area
   downscaling averages textured "design" modules into flat ones and makes big codes (held close
   to the lens) small; the global threshold copes with uneven print where the local one does not.

Only when a pass *located* a symbol it could not read (finder patterns found, error correction
failed) do we spend more: each located region is cropped from the full-resolution image and
re-read with a short list of preprocessings (global threshold, light smoothing against sensor
noise and moire, upscaling small codes, CLAHE for glare and shadows), and finally zbar, whose
sampling grid copes with some bent codes zxing-cpp rejects. Every accepted read is Reed-Solomon
error-corrected by the decoder that produced it, so an extra pass can add reads but not guesses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge_agent.qr.decoded import Decoded, Gray, Located, Quad
from edge_agent.qr.zbar_adapter import ZbarDecoder
from edge_agent.qr.zxing_adapter import ZxingDecoder

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


@dataclass(frozen=True, slots=True)
class CascadeOptions:
    formats: tuple[str, ...] = ("qr",)
    global_pass: bool = True  # pass 2 above
    global_pass_min_side: int = 96  # below this the 2x downscale destroys modules: use full size
    escalate: bool = True  # region passes on located-but-unreadable symbols
    max_regions: int = 4  # bounds the worst-case cost of a frame full of unreadable symbols
    zbar_fallback: bool = True


def _box_of(quad: Quad, shape: tuple[int, ...], margin: float) -> Box:
    xs = [p[0] for p in quad]
    ys = [p[1] for p in quad]
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    m = int(max(w, h) * margin) + 8
    return (
        max(0, min(xs) - m),
        max(0, min(ys) - m),
        min(shape[1], max(xs) + m),
        min(shape[0], max(ys) + m),
    )


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _merge_boxes(boxes: list[Box]) -> list[Box]:
    """zxing reports each finder-pattern triple it tried; merge those of one symbol into one box."""
    merged: list[Box] = []
    for box in boxes:
        for i, other in enumerate(merged):
            if _overlaps(box, other):
                merged[i] = (
                    min(box[0], other[0]),
                    min(box[1], other[1]),
                    max(box[2], other[2]),
                    max(box[3], other[3]),
                )
                break
        else:
            merged.append(box)
    return merged


def _shift(d: Decoded, dx: int, dy: int, scale: float) -> Decoded:
    pos = tuple((int(x * scale) + dx, int(y * scale) + dy) for x, y in d.position)
    return replace(d, position=(pos[0], pos[1], pos[2], pos[3]))


def _u8(img: object) -> Gray:
    # OpenCV's stubs type every result as a generic ndarray; these operations keep uint8.
    return np.asarray(img, dtype=np.uint8)


def _identity(g: Gray) -> Gray:
    return g


def _blur(g: Gray) -> Gray:
    # Light smoothing against sensor noise, JPEG blocks and textured ("design") modules.
    return _u8(cv2.GaussianBlur(g, (3, 3), 0))


def _median(g: Gray) -> Gray:
    return _u8(cv2.medianBlur(g, 3))


def _upscale_small(g: Gray) -> Gray:
    # Codes a few pixels per module wide read better with more pixels to sample from.
    if max(g.shape) >= 400:
        return g
    return _u8(cv2.resize(g, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC))


_clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))


def _equalise(g: Gray) -> Gray:
    # Local contrast normalisation for glare and shadow across the symbol.
    return _u8(_clahe.apply(g))


class CascadeDecoder:
    """zxing-cpp passes + region escalation + zbar fallback behind the Decoder interface."""

    name = "cascade"

    def __init__(self, options: CascadeOptions | None = None) -> None:
        self.options = opts = options or CascadeOptions()
        # Inverted codes are tried here at full resolution (small light-on-dark codes); zxing's own
        # downscaling is left to pass 2, which covers big codes more cheaply.
        self._local = ZxingDecoder(
            formats=opts.formats, binarizer="local", try_invert=True, try_downscale=False, name="zxing/local"
        )
        self._global_small = ZxingDecoder(
            formats=opts.formats,
            binarizer="global",
            try_invert=True,
            try_downscale=False,
            name="zxing/global-half",
        )
        self._region_global = ZxingDecoder(
            formats=opts.formats, binarizer="global", name="zxing/region-global"
        )
        self._region_local = ZxingDecoder(formats=opts.formats, binarizer="local", name="zxing/region-local")
        self._zbar = ZbarDecoder() if opts.zbar_fallback else None
        self._region_passes: list[tuple[Callable[[Gray], Gray], ZxingDecoder]] = [
            (_identity, self._region_global),
            (_blur, self._region_global),
            (_median, self._region_local),
            (_upscale_small, self._region_local),
            (_equalise, self._region_local),
        ]

    def decode(self, gray: Gray) -> list[Decoded]:
        if gray.dtype != np.uint8 or gray.ndim != 2 or min(gray.shape) < 8:
            log.warning("decoder got an unusable image: dtype=%s shape=%s", gray.dtype, gray.shape)
            return []
        reads, located = self._local.decode_with_evidence(gray)
        if self.options.global_pass:
            r2, l2 = self._global_pass(gray)
            reads += r2
            located += l2
        found = _unique(reads)
        if self.options.escalate and located:
            found = _unique(found + self._escalate(gray, located, found))
        return found

    def _global_pass(self, gray: Gray) -> tuple[list[Decoded], list[Located]]:
        if min(gray.shape) < self.options.global_pass_min_side:
            return self._global_small.decode_with_evidence(gray)
        half = _u8(cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA))
        reads, located = self._global_small.decode_with_evidence(half)
        reads = [_shift(d, 0, 0, 2.0) for d in reads]
        located = [Located(position=_shift_quad(lo.position, 2.0), symbology=lo.symbology) for lo in located]
        return reads, located

    def _escalate(self, gray: Gray, located: list[Located], found: list[Decoded]) -> list[Decoded]:
        read_boxes = [_box_of(d.position, gray.shape, 0.0) for d in found]
        boxes = _merge_boxes([_box_of(lo.position, gray.shape, 0.25) for lo in located])
        # A symbol already read in this frame needs no second look.
        boxes = [b for b in boxes if not any(_overlaps(b, rb) for rb in read_boxes)]
        out: list[Decoded] = []
        for x0, y0, x1, y1 in boxes[: self.options.max_regions]:
            crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
            out += [_shift(d, x0, y0, 1.0) for d in self._read_region(crop)]
        return out

    def _read_region(self, crop: Gray) -> list[Decoded]:
        for prep, dec in self._region_passes:
            img = prep(crop)
            reads = dec.decode(img)
            if reads:
                scale = crop.shape[0] / img.shape[0]
                return [_shift(d, 0, 0, scale) for d in reads]
        if self._zbar is not None:
            return self._zbar.decode(crop)
        return []


def _shift_quad(q: Quad, scale: float) -> Quad:
    p = tuple((int(x * scale), int(y * scale)) for x, y in q)
    return (p[0], p[1], p[2], p[3])


def _unique(reads: list[Decoded]) -> list[Decoded]:
    """One read per payload: passes overlap, and the same code twice in a frame is one scan."""
    seen: set[tuple[bytes, str]] = set()
    out: list[Decoded] = []
    for d in reads:
        key = (d.raw, d.symbology)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out
