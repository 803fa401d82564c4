"""What did the counter see? A contact sheet of chosen frames of one video, as the counter saw them.

Counts VIDEO with its sidecar's line (as bench/footfall.py does) and, for each chosen frame, draws the
frame cropped to the counter's zone with the cleaned foreground mask tinted red, the people found
that frame as green dots, every live track as a cyan dot with its id, and the line. Where the text
of bench/footfall_trace.py says a track went astray, the sheet shows why: a ghost left where someone
stood, legs lost against the floor, two people in one blob. One line per frame is printed as well:

    frame 305 t=12.20 mask 921 px, 1 found, tracks 1@(228,156)

    .venv/bin/python bench/footfall_sheet.py ../shared/data/footfall/caviar_front/TwoLeaveShop2front.mpg \
        --frames 290,305,315,325 --out /tmp/sheet.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.footfall import count_video, parse_sets
from edge_agent.camera.base import Frame
from edge_agent.footfall.counter import MotionCounter

U8 = npt.NDArray[np.uint8]
RED, GREEN, CYAN, YELLOW = (0, 0, 255), (0, 255, 0), (255, 255, 0), (0, 255, 255)


def draw(image: U8, counter: MotionCounter) -> U8:
    """``image`` (the video frame) with the counter's mask, detections, tracks and lines drawn on."""
    out = image.copy()
    H, W = out.shape[:2]
    s = counter._scale
    x0, y0, x1, y1 = counter._crop
    assert counter.last_mask is not None, "draw after process()"
    work = np.zeros((round(H / s), round(W / s)), np.uint8)
    work[y0:y1, x0:x1] = counter.last_mask
    fg = cv2.resize(work, (W, H), interpolation=cv2.INTER_NEAREST) > 0
    out[fg] = (0.5 * out[fg] + (0, 0, 127)).astype(np.uint8)
    for ln in counter.lines:
        cv2.line(out, (round(ln.ax * s), round(ln.ay * s)), (round(ln.bx * s), round(ln.by * s)), RED, 1)
    for d in counter.last_detections:
        cv2.circle(out, (round(d.x * s), round(d.y * s)), 3, GREEN, -1)
    for tr in counter.tracks:
        p = (round(tr.x * s), round(tr.y * s))
        cv2.circle(out, p, 2, CYAN, -1)
        cv2.putText(out, str(tr.id), (p[0] + 3, p[1]), cv2.FONT_HERSHEY_SIMPLEX, 0.4, CYAN, 1)
    return out


def zone_box(counter: MotionCounter, W: int, H: int, margin: float = 0.1) -> tuple[int, int, int, int]:
    """The counter's zone box in video pixels, grown by ``margin`` of its size on each side."""
    s = counter._scale
    x0, y0, x1, y1 = (v * s for v in counter._crop)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(W, int(x1 + mx)), min(H, int(y1 + my)))


def sheet(video: Path, side: dict[str, Any], overrides: dict[str, Any], frames: list[int], cols: int = 4,
          zoom: float = 1.0, whole: bool = False) -> tuple[U8, list[str]]:
    """The contact sheet of ``frames`` (video frame indices) and one text line per frame.

    Each tile is the counter's zone (with a margin), or the whole frame when ``whole``."""
    want = set(frames)
    tiles: dict[int, U8] = {}
    lines: dict[int, str] = {}

    def after(counter: MotionCounter, frame: Frame) -> None:
        n, t = frame.index, frame.t
        if n not in want:
            return
        H, W = frame.image.shape[:2]
        bx0, by0, bx1, by1 = (0, 0, W, H) if whole else zone_box(counter, W, H)
        tile = draw(frame.image, counter)[by0:by1, bx0:bx1]
        if zoom != 1.0:
            big = cv2.resize(tile, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
            tile = np.asarray(big, np.uint8)
        cv2.putText(tile, f"{n}", (4, tile.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, YELLOW, 1)
        tiles[n] = tile
        s = counter._scale
        assert counter.last_mask is not None
        tracks = " ".join(f"{tr.id}@({tr.x * s:.0f},{tr.y * s:.0f})" for tr in counter.tracks)
        lines[n] = (f"frame {n} t={t:.2f} mask {int(np.count_nonzero(counter.last_mask))} px, "
                    f"{len(counter.last_detections)} found, tracks {tracks or '-'}")

    _, _, total, *_ = count_video(video, side, overrides, after_frame=after)
    missing = sorted(want - tiles.keys())
    if missing:
        raise SystemExit(f"{video.name} has no frame {missing[0]} (it has {total})")
    shown = [tiles[n] for n in frames]
    blank = np.zeros_like(shown[0])
    shown += [blank] * (-len(shown) % cols)
    rows = [np.hstack(shown[k:k + cols]) for k in range(0, len(shown), cols)]
    return np.vstack(rows), [lines[n] for n in frames]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--frames", required=True, help="video frame indices, comma-separated")
    ap.add_argument("--out", type=Path, required=True, help="the sheet (PNG)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--zoom", type=float, default=1.0, help="scale each tile by this much")
    ap.add_argument("--whole", action="store_true", help="whole frames, not the zone")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    side = json.loads(args.video.with_suffix(".json").read_text())
    overrides = parse_sets(args.set)
    frames = [int(f) for f in args.frames.split(",") if f.strip()]
    if not frames:
        raise SystemExit("--frames lists no frame")
    img, lines = sheet(args.video, side, overrides, frames, cols=args.cols, zoom=args.zoom,
                       whole=args.whole)
    if not cv2.imwrite(str(args.out), img):
        raise SystemExit(f"cannot write {args.out}")
    print("\n".join(lines))
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]})")


if __name__ == "__main__":
    main()
