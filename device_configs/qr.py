"""QR reader configuration: which camera, how codes are classified, debouncing and privacy."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from device_configs.base import StrictModel
from device_configs.camera import CameraId

CodeKind = Literal["product", "coupon", "member", "payment", "other"]
RuleName = str


def _exactly_one(a: object, b: object, what: str) -> None:
    if (a is None) == (b is None):
        raise ValueError(f"set exactly one of {what}")


class QrRule(StrictModel):
    """Classify a code by a text prefix or a regex; the regex's named groups become payload fields."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Rule id, sent as `rule`.",
    )
    kind: CodeKind = Field(description="Class of the codes this rule matches.")
    prefix: str | None = Field(
        default=None, min_length=1, max_length=256, description="Matches text starting with this."
    )
    regex: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Python regex matched at the start of the text (re.match); named groups -> fields.",
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _one_matcher(self) -> QrRule:
        _exactly_one(self.prefix, self.regex, "prefix, regex")
        return self


class KeyRef(StrictModel):
    """Where the member-pseudonymisation key lives. The key itself is never in the config."""

    env: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the key.",
    )
    file: str | None = Field(default=None, min_length=1, max_length=4096, description="File holding the key.")

    @model_validator(mode="after")
    def _one_place(self) -> KeyRef:
        _exactly_one(self.env, self.file, "env, file")
        return self


class DecoderConfig(StrictModel):
    formats: tuple[Literal["qr", "micro_qr", "rmqr"], ...] = Field(
        default=("qr",), min_length=1, max_length=3, description="Symbologies to read (each costs time)."
    )
    global_pass: bool = Field(default=True, description="Second cheap pass (global threshold, half size).")
    escalate: bool = Field(
        default=True, description="Re-read located-but-unreadable codes with preprocessing."
    )
    max_regions: int = Field(default=4, ge=0, le=32, description="Most regions re-read per frame.")
    zbar_fallback: bool = Field(default=True, description="Try zbar on regions zxing-cpp could not read.")


class QrConfig(StrictModel):
    camera: CameraId
    rules: tuple[QrRule, ...] = Field(default=(), max_length=200, description="First matching rule wins.")
    default_kind: Literal["product", "coupon", "other"] = Field(
        default="other", description="Kind of a code no rule matches (never member/payment by default)."
    )
    quiet_s: float = Field(
        default=2.0, gt=0, le=3600, description="A code absent this long, then shown again, is a new scan."
    )
    max_hold_s: float | None = Field(
        default=None, gt=0, le=86400, description="Held continuously this long counts again (None: never)."
    )
    max_payload_bytes: int = Field(
        default=2048, ge=16, le=8192, description="Longer payloads are cut and flagged truncated."
    )
    member_key: KeyRef | None = Field(
        default=None,
        description="Key for HMAC pseudonyms of member codes; without it member text is dropped.",
    )
    decoder: DecoderConfig = Field(default_factory=DecoderConfig, description="Decoder passes.")
    report_every_s: float = Field(
        default=5.0, gt=0, le=3600, description="Health gauge interval (frame time)."
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: tuple[QrRule, ...]) -> tuple[QrRule, ...]:
        names = [r.name for r in v]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return v
