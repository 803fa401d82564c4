"""Score the footfall counter on several video folders at several operating points.

One setting of the counter can be lucky: moving the foreground threshold by 3% moves the total
error over the benchmark sets by about as much as most real changes do (docs/footfall.md,
session 8). This runs `bench/footfall.py` on every folder at every operating point and prints, per
point and per folder, the errors (sum over videos of |counted - true|, in and out), split into door
clips (every video not named "oxford_*", so CAVIAR's clips too) and Oxford replays, and the exact
videos; where the sidecars list each walker's crossing (`events`, written by
bench/render_footfall_scenes.py), also the matched-event errors (missed + extra crossings, which
cannot cancel within a video) for door clips and Oxford replays; then the mean over the points.
The last line printed is one JSON object with all of it.

    .venv/bin/python bench/footfall_sweep.py ../shared/data/footfall/caviar_front /tmp/ffscenes \\
        --point fg_threshold=17.5 --point '' --point fg_threshold=18.5 --jobs 2

A point is a space-separated list of KEY=VALUE overrides as `bench/footfall.py --set` takes them
('' = the defaults). `--code DIR` scores the checkout in DIR instead of this one (A/B of a scratch
copy against the same folders).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROW = re.compile(r"^(\S+)\s+in\s+(\d+)/(\d+)\s+out\s+(\d+)/(\d+)\s+(ok|ERR)")
EVENTS = re.compile(r"events missed (\d+) extra (\d+)$")
DEFAULT_POINTS = ["fg_threshold=17.5", "", "fg_threshold=18.5"]
KEYS = ("errors", "door", "oxford", "exact", "ev_door", "ev_oxford")


def run(code: Path, folder: Path, point: str) -> dict:
    cmd = [sys.executable, str(code / "bench" / "footfall.py"), str(folder)]
    for kv in point.split():
        cmd += ["--set", kv]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    door = oxford = exact = videos = 0
    ev_door = ev_oxford = 0  # matched-event errors (missed + extra crossings), where sidecars have events
    rows = []
    for line in out.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        name = m.group(1)
        c_in, t_in, c_out, t_out = (int(m.group(i)) for i in (2, 3, 4, 5))
        err = abs(c_in - t_in) + abs(c_out - t_out)
        videos += 1
        exact += err == 0
        ev = EVENTS.search(line)
        ev_err = int(ev.group(1)) + int(ev.group(2)) if ev else 0
        if name.startswith("oxford_"):
            oxford += err
            ev_oxford += ev_err
        else:
            door += err
            ev_door += ev_err
        rows.append({"video": name, "in": [c_in, t_in], "out": [c_out, t_out], "event_errors": ev_err})
    summary = json.loads(out.strip().splitlines()[-1])
    return {"folder": str(folder), "point": point, "errors": door + oxford, "door": door,
            "oxford": oxford, "exact": exact, "videos": videos, "ev_door": ev_door, "ev_oxford": ev_oxford,
            "cpu_ms_per_frame": summary.get("cpu_ms_per_frame"), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--point", action="append", default=None,
                    help="KEY=VALUE overrides separated by spaces; '' = defaults (repeatable; default: "
                         "fg_threshold 17.5, 18, 18.5)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each is single-threaded)")
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                    help="checkout whose counter is scored")
    ap.add_argument("--rows", action="store_true", help="print every video's counts")
    args = ap.parse_args()
    points = args.point if args.point is not None else DEFAULT_POINTS
    jobs = [(d, p) for p in points for d in args.dirs]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda job: run(args.code, *job), jobs))
    by_point: dict[str, list[dict]] = {p: [] for p in points}
    for r in results:
        by_point[r["point"]].append(r)
    print(f"{'point':24s} {'folder':40s} {'errors':>6s} {'door':>5s} {'oxford':>6s} {'exact':>9s} "
          f"{'ev_door':>7s} {'ev_ox':>6s}")
    totals = {}
    for p, rs in by_point.items():
        for r in rs:
            print(f"{p or '(defaults)':24s} {r['folder'][-40:]:40s} {r['errors']:6d} {r['door']:5d} "
                  f"{r['oxford']:6d} {r['exact']:4d}/{r['videos']:<4d} {r['ev_door']:7d} {r['ev_oxford']:6d}")
            if args.rows:
                for row in r["rows"]:
                    print(f"    {row['video']:40s} in {row['in'][0]}/{row['in'][1]} "
                          f"out {row['out'][0]}/{row['out'][1]} events {row['event_errors']}")
        totals[p] = {k: sum(r[k] for r in rs) for k in KEYS}
        t = totals[p]
        print(f"{p or '(defaults)':24s} {'TOTAL':40s} {t['errors']:6d} {t['door']:5d} {t['oxford']:6d} "
              f"{t['exact']:4d}      {t['ev_door']:7d} {t['ev_oxford']:6d}")
    n = len(points)
    mean = {k: round(sum(t[k] for t in totals.values()) / n, 2) for k in KEYS}
    print(json.dumps({"points": {p or "(defaults)": t for p, t in totals.items()}, "mean": mean,
                      "per_folder": [{k: r[k] for k in ("folder", "point", *KEYS, "videos",
                                                        "cpu_ms_per_frame")} for r in results]}))


if __name__ == "__main__":
    main()
