"""Build the ScanPayload for one presentation, applying the privacy and size rules.

- payment codes never get here (the pipeline counts and drops them);
- member codes: the text becomes a keyed pseudonym, and regex fields (which may hold the member
  number) are dropped; without a key, no text at all;
- text longer than the limit is cut on a character boundary and flagged ``truncated``;
- binary payloads, and text holding NUL (which many stores and tools cannot keep), go to
  ``data_b64`` as bytes.
"""

from __future__ import annotations

import base64

from edge_agent.qr.classify import Classified
from edge_agent.qr.decoded import Decoded
from edge_agent.qr.privacy import Pseudonymiser
from sync.wire import ScanPayload


def _cut_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", errors="ignore"), True


def build_payload(
    camera: str,
    read: Decoded,
    cls: Classified,
    *,
    max_payload_bytes: int,
    pseudonymiser: Pseudonymiser | None,
) -> ScanPayload:
    base = {"camera": camera, "code_kind": cls.kind, "rule": cls.rule, "symbology": read.symbology}
    if cls.kind == "member":
        # Hash the exact bytes, so the pseudonym does not depend on charset decoding.
        text = pseudonymiser.pseudonym(read.raw) if pseudonymiser is not None else None
        return ScanPayload(**base, text=text, pseudonymised=text is not None)
    if read.text is not None and "\x00" not in read.text:
        text, cut = _cut_utf8(read.text, max_payload_bytes)
        return ScanPayload(**base, text=text, truncated=cut, fields=cls.fields)
    raw = read.raw[:max_payload_bytes]
    return ScanPayload(
        **base,
        data_b64=base64.b64encode(raw).decode("ascii"),
        truncated=len(read.raw) > max_payload_bytes,
        fields=cls.fields,
    )
