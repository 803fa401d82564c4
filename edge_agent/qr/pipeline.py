"""The QR pipeline: frames -> decodes -> debounced presentations -> classified, private scan events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import cv2
import numpy as np
from pydantic import ValidationError

from device_configs.camera import CameraConfig
from device_configs.qr import QrConfig
from edge_agent.camera.base import Frame
from edge_agent.camera.factory import make_grabber
from edge_agent.camera.grabber import FrameGrabber
from edge_agent.pipeline import Pipeline, PipelineContext
from edge_agent.qr.cascade import CascadeDecoder, CascadeOptions
from edge_agent.qr.classify import Classifier
from edge_agent.qr.debounce import Debouncer
from edge_agent.qr.decoded import Decoded, Decoder, Gray
from edge_agent.qr.payload import build_payload
from edge_agent.qr.privacy import KeyLoadError, Pseudonymiser, load_key

log = logging.getLogger(__name__)


def to_gray(image: np.ndarray) -> Gray:
    if image.ndim == 2:
        return np.asarray(image, dtype=np.uint8)
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


class QrPipeline:
    def __init__(
        self,
        *,
        camera: str,
        grabber_factory: Callable[[], FrameGrabber],
        decoder: Decoder,
        classifier: Classifier,
        debouncer: Debouncer,
        max_payload_bytes: int,
        pseudonymiser: Pseudonymiser | None,
        report_every_s: float = 5.0,
        return_at_end: bool = False,
    ) -> None:
        self.name = f"qr:{camera}"
        self.camera = camera
        self._grabber_factory = grabber_factory
        self._decoder = decoder
        self._classifier = classifier
        self._debouncer = debouncer
        self._max_payload_bytes = max_payload_bytes
        self._pseudonymiser = pseudonymiser
        self._report_every_s = report_every_s
        self._return_at_end = return_at_end
        # Counters since start, published as gauges.
        self.frames_decoded = 0
        self.scans_emitted = 0
        self.payment_codes_seen = 0
        self.rejected_payloads = 0
        self._decode_s = 0.0

    def run(self, ctx: PipelineContext) -> None:
        grabber = self._grabber_factory()
        grabber.start()
        wall0 = time.monotonic()
        last_report: float | None = None
        try:
            while not ctx.stop.is_set():
                frame = grabber.get(timeout=0.2)
                if frame is None:
                    if grabber.status != ctx.gauges.get("status"):
                        # A camera that cannot open says why, before any frame (health, rollback).
                        self._report(ctx, grabber, wall0)
                    if grabber.finished:
                        self._report(ctx, grabber, wall0)
                        if self._return_at_end:
                            return
                        ctx.stop.wait(1.0)  # a finite source ended: idle until told to stop
                    continue
                self._process(ctx, frame)
                if last_report is None or frame.t - last_report >= self._report_every_s:
                    last_report = frame.t
                    self._report(ctx, grabber, wall0)
        finally:
            grabber.stop()
            self._report(ctx, grabber, wall0)

    def _process(self, ctx: PipelineContext, frame: Frame) -> None:
        t0 = time.perf_counter()
        try:
            reads = self._decoder.decode(to_gray(frame.image))
        except Exception:  # a decoder bug on one frame must not stop the camera
            log.exception("%s: decoding frame %d failed", self.name, frame.index)
            reads = []
        self._decode_s += time.perf_counter() - t0
        self.frames_decoded += 1
        by_key: dict[tuple[str, bytes], Decoded] = {(d.symbology, d.raw): d for d in reads}
        for key in self._debouncer.update(frame.t, by_key):
            self._scan(ctx, by_key[key])  # type: ignore[index]

    def _scan(self, ctx: PipelineContext, read: Decoded) -> None:
        cls = self._classifier.classify(read.text)
        if cls.kind == "payment":
            # Payment codes are never stored or sent: only counted.
            self.payment_codes_seen += 1
            return
        try:
            payload = build_payload(
                self.camera,
                read,
                cls,
                max_payload_bytes=self._max_payload_bytes,
                pseudonymiser=self._pseudonymiser,
            )
        except ValidationError as exc:
            self.rejected_payloads += 1
            log.warning("%s: payload rejected (%d bytes, %s): %s", self.name, len(read.raw), cls.kind, exc)
            return
        ctx.emit(payload)
        self.scans_emitted += 1

    def _report(self, ctx: PipelineContext, grabber: FrameGrabber, wall0: float) -> None:
        elapsed = max(time.monotonic() - wall0, 1e-6)
        ctx.report(
            status=grabber.status,
            fps=round(grabber.frames_in / elapsed, 2),
            frames_dropped=grabber.frames_dropped,
            reconnects=grabber.reconnects,
            last_error=grabber.last_error,
            seconds_live=round(grabber.seconds_live, 1),
            frames_decoded=self.frames_decoded,
            decode_ms_avg=round(1000.0 * self._decode_s / max(self.frames_decoded, 1), 3),
            scans_emitted=self.scans_emitted,
            payment_codes_seen=self.payment_codes_seen,
            rejected_payloads=self.rejected_payloads,
        )


def make_decoder(cfg: QrConfig) -> CascadeDecoder:
    d = cfg.decoder
    return CascadeDecoder(
        CascadeOptions(
            formats=tuple(d.formats),
            global_pass=d.global_pass,
            escalate=d.escalate,
            max_regions=d.max_regions,
            zbar_fallback=d.zbar_fallback,
        )
    )


def build_qr_pipeline(
    cfg: QrConfig,
    camera: CameraConfig,
    *,
    grabber_factory: Callable[[], FrameGrabber] | None = None,
    return_at_end: bool = False,
) -> Pipeline:
    """The QR pipeline for ``camera``; ``grabber_factory`` replaces the camera in tests."""
    if cfg.camera != camera.id:
        raise ValueError(f"QR config is for camera {cfg.camera!r}, not {camera.id!r}")
    pseudonymiser: Pseudonymiser | None = None
    if cfg.member_key is not None:
        try:
            pseudonymiser = Pseudonymiser(load_key(cfg.member_key))
        except (KeyLoadError, ValueError) as exc:
            # Member texts are then dropped (never sent in clear); the rest keeps working.
            log.error("qr:%s: member key unavailable, member codes will carry no text: %s", camera.id, exc)
    return QrPipeline(
        camera=camera.id,
        grabber_factory=grabber_factory or (lambda: make_grabber(camera)),
        decoder=make_decoder(cfg),
        classifier=Classifier(cfg.rules, cfg.default_kind),
        debouncer=Debouncer(cfg.quiet_s, cfg.max_hold_s),
        max_payload_bytes=cfg.max_payload_bytes,
        pseudonymiser=pseudonymiser,
        report_every_s=cfg.report_every_s,
        return_at_end=return_at_end,
    )
