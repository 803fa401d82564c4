"""The optional detector slot, run through OpenCV DNN on real ONNX files.

No person model can be fetched here, so each test writes a small ONNX graph whose output is a
fixed tensor in a YOLO layout (v8: (1, 84, N); v5: (1, N, 85)) and checks what the detector makes
of it: score and class filtering, non-maximum suppression, and scaling back to image pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_configs.footfall import DetectorConfig
from edge_agent.footfall.blobs import Detection
from edge_agent.footfall.detector import OnnxPersonDetector, make_detector

SIZE = 64  # network input
ANCHORS = 100  # candidate rows; real models have thousands (the unused ones score 0)


def write_model(path: Path, output: npt.NDArray[np.float32], fixed_input: bool = False) -> str:
    """An ONNX graph that ignores its image (but keeps it connected) and returns ``output``.

    With ``fixed_input`` the image first goes through a Reshape to SIZE x SIZE pixels, as in a YOLO
    export with a fixed input shape: the graph then runs at no other input size.
    """
    nodes = []
    if fixed_input:
        pixels = numpy_helper.from_array(np.array([1, 3, SIZE * SIZE], np.int64))
        nodes += [
            helper.make_node("Constant", [], ["pixels"], value=pixels),
            helper.make_node("Reshape", ["images", "pixels"], ["flat"]),
        ]
    nodes += [
        helper.make_node("ReduceMean", ["flat" if fixed_input else "images"], ["mean"], keepdims=0),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["boxes", "nothing"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed-boxes",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output.shape))],
        initializer=[numpy_helper.from_array(output.astype(np.float32), name="boxes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def image(w: int = 128, h: int = 96) -> npt.NDArray[np.uint8]:
    return np.zeros((h, w, 3), np.uint8)


def test_v8_layout_keeps_the_best_person_box_scaled_to_the_image(tmp_path: Path) -> None:
    out = np.zeros((1, 84, ANCHORS), np.float32)
    out[0, :4, 0], out[0, 4, 0] = [32, 40, 10, 20], 0.9  # a person
    out[0, :4, 1], out[0, 4, 1] = [33, 40, 10, 20], 0.6  # the same person, weaker: NMS drops it
    out[0, :4, 2], out[0, 5, 2] = [10, 10, 6, 12], 0.95  # class 1, not a person
    out[0, :4, 3], out[0, 4, 3] = [50, 20, 8, 16], 0.3  # a person below the threshold
    cfg = DetectorConfig(kind="onnx", model_path=write_model(tmp_path / "v8.onnx", out), input_size=SIZE)
    det = make_detector(cfg)
    assert isinstance(det, OnnxPersonDetector)
    # The image is 128x96 and the network sees 64x64: x scales by 2, y by 1.5; feet = box bottom.
    assert det.detect(image()) == [Detection(64.0, 75.0, 20.0, 30.0, 1)]


def test_v5_layout_multiplies_objectness_by_the_person_score(tmp_path: Path) -> None:
    out = np.zeros((1, ANCHORS, 85), np.float32)
    out[0, 0, :6] = [16, 32, 8, 24, 0.9, 0.9]  # 0.81: kept
    out[0, 1, :6] = [48, 32, 8, 24, 0.9, 0.3]  # 0.27: below 0.4
    out[0, 2, :6] = [48, 48, 8, 24, 0.3, 0.95]  # 0.285: below 0.4
    cfg = DetectorConfig(kind="onnx", model_path=write_model(tmp_path / "v5.onnx", out), input_size=SIZE)
    det = OnnxPersonDetector(cfg)
    # 64x64 image: no scaling. Box (12, 20)-(20, 44): centre x 16, feet y 44.
    assert det.detect(image(64, 64)) == [Detection(16.0, 44.0, 8.0, 24.0, 1)]


def test_v8_layout_with_two_classes_takes_class_0_as_the_person(tmp_path: Path) -> None:
    # Like a person model fine-tuned to two classes (standing, fallen): output (1, 6, N).
    out = np.zeros((1, 6, ANCHORS), np.float32)
    out[0, :4, 0], out[0, 4:, 0] = [16, 32, 8, 24], [0.7, 0.01]  # class 0: kept
    out[0, :4, 1], out[0, 4:, 1] = [48, 32, 8, 24], [0.05, 0.9]  # class 1 only: not taken
    cfg = DetectorConfig(kind="onnx", model_path=write_model(tmp_path / "v8c2.onnx", out), input_size=SIZE)
    assert OnnxPersonDetector(cfg).detect(image(64, 64)) == [Detection(16.0, 44.0, 8.0, 24.0, 1)]


def test_v8_layout_with_one_class(tmp_path: Path) -> None:
    out = np.zeros((1, 5, ANCHORS), np.float32)
    out[0, :, 0] = [16, 32, 8, 24, 0.5]
    out[0, :, 1] = [48, 32, 8, 24, 0.2]  # below 0.4
    cfg = DetectorConfig(kind="onnx", model_path=write_model(tmp_path / "v8c1.onnx", out), input_size=SIZE)
    assert OnnxPersonDetector(cfg).detect(image(64, 64)) == [Detection(16.0, 44.0, 8.0, 24.0, 1)]


def test_fixed_shape_model_at_another_input_size_fails_when_configured(tmp_path: Path) -> None:
    out = np.zeros((1, 84, ANCHORS), np.float32)
    path = write_model(tmp_path / "fixed.onnx", out, fixed_input=True)
    det = OnnxPersonDetector(DetectorConfig(kind="onnx", model_path=path, input_size=SIZE))
    assert det.detect(image()) == []
    with pytest.raises(ValueError, match="does not run at input_size 96"):
        OnnxPersonDetector(DetectorConfig(kind="onnx", model_path=path, input_size=96))


def test_output_that_is_no_yolo_layout_is_refused(tmp_path: Path) -> None:
    path = write_model(tmp_path / "flat.onnx", np.zeros((1, 1000), np.float32))
    with pytest.raises(ValueError, match="not a YOLO layout"):
        OnnxPersonDetector(DetectorConfig(kind="onnx", model_path=path, input_size=SIZE))


def test_no_detector_by_default() -> None:
    assert make_detector(DetectorConfig()) is None
