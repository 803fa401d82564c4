"""Schema migrations for device config documents: a chain of functions v1 -> v2 -> ...

Each step takes a plain document of version N and returns one of version N+1; they never validate
(the current model does that once at the end) and never edit a released step: a new schema
version appends a new step. A document without ``schema_version`` is version 1, the only version
that existed before the field was required to be stated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

from device_configs.device import SCHEMA_VERSION

Doc = dict[str, Any]


class MigrationError(ValueError):
    """A document whose version this software cannot bring to the current one."""


def _v1_to_v2(doc: Doc) -> Doc:
    # v2 added opening hours. A v1 device never knew them, so every silence was an alarm: write
    # that down explicitly rather than leave it to a default that may change.
    doc.setdefault("opening_hours", {"timezone": "UTC", "always_open": True})
    doc["schema_version"] = 2
    return doc


# MIGRATIONS[n] turns a version-n document into version n+1.
MIGRATIONS: Final[dict[int, Callable[[Doc], Doc]]] = {1: _v1_to_v2}


def document_version(doc: Doc) -> int:
    version = doc.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise MigrationError(f"schema_version must be a positive integer, not {version!r}")
    return version


def migrate(doc: Doc, target: int = SCHEMA_VERSION) -> Doc:
    """A copy of ``doc`` brought to schema version ``target`` (the current one by default)."""
    version = document_version(doc)
    if version > target:
        raise MigrationError(
            f"schema_version {version} is newer than this software supports ({target}); upgrade it first"
        )
    out = copy.deepcopy(doc)
    while version < target:
        out = MIGRATIONS[version](out)
        version += 1
        assert document_version(out) == version, f"migration to {version} did not set schema_version"
    return out
