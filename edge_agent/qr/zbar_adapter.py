"""pyzbar (libzbar) behind the Decoder interface: a fallback for symbols zxing-cpp located but
could not read.

zbar error-corrects (Reed-Solomon) but does not report the ECI, and transcodes the payload with
its own charset guess (measured: 18 wrong-charset reads on the zxing-cpp samples). So only reads
whose payload is printable ASCII - identical in every charset zbar could have picked - are
accepted; anything else is dropped with a log line rather than risk a wrong text.
"""

from __future__ import annotations

import logging

from edge_agent.qr.decoded import Decoded, Gray, Quad

log = logging.getLogger(__name__)


def _ascii_text(data: bytes) -> str | None:
    if all(32 <= c < 127 or c in (9, 10, 13) for c in data):
        return data.decode("ascii")
    return None


class ZbarDecoder:
    name = "zbar"

    def __init__(self) -> None:
        # Imported lazily: libzbar0 is a system library that may be missing on a dev machine.
        try:
            from pyzbar import pyzbar

            self._pyzbar = pyzbar
            self._symbols = [pyzbar.ZBarSymbol.QRCODE]
        except (ImportError, OSError) as exc:
            log.warning("pyzbar unavailable, fallback decoder disabled: %s", exc)
            self._pyzbar = None

    @property
    def available(self) -> bool:
        return self._pyzbar is not None

    def decode(self, gray: Gray) -> list[Decoded]:
        if self._pyzbar is None or gray.ndim != 2 or min(gray.shape) < 8:
            return []
        try:
            results = self._pyzbar.decode(gray, symbols=self._symbols)
        except Exception as exc:  # noqa: BLE001 - a C library on bad input: log, never crash
            log.warning("pyzbar failed: %s", exc)
            return []
        reads: list[Decoded] = []
        for r in results:
            text = _ascii_text(bytes(r.data))
            if text is None:
                log.info("zbar read a non-ASCII payload without charset info; dropped")
                continue
            x, y, w, h = r.rect
            quad: Quad = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
            reads.append(
                Decoded(raw=bytes(r.data), text=text, symbology="QRCode", position=quad, decoder=self.name)
            )
        return reads
