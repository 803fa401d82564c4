"""Footfall counting settings for one camera: where the door line is and how hard to look.

Coordinates are fractions of the frame (0..1, origin top-left) so a config survives a change of
stream resolution. Sizes that depend on the scene (how tall a person is at the door) are learned
online from the video; the values here are only the priors used until enough people were seen.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device_configs.base import StrictModel

Direction = Literal["up", "down", "left", "right"]
Frac = float
Point = tuple[float, float]


def _check_in_direction(x1: float, y1: float, x2: float, y2: float, direction: Direction) -> None:
    """The 'in' direction must cross the line, not run along it (a horizontal line has no 'left')."""
    dx, dy = x2 - x1, y2 - y1
    if dx == 0 and dy == 0:
        raise ValueError("line endpoints must differ")
    # Component of the direction along the line normal; too small means the direction is ambiguous.
    ux, uy = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}[direction]
    nx, ny = -dy, dx
    norm = (nx * nx + ny * ny) ** 0.5
    if abs(ux * nx + uy * ny) / norm < 0.2:
        raise ValueError(f"'in' direction {direction!r} runs along the line; pick one that crosses it")


class LineConfig(StrictModel):
    id: str = Field(
        default="door", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Line id, reported in every footfall window.",
    )
    x1: Frac = Field(ge=0, le=1, description="First endpoint, x as a fraction of frame width.")
    y1: Frac = Field(ge=0, le=1, description="First endpoint, y as a fraction of frame height.")
    x2: Frac = Field(ge=0, le=1, description="Second endpoint, x as a fraction of frame width.")
    y2: Frac = Field(ge=0, le=1, description="Second endpoint, y as a fraction of frame height.")
    in_direction: Direction = Field(
        default="up", description="Image direction of motion that means entering the store."
    )

    @model_validator(mode="after")
    def _direction_crosses_line(self) -> LineConfig:
        _check_in_direction(self.x1, self.y1, self.x2, self.y2, self.in_direction)
        return self


class DetectorConfig(StrictModel):
    kind: Literal["none", "onnx"] = Field(
        default="none",
        description="Optional person detector on top of motion; 'onnx' needs a user-supplied model file.",
    )
    model_path: str | None = Field(
        default=None, max_length=4096, description="Path of a YOLO-style ONNX person model (kind=onnx)."
    )
    input_size: int = Field(default=320, ge=64, le=1280, description="Square network input size in px.")
    score_threshold: float = Field(default=0.4, gt=0, lt=1, description="Minimum person score kept.")
    every_n_frames: int = Field(
        default=3, ge=1, le=100, description="Run the detector on every n-th frame (it is expensive)."
    )

    @model_validator(mode="after")
    def _model_needed(self) -> DetectorConfig:
        if self.kind == "onnx" and not self.model_path:
            raise ValueError("detector kind 'onnx' needs model_path")
        return self


class FootfallConfig(StrictModel):
    camera: str = Field(min_length=1, max_length=64, description="Camera id this counter reads.")
    lines: list[LineConfig] = Field(
        default_factory=lambda: [LineConfig(x1=0.3, y1=0.5, x2=0.7, y2=0.5)],
        min_length=1, max_length=8, description="Counting lines (door thresholds).",
    )
    zone: list[Point] | None = Field(
        default=None, min_length=3, max_length=32,
        description="Polygon (fractions of the frame) where people are looked for; "
        "default: around the lines.",
    )
    zone_margin: float = Field(
        default=1.5, ge=0.3, le=10,
        description="Default zone: the lines' box grown by this many person heights on every side.",
    )
    window_s: float = Field(default=60.0, ge=1, le=3600, description="Length of one footfall window (s).")
    min_coverage: float = Field(
        default=0.95, ge=0, le=1,
        description="Fraction of a window the camera must have been live for it to count as covered.",
    )
    work_width: int = Field(
        default=320, ge=96, le=1920, description="Frames are downscaled to this width before analysis (px)."
    )
    person_height: float = Field(
        default=0.16, gt=0.01, le=1,
        description="Prior height of a standing person at the line (fraction of frame height); learned on.",
    )
    person_aspect: float = Field(
        default=0.4, gt=0.1, le=1.5, description="Prior width/height of one person's silhouette; learned on."
    )
    learn_sizes: bool = Field(
        default=True, description="Learn person size versus image position from the people seen."
    )
    hysteresis: float | None = Field(
        default=None, ge=0, le=1,
        description="Half-width of the dead band around a line, in person heights (stops jitter counts); "
        "default: the finder's own, 0.12 for 'blobs' (a blob's bottom jumps as people merge and split) "
        "and 0.08 for 'points' (the network places feet to about a tenth of a person's height).",
    )
    commit_distance: float = Field(
        default=0.5, ge=0, le=5,
        description="A crossing is final once the person is this many person heights past the line "
        "(or the track ends); stepping back before that cancels it.",
    )
    bg_learning_rate: float = Field(
        default=0.02, gt=0, le=0.5, description="Background adaptation per frame where nothing moves."
    )
    fg_threshold: float = Field(
        default=18.0, ge=2, le=128,
        description="Minimum colour difference (0..255) to call a pixel foreground.",
    )
    noise_factor: float = Field(
        default=4.0, ge=1, le=20,
        description="Foreground threshold as a multiple of the measured noise level.",
    )
    relearn_fraction: float = Field(
        default=0.5, gt=0.05, le=1,
        description="If this fraction of the zone changes at once (lights), relearn the background.",
    )
    saturation_level: int = Field(
        default=235, ge=128, le=255,
        description="A colour channel at or above this (0..255) is taken as clipped by the sensor: it "
        "can show a body brighter than the background, never a darker one (after a light gets "
        "brighter, saturated signs and windows would otherwise read darker and become blobs). "
        "Below 255 because compression spreads clipping to the pixels around it.",
    )
    min_blob: float = Field(
        default=0.2, gt=0, le=1, description="Smallest blob kept, as a fraction of one person's area."
    )
    max_missed_s: float = Field(
        default=0.6, ge=0, le=10, description="How long a track survives without a detection (s)."
    )
    max_lost_s: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="How long an established track that lost its person in empty space (someone who "
        "stopped and faded into the background, dark legs on a dark floor) waits where it was last seen "
        "for them to reappear (s); never less than max_missed_s.",
    )
    flux: bool = Field(
        default=False,
        description="Experimental: count how many people each tracked crossing holds from the foreground "
        "area that flows through the line (robust to people merging into one blob).",
    )
    finder: Literal["blobs", "points"] = Field(
        default="blobs",
        description="How people are found in the zone: 'blobs' splits foreground blobs by their width "
        "relative to one person's; 'points' runs the feet-point network shipped with the agent on the "
        "zone's difference from the background model and its foreground mask (people walking together "
        "come out one by one).",
    )
    points_threshold: float = Field(
        default=0.4, gt=0, lt=1, description="finder 'points': minimum score of a person's feet point."
    )
    points_model: str | None = Field(
        default=None, max_length=4096,
        description="finder 'points': another feet-point ONNX model (same inputs and outputs as "
        "bench/train_feet_points.py exports); default: the model shipped with the agent.",
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="Optional learned person detector."
    )
