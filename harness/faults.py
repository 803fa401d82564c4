"""Fault primitives and the lab they act on: a broker, agents behind fault proxies, ingest workers.

``Lab`` runs the whole pipeline as separate processes, the way it runs in a store and in the
data centre: a private mosquitto; N agents (``python -m edge_agent run --config FILE``), each
reaching the broker through its own ``NetProxy`` and producing simulated scans and footfall with
ledgers; M ingest workers (``python -m sync.central ingest``) sharing one subscription group; and
an observer client that watches presence, captures traffic for replays and plays the rogue.

Every fault is an ``Injection``: a name, a target, the resources it holds (so concurrent faults
never fight over one process) and ``run()``, which injects, waits a bounded time and heals before
returning. Factories draw every random choice up front (``run()`` runs on its own thread), so a
seed replays the same schedule. ``FAULTS`` maps fault types to factories
``(lab, rng, duration_s) -> Injection``:

==========================  ===========================================================================
``link_cut``                the agent's link is reset and refused (``NetProxy`` cut)
``link_blackhole``          the agent's bytes vanish both ways, no RST; reset on heal
``link_slow``               50-300 ms added per chunk
``link_lossy``              random mid-stream resets and stalls
``broker_kill9``            kill -9 of mosquitto, restarted with persistence
``broker_kill9_amnesia``    kill -9, restarted without persistence (sessions and queues gone)
``reconnect_storm``         broker restart; every agent must reconnect (checked)
``agent_kill9``             kill -9 of an agent at a random moment, restarted
``ingest_kill9``            kill -9 of one ingest worker of the group, restarted
``ingest_commit_crash``     a worker SIGKILLs itself between commit and ack (CLI fault flag)
``disk_full``               the agent's outbox capped (``outbox.max_rows``) while its link is cut:
                            footfall folded, health evicted, scans kept over capacity
``disk_enospc``             a real full disk (a ballast file on the agent's tmpfs; ``Lab(tmpfs_mb=N)``)
``hostile``                 malformed, oversized, wrong-version and replayed messages on every
                            subscribed topic (events, acks, config)
``pg_restart``              ``pg_ctlcluster ... restart`` (only with ``Lab(pg_restart=True)``)
==========================  ===========================================================================

Clock jumps are not here: the agent reads ``time.time()`` directly, so there is no clock to inject.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.clock import FAULT_CLOCK_ENV
from harness.broker import Mosquitto
from harness.footfall_ledger import read_footfall_ledger
from harness.invariants import DeviceSnapshot, OutboxView, ledger_count, read_outbox
from harness.netproxy import LinkParams, Mode, NetProxy, ProxyLoop
from harness.processes import ingest_argv
from sync import topics
from sync.central.stores import open_central_store

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SCAN_SOURCE = "scans"
FOOTFALL_SOURCE = "foot"
PG_RESTART_CMD = ("pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart")


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond`` until true or ``timeout`` seconds passed; returns the last result."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


# -- processes ---------------------------------------------------------------------------------------


class _Proc:
    """A child process the harness may kill -9; ``expected_down`` while a fault keeps it down."""

    name: str
    log_path: Path

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.expected_down = False
        self.starts = 0

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=out, start_new_session=True, env=env
            )
        self.starts += 1
        self.expected_down = False

    def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill9(self) -> None:
        self.expected_down = True
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int | None:
        self.expected_down = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s ignored SIGTERM for %.0fs; SIGKILL", self.name, timeout)
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


class AgentProc(_Proc):
    """One edge agent in a subprocess, its broker link through ``proxy``, with two simulated
    sources: scans only (each with a checkable text) and footfall only (folded or evicted under
    pressure). The agent runs with the footfall ledger tap (``harness.footfall_ledger``), its
    ledger in the work directory (off the state directory, which ``disk_enospc`` fills)."""

    def __init__(
        self,
        workdir: Path,
        store: str,
        device: str,
        proxy: NetProxy,
        *,
        scan_eps: float,
        footfall_eps: float,
        heartbeat_s: float = 2.0,
        ack_timeout_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.workdir = workdir
        self.store = store
        self.device = device
        self.name = f"agent {store}/{device}"
        self.proxy = proxy
        self.scan_eps = scan_eps
        self.footfall_eps = footfall_eps
        self.heartbeat_s = heartbeat_s
        self.ack_timeout_s = ack_timeout_s
        self.state_dir = workdir / "state"
        self.config_path = workdir / "device.json"
        self.log_path = workdir / "agent.log"
        self.killed_at: dict[str, list[int]] = {SCAN_SOURCE: [], FOOTFALL_SOURCE: []}
        workdir.mkdir(parents=True, exist_ok=True)

    def doc(self, *, max_rows: int | None = None) -> dict[str, Any]:
        sources: list[dict[str, Any]] = [
            {"id": SCAN_SOURCE, "rate_eps": self.scan_eps, "ledger": f"{SCAN_SOURCE}.ledger", "scan_share": 1}
        ]
        if self.footfall_eps > 0:
            sources.append(
                {
                    "id": FOOTFALL_SOURCE,
                    "rate_eps": self.footfall_eps,
                    "ledger": f"{FOOTFALL_SOURCE}.ledger",
                    "scan_share": 0.0,
                }
            )
        doc: dict[str, Any] = {
            "store": self.store,
            "device": self.device,
            "state_dir": str(self.state_dir),
            "mqtt": {
                "port": self.proxy.port,
                "keepalive_s": 5,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
            },
            "sync": {
                "ack_timeout_s": self.ack_timeout_s,
                "heartbeat_s": self.heartbeat_s,
                "batch_max_events": 50,
                "drain_rate_eps": 0,
            },
            "simulated_sources": sources,
        }
        if max_rows is not None:
            doc["outbox"] = {"max_rows": max_rows}
        return doc

    def start(self, *, max_rows: int | None = None) -> None:
        self.config_path.write_text(json.dumps(self.doc(max_rows=max_rows)))
        env = {**os.environ, FAULT_CLOCK_ENV: str(self.clock_skew_path)}
        argv = [sys.executable, "-m", "harness.footfall_ledger", "--ledger", str(self.footfall_ledger_path)]
        self._spawn([*argv, "run", "--config", str(self.config_path)], env=env)

    @property
    def footfall_ledger_path(self) -> Path:
        """Every footfall window the agent committed, with its counts (``harness.footfall_ledger``)."""
        return self.workdir / "footfall.ledger"

    @property
    def clock_skew_path(self) -> Path:
        """Seconds added to this agent's wall clock (the clock_jump fault writes it)."""
        return self.workdir / "clock_skew"

    def kill9(self) -> None:
        super().kill9()
        # The ledger is written after each commit: the event after this count may be committed.
        for source in self.killed_at:
            self.killed_at[source].append(self.ledger(source))

    def ledger(self, source: str = SCAN_SOURCE) -> int:
        return ledger_count(self.state_dir / f"{source}.ledger")

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.db"

    def outbox(self) -> OutboxView | None:
        if not self.outbox_path.exists():
            return None
        try:
            return read_outbox(self.outbox_path)
        except Exception as exc:  # noqa: BLE001 - the file may be mid-creation: report as unknown
            log.debug("reading %s: %s", self.outbox_path, exc)
            return None

    def snapshot(self) -> DeviceSnapshot:
        """Ledgers first, then the outbox: every event the ledgers count is below ``upto_seq``."""
        ledgers = {SCAN_SOURCE: self.ledger(SCAN_SOURCE)}
        view = self.outbox()
        return DeviceSnapshot(
            store=self.store,
            device=self.device,
            upto_seq=(view.next_seq - 1) if view else 0,
            scan_ledgers=ledgers,
            killed_at={SCAN_SOURCE: list(self.killed_at[SCAN_SOURCE])},
            folded_at_snapshot=sum(view.folded.values()) if view else None,
        )

    def settled(self, snap: DeviceSnapshot, view: OutboxView | None) -> None:
        """Fill in what is read after the drain: the outbox's counters and the footfall ledger."""
        snap.outbox = view
        snap.footfall = read_footfall_ledger(self.footfall_ledger_path)


class IngestProc(_Proc):
    """One central ingest worker (``python -m sync.central ingest``) of a shared-subscription group."""

    def __init__(self, workdir: Path, store_url: str, broker: Mosquitto, client_id: str, group: str) -> None:
        super().__init__()
        self.store_url = store_url
        self.broker = broker
        self.client_id = client_id
        self.group = group
        self.name = f"ingest {client_id}"
        self.log_path = workdir / f"{client_id}.log"
        self.commit_crashes = 0

    def start(self, *, crash_after_commits: int | None = None) -> None:
        extra = (
            [] if crash_after_commits is None else ["--fault-crash-after-commits", str(crash_after_commits)]
        )
        argv = ingest_argv(
            self.store_url,
            f"127.0.0.1:{self.broker.port}",
            client_id=self.client_id,
            group=self.group,
            extra=extra,
        )
        self._spawn(argv)
        if crash_after_commits is not None:
            self.expected_down = True  # it is meant to die by itself


# -- the observer / rogue client ---------------------------------------------------------------------


class Observer:
    """The harness's own MQTT client, straight to the broker (never through a proxy).

    Watches every device's retained status (to see reconnects), keeps the last few events and
    acks messages (to replay them), and publishes the hostile traffic.
    """

    def __init__(self, port: int, client_id: str) -> None:
        self.online_ts: dict[tuple[str, str], float] = {}  # device -> ts of its latest online message
        self.events: deque[tuple[str, bytes]] = deque(maxlen=16)
        self.acks: deque[tuple[str, bytes]] = deque(maxlen=16)
        self._lock = threading.Lock()
        self._port = port
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.reconnect_delay_set(1, 2)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect_async("127.0.0.1", self._port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(
                [(topics.STATUS.wildcard(), 1), (topics.EVENTS.wildcard(), 0), (topics.ACKS.wildcard(), 0)]
            )

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None:
            return
        store, device, suffix = parsed
        payload = bytes(msg.payload)
        if suffix == topics.STATUS.suffix:
            with contextlib.suppress(Exception):
                doc = orjson.loads(payload)
                if doc.get("state") == "online" and isinstance(doc.get("ts"), int | float):
                    with self._lock:
                        self.online_ts[(store, device)] = float(doc["ts"])
        elif suffix == topics.EVENTS.suffix and not store.endswith("-rogue"):
            self.events.append((msg.topic, payload))
        elif suffix == topics.ACKS.suffix:
            self.acks.append((msg.topic, payload))

    def online_since(self, store: str, device: str, since: float) -> bool:
        with self._lock:
            return self.online_ts.get((store, device), 0.0) > since

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 5.0) -> bool:
        """QoS 1; True once the broker has it (PUBACK), False if not within ``timeout``."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False  # not connected (a broker fault): paho may still send it later
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout)
        with contextlib.suppress(RuntimeError, ValueError):
            return info.is_published()
        return False


# -- the lab -----------------------------------------------------------------------------------------


@dataclass
class LabEvent:
    """Something the lab noticed that is not a fault it injected."""

    what: str
    detail: str = ""


class Lab:
    """Broker, fault proxies, agents and ingest workers as processes; ``start``/``stop``."""

    def __init__(
        self,
        workdir: Path,
        store_url: str,
        *,
        agents: int = 3,
        ingests: int = 2,
        scan_eps: float = 30.0,
        footfall_eps: float = 8.0,
        heartbeat_s: float = 2.0,
        run_id: str = "chaos",
        seed: int = 0,
        pg_restart: bool = False,
        tmpfs_mb: int = 0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store_url = store_url
        self.run_id = run_id
        self.pg_restart = pg_restart and store_url.startswith(("postgresql://", "postgres://"))
        # Each agent's state directory on its own tmpfs of this size (for ``disk_enospc``; needs
        # permission to mount), 0 for the ordinary file system.
        self.tmpfs_mb = tmpfs_mb
        self._mounts: list[Path] = []
        self.broker = Mosquitto(self.workdir / "broker")
        self.loop = ProxyLoop()
        self.proxies: list[NetProxy] = []
        self.agents: list[AgentProc] = []
        for i in range(agents):
            proxy = NetProxy(("127.0.0.1", self.broker.port), loop=self.loop, seed=seed + i, name=f"link-{i}")
            self.proxies.append(proxy)
            self.agents.append(
                AgentProc(
                    self.workdir / f"agent{i}",
                    f"{run_id}-s{i % 2}",
                    f"d{i}",
                    proxy,
                    scan_eps=scan_eps,
                    footfall_eps=footfall_eps,
                    heartbeat_s=heartbeat_s,
                )
            )
        self.ingests = [
            IngestProc(self.workdir, store_url, self.broker, f"{run_id}-ingest-{j}", f"{run_id}-grp")
            for j in range(ingests)
        ]
        self.observer = Observer(self.broker.port, f"{run_id}-observer")
        # sha256 of hostile messages allowed in the dead letters, and of those that must be there
        # (a broker fault may drop one in flight: it then leaves ``hostile_required``).
        self.hostile_dead: set[str] = set()
        self.hostile_required: set[str] = set()
        self.events: list[LabEvent] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        self.broker.start()
        open_central_store(self.store_url).close()  # create the schema once, before the workers race
        for proxy in self.proxies:
            proxy.start()
        self.observer.start()
        for ingest in self.ingests:
            ingest.start()
        for agent in self.agents:
            if self.tmpfs_mb:
                self._mount_tmpfs(agent.state_dir)
            agent.start()

    def _mount_tmpfs(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_mb}m", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cannot mount a tmpfs at {where}: {out.stderr.decode(errors='replace')}")
        self._mounts.append(where)

    def stop(self) -> None:
        for agent in self.agents:
            agent.terminate()
        for where in self._mounts:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        for ingest in self.ingests:
            ingest.terminate()
        with contextlib.suppress(Exception):
            self.observer.stop()
        for proxy in self.proxies:
            proxy.stop()
        self.loop.close()
        self.broker.stop()

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.stop()  # whatever did start: no stray broker or agent
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health of the lab ------------------------------------------------------------------------

    def processes(self) -> dict[str, bool]:
        """Name -> running, for every process that should be running now."""
        procs: list[_Proc] = [*self.agents, *self.ingests]
        out = {p.name: p.alive() for p in procs if not p.expected_down}
        out["broker"] = self.broker.running()
        return out

    def heal_all(self) -> list[str]:
        """Undo whatever a fault left behind; returns what died without being killed by a fault."""
        died: list[str] = []
        for proxy in self.proxies:
            proxy.heal()
        if not self.broker.running():
            self.broker.persistence = True
            self.broker.start()
        for p in [*self.ingests, *self.agents]:
            if p.alive():
                continue
            if not p.expected_down:
                died.append(f"{p.name} exited with {p.exit_code()}: {p.log_tail(5)}")
            if isinstance(p, AgentProc):
                p.killed_at[SCAN_SOURCE].append(p.ledger(SCAN_SOURCE))
                p.killed_at[FOOTFALL_SOURCE].append(p.ledger(FOOTFALL_SOURCE))
            p.start()
        for d in died:
            self.events.append(LabEvent("unexpected exit", d))
        return died

    def agent_log_count(self, needle: str) -> int:
        """Lines containing ``needle`` in every agent's log (evidence: resends, lost connections)."""
        total = 0
        for agent in self.agents:
            with contextlib.suppress(OSError), agent.log_path.open("rb") as f:
                total += sum(1 for line in f if needle.encode() in line)
        return total

    def snapshot(self) -> list[DeviceSnapshot]:
        return [a.snapshot() for a in self.agents]

    def wait_drained(self, snaps: list[DeviceSnapshot], timeout: float) -> list[str]:
        """Wait until no outbox holds an event at or below its snapshot; returns devices still
        holding some at the timeout. Fills in each snapshot's outbox view (eviction counters) and
        footfall ledger."""
        pending = dict(zip((s.device for s in snaps), zip(snaps, self.agents, strict=True), strict=True))
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for device, (snap, agent) in list(pending.items()):
                view = agent.outbox()
                if view is not None and not view.holds_upto(snap.upto_seq):
                    agent.settled(snap, view)
                    del pending[device]
            if pending:
                time.sleep(0.1)
        for snap, agent in pending.values():
            agent.settled(snap, agent.outbox())
        return sorted(pending)


# -- faults ------------------------------------------------------------------------------------------


class FaultCheckFailed(AssertionError):
    """A fault's own check failed (e.g. agents did not reconnect): an invariant violation."""


@dataclass
class Injection:
    """One fault, planned: ``run()`` injects it, waits a bounded time, heals and returns details."""

    kind: str
    target: str
    resources: frozenset[str]
    run: Callable[[], dict[str, Any]]
    loses_broker_messages: bool = False


FaultFactory = Callable[[Lab, random.Random, float], Injection]
FAULTS: dict[str, FaultFactory] = {}


def fault(name: str) -> Callable[[FaultFactory], FaultFactory]:
    def register(factory: FaultFactory) -> FaultFactory:
        FAULTS[name] = factory
        return factory

    return register


def _pick_agent(lab: Lab, rng: random.Random) -> tuple[int, AgentProc]:
    i = rng.randrange(len(lab.agents))
    return i, lab.agents[i]


def _link_fault(mode: Mode, params: Callable[[random.Random], LinkParams] | None = None) -> FaultFactory:
    def factory(lab: Lab, rng: random.Random, duration: float) -> Injection:
        i, agent = _pick_agent(lab, rng)
        proxy = lab.proxies[i]
        link_params = params(rng) if params else None

        def run() -> dict[str, Any]:
            before = proxy.stats.resets
            proxy.fault(mode, duration, link_params)
            return {"resets": proxy.stats.resets - before}

        return Injection(f"link_{mode}", agent.device, frozenset({f"link:{i}"}), run)

    return factory


fault("link_cut")(_link_fault("cut"))
fault("link_blackhole")(_link_fault("blackhole"))
fault("link_slow")(_link_fault("slow", lambda rng: LinkParams(latency_s=rng.uniform(0.05, 0.3))))
fault("link_lossy")(
    _link_fault("lossy", lambda rng: LinkParams(reset_p=rng.uniform(0.02, 0.1), stall_p=0.1, stall_max_s=0.3))
)


def _broker_kill(lab: Lab, duration: float, *, persistence: bool) -> dict[str, Any]:
    lab.broker.kill9()
    time.sleep(duration)
    lab.broker.persistence = persistence
    lab.broker.start()
    return {"persistence": persistence}


@fault("broker_kill9")
def broker_kill9(lab: Lab, rng: random.Random, duration: float) -> Injection:
    return Injection(
        "broker_kill9",
        "mosquitto",
        frozenset({"broker"}),
        lambda: _broker_kill(lab, duration, persistence=True),
        loses_broker_messages=True,  # autosave is every second: the last second is gone
    )


@fault("broker_kill9_amnesia")
def broker_kill9_amnesia(lab: Lab, rng: random.Random, duration: float) -> Injection:
    return Injection(
        "broker_kill9_amnesia",
        "mosquitto",
        frozenset({"broker"}),
        lambda: _broker_kill(lab, duration, persistence=False),
        loses_broker_messages=True,
    )


@fault("reconnect_storm")
def reconnect_storm(lab: Lab, rng: random.Random, duration: float) -> Injection:
    """The broker restarts while every agent is connected; all must come back, and do."""

    def run() -> dict[str, Any]:
        lab.broker.stop()  # graceful: every agent sees its connection close at the same moment
        time.sleep(duration)
        restarted = time.time()
        lab.broker.persistence = True
        lab.broker.start()

        def missing() -> list[str]:
            seen = lab.observer.online_since
            return [a.device for a in lab.agents if a.alive() and not seen(a.store, a.device, restarted)]

        back = wait_for(lambda: not missing(), timeout=30)
        spread = time.time() - restarted
        if not back:
            raise FaultCheckFailed(f"agents did not reconnect within 30 s of a broker restart: {missing()}")
        return {"all_back_s": round(spread, 2)}

    links = frozenset(f"link:{i}" for i in range(len(lab.agents)))
    agents = frozenset(f"agent:{i}" for i in range(len(lab.agents)))
    return Injection("reconnect_storm", "all agents", frozenset({"broker"}) | links | agents, run)


@fault("clock_jump")
def clock_jump(lab: Lab, rng: random.Random, duration: float) -> Injection:
    """One agent's wall clock jumps (an hour to a day, either way) and comes back after ``duration``."""
    i, agent = _pick_agent(lab, rng)
    jump_s = rng.choice((-1, 1)) * rng.uniform(600, 86_400)

    def run() -> dict[str, Any]:
        agent.clock_skew_path.write_text(f"{jump_s:.3f}")
        time.sleep(duration)
        agent.clock_skew_path.write_text("0")
        return {"jump_s": round(jump_s, 1)}

    return Injection("clock_jump", agent.device, frozenset({f"agent:{i}"}), run)


@fault("agent_kill9")
def agent_kill9(lab: Lab, rng: random.Random, duration: float) -> Injection:
    i, agent = _pick_agent(lab, rng)
    when = rng.uniform(0, duration)
    down = rng.uniform(0, min(duration, 1.0))

    def run() -> dict[str, Any]:
        time.sleep(when)
        agent.kill9()
        time.sleep(down)
        agent.start()
        return {"at_s": round(when, 2), "down_s": round(down, 2), "ledger": agent.killed_at[SCAN_SOURCE][-1]}

    return Injection("agent_kill9", agent.device, frozenset({f"agent:{i}"}), run)


@fault("ingest_kill9")
def ingest_kill9(lab: Lab, rng: random.Random, duration: float) -> Injection:
    j = rng.randrange(len(lab.ingests))
    ingest = lab.ingests[j]
    when = rng.uniform(0, duration / 2)

    def run() -> dict[str, Any]:
        time.sleep(when)
        ingest.kill9()
        time.sleep(duration - when)
        ingest.start()
        return {"at_s": round(when, 2)}

    return Injection("ingest_kill9", ingest.client_id, frozenset({f"ingest:{j}"}), run)


@fault("ingest_commit_crash")
def ingest_commit_crash(lab: Lab, rng: random.Random, duration: float) -> Injection:
    """Restart a worker with ``--fault-crash-after-commits N``: it SIGKILLs itself right after its
    Nth commit, before the PUBACKs and acks leave. Then it is started again, normally."""
    j = rng.randrange(len(lab.ingests))
    ingest = lab.ingests[j]
    n = rng.randint(1, 5)

    def run() -> dict[str, Any]:
        ingest.kill9()
        ingest.start(crash_after_commits=n)
        assert ingest.proc is not None
        try:
            rc: int | None = ingest.proc.wait(max(duration, 0.5) + 10)
        except subprocess.TimeoutExpired:
            rc = None
            ingest.kill9()
        crashed = rc == -signal.SIGKILL
        if crashed:
            ingest.commit_crashes += 1
        ingest.start()
        return {"after_commits": n, "crashed_between_commit_and_ack": crashed}

    return Injection("ingest_commit_crash", ingest.client_id, frozenset({f"ingest:{j}"}), run)


@fault("disk_full")
def disk_full(lab: Lab, rng: random.Random, duration: float) -> Injection:
    """The outbox capped at a few dozen events while the link is down: scans stay (over capacity),
    unsent footfall is folded, health and footfall that may have been sent give way, every seq
    given up or folded counted. Then the cap is lifted."""
    i, agent = _pick_agent(lab, rng)
    proxy = lab.proxies[i]
    cap = rng.randint(10, 40)

    def run() -> dict[str, Any]:
        agent.kill9()
        before = agent.outbox()
        given_up_before = before.given_up if before else 0
        folded_before = sum(before.folded.values()) if before else 0
        with proxy.applied("cut"):
            agent.start(max_rows=cap)
            # Until scans alone exceed the cap (the outbox is over capacity), bounded.
            wait_for(lambda: (v := agent.outbox()) is not None and v.scan_rows > cap, max(duration, 1.0) + 5)
            time.sleep(min(duration, 1.0))
            during = agent.outbox()
        agent.terminate()  # graceful: the capped config goes away with this process
        agent.start()
        over = during is not None and during.rows > cap
        given_up = (during.given_up if during else 0) - given_up_before
        folded = (sum(during.folded.values()) if during else 0) - folded_before
        if not over:
            raise FaultCheckFailed(f"{agent.device}: outbox capped at {cap} never went over capacity")
        return {"cap": cap, "rows": during.rows if during else None, "given_up": given_up, "folded": folded}

    resources = frozenset({f"agent:{i}", f"link:{i}"})
    return Injection("disk_full", agent.device, resources, run)


@fault("disk_enospc")
def disk_enospc(lab: Lab, rng: random.Random, duration: float) -> Injection:
    """A real full disk: with the link cut, a ballast file fills the agent's tmpfs (``Lab(tmpfs_mb=
    ...)``), so outbox appends (and the ledger) hit ENOSPC; the link comes back while the disk is
    still full (deliveries succeed, deletes cannot), then the ballast goes."""
    i, agent = _pick_agent(lab, rng)
    proxy = lab.proxies[i]

    def run() -> dict[str, Any]:
        if not lab.tmpfs_mb:
            return {"skipped": "needs Lab(tmpfs_mb=N) (--tmpfs-mb)"}
        ballast = agent.state_dir / "ballast"
        with proxy.applied("cut"):
            time.sleep(min(duration, 1.0))
            first = agent.ledger(SCAN_SOURCE)
            fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * 65536)
            finally:
                os.close(fd)
            time.sleep(duration / 2)
        time.sleep(duration / 2)  # link back, disk still full
        ballast.unlink()
        # A scan committed just before its ledger write failed is made again by the restarted
        # source, as after a kill -9: allow it anywhere in the window.
        last = agent.ledger(SCAN_SOURCE)
        agent.killed_at[SCAN_SOURCE].extend(range(first, last + 1))
        return {"ledger_window": last - first}

    return Injection("disk_enospc", agent.device, frozenset({f"agent:{i}", f"link:{i}"}), run)


@fault("pg_restart")
def pg_restart(lab: Lab, rng: random.Random, duration: float) -> Injection:
    def run() -> dict[str, Any]:
        if not lab.pg_restart:
            return {"skipped": "not enabled (Lab(pg_restart=True) and a postgresql:// store)"}
        out = subprocess.run(PG_RESTART_CMD, capture_output=True, timeout=120, check=False)
        if out.returncode != 0:
            raise FaultCheckFailed(f"pg restart failed: {out.stderr.decode(errors='replace')[:500]}")
        return {"rc": out.returncode}

    return Injection("pg_restart", "postgresql", frozenset({"pg"}), run)


# -- hostile traffic ---------------------------------------------------------------------------------


def hostile_messages(store: str, device: str, rng: random.Random) -> Iterator[tuple[str, str, bytes, bool]]:
    """(label, topic, payload, must_be_dead_letter) for one device's events, acks and config.

    Nothing here is a well-formed message forged in the device's name: on a broker with the ACL
    of ``harness.security`` nobody but the device can write its topics, and nothing can tell a
    well-formed forgery from the real thing (docs/chaos.md).
    """
    events = topics.EVENTS.for_device(store, device)
    acks = topics.ACKS.for_device(store, device)
    config = topics.CONFIG.for_device(store, device)
    nonce = rng.getrandbits(64)
    batch = {"batch": f"rogue-{nonce:x}", "store": store, "device": device}
    event = {
        "id": "00000000-0000-7000-8000-%012x" % (nonce & 0xFFFFFFFFFFFF),
        "store": store,
        "device": device,
        "seq": 1,
        "ts": "2024-01-01T00:00:00+00:00",
        "kind": "scan",
        "payload": {"camera": "rogue", "code_kind": "other", "text": "rogue"},
    }
    big = b'{"v":1,"pad":"' + b"x" * (1_100_000 + rng.randrange(1000)) + b'"}'
    yield "events: not JSON", events, b'{"v":1,"batch":' + rng.randbytes(32).hex().encode(), True
    yield "events: JSON array", events, b"[%d,2,3]" % nonce, True
    yield "events: empty", events, b"", True
    yield "events: wrong version", events, orjson.dumps({"v": 2, **batch, "events": [event]}), True
    yield "events: oversized", events, big, True
    yield (
        "events: spoofed envelope",
        events,
        orjson.dumps({"v": 1, **batch, "device": device + "x", "events": [event]}),
        True,
    )
    yield "events: no events", events, orjson.dumps({"v": 1, **batch, "events": []}), True
    yield "acks: not JSON", acks, b"\xff\xfe" + rng.randbytes(16), False
    yield "acks: wrong version", acks, orjson.dumps({"v": 2, "batch": "x", "seqs": [[1, 10**9]]}), False
    extra = {"v": 1, "batch": "x", "seqs": [[1, 10**9]], "all": 1}
    yield "acks: extra field", acks, orjson.dumps(extra), False
    yield "acks: bad ranges", acks, orjson.dumps({"v": 1, "batch": "x", "seqs": "1-1000000000"}), False
    yield "acks: oversized", acks, big, False
    yield "config: not JSON", config, b"{config" + rng.randbytes(8).hex().encode(), False
    yield "config: wrong version", config, orjson.dumps({"v": 2, "store": store, "device": device}), False
    yield "config: bad hash", config, orjson.dumps(
        {
            "v": 1, "store": store, "device": device, "deployment": "rogue", "version": 10**6,
            "hash": "0" * 64, "issued_at": "2024-01-01T00:00:00+00:00", "config": {"store": store},
        }
    ), False  # fmt: skip
    yield "config: other device", config, orjson.dumps({"v": 1, "store": store, "device": "elsewhere"}), False
    yield "config: oversized", config, big, False


@fault("hostile")
def hostile(lab: Lab, rng: random.Random, duration: float) -> Injection:
    """A rogue client floods one device's topics, replays captured events and acks messages, and
    sends garbage to a topic of a device that does not exist. Config messages are retained (as
    ops would publish them) and cleared at the end."""
    _, agent = _pick_agent(lab, rng)
    own = random.Random(rng.getrandbits(64))  # run() is on another thread: never draw from ``rng``

    def run() -> dict[str, Any]:
        sent = {"dead_expected": 0, "ignored_expected": 0, "replays": 0, "unconfirmed": 0}
        targets = [(agent.store, agent.device), (f"{lab.run_id}-rogue", "nobody")]
        deadline = time.monotonic() + duration
        confirm_by = deadline + 5  # PUBACKs are awaited, but never longer than this in total

        def publish(topic: str, payload: bytes, retain: bool = False) -> bool:
            wait = max(0.05, confirm_by - time.monotonic())
            if lab.observer.publish(topic, payload, retain=retain, timeout=wait):
                return True
            sent["unconfirmed"] += 1
            return False

        for store, device in targets:
            for _label, topic, payload, dead in hostile_messages(store, device, own):
                is_config = topic.endswith("/config")
                if dead:
                    # Allowed in the dead letters before it is sent (it may land at once)...
                    digest = hashlib.sha256(payload).hexdigest()
                    with lab.lock:
                        lab.hostile_dead.add(digest)
                confirmed = publish(topic, payload, retain=is_config)
                if dead and confirmed:
                    # ...and required only once the broker confirmed it.
                    with lab.lock:
                        lab.hostile_required.add(digest)
                if is_config:
                    # The agent handles only the latest retained config: give it time for each.
                    time.sleep(0.25)
                if dead:
                    sent["dead_expected"] += 1
                else:
                    sent["ignored_expected"] += 1
        # Replays: legitimate messages seen earlier, published again (duplicates, harmless).
        for topic, payload in [*list(lab.observer.events)[-4:], *list(lab.observer.acks)[-4:]]:
            publish(topic, payload)
            sent["replays"] += 1
        time.sleep(max(0.0, deadline - time.monotonic()))
        for store, device in targets:
            publish(topics.CONFIG.for_device(store, device), b"", retain=True)
        return sent

    return Injection("hostile", agent.device, frozenset({"rogue"}), run)
