"""Footfall benchmark: count every video in DIR against its sidecar's true crossings.

Each NAME.<ext> needs NAME.json: {"line": [x1, y1, x2, y2], "in": "up"|"down"|"left"|"right",
"true_in": N, "true_out": N} (line in video pixels). Default settings otherwise. Single-threaded,
decoding included in ms per frame (wall clock) and cpu_ms_per_frame (this process's CPU time, the
figure to trust when other jobs share the cores). The last line printed is one JSON object with the totals.

A sidecar may also list each walker's net crossing, as bench/render_footfall_scenes.py writes it:
"events": [[t, x, y, h, "in"|"out", first_t], ...] (video seconds and pixels; h = the walker's body
height; first_t = their first crossing that way, t the last). Counted crossings are then matched to
them one to one, and each video's row ends with "events missed M extra E" (the JSON adds event_*).

    .venv/bin/python bench/footfall.py ../shared/data/footfall/caviar_front

A nested field is set whole, as a JSON object; e.g. the optional person detector (input_size must be
the model's own when it was exported with a fixed input shape):

    --set 'detector={"kind": "onnx", "model_path": "/path/model.onnx", "input_size": 640}'
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_configs.footfall import FootfallConfig, LineConfig
from edge_agent.camera.base import Frame
from edge_agent.footfall.counter import Crossing, MotionCounter

VIDEO_EXT = {".mpg", ".mpeg", ".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


def open_video(path: Path, side: dict, overrides: dict) -> tuple[cv2.VideoCapture, float, MotionCounter]:
    """The video, its frame rate, and a counter set up with the sidecar's line and the overrides."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    W = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    H = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    x1, y1, x2, y2 = side["line"]
    line = LineConfig(id="door", x1=x1 / W, y1=y1 / H, x2=x2 / W, y2=y2 / H, in_direction=side["in"])
    cfg = FootfallConfig(camera=path.stem[:64], lines=[line], **overrides)
    return cap, fps, MotionCounter(cfg)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options (VALUE in JSON) as FootfallConfig overrides."""
    return {k: json.loads(v) for k, v in (s.split("=", 1) for s in items)}


def count_video(
    path: Path, side: dict, overrides: dict, resize: tuple[int, int] | None = None,
    after_frame: Callable[[MotionCounter, Frame], None] | None = None,
):
    """Count one video; ``after_frame(counter, frame)`` runs after each frame with the frame the
    counter was given (diagnostics, untimed use only: it runs inside the timed loop)."""
    cap, fps, counter = open_video(path, side, overrides)
    n_in = n_out = 0
    events = []
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if resize is not None:
            img = cv2.resize(img, resize, interpolation=cv2.INTER_AREA)
        frame = Frame(img, n / fps, n)
        for c in counter.process(frame):
            events.append((n, c))
        if after_frame is not None:
            after_frame(counter, frame)
        n += 1
    events += [(n, c) for c in counter.flush()]
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    n_in = sum(1 for _, c in events if c.direction == "in")
    n_out = sum(1 for _, c in events if c.direction == "out")
    return n_in, n_out, n, elapsed, cpu, events


# A counted crossing is the true one of a walker when it goes the same way, from MATCH_EARLY_S
# before the walker first crossed that way to MATCH_LATE_S after they last did, and within MATCH_H of
# the walker's body heights of where they crossed. Later than earlier: the true time is when the feet
# went over the line, the counted one when the track left the dead band round it.
MATCH_EARLY_S = 1.5
MATCH_LATE_S = 3.0
MATCH_H = 0.6


def pair_events(true: list[list], counted: list[Crossing]) -> list[tuple[int, int]]:
    """Counted crossings paired one to one with true ones, nearest first: (true index, counted index).

    ``true`` holds the sidecar's ``events`` rows [t, x, y, h, direction, first_t] (video time and
    pixels).
    """
    pairs = []
    for i, (tt, tx, ty, th, td, *first) in enumerate(true):
        t_first = first[0] if first else tt
        for j, c in enumerate(counted):
            if c.direction != td:
                continue
            early, late = t_first - c.crossed_t, c.crossed_t - tt
            dist = math.hypot(c.x - tx, c.y - ty)
            if early <= MATCH_EARLY_S and late <= MATCH_LATE_S and dist <= MATCH_H * th:
                off = max(0.0, late) / MATCH_LATE_S + max(0.0, early) / MATCH_EARLY_S
                pairs.append((off + dist / (MATCH_H * th), i, j))
    pairs.sort()
    used_t: set[int] = set()
    used_c: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i not in used_t and j not in used_c:
            used_t.add(i)
            used_c.add(j)
            out.append((i, j))
    return out


def match_events(true: list[list], counted: list[Crossing]) -> tuple[int, int, int]:
    """(matched, missed, extra) of ``pair_events``.

    The per-direction totals let a miss and an extra in one video cancel; this does not.
    """
    m = len(pair_events(true, counted))
    return m, len(true) - m, len(counted) - m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a FootfallConfig field (JSON value), for tuning experiments; a nested "
                         "one is set whole: detector={\"kind\": \"onnx\", \"model_path\": ...}")
    ap.add_argument("--resize", default=None, help="WxH: resize every frame before counting (speed tests)")
    ap.add_argument("--events", action="store_true", help="print each counted crossing")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    overrides = parse_sets(args.set)
    resize = tuple(int(v) for v in args.resize.split("x")) if args.resize else None
    tot = {"videos": 0, "true_in": 0, "true_out": 0, "counted_in": 0, "counted_out": 0, "missed": 0,
           "extra": 0, "exact_videos": 0}
    err_in = err_out = 0
    ev = {"event_videos": 0, "event_true": 0, "event_matched": 0, "event_missed": 0, "event_extra": 0}
    frames = 0
    seconds = 0.0
    cpu_s = 0.0
    videos = sorted(p for p in args.dir.iterdir() if p.suffix.lower() in VIDEO_EXT)
    for v in videos:
        sidecar = v.with_suffix(".json")
        if not sidecar.exists():
            continue
        side = json.loads(sidecar.read_text())
        c_in, c_out, n, el, cpu, events = count_video(v, side, overrides, resize)
        t_in, t_out = side["true_in"], side["true_out"]
        tot["videos"] += 1
        tot["true_in"] += t_in
        tot["true_out"] += t_out
        tot["counted_in"] += c_in
        tot["counted_out"] += c_out
        tot["missed"] += max(0, t_in - c_in) + max(0, t_out - c_out)
        tot["extra"] += max(0, c_in - t_in) + max(0, c_out - t_out)
        err_in += abs(c_in - t_in)
        err_out += abs(c_out - t_out)
        exact = c_in == t_in and c_out == t_out
        tot["exact_videos"] += exact
        frames += n
        seconds += el
        cpu_s += cpu
        matched = ""
        if "events" in side:
            m, miss, extra = match_events(side["events"], [c for _, c in events])
            ev["event_videos"] += 1
            ev["event_true"] += len(side["events"])
            ev["event_matched"] += m
            ev["event_missed"] += miss
            ev["event_extra"] += extra
            matched = f"  events missed {miss} extra {extra}"
        print(f"{v.name:40s} in {c_in:3d}/{t_in:<3d} out {c_out:3d}/{t_out:<3d} "
              f"{'ok ' if exact else 'ERR'} {1000 * el / max(n, 1):6.2f} ms/frame ({n} frames){matched}")
        if args.events:
            for i, c in events:
                print(f"    frame {i:5d} {c.direction:3s} track {c.track} crossed at t={c.crossed_t:.2f} "
                      f"x={c.x:.0f} y={c.y:.0f}")
    tot["accuracy_in"] = round(1 - err_in / tot["true_in"], 4) if tot["true_in"] else None
    tot["accuracy_out"] = round(1 - err_out / tot["true_out"], 4) if tot["true_out"] else None
    tot["ms_per_frame"] = round(1000 * seconds / max(frames, 1), 3)
    # CPU time of this (single-threaded) process: what the counter costs when other jobs share the cores
    tot["cpu_ms_per_frame"] = round(1000 * cpu_s / max(frames, 1), 3)
    if ev["event_videos"]:
        tot |= ev
        tot["event_recall"] = round(ev["event_matched"] / max(ev["event_true"], 1), 4)
        n_counted = ev["event_matched"] + ev["event_extra"]
        tot["event_precision"] = round(ev["event_matched"] / n_counted, 4) if n_counted else None
    print(json.dumps(tot))


if __name__ == "__main__":
    main()
