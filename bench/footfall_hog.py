"""How well OpenCV's HOG people detector finds people near a door line, and at what cost.

OpenCV 5 (the project's version) dropped the HOG people detector; OpenCV 4.x still ships it with
its trained weights inside the library, so it is the one person detector that needs nothing
downloaded. This measures whether it could feed the counter: recall and precision against the
Oxford Town Centre ground-truth boxes of people whose feet are near the line, and milliseconds per
frame of detection alone (one thread), on

- the real 1080p footage (../shared/data/footfall/oxford_towncentre, 126 frames, every 5th), and
- any Oxford replay rendered by bench/render_footfall_scenes.py (NAME = oxford_FIRST_LAST.mp4,
  640x360, every 10th frame from 2 s on), whose people follow the same ground truth.

It needs an OpenCV 4.x, e.g. in a scratch environment outside the project:

    python3 -m venv /tmp/cv4 && /tmp/cv4/bin/pip install "opencv-python-headless<5"
    /tmp/cv4/bin/python bench/footfall_hog.py --scale 0.4 0.6 --render /tmp/ffscenes/oxford_0750_1500.mp4

A detection matches a true box (one to one, best first) at IoU >= 0.4 after the 64x128 window's
margins are taken off. Detections whose bottom lies in the band but match nobody are false.
The last line printed is one JSON object with every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.sim.oxford import load_boxes  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "footfall" / "oxford_towncentre"
Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truth: list[Box], dets: list[Box], feet: tuple[float, float]) -> tuple[int, int, int]:
    """(true positives, misses, false detections with their bottom inside the feet band)."""
    pairs = sorted(((iou(g, d), i, j) for i, g in enumerate(truth) for j, d in enumerate(dets)), reverse=True)
    used_t: set[int] = set()
    used_d: set[int] = set()
    for v, i, j in pairs:
        if v < 0.4:
            break
        if i not in used_t and j not in used_d:
            used_t.add(i)
            used_d.add(j)
    fp = sum(1 for j, d in enumerate(dets) if j not in used_d and feet[0] <= d[3] <= feet[1])
    return len(used_t), len(truth) - len(used_t), fp


def run(video: Path, first: int, every: int, start: int, stop: int, px: float, band: tuple[int, int],
        feet: tuple[float, float], scale: float, hog: Any, boxes: dict[int, dict[int, Box]],
        ) -> dict[str, Any]:
    """px: video pixels per ground-truth pixel; band: rows of the video handed to the detector."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    tp = fn = fp = 0
    spent = 0.0
    frames = 0
    i = -1
    while True:
        ok, img = cap.read()
        i += 1
        if not ok or i >= stop:
            break
        if i < start or i % every:
            continue
        f = first + i
        truth: list[Box] = [(b[f][0] * px, b[f][1] * px, b[f][2] * px, b[f][3] * px)
                            for b in boxes.values() if f in b]
        W = img.shape[1]
        truth = [g for g in truth if feet[0] <= g[3] <= feet[1] and g[0] > 0 and g[2] < W]
        y0, y1 = band
        small = cv2.resize(img[y0:y1], None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        t0 = time.perf_counter()
        rects, _ = hog.detectMultiScale(small, hitThreshold=0, winStride=(8, 8), padding=(8, 8), scale=1.05)
        spent += time.perf_counter() - t0
        frames += 1
        dets: list[Box] = []
        for x, y, w, h in rects:
            bx0, by0, bx1, by1 = x / scale, y / scale + y0, (x + w) / scale, (y + h) / scale + y0
            mx, my = 0.16 * (bx1 - bx0), 0.08 * (by1 - by0)  # the window's margins round the body
            dets.append((bx0 + mx, by0 + my, bx1 - mx, by1 - my))
        a, b, c = match(truth, dets, feet)
        tp, fn, fp = tp + a, fn + b, fp + c
    return {
        "video": video.name, "scale": scale, "frames": frames, "true": tp + fn, "found": tp, "false": fp,
        "recall": round(tp / max(1, tp + fn), 3), "precision": round(tp / max(1, tp + fp), 3),
        "ms_per_frame": round(1000 * spent / max(1, frames), 1),
        "detector_input": f"{small.shape[1]}x{small.shape[0]}" if frames else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, nargs="+", default=[0.4, 0.6],
                    help="resize of the real 1080p band before detection (people are ~255 px tall there)")
    ap.add_argument("--render", type=Path, nargs="*", default=[], help="rendered Oxford replays (640x360)")
    ap.add_argument("--render-scale", type=float, nargs="+", default=[1.0, 1.4])
    args = ap.parse_args()
    if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):
        raise SystemExit(f"OpenCV {cv2.__version__} has no HOG people detector; run this with OpenCV 4.x")
    cv2.setNumThreads(1)
    cv4: Any = cv2  # the HOG names are not in OpenCV 5's type stubs
    hog = cv4.HOGDescriptor()
    hog.setSVMDetector(cv4.HOGDescriptor_getDefaultPeopleDetector())
    boxes = load_boxes(DATA / "TownCentre-groundtruth.top")
    results = []
    # Real footage: people with feet within ~0.8 of a body height of the line y=700 (1080p).
    for s in args.scale:
        r = run(DATA / "TownCentre_first126frames_1080p.mp4", 0, 5, 0, 126, 1.0, (300, 1080), (500, 900),
                s, hog, boxes)
        results.append(r)
        print(json.dumps(r), flush=True)
    for video in args.render:
        first = int(video.stem.split("_")[1])
        px = 640 / 1920
        fps = 25
        for s in args.render_scale:
            # The renders start with 1 s of empty street before the trajectories' first frame.
            r = run(video, first - fps, 10, 2 * fps, 25 * fps, px, (100, 360), (500 * px, 900 * px),
                    s, hog, boxes)
            results.append(r)
            print(json.dumps(r), flush=True)
    print(json.dumps({"opencv": cv2.__version__, "runs": results}))


if __name__ == "__main__":
    main()
