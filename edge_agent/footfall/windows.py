"""Footfall windows: counts per line plus the coverage that tells 'no visitors' from 'camera down'."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.wire import FootfallPayload


def window_start(now: float, window_s: float) -> float:
    """Windows are aligned to the epoch, so every store's 10:01 window means the same minute."""
    return math.floor(now / window_s) * window_s


@dataclass
class Window:
    start: float  # epoch seconds
    length: float
    lines: list[str]
    counts: dict[str, list[int]] = field(default_factory=dict)  # line -> [in, out]
    frames_processed: int = 0
    frames_dropped: int = 0
    seconds_live: float = 0.0

    def __post_init__(self) -> None:
        for ln in self.lines:
            self.counts.setdefault(ln, [0, 0])

    def add(self, line: str, direction: str) -> None:
        c = self.counts.setdefault(line, [0, 0])
        c[0 if direction == "in" else 1] += 1

    def payloads(self, camera: str, min_coverage: float) -> list[FootfallPayload]:
        live = min(self.seconds_live, self.length)
        covered = self.frames_processed > 0 and live >= min_coverage * self.length
        start = datetime.fromtimestamp(self.start, UTC)
        return [
            FootfallPayload(
                camera=camera, line=ln, window_start=start, window_s=self.length, in_count=c[0],
                out_count=c[1], covered=covered, seconds_live=round(live, 3),
                frames_processed=self.frames_processed, frames_dropped=self.frames_dropped,
            )
            for ln, c in self.counts.items()
        ]
