"""A synthetic event source: scans and footfall windows at a chosen rate, for demos and tests.

Each scan's text is ``sim:<device>:<source>:<n>``, so an end-to-end check can tell exactly which
events were produced. With ``ledger`` set, ``n`` is appended to that file after each event is
committed to the outbox; on restart the source continues after the last ledger entry.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from device_configs.device import SimulatedEvents
from edge_agent.pipeline import PipelineContext
from sync.wire import CodeKind, FootfallPayload, ScanPayload

KINDS: tuple[CodeKind, ...] = ("product", "coupon", "member", "other")


class SimulatedEventSource:
    def __init__(self, cfg: SimulatedEvents, device: str, base_dir: Path) -> None:
        self.cfg = cfg
        self.name = f"sim:{cfg.id}"
        self.device = device
        self.ledger = (base_dir / cfg.ledger) if cfg.ledger else None
        self.produced = self._ledger_count()
        self._since_start = 0

    def _ledger_count(self) -> int:
        if self.ledger is None:
            return 0
        with contextlib.suppress(FileNotFoundError):
            lines = self.ledger.read_bytes().split(b"\n")
            # A torn last line (killed mid-write) does not count as produced.
            return sum(1 for ln in lines if ln.strip().isdigit())
        return 0

    def run(self, ctx: PipelineContext) -> None:
        rng = random.Random(hash((self.device, self.cfg.id)))
        interval = 1.0 / self.cfg.rate_eps
        next_t = time.monotonic()
        ledger = open(self.ledger, "ab") if self.ledger else None  # noqa: SIM115 - closed below
        try:
            while not ctx.stop.is_set():
                if self.cfg.total is not None and self.produced >= self.cfg.total:
                    ctx.report(done=True, produced=self.produced)
                    ctx.stop.wait(0.2)
                    continue
                if self.cfg.fail_every and self._since_start >= self.cfg.fail_every:
                    self._since_start = 0
                    raise RuntimeError(f"simulated failure after {self.cfg.fail_every} events")
                n = self.produced + 1
                if rng.random() < self.cfg.scan_share:
                    kind = KINDS[n % len(KINDS)]
                    ctx.emit(
                        ScanPayload(
                            camera=self.cfg.id,
                            code_kind=kind,
                            text=f"sim:{self.device}:{self.cfg.id}:{n}",
                            fields={"n": str(n)},
                        )
                    )
                else:
                    now = datetime.now(UTC)
                    ctx.emit(
                        FootfallPayload(
                            camera=self.cfg.id,
                            line="door",
                            window_start=now.replace(second=0, microsecond=0),
                            window_s=60,
                            in_count=rng.randint(0, 5),
                            out_count=rng.randint(0, 5),
                            covered=True,
                            seconds_live=60,
                            frames_processed=1500,
                            frames_dropped=0,
                        )
                    )
                if ledger is not None:
                    ledger.write(b"%d\n" % n)
                    ledger.flush()
                    os.fsync(ledger.fileno())
                self.produced = n
                self._since_start += 1
                ctx.report(produced=n)
                next_t += interval
                delay = next_t - time.monotonic()
                if delay > 0:
                    ctx.stop.wait(delay)
                elif delay < -1.0:
                    next_t = time.monotonic()  # fell behind by >1 s: do not burst to catch up
        finally:
            if ledger is not None:
                ledger.close()
