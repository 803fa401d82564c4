"""Could the area that flows through the line count a crowd? Flux per true crossing, per video.

The line flux (`flux: true`, edge_agent/footfall/flux.py) sums the foreground area that crosses
the line each way, whatever the blobs look like. If one person's crossing always swept about the
same area, total flux / that area would count crowds that the tracker merges. This prints, for
every video of DIR (sidecars as bench/footfall.py reads them): the true crossings each way, the
flux each way (px^2 on the working image) and the flux per true crossing; then, as the last line,
one JSON object with the mean and the coefficient of variation of the flux per crossing over the
videos with at least MIN true crossings that way. A coefficient of variation of c means that even
a perfectly calibrated unit would miscount a typical video by about c.

    .venv/bin/python bench/footfall_flux_totals.py /tmp/oxall --min 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.camera.base import Frame

VIDEO_EXT = {".mpg", ".mpeg", ".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


def _footfall() -> ModuleType:
    """bench/footfall.py, whose sidecar reading and counter set-up this shares."""
    spec = importlib.util.spec_from_file_location("bench_footfall", Path(__file__).with_name("footfall.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def flux_of(path: Path, side: dict[str, Any]) -> tuple[float, float, float]:
    """(flux in, flux out, the size model's box area at the line at the end), working pixels."""
    cap, fps, counter = _footfall().open_video(path, side, {"flux": True})
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        counter.process(Frame(np.asarray(img, np.uint8), n / fps, n))
        n += 1
    counter.flush()
    pos = sum(ev.pos for _, ev, _, _ in counter.flux_events)
    neg = sum(ev.neg for _, ev, _, _ in counter.flux_events)
    ln = counter.lines[0]
    assert counter.sizes is not None
    y = 0.5 * (ln.ay + ln.by)
    return pos, neg, counter.sizes.height(y) * counter.sizes.width(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--min", type=int, default=5,
                    help="videos with fewer true crossings that way are left out")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    per: dict[str, list[float]] = {"in": [], "out": []}
    for path in sorted(p for p in args.dir.iterdir() if p.suffix.lower() in VIDEO_EXT):
        side = json.loads(path.with_suffix(".json").read_text())
        pos, neg, box = flux_of(path, side)
        row = (f"{path.name:40s} true {side['true_in']:3d} / {side['true_out']:3d}"
               f"   flux {pos:7.0f} / {neg:7.0f}")
        for d, true, flux in (("in", side["true_in"], pos), ("out", side["true_out"], neg)):
            if true:
                row += f"   {d} {flux / true:6.0f} px2 each"
            if true >= args.min:
                per[d].append(flux / true)
        print(row + f"   (size model box {box:.0f} px2)", flush=True)
    out: dict[str, object] = {}
    for d, v in per.items():
        if len(v) >= 2:
            mean = statistics.fmean(v)
            out[d] = {"videos": len(v), "mean_px2": round(mean, 1),
                      "cv": round(statistics.stdev(v) / mean, 3),
                      "min_px2": round(min(v), 1), "max_px2": round(max(v), 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
