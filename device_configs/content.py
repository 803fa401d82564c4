"""Canonical JSON and the content hash of a config: the identity ops and agents compare.

The hash is sha256 over the canonical JSON of the *validated* config (every default filled in),
so two files that mean the same thing have the same hash, and a device can tell "the config I
run" from "a new one" without comparing field by field.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from device_configs.device import DeviceConfig


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same document in every process."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def document_hash(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def config_document(cfg: DeviceConfig) -> dict[str, Any]:
    """The complete document of a validated config, as pushed to devices."""
    return cfg.model_dump(mode="json")


def config_hash(cfg: DeviceConfig) -> str:
    return document_hash(config_document(cfg))
