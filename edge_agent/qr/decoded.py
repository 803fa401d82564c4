"""What every decoder returns, and the one interface the pipeline depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]
Quad = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]
Content = Literal["text", "binary"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """One error-corrected read of one symbol.

    ``raw`` is the payload exactly as stored in the symbol (no charset applied). ``text`` is the
    payload decoded with the charset the symbol declares (ECI, Kanji mode), or None when the
    content is binary: a wrong charset guess would be a wrong text, so we never make one.
    """

    raw: bytes
    text: str | None
    symbology: str
    position: Quad
    decoder: str  # which adapter / pass produced it, for diagnostics only


@dataclass(frozen=True, slots=True)
class Located:
    """A symbol a decoder found but could not read (evidence that an expensive pass may pay)."""

    position: Quad
    symbology: str


class Decoder(Protocol):
    name: str

    def decode(self, gray: Gray) -> list[Decoded]:
        """All symbols read from a grayscale image; never raises on bad image content."""
        ...
