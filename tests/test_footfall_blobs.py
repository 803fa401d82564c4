"""How many people a merged blob holds: width against one person, heads on its upper outline."""

from __future__ import annotations

import numpy as np

from edge_agent.footfall.blobs import _count_heads, estimate_people


def _outline(heads: list[int], width: int, shoulders: float = 20.0, head_top: float = 5.0) -> np.ndarray:
    """Top row of a blob per column: shoulders everywhere, a 6-column head at each given column."""
    top = np.full(width, shoulders)
    for c in heads:
        top[c - 3 : c + 3] = head_top
    return top


def test_two_heads_on_a_wide_outline_are_two_peaks() -> None:
    assert _count_heads(_outline([12, 40], 52), person_w=20.0, person_h=60.0) == 2


def test_one_head_is_one_peak_and_a_flat_outline_none() -> None:
    assert _count_heads(_outline([20], 40), person_w=20.0, person_h=60.0) == 1
    assert _count_heads(np.full(40, 20.0), person_w=20.0, person_h=60.0) == 0


def test_heads_closer_than_half_a_person_width_count_once() -> None:
    # The second head starts 8 columns after the first: within the window of half a body width.
    assert _count_heads(_outline([14, 22], 40, head_top=5.0), person_w=40.0, person_h=60.0) == 1


def test_heads_break_a_tie_the_width_leaves_open() -> None:
    top = _outline([12, 40], 52)
    # 52 px at 30 px per person: 1.73 people by width alone rounds to 2 (int(1.73 + 0.3))
    assert estimate_people(52.0, top, person_w=30.0, person_h=60.0) == 2
    # 40 px is 1.33 people: the width says 1, two heads within width + 0.8 make it 2
    assert estimate_people(40.0, _outline([8, 31], 40), person_w=30.0, person_h=60.0) == 2
    # without the size model fitted only what is clearly wider than two people is split
    assert estimate_people(52.0, top, person_w=30.0, person_h=60.0, sure=False) == 1
