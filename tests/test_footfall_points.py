"""The feet-point finder: decoding its output, the shipped model on simulated scenes, its config."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from device_configs.footfall import FootfallConfig
from edge_agent.footfall.counter import MotionCounter
from edge_agent.footfall.points import HEIGHT_UNIT, SHIPPED_MODEL, STRIDE, FeetPointFinder, decode
from edge_agent.sim.crowd import street_crowd_scene
from edge_agent.sim.footfall_scene import Scene, SceneCamera, door_scene
from tests.test_footfall_counter import H, W, config, count
from tests.test_footfall_events import _bench

LOW = -6.0  # logit of a score near 0


def grid(gh: int = 10, gw: int = 12) -> np.ndarray:
    out = np.zeros((4, gh, gw), np.float32)
    out[0] = LOW
    return out


def test_decode_gives_one_detection_per_peak_with_offset_and_height() -> None:
    out = grid()
    out[0, 3, 4] = 3.0  # a peak ...
    out[0, 3, 5] = 1.0  # ... and a lower neighbour of it: not a second person
    out[1:, 3, 4] = (0.25, -0.5, math.log(40 / HEIGHT_UNIT))
    out[0, 7, 9] = 2.0
    out[1:, 7, 9] = (0.0, 0.0, 0.0)
    dets = sorted(decode(out, 0.4, 0.4, offset=(100, 50)), key=lambda d: d.x)
    assert len(dets) == 2
    a, b = dets
    assert (a.x, a.y) == pytest.approx((100 + (4 + 0.5 + 0.25) * STRIDE, 50 + (3 + 0.5 - 0.5) * STRIDE))
    assert a.h == pytest.approx(40.0)
    assert a.w == pytest.approx(16.0)
    assert (b.x, b.y, b.h) == pytest.approx((100 + 9.5 * STRIDE, 50 + 7.5 * STRIDE, HEIGHT_UNIT))


def test_decode_keeps_nothing_below_the_threshold() -> None:
    out = grid()
    out[0, 5, 5] = math.log(0.39 / 0.61)  # score 0.39
    assert decode(out, 0.4, 0.4) == []
    assert len(decode(out, 0.35, 0.4)) == 1


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        FeetPointFinder(tmp_path / "nope.onnx")
    cfg = FootfallConfig(camera="c", finder="points", points_model=str(tmp_path / "nope.onnx"))
    with pytest.raises(ValueError, match="not found"):
        MotionCounter(cfg)


def test_finder_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="finder"):
        FootfallConfig(camera="c", finder="heads")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="points_threshold"):
        FootfallConfig(camera="c", points_threshold=1.0)


def test_shipped_model_is_in_the_package() -> None:
    assert SHIPPED_MODEL.is_file()
    assert SHIPPED_MODEL.stat().st_size < 1_000_000  # small enough to ship with the agent


def test_shipped_model_finds_each_walker_of_a_side_by_side_pair() -> None:
    """Frame by frame on a clean scene: a point near each fully visible walker's feet, and no others."""
    sc = door_scene("pair_in", width=640, height=360, seed=1)
    counter = MotionCounter(FootfallConfig(camera="c", lines=config(sc).lines, person_height=0.28,
                                           finder="points"))
    cam = SceneCamera(sc)
    cam.open()
    hits = misses = extras = frames = 0
    while (f := cam.read()) is not None:
        counter.process(f)
        if f.t < 2.0 or f.index % 5:
            continue
        x0, y0, x1, y1 = counter._crop
        s = counter._scale
        truth = []
        for w in sc.walkers:
            p = w.path(f.t - sc.warmup_s)
            if p is not None and x0 + 10 <= p[0] / s < x1 - 10 and y0 + 5 <= p[1] / s < y1 - 5:
                truth.append((p[0] / s, p[1] / s, sc.body_height(w, f.t - sc.warmup_s, p[1]) / s))
        dets = list(counter.last_detections)
        frames += 1
        for x, y, h in truth:
            near = [d for d in dets if abs(d.x - x) < 0.2 * h and abs(d.y - y) < 0.2 * h]
            if near:
                hits += 1
                dets.remove(near[0])
            else:
                misses += 1
        extras += len(dets)
    assert frames > 20
    assert hits >= 0.9 * (hits + misses), (hits, misses)
    assert extras <= 0.1 * hits, (extras, hits)


def test_points_finder_counts_a_side_by_side_pair_as_two() -> None:
    """The case the width-based blob split gets wrong (test_footfall_counter's strict xfail)."""
    sc = door_scene("pair_out", width=W, height=H, seed=1)
    assert sc.truth() == (0, 2)
    cfg = config(sc).model_copy(update={"finder": "points"})
    assert count(sc, cfg) == (0, 2)


def test_crowd_scene_is_deterministic_and_busy() -> None:
    a, b = street_crowd_scene(seed=5), street_crowd_scene(seed=5)
    assert len(a.walkers) == len(b.walkers) > 10
    for t in (0.0, 5.0, 12.5):
        assert [w.path(t) for w in a.walkers] == [w.path(t) for w in b.walkers]
    assert np.array_equal(a.background, b.background)
    assert street_crowd_scene(seed=6).line != a.line  # the geometry varies between seeds
    in_, out = a.truth()
    assert in_ + out > 5


def test_switching_the_finder_live_takes_effect_without_losing_the_background() -> None:
    sc = door_scene("pair_out", width=W, height=H, seed=1)
    blobs = config(sc)
    counter = MotionCounter(blobs)
    cam = SceneCamera(sc)
    cam.open()
    crossings = []
    while (f := cam.read()) is not None:
        if f.t >= 1.0 and counter.cfg.finder == "blobs":  # the background is learned; people not in yet
            bg_before = counter._bg.background
            counter.reconfigure(blobs.model_copy(update={"finder": "points"}))
            assert counter._bg.background is bg_before
        crossings += counter.process(f)
    crossings += counter.flush()
    assert counter._points is not None
    assert [sum(c.direction == d for c in crossings) for d in ("in", "out")] == [0, 2]
    counter.reconfigure(counter.cfg.model_copy(update={"finder": "blobs"}))
    assert counter._points is None


def test_training_door_scenes_on_a_dark_sill_keep_the_truth_of_their_door_scene() -> None:
    train = _bench("train_feet_points")
    plain = door_scene("busy", seed=200)
    sill = train.sill_door_scene("busy", seed=200, perturb=plain.perturb)
    assert sill.truth() == plain.truth() and sill.truth_events() == plain.truth_events()
    ly = int(sill.line[1])
    assert sill.background is not None and plain.background is not None
    assert sill.background[ly].mean() < 70 < plain.background[ly].mean()  # a dark strip on the line
    # some walkers change into dark trousers; nothing else about anyone changes
    changed = [(a.look, b.look) for a, b in zip(sill.walkers, plain.walkers, strict=True) if a.look != b.look]
    assert len(changed) >= 3
    assert all(max(a.trousers) < 70 and a.shirt == b.shirt and a.scale == b.scale for a, b in changed)


class _ScriptedRng:
    """Stands in for numpy's Generator: ``random`` and ``uniform`` return the scripted values."""

    def __init__(self, randoms: list[float], uniforms: list[float] | None = None) -> None:
        self.randoms, self.uniforms = list(randoms), list(uniforms or [])

    def random(self) -> float:
        return self.randoms.pop(0)

    def uniform(self, lo: float, hi: float) -> float:
        return self.uniforms.pop(0)


def test_training_mask_degradation_drops_what_the_difference_shows_weakly() -> None:
    train = _bench("train_feet_points")
    x = np.zeros((4, 8, 8), np.float32)
    x[0, :, :4] = 0.5  # a strong difference (left half) ...
    x[1, :, 4:] = -0.1  # ... and a weak one (right half), both in the mask
    x[3] = 1.0
    kept = x.copy()
    train._degrade_mask(_ScriptedRng([0.5]), kept, 0.3)  # not drawn for this patch
    assert np.array_equal(kept, x)
    level = x.copy()
    train._degrade_mask(_ScriptedRng([0.1, 0.9], [0.2]), level, 0.3)  # level 0.2
    assert level[3, :, :4].all() and not level[3, :, 4:].any()
    assert np.array_equal(level[:3], x[:3])  # the difference itself is untouched
    gone = x.copy()
    train._degrade_mask(_ScriptedRng([0.1, 0.1]), gone, 0.3)  # no mask at all
    assert not gone[3].any() and np.array_equal(gone[:3], x[:3])


def _changed_for_training(scenario: str, change: str) -> tuple[Scene, Scene]:
    """A door scene as rendered, and the same scene after ``train_feet_points.<change>`` for every
    walker: the training options change how people look, never the truth."""
    plain = door_scene(scenario, seed=201)
    changed = door_scene(scenario, seed=201)
    getattr(_bench("train_feet_points"), change)(changed, 1.0, seed=5)
    assert changed.truth() == plain.truth() and changed.truth_events() == plain.truth_events()
    return plain, changed


def test_training_scenes_with_carried_things_keep_their_truth_and_draw_them() -> None:
    plain, carried = _changed_for_training("pair_in", "add_carried")
    kinds = [w.look.carry[0] for w in carried.walkers if w.look.carry is not None]
    assert len(kinds) == len(carried.walkers) == 2
    # nothing else about anyone changes
    assert all(dataclasses.replace(a.look, carry=None) == b.look
               for a, b in zip(carried.walkers, plain.walkers, strict=True))
    a, b = SceneCamera(carried), SceneCamera(plain)
    a.open()
    b.open()
    for _ in range(int(3.0 * plain.fps)):  # both walkers in view
        fa, fb = a.read(), b.read()
    assert fa is not None and fb is not None
    differ = np.abs(fa.image.astype(int) - fb.image.astype(int)).max(axis=2) > 30
    assert differ.sum() > 100  # the bags or carts are drawn ...
    assert all(w.look.carry is None for w in door_scene("pair_in", seed=201).walkers)  # ... only when added


def test_training_scenes_with_neutral_clothes_keep_their_truth_and_dress_walkers_in_greys() -> None:
    plain, dressed = _changed_for_training("group_in", "add_neutral")
    for a, b in zip(dressed.walkers, plain.walkers, strict=True):
        assert max(a.look.trousers) - min(a.look.trousers) <= 16  # a grey of some lightness
        assert a.look.trousers != b.look.trousers
        # nothing but the clothes changes
        assert dataclasses.replace(a.look, shirt=b.look.shirt, trousers=b.look.trousers) == b.look
    # of any lightness, not only the dark greys (20-90) of Look.random
    assert max(sum(w.look.trousers) / 3 for w in dressed.walkers) > 100
    none = door_scene("group_in", seed=201)
    _bench("train_feet_points").add_neutral(none, 0.0, seed=5)
    assert [w.look for w in none.walkers] == [w.look for w in plain.walkers]
