"""Real footage for bench/footfall.py: the 126 real frames of the Oxford Town Centre clip, one video
per counting line (rows 500, 550, ... 900 of the 1080p frame), with truth from the hand-labelled
boxes.

    .venv/bin/python bench/oxford_real_lines.py /tmp/ffreal
    .venv/bin/python bench/footfall.py /tmp/ffreal [--set 'finder="points"']

Each ``real_y<row>.mp4`` is a symlink to ../shared/data/footfall/oxford_towncentre's clip (nothing is
copied); its sidecar holds the line across the full width ("in" = up), the true counts and the
per-walker crossings (the trace tool reads them), computed by the simulator's own truth rule from the
labelled boxes (feet = bottom centre of the box). The truth at row 700 is the data README's: 0 up,
2 down.

What these clips are and are not: real people, real shadows, bags, a man pushing a bicycle; but only
5 seconds, with people in view from the first frame (the counter has no empty frames to learn the
street from, so its first second is a warm-up any counter gets wrong), and a labelled track starts
where its person came into view, so someone who steps out from behind the building at the right
edge already below a line crosses nothing in the truth. Read them as a small real check, beside
CAVIAR, not as a figure of their own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.render_footfall_scenes import DATA, write
from edge_agent.sim.oxford import load_boxes, oxford_scene

CLIP = "TownCentre_first126frames_1080p.mp4"
FRAMES = 126


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rows", default="500:901:50", help="first:last:step rows of the counting lines")
    args = ap.parse_args()
    clip = (args.data / CLIP).resolve()
    if not clip.is_file():
        raise SystemExit(f"{clip} not found (see ../shared/data/README.md)")
    boxes = load_boxes(args.data / "TownCentre-groundtruth.top")
    args.out.mkdir(parents=True, exist_ok=True)
    a, b, step = (int(v) for v in args.rows.split(":"))
    for row in range(a, b, step):
        scene = oxford_scene(boxes, 0, FRAMES, width=1920, line_y=float(row), name=f"real_y{row}")
        scene.warmup_s = 0.0  # the real clip starts at frame 0: no empty warm-up before it
        video = args.out / f"{scene.name}.mp4"
        if video.is_symlink() or video.exists():
            video.unlink()
        os.symlink(clip, video)
        write(scene, args.out, video=False)  # the sidecar, as for the rendered scenes


if __name__ == "__main__":
    main()
