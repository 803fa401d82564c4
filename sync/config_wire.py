"""The config push contract (wire version 1): the envelope ops publish and the ack devices answer.

``omni/v1/{store}/{device}/config`` (retained, QoS 1) holds one ``ConfigEnvelope``: the complete
device config document plus its version, content hash and an optional Ed25519 signature.
``omni/v1/{store}/{device}/config/ack`` (retained, QoS 1) holds the device's latest ``ConfigAck``.
docs/topics.md ("Config push") is the prose version of this module.

The signature covers ``signing_bytes(envelope)``: the canonical JSON of the envelope without its
``signature`` field, so the version, the hash, the target and the config are all covered.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import AwareDatetime, Field

from device_configs.content import canonical_json, document_hash
from sync.wire import Ident, WireModel

CONFIG_WIRE_VERSION = 1
MAX_CONFIG_BYTES = 262_144

Sha256Hex = Annotated[
    str, Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$", description="sha256, hex.")
]
AckResult = Literal["applied", "rejected", "rolled_back"]


class ConfigEnvelope(WireModel):
    """Ops -> device: the desired config."""

    v: Literal[1] = Field(description="Config wire version.")
    store: Ident
    device: Ident
    deployment: str = Field(
        min_length=1, max_length=64, description="Id of the push that published this; echoed in the ack."
    )
    version: int = Field(ge=1, le=2**53, description="Config version for this device, increasing.")
    hash: Sha256Hex = Field(description="sha256 of the canonical JSON of `config`.")
    issued_at: AwareDatetime = Field(description="When ops published it (central clock).")
    config: dict[str, Any] = Field(description="The complete device config document (any schema version).")
    signature: str | None = Field(
        default=None, max_length=128, description="Base64 Ed25519 signature of signing_bytes()."
    )


class ConfigAck(WireModel):
    """Device -> ops: what the device did with a config, and what it runs now."""

    v: Literal[1] = Field(description="Config wire version.")
    store: Ident
    device: Ident
    deployment: str | None = Field(default=None, max_length=64, description="From the envelope.")
    version: int | None = Field(default=None, ge=0, description="Version of the config acknowledged.")
    hash: str | None = Field(default=None, max_length=64, description="Hash of the config acknowledged.")
    result: AckResult = Field(description="applied, rejected (never tried) or rolled_back (tried, failed).")
    noop: bool = Field(default=False, description="Applied already: nothing was restarted.")
    reasons: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=50, description="Why it was rejected or rolled back."
    )
    changes: dict[str, list[str]] = Field(
        default_factory=dict, description="Pipelines started, stopped, restarted and left unchanged."
    )
    restart_required: list[str] = Field(
        default_factory=list, max_length=50, description="Settings accepted that take effect at next start."
    )
    running_version: int = Field(ge=0, description="Config version the device runs now (0: bootstrap file).")
    running_hash: str = Field(max_length=64, description="Hash of the config the device runs now.")
    software: str = Field(max_length=64, description="Agent software version.")
    ts: float = Field(description="Device clock (Unix seconds) when it acknowledged.")


def signing_bytes(env: ConfigEnvelope) -> bytes:
    return canonical_json(env.model_dump(mode="json", exclude={"signature"}))


def sign(env: ConfigEnvelope, key: Ed25519PrivateKey) -> ConfigEnvelope:
    sig = base64.b64encode(key.sign(signing_bytes(env))).decode()
    return env.model_copy(update={"signature": sig})


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def verify(env: ConfigEnvelope, trusted_keys: list[str]) -> str | None:
    """None when the signature is valid for one of the keys, else the reason it is not."""
    if env.signature is None:
        return "config is not signed and this device requires signed configs"
    try:
        sig = base64.b64decode(env.signature, validate=True)
    except (binascii.Error, ValueError):
        return "signature is not valid base64"
    message = signing_bytes(env)
    for key_b64 in trusted_keys:
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(key_b64)).verify(sig, message)
            return None
        except (InvalidSignature, ValueError, binascii.Error):
            continue
    return "bad signature: not signed by any trusted key"


def integrity_error(env: ConfigEnvelope) -> str | None:
    actual = document_hash(env.config)
    if actual != env.hash:
        return f"hash mismatch: envelope says {env.hash[:12]}, content is {actual[:12]}"
    return None


def make_envelope(
    *, store: str, device: str, deployment: str, version: int, config: dict[str, Any], issued_at: datetime
) -> ConfigEnvelope:
    return ConfigEnvelope(
        v=1,
        store=store,
        device=device,
        deployment=deployment,
        version=version,
        hash=document_hash(config),
        issued_at=issued_at,
        config=config,
    )
