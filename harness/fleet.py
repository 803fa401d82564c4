"""Fleet simulator: many simulated devices against a real broker and central ingest workers.

    python -m harness.fleet --stores S --devices D --rate R [--duration T] [--processes P]
        [--store sqlite|postgresql://...] [--ingest-workers W] [--broker host:port]
        [--restart-broker-at SECONDS] [--driver mux|agent] [--synchronous FULL|NORMAL]

S stores x D devices each, every device with its own client id, its own state directory and its own
SQLite outbox, spread over P worker processes; W central ingest processes (``omni-central ingest``,
distinct client ids, one shared subscription) write to the central store; a private mosquitto
(persistence on, ``max_queued_messages 0``) unless ``--broker`` names one. Progress every second;
at the end every outbox is drained and a report is read back from the central store: events
produced, landed, lost, duplicated, end-to-end latency (device ``ts`` -> central ``received_at``),
backlog peaks, reconnects, CPU time per event of each process kind, load average.

Two drivers run the devices:

``agent``
    one ``edge_agent.agent.Agent`` per device: outbox, uplink thread, heartbeat thread, config
    thread and a ``SimulatedEventSource`` pipeline thread (4 threads and ~1-3.5 ms of CPU per
    device-second, measured: a few hundred devices per 2-core machine).
``mux`` (default)
    the same ``SqliteOutbox`` and ``Uplink`` objects per device (same batching, QoS 1 publishes,
    end-to-end acks, resend on ack timeout, token bucket, jittered reconnect ``Backoff``, retained
    status), events built like ``SimulatedEventSource`` builds them and encoded with
    ``encode_event``, a health event every ``heartbeat_s`` like the agent's. Only the scheduling
    differs: one thread per worker process waits on all devices' sockets with epoll and calls the
    uplink's steps when a socket is readable or an event was appended, instead of one thread per
    device polling ``client.loop()`` 20-500 times a second. That polling, not the delivery work,
    is what limits the ``agent`` driver (docs/fleet.md).

A broker restart in the middle (``--restart-broker-at``) stops mosquitto (SIGTERM, so it saves its
persistence file), waits ``--restart-downtime`` seconds and starts it again on the same port; the
report gives the time from the broker being back until every event committed before that moment
was acknowledged on every device (``restart_drain_s``).

Worker processes are ``python -m harness.fleet worker SPEC``: commands on stdin (``go``, ``mark``,
``stop``, ``exit``), one JSON object per line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import os
import queue
import random
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import paho.mqtt.client as paho

from device_configs.device import DeviceConfig, MqttSettings, SyncSettings
from edge_agent.events import encode_event
from edge_agent.outbox import SqliteOutbox
from edge_agent.sim.events import KINDS
from edge_agent.uplink import Uplink, link_metrics
from sync.wire import FootfallPayload, HealthPayload, Payload, ScanPayload

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
Driver = Literal["mux", "agent"]
SWEEP_S = 0.25  # resend timers, keepalive, token bucket refills, drain marks
STATUS_S = 1.0
# Each device holds ~5 file descriptors (outbox database, WAL, shm, socket, paho's socket pair);
# Uplink._connect waits for the CONNACK in paho's loop(), which uses select(): any descriptor
# above FD_SETSIZE (1024) in the process makes it fail, so a worker process stays well below.
MAX_DEVICES_PER_PROCESS = 150


# -- the spec a worker process runs -----------------------------------------------------------


@dataclass
class WorkerSpec:
    worker: int
    work: str
    host: str
    port: int
    devices: list[tuple[str, str]]
    rate: float
    driver: Driver = "mux"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    heartbeat_s: float = 10.0
    scan_share: float = 0.8
    ack_timeout_s: float = 15.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    drain_rate_eps: float = 5000.0
    seed: int = 0

    def state_dir(self, store: str, device: str) -> Path:
        return Path(self.work) / "edge" / store / device

    def mqtt(self) -> MqttSettings:
        return MqttSettings(
            host=self.host,
            port=self.port,
            reconnect_min_s=self.reconnect_min_s,
            reconnect_max_s=self.reconnect_max_s,
        )

    def sync(self) -> SyncSettings:
        return SyncSettings(
            ack_timeout_s=self.ack_timeout_s,
            heartbeat_s=self.heartbeat_s,
            drain_rate_eps=self.drain_rate_eps,
        )


def _emit_line(out: IO[str], obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def _proc_figures() -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped]

    p = psutil.Process()
    cpu = p.cpu_times()
    return {
        "threads": threading.active_count(),
        "rss_mb": round(p.memory_info().rss / 2**20, 1),
        "cpu_s": round(cpu.user + cpu.system, 3),
        "cpu_user_s": round(cpu.user, 3),
        "fds": p.num_fds(),
    }


# -- the mux driver ----------------------------------------------------------------------------


@dataclass
class _Dev:
    store: str
    device: str
    outbox: SqliteOutbox
    uplink: Uplink
    rng: random.Random
    interval: float
    next_event: float = 0.0
    produced_sim: int = 0
    backlog_peak: int = 0
    mark: int | None = None  # drain mark: every seq below it must be acked
    sock: Any = None  # the socket registered with the selector
    want_write: bool = False
    connect_at: float | None = None


class MuxFleet:
    """All devices of one worker process, driven by one thread (see the module docstring)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.sel = selectors.DefaultSelector()
        self.devs: list[_Dev] = []
        self.timers: list[tuple[float, int, str, int]] = []
        self._tick = 0
        self.producing = False
        self.dirty: set[int] = set()
        self.mark_pending: set[int] = set()
        self.drained_at: float | None = None
        self.max_connect_stall_s = 0.0
        mqtt, sync = spec.mqtt(), spec.sync()
        for i, (store, device) in enumerate(spec.devices):
            state = spec.state_dir(store, device)
            state.mkdir(parents=True, exist_ok=True)
            outbox = SqliteOutbox(state / "outbox.db", synchronous=spec.synchronous)
            d = _Dev(
                store=store,
                device=device,
                outbox=outbox,
                uplink=Uplink(outbox, store=store, device=device, mqtt=mqtt, sync=sync),
                rng=random.Random(f"{spec.seed}:{store}:{device}"),
                interval=1.0 / spec.rate if spec.rate > 0 else math.inf,
            )
            d.uplink.status_extra = self._status_extra(d)
            self.devs.append(d)
            self._at(time.monotonic() + d.rng.uniform(0, min(2.0, len(spec.devices) / 500)), "connect", i)

    def _status_extra(self, d: _Dev) -> Callable[[], dict[str, Any]]:
        def extra() -> dict[str, Any]:
            st = d.outbox.stats()
            return {
                "heartbeat_s": self.spec.heartbeat_s,
                "backlog_events": st.events,
                "backlog_bytes": st.bytes_on_disk,
                "backlog_oldest_age_s": st.oldest_age_s,
            }

        return extra

    def _at(self, t: float, what: str, i: int) -> None:
        self._tick += 1
        heapq.heappush(self.timers, (t, self._tick, what, i))

    # -- sockets --------------------------------------------------------------------------

    def _attach(self, i: int) -> None:
        d = self.devs[i]
        client = d.uplink._client
        sock = client.socket() if client is not None else None
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):  # a stale registration under this fd
            self.sel.unregister(self.sel.get_map()[sock.fileno()].fileobj)
        self.sel.register(sock, selectors.EVENT_READ, i)
        d.sock, d.want_write = sock, False

    def _detach(self, i: int) -> None:
        d = self.devs[i]
        if d.sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(d.sock)
            d.sock, d.want_write = None, False

    def _connect(self, i: int, now: float) -> None:
        d = self.devs[i]
        up = d.uplink
        if up.stats.connected:
            return
        t0 = time.monotonic()
        try:
            ok = up._connect()
        except Exception as exc:  # noqa: BLE001 - as Uplink._run: any failure means try again later
            log.warning("connect of %s failed: %s", d.device, exc)
            ok = False
        self.max_connect_stall_s = max(self.max_connect_stall_s, time.monotonic() - t0)
        if not ok:
            self._at(now + up._backoff.next_delay(), "connect", i)
            return
        up._backoff.reset()
        self._attach(i)
        self.dirty.add(i)

    def _lost(self, i: int, why: str) -> None:
        """As Uplink._run after a failed loop: mark lost, reconnect at once (then with backoff)."""
        self._detach(i)
        up = self.devs[i].uplink
        if up.stats.connected:
            up._lost(why)
        self._at(time.monotonic(), "connect", i)

    def _check(self, i: int, rc: int, what: str) -> bool:
        if rc != paho.MQTT_ERR_SUCCESS or not self.devs[i].uplink.stats.connected:
            self._lost(i, f"{what}: {paho.error_string(rc)}")
            return False
        return True

    # -- uplink steps ----------------------------------------------------------------------

    def _pump(self, i: int, *, resend: bool = False) -> None:
        """One pass of Uplink._run's work for a connected device."""
        d = self.devs[i]
        up = d.uplink
        if not up.stats.connected or d.sock is None:
            return
        try:
            # The same steps as one pass of Uplink._run, each skipped when it has nothing to do
            # (a PUBACK alone changes nothing; resend timers run in the sweep).
            if up._acks:
                up._process_acks()
            if up._configs:
                up._process_configs()
            if up._outgoing:
                up._flush_outgoing()
            if resend:
                up._resend_timed_out()
            if up._cursor < d.outbox.next_seq - 1:
                up._send_more()
        except Exception as exc:
            log.exception("uplink error on %s; reconnecting", d.device)
            self._detach(i)
            up._lost(f"{type(exc).__name__}: {exc}")
            self._at(time.monotonic() + up._backoff.next_delay(), "connect", i)
            return
        if not up.stats.connected:  # a publish was refused: Uplink called _lost itself
            self._lost(i, up.stats.last_error)
            return
        client = up._client
        assert client is not None
        want = client.want_write()
        if want != d.want_write and d.sock is not None:
            self.sel.modify(d.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), i)
            d.want_write = want

    def _sweep(self) -> None:
        """Timers of every connected device: keepalive, ack timeouts, rate limit, compaction."""
        for i, d in enumerate(self.devs):
            up = d.uplink
            if not up.stats.connected or up._client is None:
                continue
            if not self._check(i, up._client.loop_misc(), "keepalive"):
                continue
            if up._inflight:
                self._pump(i, resend=True)
            elif up._cursor < d.outbox.next_seq - 1:  # held back by the drain rate limit
                self.dirty.add(i)
            try:
                up._maybe_compact()
            except Exception:
                log.exception("compaction failed on %s", d.device)

    # -- producing -------------------------------------------------------------------------

    def _emit(self, d: _Dev, payload: Payload) -> None:
        d.outbox.append([encode_event(d.store, d.device, payload)])

    def _produce(self, i: int) -> None:
        """One event as SimulatedEventSource makes them: a scan (text sim:<device>:sim:<n>) or a
        footfall window."""
        d = self.devs[i]
        n = d.produced_sim + 1
        if d.rng.random() < self.spec.scan_share:
            payload: Payload = ScanPayload(
                camera="sim",
                code_kind=KINDS[n % len(KINDS)],
                text=f"sim:{d.device}:sim:{n}",
                fields={"n": str(n)},
            )
        else:
            now = datetime.now(UTC)
            payload = FootfallPayload(
                camera="sim",
                line="door",
                window_start=now.replace(second=0, microsecond=0),
                window_s=60,
                in_count=d.rng.randint(0, 5),
                out_count=d.rng.randint(0, 5),
                covered=True,
                seconds_live=60,
                frames_processed=1500,
                frames_dropped=0,
            )
        self._emit(d, payload)
        d.produced_sim = n
        self.dirty.add(i)

    def _heartbeat(self, i: int) -> None:
        """The agent's health event (backlog, connection, counters) and retained status refresh."""
        d = self.devs[i]
        metrics = link_metrics(d.outbox.stats(), d.uplink.stats)
        over = bool(metrics["outbox_over_capacity"])
        metrics |= {
            "device_time": time.time(),
            "sim.produced": d.produced_sim,
        }
        self._emit(d, HealthPayload(status="degraded" if over else "ok", metrics=metrics))
        d.uplink.refresh_status()
        self.dirty.add(i)

    def go(self) -> None:
        now = time.monotonic()
        self.producing = True
        for i, d in enumerate(self.devs):
            if d.interval != math.inf:
                d.next_event = now + d.rng.uniform(0, d.interval)
                self._at(d.next_event, "event", i)
            self._at(now + d.rng.uniform(0, self.spec.heartbeat_s), "beat", i)

    def stop_producing(self) -> None:
        self.producing = False
        self.timers = [t for t in self.timers if t[2] == "connect"]
        heapq.heapify(self.timers)

    def mark(self) -> None:
        """Remember each device's next seq; ``drained_at`` is when all below it are acked."""
        self.drained_at = None
        for d in self.devs:
            d.mark = d.outbox.next_seq
        self.mark_pending = set(range(len(self.devs)))

    def _check_marks(self) -> None:
        if not self.mark_pending:
            return
        for i in list(self.mark_pending):
            d = self.devs[i]
            oldest = d.outbox.stats().oldest_seq
            if oldest is None or (d.mark is not None and oldest >= d.mark):
                self.mark_pending.discard(i)
        if not self.mark_pending:
            self.drained_at = time.time()

    # -- figures ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        backlog = peak_dev = 0
        for d in self.devs:
            n = d.outbox.stats().events
            backlog += n
            d.backlog_peak = max(d.backlog_peak, n)
            peak_dev = max(peak_dev, d.backlog_peak)
        ups = [d.uplink.stats for d in self.devs]
        return {
            "produced": sum(d.outbox.next_seq - 1 for d in self.devs),
            "backlog": backlog,
            "backlog_peak_device": peak_dev,
            "inflight": sum(len(d.uplink._inflight) for d in self.devs),
            "connected": sum(1 for u in ups if u.connected),
            "connects": sum(u.connects for u in ups),
            "connect_failures": sum(u.connect_failures for u in ups),
            "resends": sum(u.resends for u in ups),
            "mark_pending": len(self.mark_pending),
            "drained_at": self.drained_at,
            "max_connect_stall_s": round(self.max_connect_stall_s, 3),
        }

    def final(self) -> dict[str, Any]:
        return {
            "devices": [[d.store, d.device, d.outbox.next_seq - 1] for d in self.devs],
            "resends_by_device_max": max((d.uplink.stats.resends for d in self.devs), default=0),
        }

    def empty(self) -> bool:
        return all(d.outbox.stats().events == 0 and not d.uplink._inflight for d in self.devs)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, commands: queue.Queue[str], out: IO[str]) -> None:  # noqa: PLR0912, PLR0915 - the event loop
        next_sweep = next_status = time.monotonic()
        ready_sent = False
        stopping_since: float | None = None
        while True:
            now = time.monotonic()
            timeout = min(0.05, max(0.0, (self.timers[0][0] - now) if self.timers else 0.05))
            for key, mask in self.sel.select(timeout):
                i = int(key.data)
                client = self.devs[i].uplink._client
                if client is None:
                    continue
                if mask & selectors.EVENT_READ and not self._check(i, client.loop_read(), "read"):
                    continue
                if mask & selectors.EVENT_WRITE and not self._check(i, client.loop_write(), "write"):
                    continue
                self.dirty.add(i)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, what, i = heapq.heappop(self.timers)
                d = self.devs[i]
                if what == "connect":
                    self._connect(i, now)
                elif what == "event" and self.producing:
                    self._produce(i)
                    d.next_event += d.interval
                    if d.next_event < now - 1.0:  # fell behind by >1 s: do not burst to catch up
                        d.next_event = now
                    self._at(d.next_event, "event", i)
                elif what == "beat" and self.producing:
                    self._heartbeat(i)
                    self._at(now + self.spec.heartbeat_s, "beat", i)
            if now >= next_sweep:
                next_sweep = now + SWEEP_S
                self._sweep()
                self._check_marks()
            while self.dirty:
                self._pump(self.dirty.pop())
            if now >= next_status:
                next_status = now + STATUS_S
                st = self.status()
                _emit_line(out, {"type": "status", "worker": self.spec.worker, **st, **_proc_figures()})
                if not ready_sent and st["connected"] == len(self.devs):
                    ready_sent = True
                    _emit_line(out, {"type": "ready", "worker": self.spec.worker})
                if stopping_since is not None and (self.empty() or now - stopping_since > 120):
                    self._check_marks()
                    st = self.status()
                    _emit_line(out, {"type": "final", "worker": self.spec.worker, **self.final(), **st})
                    stopping_since = None
            with contextlib.suppress(queue.Empty):
                cmd = commands.get_nowait()
                if cmd == "go":
                    self.go()
                elif cmd == "mark":
                    self.mark()
                elif cmd == "stop":
                    self.stop_producing()
                    stopping_since = now
                    next_status = now
                elif cmd == "exit":
                    break
        self.close()

    def close(self) -> None:
        for i, d in enumerate(self.devs):
            self._detach(i)
            with contextlib.suppress(Exception):
                d.uplink._shutdown()
            d.outbox.close()


# -- the agent driver --------------------------------------------------------------------------


class AgentFleet:
    """One full ``Agent`` per device (threads: uplink, heartbeat, config, simulated source)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from edge_agent.agent import Agent

        self.spec = spec
        self.agents: list[Agent] = []
        self.started = False
        self.peaks: list[int] = []
        self.mark_seq: list[int] = []
        self.mark_pending: set[int] = set()
        self.drained_at: float | None = None
        for store, device in spec.devices:
            doc = {
                "store": store,
                "device": device,
                "state_dir": str(spec.state_dir(store, device)),
                "mqtt": spec.mqtt().model_dump(),
                "sync": spec.sync().model_dump(),
                "outbox": {"synchronous": spec.synchronous},
                "simulated_sources": [{"id": "sim", "rate_eps": spec.rate, "scan_share": spec.scan_share}],
            }
            self.agents.append(Agent(DeviceConfig.model_validate(doc), base_dir=Path(spec.work)))
            self.peaks.append(0)

    def status(self) -> dict[str, Any]:
        backlog = 0
        for i, a in enumerate(self.agents):
            n = a.outbox.stats().events
            backlog += n
            self.peaks[i] = max(self.peaks[i], n)
        ups = [a.uplink.stats for a in self.agents]
        for i in list(self.mark_pending):
            oldest = self.agents[i].outbox.stats().oldest_seq
            if oldest is None or oldest >= self.mark_seq[i]:
                self.mark_pending.discard(i)
                if not self.mark_pending:
                    self.drained_at = time.time()
        return {
            "produced": sum(a.outbox.next_seq - 1 for a in self.agents),
            "backlog": backlog,
            "backlog_peak_device": max(self.peaks, default=0),
            "inflight": sum(len(a.uplink._inflight) for a in self.agents),
            "connected": sum(1 for u in ups if u.connected),
            "connects": sum(u.connects for u in ups),
            "connect_failures": sum(u.connect_failures for u in ups),
            "resends": sum(u.resends for u in ups),
            "mark_pending": len(self.mark_pending),
            "drained_at": self.drained_at,
        }

    def run(self, commands: queue.Queue[str], out: IO[str]) -> None:
        _emit_line(out, {"type": "ready", "worker": self.spec.worker})
        stopping_since: float | None = None
        while True:
            try:
                cmd = commands.get(timeout=0.25 if self.mark_pending else STATUS_S)
            except queue.Empty:
                cmd = ""
            if cmd == "go":
                for a in self.agents:
                    a.start()
            elif cmd == "mark":
                self.mark_seq = [a.outbox.next_seq for a in self.agents]
                self.mark_pending = set(range(len(self.agents)))
                self.drained_at = None
            elif cmd == "stop":
                for a in self.agents:
                    a.supervisor.stop_all()
                    a._stop.set()  # ends the heartbeat loop; the uplink keeps draining
                stopping_since = time.monotonic()
            elif cmd == "exit":
                break
            st = self.status()
            _emit_line(out, {"type": "status", "worker": self.spec.worker, **st, **_proc_figures()})
            if stopping_since is not None:
                empty = st["backlog"] == 0 and st["inflight"] == 0
                if empty or time.monotonic() - stopping_since > 120:
                    devices = [[a.cfg.store, a.cfg.device, a.outbox.next_seq - 1] for a in self.agents]
                    _emit_line(out, {"type": "final", "worker": self.spec.worker, "devices": devices, **st})
                    stopping_since = None
        threads = [threading.Thread(target=a.stop, daemon=True) for a in self.agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)


def worker_main(spec_path: str) -> int:
    spec_doc = json.loads(Path(spec_path).read_text())
    spec_doc["devices"] = [tuple(x) for x in spec_doc["devices"]]
    spec = WorkerSpec(**spec_doc)
    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("exit")

    threading.Thread(target=read_stdin, daemon=True).start()
    fleet: MuxFleet | AgentFleet = MuxFleet(spec) if spec.driver == "mux" else AgentFleet(spec)
    profile = os.environ.get("OMNI_FLEET_PROFILE")  # a directory: cProfile each worker into it
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(fleet.run, commands, sys.stdout)
        prof.dump_stats(str(Path(profile) / f"worker-{spec.worker}.prof"))
        return 0
    fleet.run(commands, sys.stdout)
    return 0


# -- the coordinator ---------------------------------------------------------------------------


@dataclass
class FleetOptions:
    stores: int = 10
    devices: int = 2
    rate: float = 1.0
    duration: float = 30.0
    processes: int = 2
    store: str = "sqlite"
    ingest_workers: int = 1
    broker: str | None = None
    restart_broker_at: float | None = None
    restart_downtime: float = 1.0
    driver: Driver = "mux"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    heartbeat_s: float = 10.0
    scan_share: float = 0.8
    ack_timeout_s: float = 15.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    drain_timeout: float = 120.0
    workdir: str | None = None
    keep: bool = False
    quiet: bool = False


@dataclass
class FleetReport:
    devices: int
    stores: int
    processes: int
    ingest_workers: int
    driver: str
    synchronous: str
    rate_per_device: float
    duration_s: float
    produced: int
    landed: int
    lost: int
    duplicated: int
    duplicated_seq: int
    devices_with_gaps: int
    latency_ms: dict[str, float]
    latency_ms_steady: dict[str, float]
    backlog_peak_total: int
    backlog_peak_device: int
    reconnects: int
    connect_failures: int
    resends: int
    restart_drain_s: float | None
    restart_drain_from_stop_s: float | None
    drain_after_stop_s: float
    cpu_s: dict[str, float]
    cpu_user_share: dict[str, float]
    cpu_us_per_event: dict[str, float]
    worker_peak: dict[str, float]
    load_avg: dict[str, list[float]]
    store: str
    per_device: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)


class _Worker:
    def __init__(self, spec: WorkerSpec, spec_path: Path) -> None:
        self.spec = spec
        spec_path.write_text(json.dumps(asdict(spec)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.fleet", "worker", str(spec_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.status: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.peak = {"threads": 0.0, "rss_mb": 0.0, "fds": 0.0, "backlog": 0.0}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if msg["type"] == "status":
                self.status = msg
                for k in self.peak:
                    self.peak[k] = max(self.peak[k], float(msg.get(k, 0)))
            elif msg["type"] == "ready":
                self.ready.set()
            elif msg["type"] == "final":
                self.final = msg

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 60) -> None:
        self.send("exit")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[k]


def _latency(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50": round(_pct(values, 0.50), 1),
        "p95": round(_pct(values, 0.95), 1),
        "p99": round(_pct(values, 0.99), 1),
        "max": round(values[-1], 1) if values else float("nan"),
        "n": len(values),
    }


def _as_epoch(v: Any) -> float:
    if isinstance(v, datetime):
        return v.timestamp()
    return datetime.fromisoformat(str(v)).timestamp()


def analyse(
    url: str, produced: dict[tuple[str, str], int], outage: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Read the central store back: landed, lost and duplicated per device, and latency.

    ``outage`` (wall-clock start, end): events with ``ts`` inside it are left out of the steady
    latency figures.
    """
    from sync.central.stores import TABLE_OF_KIND, open_central_store

    store = open_central_store(url)
    try:
        rows = [r for kind in TABLE_OF_KIND for r in store.rows(kind)]  # type: ignore[attr-defined]
    finally:
        store.close()
    ids: set[str] = set()
    seqs: dict[tuple[str, str], list[int]] = {}
    lat_all: list[float] = []
    lat_steady: list[float] = []
    for r in rows:
        ids.add(str(r["event_id"]))
        seqs.setdefault((r["store"], r["device"]), []).append(int(r["seq"]))
        ts = _as_epoch(r["ts"])
        ms = (_as_epoch(r["received_at"]) - ts) * 1000
        lat_all.append(ms)
        if outage is None or not (outage[0] - 1 <= ts <= outage[1]):
            lat_steady.append(ms)
    lost = dup_seq = gaps = 0
    per_device: dict[str, dict[str, Any]] = {}
    for key, n in produced.items():
        got = seqs.get(key, [])
        distinct = set(got)
        missing = n - len(distinct & set(range(1, n + 1)))
        lost += missing
        dup_seq += len(got) - len(distinct)
        contiguous = sorted(distinct) == list(range(1, n + 1))
        gaps += 0 if contiguous else 1
        per_device["/".join(key)] = {
            "produced": n,
            "landed": len(got),
            "missing": missing,
            "contiguous": contiguous,
        }
    unknown = sum(len(v) for k, v in seqs.items() if k not in produced)
    return {
        "landed": len(rows),
        "duplicated": len(rows) - len(ids),
        "duplicated_seq": dup_seq,
        "lost": lost,
        "devices_with_gaps": gaps,
        "unknown": unknown,
        "latency_ms": _latency(lat_all),
        "latency_ms_steady": _latency(lat_steady),
        "per_device": per_device,
    }


@contextlib.contextmanager
def _central(store: str, work: Path, keep: bool) -> Iterator[str]:
    """A fresh central store: a SQLite file in the work dir, or a new PostgreSQL schema."""
    if store == "sqlite":
        yield str(work / "central.db")
        return
    import psycopg

    schema = f"fleet_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(store, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in store else "?"
    try:
        yield f"{store}{sep}options=-csearch_path%3D{schema}"
    finally:
        if not keep:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def _cpu(procs: list[Any], *, system: bool = True) -> float:
    """CPU seconds of processes (user + system, or user only)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(Exception):
            t = p.cpu_times()
            total += t.user + (t.system if system else 0.0)
    return total


def run_fleet(  # noqa: PLR0912, PLR0915 - the run's phases, in order
    opts: FleetOptions, out: Callable[[str], None] = print
) -> FleetReport:
    import psutil

    from harness.broker import Mosquitto
    from harness.processes import start_ingest
    from sync.central.stores import open_central_store

    if opts.broker and opts.restart_broker_at is not None:
        raise ValueError("--restart-broker-at needs the fleet's own broker (no --broker)")
    say = (lambda s: None) if opts.quiet else out
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="omni-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    load: dict[str, list[float]] = {"start": [round(x, 2) for x in os.getloadavg()]}
    broker: Mosquitto | None = None
    if opts.broker:
        host, _, port_s = opts.broker.rpartition(":")
        host, port = host or "127.0.0.1", int(port_s)
    else:
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        host, port = "127.0.0.1", broker.port
    ingests: list[subprocess.Popen[bytes]] = []
    workers: list[_Worker] = []
    n_dev = opts.stores * opts.devices
    try:
        with _central(opts.store, work, opts.keep) as url:
            open_central_store(url).close()  # create the schema before several workers race to
            group = f"fleet{uuid.uuid4().hex[:6]}"
            for w in range(opts.ingest_workers):
                client_id = f"{group}-ingest-{w}"
                ingests.append(start_ingest(url, f"{host}:{port}", client_id=client_id, group=group))
            devices = [
                (f"store-{s:04d}", f"pc-{d}")
                for s in range(1, opts.stores + 1)
                for d in range(1, opts.devices + 1)
            ]
            procs = max(1, min(max(opts.processes, math.ceil(n_dev / MAX_DEVICES_PER_PROCESS)), n_dev))
            if procs > opts.processes:
                say(
                    f"note: {procs} worker processes instead of {opts.processes}: at most "
                    f"{MAX_DEVICES_PER_PROCESS} devices per process (the uplink's connect runs paho's "
                    "select()-based loop, which fails on file descriptors above 1024)"
                )
            for w in range(procs):
                spec = WorkerSpec(
                    worker=w,
                    work=str(work),
                    host=host,
                    port=port,
                    devices=devices[w::procs],
                    rate=opts.rate,
                    driver=opts.driver,
                    synchronous=opts.synchronous,
                    heartbeat_s=opts.heartbeat_s,
                    scan_share=opts.scan_share,
                    ack_timeout_s=opts.ack_timeout_s,
                    reconnect_min_s=opts.reconnect_min_s,
                    reconnect_max_s=opts.reconnect_max_s,
                )
                workers.append(_Worker(spec, work / f"worker-{w}.json"))
            say(
                f"fleet: {n_dev} devices ({opts.stores} stores x {opts.devices}) in {procs} {opts.driver} "
                f"processes, {opts.rate:g} events/s each, {opts.ingest_workers} ingest worker(s), "
                f"broker {host}:{port}, central {opts.store}, outbox synchronous={opts.synchronous}, "
                f"work dir {work}"
            )
            deadline = time.monotonic() + 60 + n_dev / 20
            for wk in workers:
                if not wk.ready.wait(max(0.1, deadline - time.monotonic())):
                    raise RuntimeError(f"worker {wk.spec.worker} did not connect its devices: {wk.status}")
            say(f"all devices connected after {time.monotonic() - (deadline - 60 - n_dev / 20):.1f}s")
            watched = {
                "fleet": [psutil.Process(wk.proc.pid) for wk in workers],
                "ingest": [psutil.Process(p.pid) for p in ingests],
            }
            if broker is not None and broker.pid is not None:
                watched["broker"] = [psutil.Process(broker.pid)]
            cpu0 = {k: _cpu(v) for k, v in watched.items()}
            user0 = {k: _cpu(v, system=False) for k, v in watched.items()}
            produced0 = sum(int(wk.status.get("produced", 0)) for wk in workers)
            for wk in workers:
                wk.send("go")
            t0 = time.monotonic()
            outage: tuple[float, float] | None = None
            restarted_at: float | None = None
            stopped_at: float | None = None
            backlog_peak = 0
            counter = open_central_store(url)
            next_progress = t0 + 1
            restart_pending = opts.restart_broker_at is not None
            try:
                while True:
                    now = time.monotonic()
                    elapsed = now - t0
                    if restart_pending and broker is not None and elapsed >= (opts.restart_broker_at or 0):
                        restart_pending = False
                        stopped_at = time.time()
                        say(f"  t={elapsed:5.1f}s  stopping the broker (SIGTERM) ...")
                        broker.stop()
                        time.sleep(opts.restart_downtime)
                        broker.start()
                        restarted_at = time.time()
                        watched["broker"] = [psutil.Process(broker.pid)] if broker.pid else []
                        say(f"  t={time.monotonic() - t0:5.1f}s  broker back on port {port}")
                        for wk in workers:
                            wk.send("mark")
                    if elapsed >= opts.duration:
                        break
                    if now >= next_progress:
                        next_progress += 1
                        backlog_peak = max(backlog_peak, _progress(workers, counter, elapsed, say))
                    if not all(wk.alive() for wk in workers):
                        raise RuntimeError("a worker process died")
                    time.sleep(0.05)
                cpu_prod = {k: _cpu(v) - cpu0.get(k, 0.0) for k, v in watched.items()}
                for wk in workers:
                    wk.send("stop")
                t_stop = time.monotonic()
                say(f"  t={t_stop - t0:5.1f}s  production stopped; draining every outbox ...")
                end = t_stop + opts.drain_timeout
                while time.monotonic() < end and not all(wk.final is not None for wk in workers):
                    time.sleep(0.1)
                    if time.monotonic() >= next_progress:
                        next_progress += 1
                        backlog_peak = max(
                            backlog_peak, _progress(workers, counter, time.monotonic() - t0, say)
                        )
                drain_s = time.monotonic() - t_stop
            finally:
                counter.close()
            cpu = {k: _cpu(v) - cpu0.get(k, 0.0) for k, v in watched.items()}
            user = {k: _cpu(v, system=False) - user0.get(k, 0.0) for k, v in watched.items()}
            finals = [wk.final for wk in workers]
            if any(f is None for f in finals):
                raise RuntimeError("some workers did not drain within --drain-timeout")
            produced: dict[tuple[str, str], int] = {}
            for f in finals:
                assert f is not None
                for st, dv, n in f["devices"]:
                    produced[(st, dv)] = int(n)
            total_produced = sum(produced.values())
            restart_drain = from_stop = None
            if restarted_at is not None and stopped_at is not None:
                marks = [f.get("drained_at") for f in finals if f is not None]
                if all(m is not None for m in marks):
                    last = max(float(m) for m in marks if m is not None)
                    restart_drain = round(last - restarted_at, 2)
                    from_stop = round(last - stopped_at, 2)
                    outage = (stopped_at, last)
                else:
                    outage = (stopped_at, time.time())
            for wk in workers:
                wk.close()
            workers_peak = {
                "threads_per_process": max(wk.peak["threads"] for wk in workers),
                "rss_mb_per_process": max(wk.peak["rss_mb"] for wk in workers),
                "fds_per_process": max(wk.peak["fds"] for wk in workers),
            }
            for p in ingests:
                p.terminate()
            for p in ingests:
                p.wait(30)
            ingests = []
            found = analyse(url, produced, outage)
            load["end"] = [round(x, 2) for x in os.getloadavg()]
            events = max(1, total_produced - produced0)
            report = FleetReport(
                devices=n_dev,
                stores=opts.stores,
                processes=procs,
                ingest_workers=opts.ingest_workers,
                driver=opts.driver,
                synchronous=opts.synchronous,
                rate_per_device=opts.rate,
                duration_s=opts.duration,
                produced=total_produced,
                landed=found["landed"],
                lost=found["lost"],
                duplicated=found["duplicated"],
                duplicated_seq=found["duplicated_seq"],
                devices_with_gaps=found["devices_with_gaps"],
                latency_ms=found["latency_ms"],
                latency_ms_steady=found["latency_ms_steady"],
                backlog_peak_total=backlog_peak,
                backlog_peak_device=max(int(f.get("backlog_peak_device", 0)) for f in finals if f),
                reconnects=sum(int(f.get("connects", 0)) for f in finals if f) - n_dev,
                connect_failures=sum(int(f.get("connect_failures", 0)) for f in finals if f),
                resends=sum(int(f.get("resends", 0)) for f in finals if f),
                restart_drain_s=restart_drain,
                restart_drain_from_stop_s=from_stop,
                drain_after_stop_s=round(drain_s, 2),
                cpu_s={k: round(v, 2) for k, v in cpu.items()},
                cpu_user_share={k: round(user[k] / v, 2) if v > 0 else 0.0 for k, v in cpu.items()},
                cpu_us_per_event={k: round(v / events * 1e6, 1) for k, v in cpu_prod.items()},
                worker_peak=workers_peak,
                load_avg=load,
                store="sqlite" if opts.store == "sqlite" else "postgresql",
                per_device=found["per_device"],
            )
            _print_report(report, say)
            return report
    finally:
        for wk in workers:
            if wk.alive():
                wk.proc.kill()
                wk.proc.wait()
        for p in ingests:
            p.terminate()
            p.wait(30)
        if broker is not None:
            broker.stop()


def _progress(workers: list[_Worker], counter: Any, elapsed: float, say: Callable[[str], None]) -> int:
    sts = [wk.status for wk in workers]
    backlog = sum(int(s.get("backlog", 0)) for s in sts)
    try:
        landed = counter.count_events()
    except Exception:  # noqa: BLE001 - progress only; the store may be busy
        landed = -1
    say(
        f"  t={elapsed:5.1f}s  produced {sum(int(s.get('produced', 0)) for s in sts):8d}  "
        f"landed {landed:8d}  "
        f"backlog {backlog:6d}  connected {sum(int(s.get('connected', 0)) for s in sts):5d}  "
        f"connects {sum(int(s.get('connects', 0)) for s in sts):5d}  "
        f"resends {sum(int(s.get('resends', 0)) for s in sts):4d}  load {os.getloadavg()[0]:.1f}"
    )
    return backlog


def _print_report(r: FleetReport, say: Callable[[str], None]) -> None:
    say("")
    say(
        f"devices {r.devices} ({r.driver} driver, {r.processes} processes), "
        f"{r.rate_per_device:g} events/s each"
    )
    say(
        f"produced {r.produced}  landed {r.landed}  lost {r.lost}  duplicated {r.duplicated} (by id), "
        f"{r.duplicated_seq} (by device seq); devices with sequence gaps {r.devices_with_gaps}"
    )
    say(f"latency ms (device ts -> central received_at): {r.latency_ms}")
    if r.restart_drain_s is not None:
        say(f"  outside the broker outage: {r.latency_ms_steady}")
        say(
            f"broker restart: backlog drained {r.restart_drain_s}s after the broker was back "
            f"({r.restart_drain_from_stop_s}s after it was stopped)"
        )
    say(
        f"backlog peak: {r.backlog_peak_total} events in all, {r.backlog_peak_device} on one device; "
        f"reconnects {r.reconnects}, failed connects {r.connect_failures}, resends {r.resends}"
    )
    say(f"final drain after production stopped: {r.drain_after_stop_s}s")
    say(f"CPU seconds: {r.cpu_s} (user share {r.cpu_user_share})")
    say(f"CPU us per event while producing: {r.cpu_us_per_event}")
    say(f"worker processes at peak: {r.worker_peak}; load average {r.load_avg}")


def report_json(r: FleetReport) -> dict[str, Any]:
    d = asdict(r)
    d.pop("per_device")
    return d


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return worker_main(argv[1])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--devices", type=int, default=2, help="devices per store")
    ap.add_argument("--rate", type=float, default=1.0, help="simulated events/s per device")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of production")
    ap.add_argument("--processes", type=int, default=2, help="worker processes the devices are spread over")
    ap.add_argument("--store", default="sqlite", help="'sqlite' or a postgresql:// URL")
    ap.add_argument("--ingest-workers", type=int, default=1)
    ap.add_argument("--broker", default=None, help="host:port of a running broker (default: own mosquitto)")
    ap.add_argument("--restart-broker-at", type=float, default=None, help="seconds into the run")
    ap.add_argument("--restart-downtime", type=float, default=1.0, help="seconds the broker stays down")
    ap.add_argument("--driver", choices=["mux", "agent"], default="mux")
    ap.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="outbox fsync mode")
    ap.add_argument("--heartbeat", type=float, default=10.0, help="seconds between health events")
    ap.add_argument("--ack-timeout", type=float, default=15.0)
    ap.add_argument("--reconnect-min", type=float, default=0.5)
    ap.add_argument("--reconnect-max", type=float, default=60.0)
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")
    ap.add_argument("--log-level", default="WARNING")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = FleetOptions(
        stores=a.stores,
        devices=a.devices,
        rate=a.rate,
        duration=a.duration,
        processes=a.processes,
        store=a.store,
        ingest_workers=a.ingest_workers,
        broker=a.broker,
        restart_broker_at=a.restart_broker_at,
        restart_downtime=a.restart_downtime,
        driver=a.driver,
        synchronous=a.synchronous,
        heartbeat_s=a.heartbeat,
        ack_timeout_s=a.ack_timeout,
        reconnect_min_s=a.reconnect_min,
        reconnect_max_s=a.reconnect_max,
        drain_timeout=a.drain_timeout,
        workdir=a.workdir,
        keep=a.keep,
    )
    r = run_fleet(opts, out=lambda s: print(s, flush=True))
    if a.json:
        print(json.dumps(report_json(r)))
    return 0 if r.lost == 0 and r.duplicated == 0 and r.produced == r.landed else 1


if __name__ == "__main__":
    sys.exit(main())
