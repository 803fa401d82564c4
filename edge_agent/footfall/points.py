"""People in the zone as feet points, from a small network shipped with the agent.

The network (``models/feet_points.onnx``, trained on simulated scenes only by
``bench/train_feet_points.py``) reads the zone's difference from the background model (per colour
channel, signed, after the lighting gain) and its cleaned foreground mask, and gives on a grid of 4
pixels: a score that someone's feet are in that cell, where in the cell,
and how tall that person is. Peaks of the score are people, so a blob of three people walking
together gives three detections, where splitting by the blob's width gives one or two. It runs
through OpenCV's DNN module: nothing is downloaded and no other runtime is needed.

It sees differences, not the picture: whatever stands still in the scene (door frames, shelves,
posters, the people in them) reads as zero, so a network trained on simulated scenes is not misled
by the clutter of a real one, while people who overlap still differ from each other in colour.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.footfall.blobs import Detection

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

SHIPPED_MODEL = Path(__file__).with_name("models") / "feet_points.onnx"
STRIDE = 4  # output cell size in working pixels
HEIGHT_UNIT = 32.0  # the network's height output is log(height / HEIGHT_UNIT)
DIFF_SCALE = 128.0  # input colour channels: (frame - background) / DIFF_SCALE, clipped to [-1, 1]
_PEAK = np.ones((5, 3), np.uint8)  # rows x columns: a peak owns 2 cells above and below, 1 each side


class FeetPointFinder:
    def __init__(
        self, model_path: str | Path | None = None, *, threshold: float = 0.4, aspect: float = 0.4
    ) -> None:
        path = Path(model_path) if model_path else SHIPPED_MODEL
        if not path.is_file():
            raise ValueError(f"feet-point model {path} not found")
        self.path = path
        self.threshold = threshold
        self.aspect = aspect
        self.net = cv2.dnn.readNetFromONNX(str(path))
        # One blank run now, so a model that does not fit fails at configuration, not on a frame.
        out = self._forward(np.zeros((1, 4, 32, 32), np.float32))
        if out.shape[:2] != (1, 4) or out.shape[2:] != (8, 8):
            raise ValueError(f"feet-point model {path} gives {out.shape} for a 32x32 input, not (1, 4, 8, 8)")

    def _forward(self, blob: F32) -> F32:
        self.net.setInput(blob)
        return np.asarray(self.net.forward(), np.float32)

    def find(
        self, frame: F32, background: F32, mask: U8, offset: tuple[int, int] = (0, 0)
    ) -> list[Detection]:
        """People in the zone: its gain-normalised ``frame`` and ``background`` (BGR float) and its
        foreground ``mask``; ``offset`` maps the zone's pixels back to the working image."""
        out = self._forward(net_input(frame - background, mask)[None])[0]
        return decode(out, self.threshold, self.aspect, offset)


def net_input(diff: F32, mask: U8) -> F32:
    """(4, h, w): the signed colour difference scaled to [-1, 1], then the mask as 0/1."""
    h, w = mask.shape
    x = np.empty((4, h, w), np.float32)
    np.multiply(diff.transpose(2, 0, 1), 1 / DIFF_SCALE, out=x[:3])
    np.clip(x[:3], -1.0, 1.0, out=x[:3])
    x[3] = mask > 0
    return x


def decode(out: F32, threshold: float, aspect: float, offset: tuple[int, int] = (0, 0)) -> list[Detection]:
    """Local maxima of the score above ``threshold`` (a logit map in ``out[0]``) as detections."""
    logit = out[0]
    thr_logit = float(np.log(threshold / (1 - threshold)))
    peaks = (logit >= thr_logit) & (logit >= cv2.dilate(logit, _PEAK))
    ox, oy = offset
    dets = []
    for i, j in zip(*(v.tolist() for v in np.nonzero(peaks)), strict=True):
        fx = (j + 0.5 + float(out[1, i, j])) * STRIDE
        fy = (i + 0.5 + float(out[2, i, j])) * STRIDE
        ph = HEIGHT_UNIT * float(np.exp(np.clip(out[3, i, j], -4.0, 4.0)))
        dets.append(Detection(fx + ox, fy + oy, aspect * ph, ph, 1))
    return dets
