"""How tall one person is at each image row, learned from the people the camera sees.

Perspective makes a person near the camera taller than one far away, roughly linearly in the
image row of the feet. The model keeps recent (feet row, height) pairs of blobs shaped like one
upright person and fits height = a + b * row, then refits on the samples within 25% of the fit
(iterated): the fit settles on the most common height at each row. Fragments (legs, a torso) are
shorter and people walking one behind the other are taller; each is a minority on either side,
so neither drags it. (Following the upper half of the heights instead learned 1.65x too tall on
crowded streets.) Which blobs may teach it is judged against the prior, never against the fit.
"""

from __future__ import annotations

from collections import deque

import numpy as np

TRIM = 0.25  # samples farther than this from the fit (relative) are left out of the next refit


class PersonSizeModel:
    def __init__(
        self, *, prior_height: float, prior_aspect: float, learn: bool = True, capacity: int = 400
    ) -> None:
        self.prior_height = prior_height
        self.aspect = prior_aspect
        self.learn = learn
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=capacity)
        self._a = prior_height
        self._b = 0.0
        self._since_fit = 0
        self._fits = 0

    def height(self, feet_y: float) -> float:
        h = self._a + self._b * feet_y
        # Never trust an extrapolation far from the prior: clamp to a factor of 2.5 either way.
        # (min/max of Python floats: np.clip on a scalar costs ~15x more, and this runs per blob.)
        return float(min(max(h, self.prior_height / 2.5), self.prior_height * 2.5))

    def width(self, feet_y: float) -> float:
        return self.height(feet_y) * self.aspect

    @property
    def fitted(self) -> bool:
        return self._fits > 0

    def plausible(self, feet_y: float, height: float) -> bool:
        """Could a blob this tall be one whole person? Judged against the prior, not the fit.

        Judging by the current fit would feed back: an early fit made from fragments (or from
        ghosts of people present in the first frame) would only ever see samples near itself.
        """
        del feet_y
        return self.prior_height / 2.5 < height < self.prior_height * 2.5

    def observe(self, feet_y: float, height: float, width: float) -> None:
        """Feed a blob that looks like one upright person (the caller checks its shape)."""
        if not self.learn:
            return
        self._samples.append((feet_y, height, width))
        self._since_fit += 1
        if len(self._samples) >= 30 and self._since_fit >= 10:
            self._fit()
            self._since_fit = 0

    def _fit(self) -> None:
        s = np.array(self._samples, np.float64)
        y, h, w = s[:, 0], s[:, 1], s[:, 2]
        keep = np.ones(len(s), bool)
        for _ in range(4):
            if np.ptp(y[keep]) > 0.5 * np.median(h[keep]):
                b, a = np.polyfit(y[keep], h[keep], 1)
                b = max(b, 0.0)  # people do not grow smaller towards the camera
            else:  # all seen at about one row: a constant height
                b, a = 0.0, float(np.median(h[keep]))
            fit = a + b * y
            nxt = np.abs(h - fit) < TRIM * fit
            if nxt.sum() < 10:
                break
            keep = nxt
        self._a, self._b = float(a), float(b)
        self._fits += 1
        self.aspect = float(np.clip(np.median(w / h), 0.2, 0.9))
