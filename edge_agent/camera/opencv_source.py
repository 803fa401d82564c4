"""OpenCV VideoCapture as a FrameSource: device index, RTSP/HTTP URL or video file."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge_agent.camera.base import CameraError, Frame

log = logging.getLogger(__name__)


def redact(target: int | str) -> str:
    """A loggable name for a capture target: never the credentials a URL may carry."""
    if isinstance(target, int):
        return f"device:{target}"
    parts = urlsplit(target)
    if parts.scheme and parts.hostname:
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    return target


class OpenCvSource:
    def __init__(
        self,
        target: int | str,
        *,
        is_file: bool = False,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        self._target = target
        self._is_file = is_file
        self._loop = loop
        self._width = width
        self._height = height
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._t_offset = 0.0  # media time carried across loops so t never goes backwards
        self.name = redact(target)

    def open(self) -> None:
        cap = cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open {self.name}")
        if self._width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
        if self._height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.name} is not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            if not self._is_file:
                raise CameraError(f"{self.name} stopped delivering frames")
            if not self._loop:
                return None
            self._t_offset += self._media_t() + 0.001
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
            if not ok or image is None:
                return None
        t = self._t_offset + self._media_t() if self._is_file else time.time()
        frame = Frame(image=np.asarray(image, dtype=np.uint8), t=t, index=self._index)
        self._index += 1
        return frame

    def _media_t(self) -> float:
        assert self._cap is not None
        return float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
