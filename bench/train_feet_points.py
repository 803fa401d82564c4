"""Train the footfall counter's feet-point detector on simulated scenes only, and export it to ONNX.

The network reads the counter's zone: its signed colour difference from the background model and
its foreground mask, at the working resolution. It returns, every 4 pixels, a score that a person's
feet are there, the sub-cell offset of the feet and the log of the person's height: the people of a
merged blob, one by one. It is trained on what
the simulator knows exactly (every walker's feet and height at every frame), rendered with seeds the
benchmarks never use: the scripted door scenes (seeds 100+) and synthetic street crowds
(``edge_agent/sim/crowd.py``), and optionally door scenes whose threshold is a dark strip walked by
people in dark trousers (``--sill-seeds``: legs that vanish between a body seen above the strip and
feet seen below it, as in front of a real shop's kick plate). The Oxford Town Centre trajectories
and CAVIAR are never seen, so they stay held-out tests. Training needs PyTorch (a development tool,
not a runtime dependency):

    .venv/bin/pip install torch==2.13.0
    .venv/bin/python bench/train_feet_points.py data /tmp/fpdata --door-seeds 100:112 --crowds 100:160
    .venv/bin/python bench/train_feet_points.py train /tmp/fpdata edge_agent/footfall/models/feet_points.onnx

The samples go through the counter's own background model and mask cleaning (``MotionCounter``), so
the network sees the masks it will see at run time: ghosts, shadows, light steps and all.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_configs.footfall import FootfallConfig, LineConfig
from edge_agent.footfall.counter import MotionCounter
from edge_agent.footfall.points import STRIDE, net_input
from edge_agent.sim.crowd import street_crowd_scene
from edge_agent.sim.footfall_scene import (
    HARD,
    SCENARIOS,
    Look,
    Perturb,
    Scene,
    SceneCamera,
    door_scene,
    draw_person,
)

VISIBLE = 0.3  # a walker at least this visible is a positive
IGNORE = 0.08  # between IGNORE and VISIBLE: neither positive nor negative


def counter_for(scene: Scene) -> MotionCounter:
    x1, y1, x2, y2 = scene.line
    W, H = scene.width, scene.height
    line = LineConfig(id="door", x1=x1 / W, y1=y1 / H, x2=x2 / W, y2=y2 / H, in_direction=scene.in_direction)
    return MotionCounter(FootfallConfig(camera="train", lines=[line]))


def visibility(scene: Scene, t: float) -> list[tuple[float, float, float, float]]:
    """(x, y, h, visible fraction) of every walker in view at camera time t, in frame pixels."""
    label = np.zeros((scene.height, scene.width, 3), np.uint8)
    drawn = []
    for k, x, y, h, phase in SceneCamera(scene).people(t):  # as the camera draws them, in its order
        look = _id_look(k, scene.walkers[k].look)
        draw_person(label, x, y, h, look=look, phase=phase)
        # Alone on a canvas of its own: how many pixels the walker has when nobody hides them.
        ox, oy = int(x - 0.8 * h), int(y - 1.1 * h)
        canvas = np.zeros((int(1.3 * h) + 4, int(1.7 * h) + 4, 3), np.uint8)
        draw_person(canvas, x - ox, y - oy, h, look=look, phase=phase)
        drawn.append((x, y, h, k, int(_is(canvas, k).sum())))
    return [(x, y, h, int(_is(label, k).sum()) / alone if alone else 0.0) for x, y, h, k, alone in drawn]


def _id_look(k: int, look: Look) -> Look:
    c = (255, k // 256, k % 256)
    return Look(c, c, c, look.scale, look.girth, look.stride_hz)


def _is(img: np.ndarray, k: int) -> np.ndarray:
    return (img[..., 0] == 255) & (img[..., 1] == k // 256) & (img[..., 2] == k % 256)


def scene_samples(scene: Scene, every: int, skip_s: float = 2.0) -> list[dict]:
    counter = counter_for(scene)
    cam = SceneCamera(scene)
    cam.open()
    out = []
    while (frame := cam.read()) is not None:
        counter.process(frame)
        if frame.t < skip_s or frame.index % every:
            continue
        x0, y0, x1, y1 = counter._crop
        s = counter._scale
        people = []
        for x, y, h, vis in visibility(scene, frame.t):
            xw, yw, hw = x / s - x0, y / s - y0, h / s
            if -2 <= xw < x1 - x0 + 2 and -2 <= yw < y1 - y0 + 2:
                people.append((xw, yw, hw, vis))
        bg = counter._bg
        assert bg.last_frame is not None and bg.background is not None
        # Stored halved in int8 (uint8 crops times two would not fit in memory at float32).
        diff = np.clip(np.rint((bg.last_frame - bg.background) / 2), -127, 127).astype(np.int8)
        out.append({"diff": diff, "mask": counter.last_mask.copy(), "people": people})
    return out


def cmd_data(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = _door_jobs("door", door_scene, args.door_seeds)
    if args.sill_seeds:
        jobs += _door_jobs("sill", sill_door_scene, args.sill_seeds)
    a, b = (int(v) for v in args.crowds.split(":"))
    jobs += [(f"crowd_s{seed}", street_crowd_scene(seed=seed)) for seed in range(a, b)]
    for i, (_, scene) in enumerate(jobs):
        if args.carry > 0:
            add_carried(scene, args.carry, seed=30_000 + i)
        if args.neutral > 0:
            add_neutral(scene, args.neutral, seed=40_000 + i)
    if args.shard is not None:
        k, n = (int(v) for v in args.shard.split("/"))
        jobs = jobs[k::n]
    t0 = time.time()
    for i, (name, scene) in enumerate(jobs):
        path = out / f"{name}.pkl"
        if path.exists():
            continue
        samples = scene_samples(scene, args.every)
        with path.open("wb") as f:
            pickle.dump(samples, f, protocol=pickle.HIGHEST_PROTOCOL)
        print(f"{i + 1}/{len(jobs)} {name}: {len(samples)} samples ({time.time() - t0:.0f} s)", flush=True)


def _door_jobs(kind: str, make: Callable[..., Scene], seeds: str) -> list[tuple[str, Scene]]:
    """Every scripted scenario, clean and HARD, for each seed of ``first:last``."""
    a, b = (int(v) for v in seeds.split(":"))
    return [
        (f"{kind}_{sc}_{'hard' if hard else 'clean'}_s{seed}",
         make(sc, seed=seed, perturb=HARD if hard else Perturb()))
        for seed in range(a, b) for sc in SCENARIOS for hard in (False, True)
    ]


def add_carried(scene: Scene, share: float, *, seed: int) -> None:
    """Give ``share`` of the scene's walkers a bag or a cart (trolley, pushchair, bicycle) beside
    them: not a person, so never a feet point, however much it differs from the background (on the
    real Oxford frames the network trained without them tracked points on a shopping bag and a
    bicycle as people; docs/footfall.md, session 17)."""

    def carry(rng: np.random.Generator, look: Look) -> Look:
        kind = "bag" if rng.random() < 0.6 else "cart"
        r, g, b = (int(c) for c in rng.integers(20, 240, 3))
        return dataclasses.replace(look, carry=(kind, (r, g, b), 1 if rng.random() < 0.5 else -1))

    _restyle(scene, np.random.default_rng(seed), share, carry)


def add_neutral(scene: Scene, share: float, *, seed: int) -> None:
    """Dress ``share`` of the scene's walkers in neutral colours of any lightness (black, grey,
    beige, white trousers; half of them a neutral top too). Real clothes are mostly such; the
    simulator's greys are dark. On a pale floor a mid-grey or pale leg darkens every channel by a
    similar factor, as a shadow does, and the mask's shadow test drops it: it took CAVIAR's legs for
    shadows (docs/footfall.md, session 18, where this option was measured and not taken)."""

    def neutral(rng: np.random.Generator) -> tuple[int, int, int]:
        v = int(rng.integers(20, 236))
        b, g, r = (int(np.clip(v + int(t), 0, 255)) for t in rng.integers(-8, 9, 3))
        return (b, g, r)

    def dress(rng: np.random.Generator, look: Look) -> Look:
        shirt = neutral(rng) if rng.random() < 0.5 else look.shirt
        return dataclasses.replace(look, trousers=neutral(rng), shirt=shirt)

    _restyle(scene, np.random.default_rng(seed), share, dress)


def _restyle(scene: Scene, rng: np.random.Generator, share: float,
             change: Callable[[np.random.Generator, Look], Look]) -> None:
    """Each walker, with probability ``share`` (drawn from ``rng``), gets the look ``change`` makes
    of theirs (drawing from the same ``rng``)."""
    for w in scene.walkers:
        if rng.random() < share:
            w.look = change(rng, w.look)


def sill_door_scene(scenario: str, *, seed: int, perturb: Perturb) -> Scene:
    """A door scene whose threshold is a dark strip (a sill or the shop front's kick plate) on a
    floor of any brightness, walked by people who mostly wear dark trousers: legs that vanish in
    front of the strip between a body seen above it and feet seen below it, as at real shop doors.
    """
    rng = np.random.default_rng(10_000 + seed)
    scene = door_scene(scenario, seed=seed, perturb=perturb)
    img = scene.background.astype(np.float32)  # type: ignore[union-attr]
    H, ly = scene.height, int(scene.line[1])
    img[ly:] *= float(rng.uniform(0.4, 1.5))  # the floor: dark stone to bright tiles
    top = ly - int(rng.uniform(0.0, 0.06) * H)
    bottom = ly + int(rng.uniform(0.01, 0.06) * H)
    v = float(rng.uniform(12, 60))
    img[top:bottom] = np.array([v, v * float(rng.uniform(0.9, 1.1)), v * float(rng.uniform(0.9, 1.2))])
    img[top:bottom] += rng.normal(0, 2.5, img[top:bottom].shape)
    scene.background = np.clip(img, 0, 255).astype(np.uint8)

    def dark_trousers(rng: np.random.Generator, look: Look) -> Look:
        d = int(rng.integers(10, 60))
        dark = (d, d + int(rng.integers(-5, 6)), d + int(rng.integers(0, 10)))
        return dataclasses.replace(look, trousers=dark)

    _restyle(scene, rng, 0.6, dark_trousers)
    return scene


# --- the network ---------------------------------------------------------------------------------


def build_net():  # type: ignore[no-untyped-def]
    import torch.nn as nn

    def dw(ci: int, co: int, d: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(ci, ci, 3, padding=d, dilation=d, groups=ci, bias=False), nn.BatchNorm2d(ci), nn.ReLU(),
            nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(),
        )

    return nn.Sequential(
        nn.Conv2d(4, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        dw(32, 48, 1), dw(48, 48, 2), dw(48, 48, 4), dw(48, 48, 8), dw(48, 48, 2), dw(48, 48, 1),
        nn.Conv2d(48, 4, 1),
    )


def sample_input(diff8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The network's input from a stored sample, exactly as points.py builds it at run time."""
    return net_input(diff8.astype(np.float32) * 2, mask)


def targets(people: list, h: int, w: int) -> tuple[np.ndarray, ...]:
    """Heatmap, weight, offsets, log-height and where they apply, on the stride-4 grid."""
    gh, gw = (h + STRIDE - 1) // STRIDE, (w + STRIDE - 1) // STRIDE
    heat = np.zeros((gh, gw), np.float32)
    weight = np.ones((gh, gw), np.float32)
    reg = np.zeros((3, gh, gw), np.float32)
    on = np.zeros((gh, gw), np.float32)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for x, y, ph, vis in people:
        cx, cy = x / STRIDE - 0.5, y / STRIDE - 0.5  # cell centres sit at (i + 0.5) * STRIDE
        sigma = max(0.6, 0.07 * ph / STRIDE)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
        if vis >= VISIBLE and 0 <= x < w and 0 <= y < h:
            heat = np.maximum(heat, g)
            i, j = int(cy + 0.5), int(cx + 0.5)
            i, j = min(max(i, 0), gh - 1), min(max(j, 0), gw - 1)
            reg[:, i, j] = (cx - j, cy - i, math.log(max(ph, 2.0) / 32.0))
            on[i, j] = 1.0
            heat[i, j] = 1.0
        elif vis >= IGNORE:
            weight[g > 0.3] = 0.0
    return heat, weight, reg, on


def load_samples(folder: Path) -> list[dict]:
    samples = []
    for p in sorted(folder.glob("*.pkl")):
        with p.open("rb") as f:
            samples += pickle.load(f)
    return samples


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    legs = (args.legs_gone, args.legs_top, args.legs_band)
    mask_drop = args.mask_drop
    samples = load_samples(Path(args.data))
    print(f"{len(samples)} samples, {sum(len(s['people']) for s in samples)} people", flush=True)
    ph_, pw_ = args.patch_h, args.patch_w
    prepared = []
    for s in samples:  # int8 until a patch is drawn: float32 inputs would not fit in memory
        prepared.append(((s["diff"], s["mask"], s["people"]), targets(s["people"], *s["mask"].shape)))
    net = build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    t0 = time.time()
    for step in range(args.steps):
        xb, hb, wb, rb, ob = [], [], [], [], []
        for k in rng.integers(0, len(prepared), args.batch):
            x, (heat, weight, reg, on) = prepared[int(k)]
            x, heat, weight, reg, on = _patch(rng, x, heat, weight, reg, on, ph_, pw_, legs)
            if mask_drop > 0:  # no extra draw when off: the same patches as before
                _degrade_mask(rng, x, mask_drop)
            x = _augment(rng, x)
            xb.append(x)
            hb.append(heat)
            wb.append(weight)
            rb.append(reg)
            ob.append(on)
        X = torch.from_numpy(np.stack(xb))
        out = net(X)
        loss_h, loss_r = _loss(out, *(torch.from_numpy(np.stack(v)) for v in (hb, wb, rb, ob)))
        loss = loss_h + loss_r
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} heat {loss_h.item():.4f} reg {loss_r.item():.4f} ({time.time() - t0:.0f} s)",
                  flush=True)
    net.eval()
    torch.save(net.state_dict(), Path(args.out).with_suffix(".pt"))
    export(net, Path(args.out))


def _patch(rng, x, heat, weight, reg, on, ph_, pw_, legs):  # type: ignore[no-untyped-def]
    """A random patch (cell-aligned), padded with 'nothing here' when the crop is smaller."""
    diff, mask, people = x
    gh, gw = ph_ // STRIDE, pw_ // STRIDE
    i0 = int(rng.integers(0, max(1, heat.shape[0] - gh + 1)))
    j0 = int(rng.integers(0, max(1, heat.shape[1] - gw + 1)))
    X = np.zeros((4, ph_, pw_), np.float32)
    rows = slice(i0 * STRIDE, i0 * STRIDE + ph_)
    cols = slice(j0 * STRIDE, j0 * STRIDE + pw_)
    xs = sample_input(diff[rows, cols], mask[rows, cols])
    X[:, : xs.shape[1], : xs.shape[2]] = xs
    _vanish_legs(rng, X, people, rows.start, cols.start, legs)
    H = np.zeros((gh, gw), np.float32)
    Wt = np.zeros((gh, gw), np.float32)
    R = np.zeros((3, gh, gw), np.float32)
    On = np.zeros((gh, gw), np.float32)
    hs = heat[i0 : i0 + gh, j0 : j0 + gw]
    H[: hs.shape[0], : hs.shape[1]] = hs
    Wt[: hs.shape[0], : hs.shape[1]] = weight[i0 : i0 + gh, j0 : j0 + gw]
    R[:, : hs.shape[0], : hs.shape[1]] = reg[:, i0 : i0 + gh, j0 : j0 + gw]
    On[: hs.shape[0], : hs.shape[1]] = on[i0 : i0 + gh, j0 : j0 + gw]
    if rng.random() < 0.5:  # mirror: people walk both ways
        X, H, Wt, R, On = X[:, :, ::-1], H[:, ::-1], Wt[:, ::-1], R[:, :, ::-1].copy(), On[:, ::-1]
        R[0] = np.where(On > 0, -R[0], 0.0)
    return (np.ascontiguousarray(X), np.ascontiguousarray(H), np.ascontiguousarray(Wt),
            np.ascontiguousarray(R), np.ascontiguousarray(On))


def _vanish_legs(rng, X, people, r0, c0, legs):  # type: ignore[no-untyped-def]
    """Dark trousers on a dark floor: fade some walkers' legs out of the difference and the mask,
    so the feet are placed from the body above them and the person's height (real door cameras).

    ``legs``: (share of walkers faded, top of the fade in body heights above the feet, share of the
    faded ones whose shoes stay: legs in front of a dark strip such as a kick plate vanish between
    a body seen above and feet seen below). The defaults (0.25, 0.55, 0) made the shipped model."""
    p, top_max, band_p = legs
    for x, y, ph, vis in people:
        if vis < VISIBLE or rng.random() > p:
            continue
        top = int(y - float(rng.uniform(0.3, top_max)) * ph) - r0
        low = y + 0.05 * ph
        if band_p > 0 and rng.random() >= 1 - band_p:  # no extra draw when off: same patches as before
            low = y - float(rng.uniform(0.05, 0.2)) * ph
        a, b = int(x - 0.3 * ph) - c0, int(x + 0.3 * ph) - c0
        rs, cs = slice(max(0, top), max(0, int(low) - r0)), slice(max(0, a), max(0, b))
        X[:3, rs, cs] *= float(rng.uniform(0.0, 0.35))
        if rng.random() < 0.7:
            X[3, rs, cs] = 0.0


def _degrade_mask(rng, X, p):  # type: ignore[no-untyped-def]
    """A foreground mask that lost what the colour difference still shows (real cameras).

    On noisy footage (MPEG-1 at 384x288) the background model's threshold follows the noise, so a
    pale person on a pale floor keeps a torso in the mask and loses the legs, although they stand
    out in the difference. With probability ``p`` the patch's mask keeps only pixels whose strongest
    channel difference exceeds a random level (1 time in 4: no mask at all), so the network learns
    to read people from the difference itself."""
    if rng.random() >= p:
        return
    if rng.random() < 0.25:
        X[3] = 0.0
        return
    level = float(rng.uniform(0.05, 0.3))
    X[3] *= np.abs(X[:3]).max(axis=0) >= level


def _augment(rng, x):  # type: ignore[no-untyped-def]
    """Other cameras and scenes: contrast, colour cast, noise, a channel order shuffle."""
    c = x[:3] * float(rng.uniform(0.6, 1.4)) * rng.uniform(0.85, 1.15, (3, 1, 1)).astype(np.float32)
    if rng.random() < 0.3:  # soft, low-resolution cameras (MPEG-1 at 384x288)
        sigma = float(rng.uniform(0.4, 1.0))
        c = np.stack([cv2.GaussianBlur(ch, (0, 0), sigma) for ch in c])
    c = c + rng.normal(0, float(rng.uniform(0, 0.03)), c.shape).astype(np.float32)
    if rng.random() < 0.3:
        c = c[rng.permutation(3)]
    x = x.copy()
    x[:3] = np.clip(c, -1, 1)
    return x


def _loss(out, heat, weight, reg, on):  # type: ignore[no-untyped-def]
    import torch

    p = torch.sigmoid(out[:, 0]).clamp(1e-4, 1 - 1e-4)
    pos = heat >= 1.0
    neg_w = (1 - heat) ** 4
    l_pos = -((1 - p) ** 2) * torch.log(p) * pos
    l_neg = -(p**2) * torch.log(1 - p) * neg_w * (~pos)
    n = pos.sum().clamp(min=1)
    loss_h = ((l_pos + l_neg) * weight).sum() / n
    loss_r = (torch.nn.functional.smooth_l1_loss(out[:, 1:4], reg, reduction="none").sum(1) * on).sum() / n
    return loss_h, loss_r


def export(net, path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net, torch.zeros(1, 4, 128, 320), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}, opset_version=13, dynamo=False,
    )
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="render training scenes and store crops, masks and truth")
    d.add_argument("out")
    d.add_argument("--door-seeds", default="100:112", help="first:last seed (last excluded) of door scenes")
    d.add_argument("--crowds", default="100:160", help="first:last seed of street crowd scenes")
    d.add_argument("--sill-seeds", default="", help="first:last seed of door scenes on a dark sill")
    d.add_argument("--carry", type=float, default=0.0,
                   help="share of walkers who carry a bag or push a cart (add_carried)")
    d.add_argument("--neutral", type=float, default=0.0,
                   help="share of walkers dressed in neutral colours of any lightness (add_neutral)")
    d.add_argument("--every", type=int, default=3, help="keep every n-th frame")
    d.add_argument("--shard", help="k/n: only every n-th scene from the k-th (run n processes)")
    t = sub.add_parser("train", help="train on a data folder and export ONNX")
    t.add_argument("data")
    t.add_argument("out")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--patch-h", type=int, default=96)
    t.add_argument("--patch-w", type=int, default=160)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0, help="weights and patch draws (0 made the shipped model)")
    t.add_argument("--mask-drop", type=float, default=0.0,
                   help="share of patches whose mask loses what the difference shows weakly (_degrade_mask)")
    t.add_argument("--legs-gone", type=float, default=0.25, help="share of walkers whose legs are faded")
    t.add_argument("--legs-top", type=float, default=0.55,
                   help="the fade starts up to this many body heights above the feet")
    t.add_argument("--legs-band", type=float, default=0.0,
                   help="share of the faded walkers whose shoes stay visible (a dark strip behind the legs)")
    args = ap.parse_args()
    {"data": cmd_data, "train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
    main()
