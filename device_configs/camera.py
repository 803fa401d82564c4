"""Camera configuration: where frames come from, how fast, and how to reconnect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from device_configs.base import StrictModel

CameraId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Camera id: letters, digits, '_', '.', '-' (used in events and health gauges).",
    ),
]


class DeviceSource(StrictModel):
    kind: Literal["device"] = Field(description="A local camera opened by index (V4L2 /dev/videoN).")
    index: int = Field(ge=0, le=63, description="Device index as OpenCV numbers it.")


class UrlSource(StrictModel):
    kind: Literal["url"] = Field(description="A network stream (RTSP, HTTP MJPEG).")
    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^(rtsp|rtsps|http|https)://\S+$",
        description="Stream URL; credentials in it are never logged (only the host is).",
    )


class FileSource(StrictModel):
    kind: Literal["file"] = Field(description="A video file, read at media time (tests, demos).")
    path: str = Field(min_length=1, max_length=4096, description="Path to the video file.")
    loop: bool = Field(default=False, description="Start again at the end instead of finishing.")


class FolderSource(StrictModel):
    kind: Literal["folder"] = Field(description="A folder of still images, sorted by name.")
    path: str = Field(min_length=1, max_length=4096, description="Folder holding the images.")
    fps: float = Field(default=10.0, gt=0, le=240, description="Media rate used to time the images.")
    loop: bool = Field(default=False, description="Start again at the end instead of finishing.")


class SimulatedSource(StrictModel):
    kind: Literal["simulated"] = Field(description="A built-in simulated camera (demos, tests).")
    scenario: Literal[
        "qr_demo",
        "footfall_single_in",
        "footfall_single_out",
        "footfall_pair_in",
        "footfall_pair_out",
        "footfall_group_in",
        "footfall_crossing_paths",
        "footfall_u_turn",
        "footfall_linger",
        "footfall_passers_by",
        "footfall_busy",
    ] = Field(
        default="qr_demo",
        description="Built-in script to play: QR codes shown to a till camera, or a door scene "
        "(line at mid-height, 'in' = walking up) for the footfall counter.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed for noise and placement.")
    fps: float = Field(default=10.0, gt=0, le=120, description="Simulated frame rate.")
    width: int = Field(default=640, ge=64, le=3840, description="Frame width in pixels.")
    height: int = Field(default=480, ge=64, le=2160, description="Frame height in pixels.")


Source = Annotated[
    DeviceSource | UrlSource | FileSource | FolderSource | SimulatedSource,
    Field(discriminator="kind", description="Where the frames come from."),
]


class BackoffConfig(StrictModel):
    """Jittered exponential backoff between reconnect attempts."""

    initial_s: float = Field(default=0.5, gt=0, le=60, description="First wait after a failure.")
    max_s: float = Field(default=30.0, gt=0, le=3600, description="Longest wait between attempts.")
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0, description="Growth of the wait per failure.")
    jitter: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Random +/- fraction of each wait, so cameras desynchronise."
    )

    @model_validator(mode="after")
    def _initial_not_above_max(self) -> BackoffConfig:
        if self.initial_s > self.max_s:
            raise ValueError("backoff.initial_s must not exceed backoff.max_s")
        return self


class CameraConfig(StrictModel):
    id: CameraId
    source: Source
    fps_limit: float | None = Field(
        default=None, gt=0, le=120, description="Drop frames above this rate before decoding (None: all)."
    )
    width: int | None = Field(
        default=None, ge=16, le=7680, description="Requested capture width (a hint the camera may ignore)."
    )
    height: int | None = Field(
        default=None, ge=16, le=4320, description="Requested capture height (a hint the camera may ignore)."
    )
    queue_size: int = Field(
        default=2, ge=1, le=64, description="Frames buffered between grabber and decoder; oldest dropped."
    )
    backoff: BackoffConfig = Field(default_factory=BackoffConfig, description="Reconnect backoff.")
