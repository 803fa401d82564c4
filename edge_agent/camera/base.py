"""The one interface every frame source implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


class CameraError(Exception):
    """The source cannot deliver frames (cannot open, unplugged, stream dropped)."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: npt.NDArray[np.uint8]  # BGR (H, W, 3) or grayscale (H, W)
    t: float  # seconds: media time for files and simulations, wall time for live cameras
    index: int  # frame number from the source, so gaps (dropped frames) are visible


class FrameSource(Protocol):
    name: str

    def open(self) -> None:
        """Open the source; raise CameraError when it cannot be opened."""

    def read(self) -> Frame | None:
        """Next frame, blocking; None at the end of a finite source; CameraError on failure."""

    def close(self) -> None: ...
