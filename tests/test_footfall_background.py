"""Background model: what a light switching on must and must not turn into foreground."""

from __future__ import annotations

import numpy as np

from edge_agent.footfall.background import GHOST_MATCH, BackgroundModel


def _scene() -> np.ndarray:
    img = np.full((60, 80, 3), 120, np.uint8)
    img[10:20, 50:70] = (170, 180, 245)  # a bright sign (BGR): its red channel clips when lit 1.35x
    return img


def _lit(img: np.ndarray, gain: float) -> np.ndarray:
    return np.asarray(np.clip(img.astype(np.float32) * gain, 0, 255), np.uint8)


def _mask_after_light_step(saturation_level: int) -> np.ndarray:
    bg = BackgroundModel(saturation_level=saturation_level)
    for _ in range(30):
        bg.apply(_scene())
    frame = _lit(_scene(), 1.35)
    frame[30:55, 10:20] = (40, 40, 50)  # a dark-clad person
    return bg.apply(frame)


def test_saturated_sign_is_not_foreground_after_a_light_step_but_a_person_is() -> None:
    mask = _mask_after_light_step(235)
    assert mask[10:20, 50:70].sum() == 0
    assert mask[30:55, 10:20].mean() > 200


def test_without_the_saturation_rule_the_clipped_sign_reads_darker_and_becomes_foreground() -> None:
    # Guards the test above: the scene really does clip (otherwise it would pass vacuously).
    mask = _mask_after_light_step(256)  # 256: no 8-bit value counts as clipped
    assert mask[11:19, 51:69].mean() > 200  # (the outermost pixels match their 3x3 neighbourhood)


def test_a_cast_shadow_is_not_foreground_but_a_person_of_the_same_brightness_is() -> None:
    bg = BackgroundModel()
    for _ in range(30):
        bg.apply(_scene())
    frame = _scene()
    frame[30:55, 10:20] = (84, 84, 84)  # shadow: 0.7x the floor in every channel, chroma unchanged
    frame[30:55, 40:48] = (60, 84, 110)  # a person's coat, about as bright but another hue
    mask = bg.apply(frame)
    assert mask[30:55, 10:20].sum() == 0
    assert mask[31:54, 41:47].min() == 255


def test_a_shadow_counts_as_foreground_when_the_shadow_rule_is_out_of_its_range() -> None:
    # Guards the test above: the shadow is far enough from the background to pass the threshold.
    bg = BackgroundModel()
    for _ in range(30):
        bg.apply(_scene())
    frame = _scene()
    frame[30:55, 10:20] = (36, 36, 36)  # 0.3x: darker than any shadow the rule accepts (0.45-0.92)
    mask = bg.apply(frame)
    assert mask[31:54, 11:19].min() == 255


def _stood(ghost_match: float = GHOST_MATCH) -> BackgroundModel:
    """A background model that has watched someone stand still at one spot long enough (150 frames)
    to be half learned."""
    bg = BackgroundModel(ghost_match=ghost_match)
    for _ in range(30):
        bg.apply(_scene())
    still = _scene()
    still[30:55, 10:20] = (40, 40, 50)
    for _ in range(150):
        bg.apply(still)
    return bg


def _stood_then_left(ghost_match: float = GHOST_MATCH) -> tuple[BackgroundModel, np.ndarray]:
    """... and the mask of the frame after they walked on."""
    bg = _stood(ghost_match)
    left = _scene()
    left[30:55, 40:48] = (60, 84, 110)  # someone else, elsewhere, in the same frame
    return bg, bg.apply(left)


def test_the_place_someone_stood_is_not_foreground_once_they_walk_on() -> None:
    bg, mask = _stood_then_left()
    assert mask[30:55, 10:20].sum() == 0
    assert bg.ghosts == 1
    assert mask[31:54, 41:47].min() == 255  # the other person is untouched
    # and the place is learned at once: the next empty frame shows nothing there either
    assert bg.apply(_scene())[30:55, 10:20].sum() == 0


def test_without_the_ghost_test_the_place_someone_stood_stays_foreground() -> None:
    # Guards the test above: after 150 still frames the background really holds half the person.
    bg, mask = _stood_then_left(ghost_match=2.0)  # no blob can match more than all of itself
    assert mask[31:54, 11:19].min() == 255
    assert bg.ghosts == 0


def test_someone_new_on_the_spot_where_another_stood_is_foreground() -> None:
    bg = _stood()
    other = _scene()
    other[30:55, 10:20] = (200, 60, 60)  # another person steps on the same spot
    mask = bg.apply(other)
    assert mask[31:54, 11:19].min() == 255
    assert bg.ghosts == 0


def test_a_bag_left_in_view_of_a_noisy_camera_fades_into_the_background() -> None:
    # The noise (sigma 7) lifts the detection threshold to ~50; judged at the configured 18, two noisy
    # frames would differ "by motion" on most pixels (after the 3x3 spread) and the bag would stay.
    rng = np.random.default_rng(0)

    def noisy(img: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(img + rng.normal(0, 7, img.shape), 0, 255), np.uint8)

    bg = BackgroundModel()
    for _ in range(100):
        bg.apply(noisy(_scene()))
    with_bag = _scene()
    with_bag[35:50, 20:35] = (20, 20, 20)
    first = bg.apply(noisy(with_bag))
    assert first[37:48, 22:33].mean() > 200  # it is foreground when it appears
    for _ in range(600):
        mask = bg.apply(noisy(with_bag))
    assert mask[35:50, 20:35].mean() < 10
