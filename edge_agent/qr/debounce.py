"""Turn per-frame reads into presentations: one scan per code per showing, on frame time."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

# Frame times are sums of floats (index / fps); a gap meant to equal quiet_s may land a hair below.
_EPS = 1e-9


class Debouncer:
    """A code is a new scan when first seen, or seen again after being absent for >= ``quiet_s``.

    "Absent for" is measured between frame times: the gap from the last frame that showed the code
    to the frame that shows it again. With ``max_hold_s``, a code held continuously that long
    counts again (unattended kiosks); by default a held code is one scan however long.
    """

    def __init__(self, quiet_s: float, max_hold_s: float | None = None) -> None:
        self.quiet_s = quiet_s
        self.max_hold_s = max_hold_s
        self._first: dict[Hashable, float] = {}
        self._last: dict[Hashable, float] = {}

    def update(self, t: float, keys: Iterable[Hashable]) -> list[Hashable]:
        """Keys shown at frame time ``t``; returns those that start a new scan, in input order."""
        new: list[Hashable] = []
        for key in dict.fromkeys(keys):
            last = self._last.get(key)
            returned = last is None or t - last >= self.quiet_s - _EPS
            hold = self.max_hold_s
            held_long = not returned and hold is not None and t - self._first[key] >= hold - _EPS
            if returned or held_long:
                self._first[key] = t
                new.append(key)
            self._last[key] = t
        self._forget(t)
        return new

    def _forget(self, t: float) -> None:
        # Codes gone longer than the quiet window behave as never seen; drop them to bound memory.
        stale = [k for k, last in self._last.items() if t - last >= self.quiet_s - _EPS and last != t]
        for k in stale:
            del self._last[k]
            del self._first[k]
