"""CameraConfig validation and the source factory."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from device_configs.camera import CameraConfig
from edge_agent.camera.factory import open_source
from edge_agent.camera.folder_source import FolderSource
from edge_agent.camera.opencv_source import OpenCvSource, redact
from edge_agent.sim.qr_camera import SimulatedQrCamera


def test_discriminated_sources_build_the_right_frame_source(tmp_path: Path) -> None:
    cases = [
        ({"kind": "device", "index": 0}, OpenCvSource),
        ({"kind": "url", "url": "rtsp://user:pw@10.0.0.5:554/s1"}, OpenCvSource),
        ({"kind": "file", "path": "x.mp4"}, OpenCvSource),
        ({"kind": "folder", "path": str(tmp_path)}, FolderSource),
        ({"kind": "simulated", "seed": 3}, SimulatedQrCamera),
    ]
    for source, cls in cases:
        cfg = CameraConfig.model_validate({"id": "cam-1", "source": source})
        assert type(open_source(cfg)) is cls


def test_url_credentials_never_in_source_name() -> None:
    cfg = CameraConfig.model_validate(
        {"id": "c", "source": {"kind": "url", "url": "rtsp://user:secret@h:554/s"}}
    )
    src = open_source(cfg)
    assert src.name == "rtsp://h:554"
    assert redact(3) == "device:3"


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "c", "source": {"kind": "device", "index": -1}},
        {"id": "c", "source": {"kind": "url", "url": "ftp://x/y"}},
        {"id": "c", "source": {"kind": "webcam"}},
        {"id": "bad id", "source": {"kind": "device", "index": 0}},
        {"id": "c", "source": {"kind": "device", "index": 0}, "queue_size": 0},
        {"id": "c", "source": {"kind": "device", "index": 0}, "backoff": {"initial_s": 10, "max_s": 1}},
        {"id": "c", "source": {"kind": "device", "index": 0}, "typo": 1},
    ],
)
def test_invalid_camera_configs_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CameraConfig.model_validate(bad)


def test_every_camera_field_has_a_description() -> None:
    from device_configs import camera

    for model in (
        camera.CameraConfig,
        camera.BackoffConfig,
        camera.DeviceSource,
        camera.UrlSource,
        camera.FileSource,
        camera.FolderSource,
        camera.SimulatedSource,
    ):
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name}"


def test_folder_source_skips_unreadable_images_and_times_by_fps(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 3), 10, np.uint8))
    (tmp_path / "b.png").write_bytes(b"not an image")
    cv2.imwrite(str(tmp_path / "c.png"), np.full((8, 8, 3), 20, np.uint8))
    src = FolderSource(tmp_path, fps=4.0)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [(f.index, f.t, int(f.image[0, 0, 0])) for f in frames] == [(0, 0.0, 10), (1, 0.25, 20)]
