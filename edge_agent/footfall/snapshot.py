"""One camera frame with the counting lines, 'in' arrows and zone drawn on it, for the installer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from device_configs.footfall import FootfallConfig
from edge_agent.camera.base import CameraError, FrameSource
from edge_agent.footfall.geometry import Line


def draw_overlay(image: npt.NDArray[np.uint8], cfg: FootfallConfig) -> npt.NDArray[np.uint8]:
    img = np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy(), np.uint8)
    h, w = img.shape[:2]
    thick = max(1, w // 320)
    if cfg.zone is not None:
        pts = np.array([[x * w, y * h] for x, y in cfg.zone], np.int32)
        cv2.polylines(img, [pts], True, (0, 200, 255), thick, cv2.LINE_AA)
    for lc in cfg.lines:
        ln = Line.from_config(lc, w, h)
        a, b = (int(ln.ax), int(ln.ay)), (int(ln.bx), int(ln.by))
        cv2.line(img, a, b, (0, 0, 255), thick * 2, cv2.LINE_AA)
        mx, my = (ln.ax + ln.bx) / 2, (ln.ay + ln.by) / 2
        reach = 0.15 * min(w, h)
        # The arrow points the way an entering person walks.
        cv2.arrowedLine(img, (int(mx), int(my)), (int(mx + ln.nx * reach), int(my + ln.ny * reach)),
                        (0, 255, 0), thick * 2, cv2.LINE_AA, tipLength=0.3)
        cv2.putText(img, f"{lc.id}: in", (int(mx + ln.nx * reach) + 4, int(my + ln.ny * reach)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (0, 255, 0), thick, cv2.LINE_AA)
    return img


def save_snapshot(source: FrameSource, cfg: FootfallConfig, out_path: str | Path, *, skip: int = 5) -> Path:
    """Grab a frame (after ``skip`` frames, so auto-exposure settles), draw, write ``out_path``."""
    out = Path(out_path)
    source.open()
    try:
        frame = None
        for _ in range(skip + 1):
            nxt = source.read()
            if nxt is None:
                break
            frame = nxt
        if frame is None:
            raise CameraError("camera delivered no frame")
    finally:
        source.close()
    if not cv2.imwrite(str(out), draw_overlay(frame.image, cfg)):
        raise OSError(f"cannot write {out}")
    return out
