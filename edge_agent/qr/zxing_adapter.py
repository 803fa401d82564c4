"""zxing-cpp behind the Decoder interface: the primary decoder (fast, accurate, no wrong texts)."""

from __future__ import annotations

import logging
from typing import Any

import zxingcpp

from edge_agent.qr.decoded import Decoded, Gray, Located, Quad

log = logging.getLogger(__name__)

# Content types whose text zxing-cpp derived from the symbol itself (ECI, Kanji mode, GS1 rules).
# Binary / UnknownECI content has no trustworthy charset, so we keep only the bytes.
_TEXT_CONTENT = {"Text", "Mixed", "GS1", "ISO15434"}

_FORMATS = {
    "qr": zxingcpp.BarcodeFormat.QRCode,
    "micro_qr": zxingcpp.BarcodeFormat.MicroQRCode,
    "rmqr": zxingcpp.BarcodeFormat.RMQRCode,
}
_BINARIZERS = {
    "local": zxingcpp.Binarizer.LocalAverage,
    "global": zxingcpp.Binarizer.GlobalHistogram,
}


def _quad(position: Any) -> Quad:
    p = position
    return (
        (int(p.top_left.x), int(p.top_left.y)),
        (int(p.top_right.x), int(p.top_right.y)),
        (int(p.bottom_right.x), int(p.bottom_right.y)),
        (int(p.bottom_left.x), int(p.bottom_left.y)),
    )


def _symbology(fmt: Any) -> str:
    # "BarcodeFormat.QRCode" -> "QRCode", which is what ScanPayload.symbology expects.
    return str(fmt).rsplit(".", 1)[-1][:32]


class ZxingDecoder:
    """One zxing-cpp pass with fixed options.

    ``decode`` returns error-corrected reads; ``decode_with_evidence`` also returns the symbols
    zxing located but could not read, which the cascade uses to decide on expensive passes.
    """

    def __init__(
        self,
        *,
        formats: tuple[str, ...] = ("qr",),
        binarizer: str = "local",
        try_invert: bool = False,
        try_downscale: bool = True,
        try_rotate: bool = True,
        name: str | None = None,
    ) -> None:
        self._formats = zxingcpp.BarcodeFormats([_FORMATS[f] for f in formats])
        self._binarizer = _BINARIZERS[binarizer]
        self._try_invert = try_invert
        self._try_downscale = try_downscale
        self._try_rotate = try_rotate
        self.name = name or f"zxing/{binarizer}"

    def decode(self, gray: Gray) -> list[Decoded]:
        return self.decode_with_evidence(gray)[0]

    def decode_with_evidence(self, gray: Gray) -> tuple[list[Decoded], list[Located]]:
        if gray.ndim != 2 or gray.shape[0] < 8 or gray.shape[1] < 8:
            return [], []
        try:
            barcodes = zxingcpp.read_barcodes(
                gray,
                formats=self._formats,
                try_rotate=self._try_rotate,
                try_downscale=self._try_downscale,
                try_invert=self._try_invert,
                # Plain: bytes transcoded with the ECI the symbol declares (or the QR default
                # rules), not the human-readable GS1 "(01)..." form.
                text_mode=zxingcpp.TextMode.Plain,
                binarizer=self._binarizer,
                return_errors=True,
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            log.warning("zxing-cpp failed on a %sx%s image: %s", gray.shape[1], gray.shape[0], exc)
            return [], []
        reads: list[Decoded] = []
        located: list[Located] = []
        for b in barcodes:
            if not b.valid:
                located.append(Located(position=_quad(b.position), symbology=_symbology(b.format)))
                continue
            content = str(b.content_type).rsplit(".", 1)[-1]
            text = b.text if content in _TEXT_CONTENT else None
            reads.append(
                Decoded(
                    raw=bytes(b.bytes),
                    text=text,
                    symbology=_symbology(b.format),
                    position=_quad(b.position),
                    decoder=self.name,
                )
            )
        return reads, located
