"""Time-ordered event ids (UUIDv7, RFC 9562).

Ids sort by creation time, so B-tree inserts append to the right edge of the index on both the
edge outbox and the central store. Within one millisecond a 12-bit counter in ``rand_a`` keeps ids
of one process strictly increasing; the 62 bits of ``rand_b`` stay random so ids of different
devices never collide.
"""

from __future__ import annotations

import os
import threading
import time
import uuid


class _Clock:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0


_clock = _Clock()


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """Return a new UUIDv7; strictly increasing within this process."""
    c = _clock
    with c.lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms <= c.last_ms:
            # Same millisecond (or the wall clock stepped back): keep order by counting on.
            c.counter += 1
            if c.counter > 0xFFF:
                c.last_ms += 1
                c.counter = 0
            ms = c.last_ms
        else:
            c.last_ms = ms
            c.counter = 0
        counter = c.counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def uuid7_str() -> str:
    return str(uuid7())


def uuid7_time_ms(value: uuid.UUID | str) -> int:
    """The Unix time in milliseconds encoded in a UUIDv7."""
    u = uuid.UUID(str(value)) if not isinstance(value, uuid.UUID) else value
    return u.int >> 80
