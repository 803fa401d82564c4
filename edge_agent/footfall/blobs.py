"""From a foreground mask to person hypotheses: blobs, and how many people each blob holds.

People walking close together merge into one blob; counting that blob once is the main reason
plain blob counters miss 35-55% of crossings in crowds. A blob's width is compared with the width
of one person at the row of its feet (perspective, learned by PersonSizeModel), and the heads
along its top edge are counted; the blob is then cut into that many people at the weakest
columns between them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.footfall.sizes import PersonSizeModel

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Detection:
    """One person hypothesis in working pixels; (x, y) is the anchor: bottom centre of the body."""

    x: float
    y: float
    w: float
    h: float
    group: int  # how many people the blob it came from was estimated to hold


def clean_mask(mask: U8, person_w: float) -> U8:
    """Remove specks, then close gaps inside a body (arms, dark trousers on a dark floor)."""
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    kw = max(3, int(person_w * 0.25) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kw, kw * 2 + 1))
    return np.asarray(cv2.morphologyEx(opened, cv2.MORPH_CLOSE, kernel), np.uint8)


def _count_heads(top: npt.NDArray[np.float64], person_w: float, person_h: float) -> int:
    """Local peaks of the blob's upper outline that stand out from their surroundings."""
    n = len(top)
    win = max(1, int(person_w * 0.5))
    # A peak is the lowest value within +-win, so it is at least as low as both neighbours: only
    # those columns are examined (the same scan as column by column, without its Python loop).
    cand = top < np.inf
    cand[1:] &= top[1:] <= top[:-1]
    cand[:-1] &= top[:-1] <= top[1:]
    peaks = 0
    nxt = 0
    for x in np.flatnonzero(cand).tolist():
        if x < nxt:
            continue
        lo, hi = max(0, x - win), min(n, x + win + 1)
        if top[x] <= top[lo:hi].min():
            # a head must rise above the outline a body width either side (or the blob edge)
            left = top[max(0, x - 2 * win) : max(0, x - win // 2)]
            right = top[min(n, x + win // 2 + 1) : min(n, x + 2 * win + 1)]
            rise = 0.12 * person_h
            ok_l = len(left) == 0 or left.max() - top[x] > rise
            ok_r = len(right) == 0 or right.max() - top[x] > rise
            if ok_l and ok_r:
                peaks += 1
                nxt = x + win
    return peaks


def estimate_people(
    width: float, top: npt.NDArray[np.float64], person_w: float, person_h: float, sure: bool = True
) -> int:
    by_width = width / person_w
    if not sure:  # sizes not learned yet: split only what is clearly wider than two people
        return max(1, int(by_width / 2.0 + 0.2))
    n = max(1, int(by_width + 0.3))
    heads = _count_heads(top, person_w, person_h)
    # Heads only break a tie the width leaves open: they never add more than the width allows.
    if heads > n and heads <= by_width + 0.8:
        n = heads
    return n


def _split_columns(cols: npt.NDArray[np.float64], n: int) -> list[int]:
    """Cut positions between n people: the thinnest column near each even split."""
    w = len(cols)
    cuts = [0]
    for k in range(1, n):
        c = k * w / n
        lo, hi = int(c - 0.3 * w / n), int(c + 0.3 * w / n) + 1
        lo, hi = max(cuts[-1] + 1, lo), min(w - 1, hi)
        cuts.append(lo + int(np.argmin(cols[lo:hi])) if hi > lo else int(c))
    cuts.append(w)
    return cuts


def _feet(top: float, bottom: float, sizes: PersonSizeModel, head_visible: bool) -> float:
    """Feet row: the blob's bottom, or lower when the legs are lost in a dark or busy floor.

    A body whose lower half matches the floor (dark trousers on a dark gallery) yields a blob that
    ends at the floor's edge, often right at the door line, so the person never seems to cross.
    The head is what background subtraction finds most reliably; from it and the learned height at
    that row the feet follow.
    """
    if not head_visible:
        return bottom
    feet = bottom
    for _ in range(2):
        feet = max(bottom, top + 0.9 * sizes.height(feet))
    return feet


def find_people(
    mask: U8, sizes: PersonSizeModel, *, min_blob: float, offset: tuple[int, int] = (0, 0)
) -> list[Detection]:
    """Person hypotheses in ``mask``; ``offset`` maps crop coordinates back to the frame."""
    ox, oy = offset
    n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out: list[Detection] = []
    for i in range(1, n_lab):
        x, y, w, h, area = (int(v) for v in stats[i])
        head_visible = y > 0  # a blob cut by the top of the zone may have lost its head
        feet = _feet(y + oy, y + h + oy, sizes, head_visible)
        ph, pw = sizes.height(feet), sizes.width(feet)
        if area < min_blob * ph * pw * 0.6 or h < 0.3 * ph:
            continue
        blob = labels[y : y + h, x : x + w] == i
        rows_any = blob.any(axis=0)
        top = np.where(rows_any, blob.argmax(axis=0), np.inf).astype(np.float64)
        n = estimate_people(w, top, pw, ph, sizes.fitted or not sizes.learn)
        aspect = w / h
        # Upright and person-shaped, not cut by the zone's edge: teach the size model.
        if (head_visible and y + h < mask.shape[0] and 0.25 < aspect < 0.65
                and sizes.plausible(y + h + oy, h)):
            sizes.observe(y + h + oy, h, w)
        if n == 1:
            out.append(Detection(x + ox + w / 2, float(feet), float(w), float(feet - y - oy), 1))
            continue
        cols = blob.sum(axis=0).astype(np.float64)
        cuts = _split_columns(cols, n)
        for a, b in itertools.pairwise(cuts):
            part = blob[:, a:b]
            rows = np.flatnonzero(part.any(axis=1))
            if len(rows) == 0:
                continue
            top_p, bottom_p = y + oy + rows[0], y + oy + rows[-1] + 1
            feet_p = _feet(top_p, bottom_p, sizes, head_visible)
            out.append(Detection(x + ox + (a + b) / 2, float(feet_p), float(b - a), float(feet_p - top_p), n))
    return out
