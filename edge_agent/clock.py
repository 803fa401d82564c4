"""The agent's wall clock, and noticing when it jumps.

Event times are the device's wall-clock time. A wall clock can jump: NTP stepping it after days
offline, a PC whose real-time clock battery died booting in 1970 and then correcting. Delivery does
not depend on it (sequence numbers and the outbox order do; UUIDv7 ids stay increasing through a
backward jump, see ``sync.ids``), but analysts must know which event times to distrust, so a jump is
reported as a health event with its size.

Fault injection: with ``OMNI_FAULT_CLOCK_FILE`` set, the clock adds the offset in seconds written in
that file. This is how the fault harness jumps one agent's clock without touching the machine's.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

FAULT_CLOCK_ENV = "OMNI_FAULT_CLOCK_FILE"
JUMP_THRESHOLD_S = 2.0
_REREAD_S = 0.2


class WallClock:
    def __init__(self, skew_file: str | None = None) -> None:
        path = skew_file if skew_file is not None else os.environ.get(FAULT_CLOCK_ENV)
        self._skew_file = Path(path) if path else None
        self._skew = 0.0
        self._skew_read_at = -1e9
        self._lock = threading.Lock()
        self._last_wall = self.now()
        self._last_mono = time.monotonic()

    def _offset(self) -> float:
        if self._skew_file is None:
            return 0.0
        mono = time.monotonic()
        if mono - self._skew_read_at >= _REREAD_S:
            self._skew_read_at = mono
            with contextlib.suppress(OSError, ValueError):
                self._skew = float(self._skew_file.read_text().strip() or 0)
        return self._skew

    def now(self) -> float:
        """Wall-clock time (Unix seconds), as the device sees it."""
        with self._lock:
            return time.time() + self._offset()

    def jump(self) -> float | None:
        """Seconds the wall clock moved beyond the monotonic clock since the last call, if more than
        ``JUMP_THRESHOLD_S`` either way; None otherwise."""
        wall, mono = self.now(), time.monotonic()
        drift = (wall - self._last_wall) - (mono - self._last_mono)
        self._last_wall, self._last_mono = wall, mono
        return drift if abs(drift) > JUMP_THRESHOLD_S else None
