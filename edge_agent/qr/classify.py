"""Configurable rules: code text -> kind (product, coupon, member, payment, other) + fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from device_configs.qr import CodeKind, QrRule

MAX_FIELDS = 32  # ScanPayload.fields allows 32 entries
MAX_FIELD_CHARS = 256


@dataclass(frozen=True, slots=True)
class Classified:
    kind: CodeKind
    rule: str | None
    fields: dict[str, str] = field(default_factory=dict)


class Classifier:
    def __init__(self, rules: tuple[QrRule, ...], default_kind: CodeKind = "other") -> None:
        self._rules = [(r, re.compile(r.regex) if r.regex else None) for r in rules]
        self._default = default_kind

    def classify(self, text: str | None) -> Classified:
        """First matching rule wins. Binary payloads (no text) match no rule."""
        if text is None:
            return Classified(kind=self._default, rule=None)
        for rule, rx in self._rules:
            if rule.prefix is not None and text.startswith(rule.prefix):
                return Classified(kind=rule.kind, rule=rule.name)
            if rx is not None:
                m = rx.match(text)
                if m:
                    groups = {k: v[:MAX_FIELD_CHARS] for k, v in m.groupdict().items() if v is not None}
                    return Classified(
                        kind=rule.kind, rule=rule.name, fields=dict(list(groups.items())[:MAX_FIELDS])
                    )
        return Classified(kind=self._default, rule=None)
