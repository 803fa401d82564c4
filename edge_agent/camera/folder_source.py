"""A folder of still images as a FrameSource (replaying captured frames, demos)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge_agent.camera.base import CameraError, Frame

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"})


class FolderSource:
    def __init__(self, path: str | Path, *, fps: float = 10.0, loop: bool = False) -> None:
        self._path = Path(path)
        self._fps = fps
        self._loop = loop
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self.name = f"folder:{self._path.name}"

    def open(self) -> None:
        if not self._path.is_dir():
            raise CameraError(f"{self._path} is not a folder")
        self._files = sorted(p for p in self._path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        self._pos = 0

    def read(self) -> Frame | None:
        while True:
            if self._pos >= len(self._files):
                if not self._loop or not self._files:
                    return None
                self._pos = 0
            path = self._files[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                # One corrupt file must not end the replay.
                log.warning("skipping unreadable image %s", path.name)
                continue
            frame = Frame(
                image=np.asarray(image, dtype=np.uint8), t=self._index / self._fps, index=self._index
            )
            self._index += 1
            return frame

    def close(self) -> None:
        self._files = []
