"""The real QR pipeline on the simulated camera, with an in-memory emit: exact scan events."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from device_configs.camera import CameraConfig
from device_configs.qr import QrConfig
from edge_agent.camera.base import Frame
from edge_agent.camera.grabber import Backoff, FrameGrabber
from edge_agent.pipeline import PipelineContext
from edge_agent.qr.decoded import Decoded
from edge_agent.qr.pipeline import QrPipeline, build_qr_pipeline
from edge_agent.sim.qr_camera import Appearance, SimulatedQrCamera
from sync.wire import Payload, ScanPayload

CAMERA = CameraConfig.model_validate({"id": "counter-1", "source": {"kind": "simulated"}})
RULES = [
    {"name": "sku", "kind": "product", "regex": r"https://shop\.example/p/(?P<sku>SKU-\d+)$"},
    {"name": "coupon", "kind": "coupon", "regex": r"COUPON:(?P<coupon_id>[A-Z0-9-]+)$"},
    {"name": "member", "kind": "member", "prefix": "MEMBER:"},
    {"name": "pay", "kind": "payment", "prefix": "PAY:"},
]


def _cfg(**kw: object) -> QrConfig:
    return QrConfig.model_validate({"camera": "counter-1", "rules": RULES, "quiet_s": 2.0, **kw})


def _run(cfg: QrConfig, cam: SimulatedQrCamera) -> tuple[list[ScanPayload], PipelineContext]:
    emitted: list[Payload] = []
    pipe = build_qr_pipeline(
        cfg,
        CAMERA,
        # No drops: a replay waits for the decoder, so every scripted frame is decoded.
        grabber_factory=lambda: FrameGrabber(lambda: cam, queue_size=4, drop_oldest=False),
        return_at_end=True,
    )
    ctx = PipelineContext(stop=threading.Event(), emit=emitted.append)
    pipe.run(ctx)
    assert all(isinstance(p, ScanPayload) for p in emitted)
    return [p for p in emitted if isinstance(p, ScanPayload)], ctx


def test_scripted_presentations_give_exact_scan_events() -> None:
    script = [
        Appearance("https://shop.example/p/SKU-10042", 1.0, 6.0, x=0.3, size=180),  # held 5 s: one scan
        Appearance("COUPON:SPRING-25", 3.0, 4.0, x=0.72, size=160, angle=15.0),  # same frames, other code
        Appearance("https://shop.example/p/SKU-10042", 9.0, 10.0, size=170, blur=0.7, noise=4.0),  # new
        Appearance("hello shop", 11.0, 12.0, size=150, perspective=0.12, glare=0.4),
    ]
    cam = SimulatedQrCamera(script, fps=10, width=640, height=360, seed=7)
    scans, ctx = _run(_cfg(), cam)
    assert [(s.code_kind, s.rule, s.text, s.fields) for s in scans] == [
        ("product", "sku", "https://shop.example/p/SKU-10042", {"sku": "SKU-10042"}),
        ("coupon", "coupon", "COUPON:SPRING-25", {"coupon_id": "SPRING-25"}),
        ("product", "sku", "https://shop.example/p/SKU-10042", {"sku": "SKU-10042"}),
        ("other", None, "hello shop", {}),
    ]
    assert {s.camera for s in scans} == {"counter-1"}
    g = ctx.snapshot()
    assert g["scans_emitted"] == 4
    assert g["frames_decoded"] == cam.frame_count == 130
    assert g["frames_dropped"] == 0


def test_payment_codes_never_reach_emit_and_are_counted() -> None:
    script = [
        Appearance("PAY:4111111111111111", 0.5, 1.5),
        Appearance("PAY:4111111111111111", 4.0, 5.0),
        Appearance("COUPON:X1", 6.0, 7.0),
    ]
    scans, ctx = _run(_cfg(), SimulatedQrCamera(script, fps=10, width=480, height=360))
    assert [s.text for s in scans] == ["COUPON:X1"]
    assert ctx.snapshot()["payment_codes_seen"] == 2
    assert all("4111" not in s.model_dump_json() for s in scans)


def test_member_codes_are_pseudonymised_with_the_configured_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("QR_TEST_KEY", "k3y-material-abc")
    caplog.set_level(logging.DEBUG)
    script = [Appearance("MEMBER:0012345678", 0.5, 1.5)]
    cfg = _cfg(member_key={"env": "QR_TEST_KEY"})
    scans, _ = _run(cfg, SimulatedQrCamera(script, fps=10, width=480, height=360))
    import hashlib
    import hmac

    want = "hmac-sha256:" + hmac.new(b"k3y-material-abc", b"MEMBER:0012345678", hashlib.sha256).hexdigest()
    assert [(s.code_kind, s.text, s.pseudonymised, s.fields) for s in scans] == [("member", want, True, {})]
    assert "0012345678" not in scans[0].model_dump_json()
    assert "k3y-material-abc" not in caplog.text


def test_member_codes_without_a_key_carry_no_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QR_MISSING_KEY", raising=False)
    cfg = _cfg(member_key={"env": "QR_MISSING_KEY"})
    scans, _ = _run(
        cfg, SimulatedQrCamera([Appearance("MEMBER:77", 0.5, 1.5)], fps=10, width=480, height=360)
    )
    assert [(s.code_kind, s.text, s.pseudonymised) for s in scans] == [("member", None, False)]


def test_camera_failing_mid_stream_recovers_without_losing_the_scan() -> None:
    cam = SimulatedQrCamera(
        [Appearance("COUPON:AB", 1.0, 3.0)], fps=10, width=480, height=360, fail_at_frame=15
    )
    emitted: list[Payload] = []
    grabber = FrameGrabber(
        lambda: cam,
        queue_size=4,
        drop_oldest=False,
        backoff=Backoff(initial_s=0.001, max_s=0.001, jitter=0.0),
    )
    pipe = build_qr_pipeline(_cfg(), CAMERA, grabber_factory=lambda: grabber, return_at_end=True)
    ctx = PipelineContext(stop=threading.Event(), emit=emitted.append)
    pipe.run(ctx)
    assert [p.text for p in emitted if isinstance(p, ScanPayload)] == ["COUPON:AB"]  # one presentation
    assert ctx.snapshot()["reconnects"] == 1
    assert ctx.snapshot()["last_error"] == "sim-qr: simulated stream drop"


def test_pipeline_returns_when_stop_is_set() -> None:
    cam = SimulatedQrCamera([], fps=10, duration=10_000, width=64, height=64)
    pipe = build_qr_pipeline(_cfg(), CAMERA, grabber_factory=lambda: FrameGrabber(lambda: cam, queue_size=2))
    stop = threading.Event()
    seen: list[int] = []

    def report_hook() -> None:
        stop.set()

    ctx = PipelineContext(stop=stop, emit=lambda p: seen.append(1))
    t = threading.Timer(0.3, report_hook)
    t.start()
    pipe.run(ctx)
    t.join()
    assert seen == []
    assert ctx.snapshot()["status"] == "stopped"


def test_camera_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="not 'counter-1'"):
        build_qr_pipeline(QrConfig(camera="other"), CAMERA)


class _FakeDecoder:
    """Returns scripted reads per frame index: hostile payloads without rendering them."""

    name = "fake"

    def __init__(self, reads: dict[int, list[Decoded]]) -> None:
        self.reads = reads
        self.i = -1

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        self.i += 1
        return self.reads.get(self.i, [])


class _Frames:
    name = "frames"

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return Frame(image=np.zeros((16, 16, 3), np.uint8), t=self.i * 10.0, index=self.i - 1)

    def close(self) -> None:
        pass


def _read(raw: bytes, text: str | None) -> Decoded:
    return Decoded(
        raw=raw, text=text, symbology="QRCode", position=((0, 0), (1, 0), (1, 1), (0, 1)), decoder="fake"
    )


def test_hostile_payloads_are_emitted_safely(tmp_path: Path) -> None:
    from edge_agent.qr.classify import Classifier
    from edge_agent.qr.debounce import Debouncer

    huge = "A" * 100_000
    hostile = [
        _read(huge.encode(), huge),  # huge text: cut to the limit
        _read(b"\xff\xfe\x00\x80binary", None),  # binary / invalid UTF-8: bytes only
        _read(b"a\x00b", "a\x00b"),  # NUL inside text: sent as bytes
        _read(b"\x1b[2J\x07bell\r\n", "\x1b[2J\x07bell\r\n"),  # control characters kept, JSON-escaped
        _read(b"'; DROP TABLE events;--", "'; DROP TABLE events;--"),
        _read(b"$(rm -rf /)", "$(rm -rf /)"),
        _read(("\u00e9" * 40).encode(), "\u00e9" * 40),  # multi-byte text cut on a character boundary
        _read(b"\xff" * 20_000, None),  # huge binary
    ]
    reads = {i: [r] for i, r in enumerate(hostile)}
    emitted: list[Payload] = []
    pipe = QrPipeline(
        camera="counter-1",
        grabber_factory=lambda: FrameGrabber(lambda: _Frames(len(hostile)), queue_size=4, drop_oldest=False),
        decoder=_FakeDecoder(reads),
        classifier=Classifier(()),
        debouncer=Debouncer(quiet_s=2.0),
        max_payload_bytes=64,
        pseudonymiser=None,
        return_at_end=True,
    )
    pipe.run(PipelineContext(stop=threading.Event(), emit=emitted.append))
    got = [(p.text, p.data_b64, p.truncated) for p in emitted if isinstance(p, ScanPayload)]
    import base64

    assert got == [
        ("A" * 64, None, True),
        (None, base64.b64encode(b"\xff\xfe\x00\x80binary").decode(), False),
        (None, base64.b64encode(b"a\x00b").decode(), False),
        ("\x1b[2J\x07bell\r\n", None, False),
        ("'; DROP TABLE events;--", None, False),
        ("$(rm -rf /)", None, False),
        ("\u00e9" * 32, None, True),
        (None, base64.b64encode(b"\xff" * 64).decode(), True),
    ]
    for p in emitted:
        assert ScanPayload.model_validate_json(p.model_dump_json()) == p  # round-trips on the wire
