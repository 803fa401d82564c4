"""Build the FrameSource a CameraConfig names."""

from __future__ import annotations

from device_configs.camera import (
    CameraConfig,
    DeviceSource,
    FileSource,
    FolderSource,
    SimulatedSource,
    UrlSource,
)
from edge_agent.camera.base import FrameSource
from edge_agent.camera.folder_source import FolderSource as FolderFrameSource
from edge_agent.camera.grabber import Backoff, FrameGrabber
from edge_agent.camera.opencv_source import OpenCvSource


def open_source(cfg: CameraConfig) -> FrameSource:
    """A new, not yet opened source for ``cfg``.

    Opening is left to the caller (the FrameGrabber), so a camera that is absent at start-up goes
    through the same backoff and health reporting as one that disappears later.
    """
    src = cfg.source
    if isinstance(src, DeviceSource):
        return OpenCvSource(src.index, width=cfg.width, height=cfg.height)
    if isinstance(src, UrlSource):
        return OpenCvSource(src.url, width=cfg.width, height=cfg.height)
    if isinstance(src, FileSource):
        return OpenCvSource(src.path, is_file=True, loop=src.loop)
    if isinstance(src, FolderSource):
        return FolderFrameSource(src.path, fps=src.fps, loop=src.loop)
    if isinstance(src, SimulatedSource) and src.scenario.startswith("footfall_"):
        from edge_agent.sim.footfall_scene import SceneCamera, door_scene

        name = src.scenario.removeprefix("footfall_")
        scene = door_scene(name, width=src.width, height=src.height, fps=src.fps, seed=src.seed)
        return SceneCamera(scene)
    if isinstance(src, SimulatedSource):
        from edge_agent.sim.qr_camera import SimulatedQrCamera, demo_script

        return SimulatedQrCamera(
            demo_script(), fps=src.fps, width=src.width, height=src.height, seed=src.seed, name=cfg.id
        )
    raise ValueError(f"unknown camera source {type(src).__name__}")


def make_grabber(cfg: CameraConfig) -> FrameGrabber:
    """A FrameGrabber for ``cfg`` with its queue, fps limit and backoff.

    A live camera (device or URL) does not wait for us: when the pipeline falls behind, the oldest
    queued frame is dropped and counted. A recorded or simulated source is read as fast as it is
    consumed instead, so every one of its frames is processed whatever the load (its frames carry
    media time, and a busy machine must not change what a recording counts).
    """
    b = cfg.backoff
    return FrameGrabber(
        lambda: open_source(cfg),
        queue_size=cfg.queue_size,
        backoff=Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier, jitter=b.jitter),
        fps_limit=cfg.fps_limit,
        name=cfg.id,
        drop_oldest=isinstance(cfg.source, DeviceSource | UrlSource),
    )
