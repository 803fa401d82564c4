"""Why did the counter miss a walker's crossing? Trace one video's tracks round each error.

Counts VIDEO (with its sidecar, as bench/footfall.py does) while recording every track's anchor on
every frame, matches the counted crossings to the sidecar's per-walker ``events`` and then, for each
missed true crossing, prints the tracks that came within MATCH_H of the walker's body height of
where they crossed in the seconds round it: their path (time, position, signed distance from the
line in person heights, whether a detection was matched that frame) and the crossings they counted.
Each extra counted crossing gets its track's path too. A sidecar without per-walker events (the CAVIAR
clips) can be traced with ``--window T0 T1``: every track seen in those seconds is printed.

    .venv/bin/python bench/footfall_trace.py /tmp/ffscenes/oxford_0750_1500.mp4 --set 'finder="points"'
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.footfall import MATCH_H, count_video, pair_events, parse_sets
from edge_agent.camera.base import Frame
from edge_agent.footfall.counter import Crossing, MotionCounter

# (t, x, y, signed distance in person heights, seen this frame)
Point = tuple[float, float, float, float, bool]


def trace(video: Path, side: dict, overrides: dict) -> tuple[dict[int, list[Point]], list[Crossing]]:
    paths: dict[int, list[Point]] = defaultdict(list)

    def record(counter: MotionCounter, frame: Frame) -> None:
        t = frame.t
        s = counter._scale
        ln = counter.lines[0]
        for tr in counter.tracks:
            d = ln.signed_distance(tr.x, tr.y) / max(counter._sizes.height(tr.y), 1.0)
            paths[tr.id].append((t, tr.x * s, tr.y * s, d, tr.last_seen >= t))

    *_, events = count_video(video, side, overrides, after_frame=record)
    return paths, [c for _, c in events]


def unmatched(true: list[list], counted: list[Crossing]) -> tuple[list[int], list[int]]:
    """Indices of the true crossings and of the counted ones that ``pair_events`` left unpaired."""
    pairs = pair_events(true, counted)
    used_t, used_c = {i for i, _ in pairs}, {j for _, j in pairs}
    return ([i for i in range(len(true)) if i not in used_t],
            [j for j in range(len(counted)) if j not in used_c])


def show_path(tid: int, path: list[Point], crossings: list[Crossing], t0: float, t1: float) -> None:
    mine = [c for c in crossings if c.track == tid]
    print(f"  track {tid}: {path[0][0]:.2f}-{path[-1][0]:.2f} s, counted "
          + (", ".join(f"{c.direction}@{c.crossed_t:.2f}" for c in mine) or "nothing"))
    step = max(1, len(path) // 40)
    row = []
    for i, (t, x, y, d, seen) in enumerate(path):
        if t0 <= t <= t1 and (i % step == 0 or not seen):
            row.append(f"{t:.2f}:({x:.0f},{y:.0f}){d:+.2f}{'' if seen else '*'}")
    for k in range(0, len(row), 6):
        print("    " + "  ".join(row[k:k + 6]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--around", type=float, default=2.0, help="seconds of path shown round each error")
    ap.add_argument("--window", type=float, nargs=2, metavar=("T0", "T1"),
                    help="print every track seen between T0 and T1 seconds instead of the errors")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    side = json.loads(args.video.with_suffix(".json").read_text())
    if "events" not in side and args.window is None:
        raise SystemExit(f"{args.video.with_suffix('.json')} lists no per-walker events; use --window T0 T1")
    overrides = parse_sets(args.set)
    paths, crossings = trace(args.video, side, overrides)
    if args.window is not None:
        t0, t1 = args.window
        print(f"{args.video.name}: counted " + (", ".join(
            f"{c.direction}@{c.crossed_t:.2f} (track {c.track})" for c in crossings) or "nothing"))
        print("(* = no detection that frame; distance from the line in person heights, + = the in side)")
        for tid, path in sorted(paths.items()):
            if any(t0 <= t <= t1 for t, *_ in path):
                show_path(tid, path, crossings, t0, t1)
        return
    missed, extra = unmatched(side["events"], crossings)
    print(f"{args.video.name}: {len(side['events'])} true crossings, {len(crossings)} counted, "
          f"missed {len(missed)}, extra {len(extra)}")
    print("(* = no detection that frame; distance from the line in person heights, + = the in side)")
    for i in missed:
        tt, tx, ty, th, td, *first = side["events"][i]
        t_first = first[0] if first else tt
        t0, t1 = t_first - args.around, tt + args.around
        print(f"MISSED {td} at t={tt:.2f} (first {t_first:.2f}) x={tx:.0f} y={ty:.0f} h={th:.0f}")
        for tid, path in sorted(paths.items()):
            near = any(t0 <= t <= t1 and math.hypot(x - tx, y - ty) <= MATCH_H * th for t, x, y, _, _ in path)
            if near:
                show_path(tid, path, crossings, t0, t1)
    for j in extra:
        c = crossings[j]
        print(f"EXTRA {c.direction} track {c.track} at t={c.crossed_t:.2f} x={c.x:.0f} y={c.y:.0f}")
        show_path(c.track, paths[c.track], crossings, c.crossed_t - args.around, c.crossed_t + args.around)


if __name__ == "__main__":
    main()
