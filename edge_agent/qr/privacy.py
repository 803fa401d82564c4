"""Member-code pseudonyms: HMAC-SHA256 with a device key that is never logged or shown."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pydantic import SecretStr

from device_configs.qr import KeyRef


class KeyLoadError(Exception):
    """The key cannot be loaded (the message names where it was looked for, never its value)."""


def load_key(ref: KeyRef) -> SecretStr:
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise KeyLoadError(f"environment variable {ref.env} is not set or empty")
        return SecretStr(value)
    assert ref.file is not None
    try:
        value = Path(ref.file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyLoadError(f"cannot read key file {ref.file}: {type(exc).__name__}") from None
    if not value:
        raise KeyLoadError(f"key file {ref.file} is empty")
    return SecretStr(value)


class Pseudonymiser:
    """Stable for one key, unrelated across keys; the key stays inside a SecretStr."""

    def __init__(self, key: SecretStr) -> None:
        if not key.get_secret_value():
            raise ValueError("empty pseudonymisation key")
        self._key = key

    def __repr__(self) -> str:
        return "Pseudonymiser(key=**********)"

    def pseudonym(self, raw: bytes) -> str:
        digest = hmac.new(self._key.get_secret_value().encode("utf-8"), raw, hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest}"
