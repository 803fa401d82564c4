"""Optional learned person detector (a YOLO-style ONNX model the user supplies).

Nothing is downloaded: with ``kind: none`` (the default) the counter relies on motion alone. A
model file, when configured, is run through OpenCV's DNN module every n-th frame and its person
boxes replace the motion hypotheses for that frame.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from device_configs.footfall import DetectorConfig
from edge_agent.footfall.blobs import Detection


class PersonDetector(Protocol):
    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection] | None:
        """Person boxes in the given (working-resolution) image; None when it cannot tell."""
        ...


class OnnxPersonDetector:
    """YOLOv5/v8 style output: rows of (cx, cy, w, h, [objectness], class scores...); class 0 = person."""

    def __init__(self, cfg: DetectorConfig) -> None:
        assert cfg.model_path is not None  # enforced by DetectorConfig
        self.cfg = cfg
        self.net = cv2.dnn.readNetFromONNX(cfg.model_path)

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection] | None:
        size = self.cfg.input_size
        h, w = image.shape[:2]
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
        self.net.setInput(blob)
        out = np.asarray(self.net.forward())
        rows = out[0]
        if rows.shape[0] < rows.shape[1]:  # v8 layout is (84, N)
            rows = rows.T
        # v5 rows carry objectness then class scores; v8 rows carry class scores only.
        score = rows[:, 4] * rows[:, 5] if rows.shape[1] == 85 else rows[:, 4]
        keep = score >= self.cfg.score_threshold
        boxes = rows[keep, :4]
        scores = score[keep]
        sx, sy = w / size, h / size
        rects = [[float((cx - bw / 2) * sx), float((cy - bh / 2) * sy), float(bw * sx), float(bh * sy)]
                 for cx, cy, bw, bh in boxes]
        idx = cv2.dnn.NMSBoxes(rects, scores.astype(float).tolist(), self.cfg.score_threshold, 0.45)
        dets = []
        for i in np.asarray(idx).reshape(-1):
            x, y, bw, bh = rects[int(i)]
            dets.append(Detection(x + bw / 2, y + bh, bw, bh, 1))
        return dets


def make_detector(cfg: DetectorConfig) -> PersonDetector | None:
    if cfg.kind == "none":
        return None
    return OnnxPersonDetector(cfg)
