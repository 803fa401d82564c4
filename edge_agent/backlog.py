"""How long until the outbox reaches its capacity, and the disk is full, at the backlog's recent growth.

Store IT and central ops see the backlog (events, bytes, oldest age) in every heartbeat; during an
outage the question they have is "how long can this store hold out?". The forecast answers it from
the growth over a sliding window (``window_s``, 15 minutes by default) of the agent's own samples:

- ``hours_to_capacity``: until the outbox holds ``max_rows`` events or ``max_bytes`` of events,
  whichever comes first. From then on the capacity policy evicts footfall and health (scans are
  never evicted, see ``edge_agent.outbox``), so this is when data starts to be given up.
- ``hours_to_disk_full``: until the free space of the file system is used up by the outbox file's
  growth (measured on disk: WAL and page overhead included).

Both are ``None`` while the backlog is not growing (or after fewer than ``min_span_s`` of samples):
a draining or steady outbox never fills. ``0.0`` means the limit is reached already.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Forecast:
    events_per_s: float | None  # backlog growth (negative while draining); None: not enough samples
    bytes_per_s: float | None  # event bytes (what ``max_bytes`` limits)
    disk_bytes_per_s: float | None  # the outbox file on disk
    hours_to_capacity: float | None
    hours_to_disk_full: float | None


class BacklogForecast:
    def __init__(self, window_s: float = 900.0, min_span_s: float = 60.0) -> None:
        if min_span_s <= 0 or window_s < min_span_s:
            raise ValueError("need 0 < min_span_s <= window_s")
        self.window_s = window_s
        self.min_span_s = min_span_s
        # (monotonic time, events, event bytes, bytes on disk)
        self._samples: deque[tuple[float, int, int, int]] = deque()

    def observe(self, t: float, events: int, payload_bytes: int, disk_bytes: int) -> None:
        """Add a sample (``t``: a monotonic clock, seconds); samples older than the window go."""
        if self._samples and t <= self._samples[-1][0]:
            return  # the same instant again (or a clock that went back): nothing to learn
        self._samples.append((t, events, payload_bytes, disk_bytes))
        # Keep one sample at or before the window's start, so the window is always fully spanned.
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window_s:
            self._samples.popleft()

    def forecast(self, *, max_rows: int, max_bytes: int, disk_free_bytes: int) -> Forecast:
        """The growth over the window and the hours left before each limit at that growth."""
        if len(self._samples) < 2 or self._samples[-1][0] - self._samples[0][0] < self.min_span_s:
            return Forecast(None, None, None, None, None)
        t0, e0, b0, d0 = self._samples[0]
        t1, e1, b1, d1 = self._samples[-1]
        span = t1 - t0
        ev_rate, b_rate, d_rate = (e1 - e0) / span, (b1 - b0) / span, (d1 - d0) / span
        to_capacity = _min_hours((max_rows - e1, ev_rate), (max_bytes - b1, b_rate))
        to_disk = _min_hours((disk_free_bytes, d_rate))
        return Forecast(ev_rate, b_rate, d_rate, to_capacity, to_disk)


def _min_hours(*limits: tuple[float, float]) -> float | None:
    """Hours until the first of several (room left, growth per second) limits is reached."""
    if any(room <= 0 for room, _ in limits):
        return 0.0
    hours = [room / rate / 3600.0 for room, rate in limits if rate > 0]
    return min(hours) if hours else None
