"""Render the simulated footfall scenes into OUT_DIR as videos + sidecars for bench/footfall.py.

Scripted door scenarios (clean and perturbed, two seeds) and Oxford Town Centre trajectory
replays (real walking, in 30 s clips). Videos are written outside the repository; never commit them.

    .venv/bin/python bench/render_footfall_scenes.py /tmp/footfall_scenes
    .venv/bin/python bench/footfall.py /tmp/footfall_scenes

A held-out set (scenes no default run shows, for checking that a change generalises):

    .venv/bin/python bench/render_footfall_scenes.py /tmp/footfall_holdout --first-seed 2 \
        --oxford-offset 300 --oxford-clip-frames 600

The Oxford counts move by several per clip with the render seed alone (looks and noise of the same
trajectories), so also check a change on other renders of the same clips:

    .venv/bin/python bench/render_footfall_scenes.py /tmp/footfall_ox7 --no-door --oxford-seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.sim.footfall_scene import HARD, SCENARIOS, Scene, SceneCamera, door_scene
from edge_agent.sim.oxford import load_boxes, oxford_scene

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "footfall" / "oxford_towncentre"


def write(scene: Scene, out: Path, video: bool = True) -> None:
    if video:
        render(scene, out)
    t_in, t_out = scene.truth()
    x1, y1, x2, y2 = scene.line
    # Each walker's net crossing with its time and place: bench/footfall.py matches the counted
    # crossings to these, so a miss and an extra in one clip show as two errors, not as none.
    events = [[round(e.t, 3), round(e.x, 1), round(e.y, 1), round(e.h, 1), e.direction, round(e.first_t, 3)]
              for e in scene.truth_events()]
    (out / f"{scene.name}.json").write_text(json.dumps(
        {"line": [round(x1), round(y1), round(x2), round(y2)], "in": scene.in_direction,
         "true_in": t_in, "true_out": t_out, "events": events}))
    print(f"{scene.name}: in {t_in} out {t_out}", flush=True)


def render(scene: Scene, out: Path) -> None:
    cam = SceneCamera(scene)
    cam.open()
    path = out / f"{scene.name}.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), scene.fps, (scene.width, scene.height))
    if not vw.isOpened():
        raise SystemExit(f"cannot write {path}")
    last = None
    while (f := cam.read()) is not None:
        # A dropped frame is repeated in the file (a real encoder keeps the time base).
        while last is not None and last.index + 1 < f.index:
            vw.write(last.image)
            last = type(f)(last.image, last.t, last.index + 1)
        vw.write(f.image)
        last = f
    vw.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first..first+seeds-1 (e.g. 2 for scenes the default set never shows)")
    ap.add_argument("--no-oxford", action="store_true")
    ap.add_argument("--oxford-clip-frames", type=int, default=750)
    ap.add_argument("--oxford-offset", type=int, default=0,
                    help="first frame of the first Oxford clip (other offsets/lengths give other clips)")
    ap.add_argument("--oxford-seed", type=int, default=0,
                    help="added to each Oxford clip's render seed: same trajectories, other looks and noise")
    ap.add_argument("--no-door", action="store_true", help="Oxford replays only")
    ap.add_argument("--sidecars-only", action="store_true",
                    help="rewrite only the JSON sidecars of a folder rendered with the same options")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    h = round(args.width * 9 / 16)
    for seed in range(args.first_seed, args.first_seed + (0 if args.no_door else args.seeds)):
        for name in SCENARIOS:
            for tag, pert in (("clean", None), ("hard", HARD)):
                sc = door_scene(name, width=args.width, height=h, seed=seed, perturb=pert)
                sc.name = f"door_{name}_{tag}_s{seed}"
                write(sc, args.out, not args.sidecars_only)
    if not args.no_oxford:
        top = DATA / "TownCentre-groundtruth.top"
        if not top.exists():
            raise SystemExit(f"{top} not found (shared data absent); use --no-oxford")
        boxes = load_boxes(top)
        last = max(f for frames in boxes.values() for f in frames)
        step = args.oxford_clip_frames
        for a in range(args.oxford_offset, last - step // 2, step):
            write(oxford_scene(boxes, a, min(a + step, last), width=args.width, seed=a + args.oxford_seed),
                  args.out, not args.sidecars_only)


if __name__ == "__main__":
    main()
