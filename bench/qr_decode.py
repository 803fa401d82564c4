"""Benchmark the QR decoder on a folder tree of images with ground truth.

Usage: .venv/bin/python bench/qr_decode.py DIR [--reps N]

Layout (zxing-cpp's regression samples): image ``N.png`` with ``N.txt`` beside it holding the
exact expected text (UTF-8; ``N.result.txt`` files are zxing metadata, not text); folders named
``falsepositives*`` hold images with no code; an image with several codes has
``NAME.expected.json`` = ``{"texts": [...]}`` instead, right only when every text is read and
nothing else. Images with no ground truth of their own are listed as skipped: in the zxing set
that is ``qrcode-7``, one structured-append message split over four symbols whose ground truth is
only the concatenation; the store agent reads single-symbol codes, so it is not scored.

Definitions: exact = the expected text is among the reads (single-code image) or the reads are
exactly the expected set (multi); wrong_text = a code image where something was read and none
of it is the expected text (multi: any read not expected); false_positives = no-code images
where anything was reported. Timings are single-threaded and include BGR->gray conversion.
frame_720p_nocode_ms: every no-code photo resized to 1280x720; frame_720p_code_ms: every code
image pasted at native size in the middle of such a frame. The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.qr.cascade import CascadeDecoder
from edge_agent.qr.decoded import Decoded

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm"}


def expected_for(img: Path) -> list[str] | None:
    """Expected texts, [] for a no-code image, None when there is no ground truth."""
    if any(part.startswith("falsepositives") for part in img.parent.parts):
        return []
    multi = img.with_name(img.stem + ".expected.json")
    if multi.exists():
        return [str(t) for t in json.loads(multi.read_text(encoding="utf-8"))["texts"]]
    txt = img.with_suffix(".txt")
    if txt.exists():
        return [txt.read_bytes().decode("utf-8")]
    return None


def read_text(d: Decoded) -> str:
    # Binary content has no text; compare its bytes as the ground truth's UTF-8 would hold them.
    return d.text if d.text is not None else d.raw.decode("utf-8", errors="replace")


def decode_timed(dec: CascadeDecoder, bgr: np.ndarray, reps: int) -> tuple[list[Decoded], float]:
    best = float("inf")
    reads: list[Decoded] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
        reads = dec.decode(gray)
        best = min(best, time.perf_counter() - t0)
    return reads, best * 1000.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--reps", type=int, default=3, help="timing repetitions per image (min is kept)")
    ap.add_argument("--verbose", action="store_true", help="print every miss")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    dec = CascadeDecoder()

    per_folder: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    image_ms: list[float] = []
    nocode_imgs: list[np.ndarray] = []
    code_imgs: list[np.ndarray] = []
    skipped: list[str] = []
    images = exact = wrong = fps = 0

    for img_path in sorted(p for p in args.dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        rel = str(img_path.relative_to(args.dir))
        folder = str(img_path.parent.relative_to(args.dir))
        expected = expected_for(img_path)
        if expected is None:
            skipped.append(f"{rel} (no ground truth)")
            continue
        bgr = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if bgr is None or min(bgr.shape[:2]) < 2:
            skipped.append(f"{rel} (unreadable image)")
            continue
        reads, ms = decode_timed(dec, bgr, args.reps)
        image_ms.append(ms)
        texts = [read_text(d) for d in reads]
        f = per_folder[folder]
        f["images"] += 1
        if not expected:
            nocode_imgs.append(bgr)
            if reads:
                fps += 1
                f["false_positives"] += 1
                print(f"FALSE POSITIVE {rel}: {texts!r}")
            continue
        code_imgs.append(bgr)
        images += 1
        if len(expected) == 1:
            ok = expected[0] in texts
            bad = bool(texts) and not ok
        else:
            ok = sorted(texts) == sorted(expected)
            bad = any(t not in expected for t in texts)
        if ok:
            exact += 1
            f["exact"] += 1
        if bad:
            wrong += 1
            f["wrong_text"] += 1
            print(f"WRONG TEXT {rel}: expected {expected!r}, read {texts!r}")
        elif not ok and args.verbose:
            print(f"miss {rel}")

    for folder in sorted(per_folder):
        f = per_folder[folder]
        print(
            f"{folder:24s} images={f['images']:4d} exact={f['exact']:4d} "
            f"wrong_text={f['wrong_text']} false_positives={f['false_positives']}"
        )
    for s in skipped:
        print(f"skipped {s}")

    nocode_ms, code_ms = frame_timings(dec, nocode_imgs, code_imgs, args.reps)
    summary = {
        "images": images,
        "exact": exact,
        "exact_rate": round(exact / images, 4) if images else 0.0,
        "wrong_text": wrong,
        "false_positives": fps,
        "median_ms": round(statistics.median(image_ms), 3) if image_ms else 0.0,
        "p95_ms": round(pct(image_ms, 95), 3),
        "frame_720p_nocode_ms": round(statistics.median(nocode_ms), 3) if nocode_ms else 0.0,
        "frame_720p_code_ms": round(statistics.median(code_ms), 3) if code_ms else 0.0,
    }
    print(json.dumps(summary))
    return 0


def frame_timings(
    dec: CascadeDecoder, nocode: list[np.ndarray], code: list[np.ndarray], reps: int
) -> tuple[list[float], list[float]]:
    backgrounds = [
        cv2.resize(b, (1280, 720), interpolation=cv2.INTER_AREA) for b in nocode if min(b.shape[:2]) > 16
    ]
    if not backgrounds:
        backgrounds = [np.full((720, 1280, 3), 128, np.uint8)]
    nocode_ms = [decode_timed(dec, bg, reps)[1] for bg in backgrounds]
    code_ms: list[float] = []
    for i, img in enumerate(code):
        frame = backgrounds[i % len(backgrounds)].copy()
        h, w = min(img.shape[0], 720), min(img.shape[1], 1280)
        y, x = (720 - h) // 2, (1280 - w) // 2
        frame[y : y + h, x : x + w] = img[:h, :w]
        code_ms.append(decode_timed(dec, frame, reps)[1])
    return nocode_ms, code_ms


if __name__ == "__main__":
    raise SystemExit(main())
