"""Open a central store by URL, and the table layout both backends share.

``open_central_store("postgresql://...")`` gives the production PostgreSQL backend;
``open_central_store("sqlite:///var/lib/omni/central.db")`` or a plain path gives the embedded
SQLite backend. The backends are imported lazily so that the SQLite path never imports psycopg.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sync.central.store import CentralStore

# Event kind -> table. One table per kind, each with the envelope columns first, then the payload
# fields flattened into typed columns, then received_at (set by the store).
TABLE_OF_KIND: Final[dict[str, str]] = {
    "scan": "scans",
    "footfall": "footfall_windows",
    "health": "heartbeats",
}
ENVELOPE_COLUMNS: Final = ("event_id", "store", "device", "seq", "ts")
PAYLOAD_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "scan": (
        "camera",
        "code_kind",
        "rule",
        "symbology",
        "text",
        "data_b64",
        "truncated",
        "pseudonymised",
        "fields",
    ),
    "footfall": (
        "camera",
        "line",
        "window_start",
        "window_s",
        "in_count",
        "out_count",
        "covered",
        "seconds_live",
        "frames_processed",
        "frames_dropped",
    ),
    "health": ("status", "component", "message", "metrics"),
}
# Columns holding a JSON object (JSON text in SQLite, jsonb in PostgreSQL).
JSON_COLUMNS: Final = frozenset({"fields", "metrics"})
BOOL_COLUMNS: Final = frozenset({"truncated", "pseudonymised", "covered"})
DATETIME_COLUMNS: Final = frozenset({"ts", "window_start", "received_at"})


def kind_columns(kind: str) -> tuple[str, ...]:
    """Envelope + payload columns of one kind's table, in insert order (received_at excluded)."""
    try:
        return ENVELOPE_COLUMNS + PAYLOAD_COLUMNS[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {sorted(TABLE_OF_KIND)}") from None


def open_central_store(url_or_path: str, *, group_commit: bool = False) -> CentralStore:
    """Open (and migrate) the store named by a PostgreSQL URL, a ``sqlite:///`` URL or a path.

    ``group_commit``: for an ingest, which calls ``sync()`` before it acknowledges; SQLite then
    defers the fsync of each commit to that call (PostgreSQL commits are durable anyway).
    """
    if url_or_path.startswith(("postgresql://", "postgres://")):
        from sync.central.pg_store import PostgresCentralStore

        return PostgresCentralStore(url_or_path)
    from sync.central.sqlite_store import SqliteCentralStore

    if url_or_path.startswith("sqlite:///"):
        # sqlite:///relative.db and sqlite:////abs/path.db, as SQLAlchemy spells them.
        return SqliteCentralStore(Path(url_or_path.removeprefix("sqlite:///")), group_commit=group_commit)
    if "://" in url_or_path:
        raise ValueError(f"unsupported central store URL scheme: {url_or_path.split('://', 1)[0]!r}")
    return SqliteCentralStore(Path(url_or_path), group_commit=group_commit)
