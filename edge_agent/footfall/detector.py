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
    """YOLOv5/v8 style output: rows of (cx, cy, w, h, [objectness], class scores...); class 0 = person.

    Any number of classes in the v8 layout (1, 4 + classes, N): a person-only model has one, and a
    two-class model whose class 0 is a standing person (e.g. normal/fallen) works as it is.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        assert cfg.model_path is not None  # enforced by DetectorConfig
        self.cfg = cfg
        self.net = cv2.dnn.readNetFromONNX(cfg.model_path)
        # One blank run now, so that a model that cannot run at input_size (an export with a fixed
        # input shape, e.g. 640) fails when it is configured rather than on the first frame it sees.
        size = cfg.input_size
        try:
            out = self._forward(np.zeros((1, 3, size, size), np.float32))
        except cv2.error as e:
            raise ValueError(
                f"detector model {cfg.model_path} does not run at input_size {size}; "
                f"a model exported with a fixed input shape needs input_size set to that size ({e.err})"
            ) from e
        if out.ndim != 3 or min(out.shape[1:]) < 5:
            raise ValueError(
                f"detector model {cfg.model_path} gives output shape {out.shape}, not a YOLO layout "
                "(1, 4 + classes, N) or (1, N, 5 + classes)"
            )

    def _forward(self, blob: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.net.setInput(blob)
        return np.asarray(self.net.forward(), np.float32)

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection] | None:
        size = self.cfg.input_size
        h, w = image.shape[:2]
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
        out = self._forward(np.asarray(blob, np.float32))
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
