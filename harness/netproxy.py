"""A TCP proxy on loopback that the fault harness puts between agents and the broker.

Each ``NetProxy`` listens on one loopback port and forwards every connection to one upstream
(the broker). Its mode decides what happens to the bytes:

* ``pass``: forwarded untouched.
* ``cut``: every connection is reset (RST, not FIN) and the port refuses new ones (ECONNREFUSED).
* ``blackhole``: connections are accepted and kept open, but bytes in both directions are read
  and dropped: no RST, no FIN, the peers see silence (a dead NAT entry, a pulled uplink cable
  behind a switch). A connection that lost bytes is poisoned: its MQTT stream can never be
  resumed, so on heal it is reset (``close_dead_on_heal``, the default: the middlebox answers
  the next packet of an unknown flow with RST) or kept silent until a peer gives up by itself.
* ``slow``: ``latency_s`` added before each forwarded chunk.
* ``lossy``: at each chunk, with probability ``reset_p`` the connection is reset mid-stream
  (possibly mid-packet), with probability ``stall_p`` the chunk waits up to ``stall_max_s``.

Several proxies share one event loop on a background thread (``ProxyLoop``); every public method
is thread-safe and returns once the change is in effect. ``fault(mode, duration_s)`` applies a
mode, waits at most ``duration_s`` and heals, so every fault has a bounded duration.

    python -m harness.netproxy --upstream 127.0.0.1:1883 --listen 18830 --script cut:3,pass:5,blackhole:2

runs a scripted sequence against your own broker (``--repeat`` loops it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

log = logging.getLogger(__name__)

Mode = Literal["pass", "cut", "blackhole", "slow", "lossy"]
MODES: tuple[str, ...] = get_args(Mode)
LOOPBACK = "127.0.0.1"
CHUNK = 65_536
T = TypeVar("T")


@dataclass(frozen=True)
class LinkParams:
    """Parameters of the ``slow`` and ``lossy`` modes."""

    latency_s: float = 0.1
    reset_p: float = 0.02
    stall_p: float = 0.05
    stall_max_s: float = 0.3

    def __post_init__(self) -> None:
        if not (0 <= self.latency_s <= 30 and 0 <= self.stall_max_s <= 30):
            raise ValueError("latency_s and stall_max_s must be within 0..30 s")
        if not (0 <= self.reset_p <= 1 and 0 <= self.stall_p <= 1):
            raise ValueError("reset_p and stall_p are probabilities")


@dataclass
class LinkStats:
    accepted: int = 0
    refused_upstream: int = 0  # upstream (the broker) not reachable: client reset
    bytes_up: int = 0  # client -> upstream, forwarded
    bytes_down: int = 0  # upstream -> client, forwarded
    bytes_dropped: int = 0  # blackholed
    resets: int = 0  # connections reset by cut, lossy or heal
    open: int = 0


class ProxyLoop:
    """An asyncio loop on a daemon thread, shared by any number of proxies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="netproxy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0, then abort (no FIN, unsent bytes discarded)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    poisoned: bool = False  # lost bytes in a blackhole: the stream cannot be resumed
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class NetProxy:
    """One loopback port forwarding to ``upstream``; see the module docstring for the modes."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen_port: int = 0,
        loop: ProxyLoop | None = None,
        seed: int | None = None,
        name: str = "proxy",
        close_dead_on_heal: bool = True,
    ) -> None:
        self.upstream = upstream
        self.name = name
        self.close_dead_on_heal = close_dead_on_heal
        self._own_loop = loop is None
        self._loop = loop or ProxyLoop()
        self._rng = random.Random(seed)
        self._port = listen_port
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self.mode: Mode = "pass"
        self.params = LinkParams()
        self.stats = LinkStats()
        self.history: list[tuple[float, Mode]] = []  # (monotonic time, mode) of every change

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> NetProxy:
        self._loop.call(self._listen())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.call(self._shutdown())
        if self._own_loop:
            self._loop.close()

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control (any thread) -------------------------------------------------------------------

    def set_mode(self, mode: Mode, params: LinkParams | None = None) -> None:
        """Switch mode now. Leaving ``blackhole`` for ``pass`` counts as a heal (see module doc)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self._loop.call(self._set_mode(mode, params))

    def heal(self) -> None:
        self.set_mode("pass")

    def fault(self, mode: Mode, duration_s: float, params: LinkParams | None = None) -> None:
        """Apply ``mode`` for ``duration_s`` (at most 600 s), then heal; blocks meanwhile."""
        with self.applied(mode, params):
            time.sleep(min(max(duration_s, 0.0), 600.0))

    @contextlib.contextmanager
    def applied(self, mode: Mode, params: LinkParams | None = None) -> Iterator[None]:
        """``with proxy.applied("cut"): ...``: the mode holds inside the block, healed on exit."""
        self.set_mode(mode, params)
        try:
            yield
        finally:
            self.heal()

    def run_script(self, steps: Sequence[tuple[Mode, float]]) -> None:
        """Run (mode, seconds) steps in order and heal at the end."""
        try:
            for mode, seconds in steps:
                self.set_mode(mode)
                time.sleep(min(max(seconds, 0.0), 600.0))
        finally:
            self.heal()

    # -- inside the loop -----------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, LOOPBACK, self._port, reuse_address=True, backlog=512
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _unlisten(self) -> None:
        # close() stops listening at once; wait_closed() would also wait for the open
        # connections (Python 3.12+), which the caller resets itself.
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _shutdown(self) -> None:
        await self._unlisten()
        for conn in list(self._conns):
            conn.reset()

    async def _set_mode(self, mode: Mode, params: LinkParams | None) -> None:
        previous = self.mode
        self.mode = mode
        if params is not None:
            self.params = params
        self.history.append((time.monotonic(), mode))
        log.info("%s: %s -> %s", self.name, previous, mode)
        if mode == "cut":
            await self._unlisten()
            self._reset_all(lambda c: True)
            return
        await self._listen()
        if mode != "blackhole" and self.close_dead_on_heal:
            self._reset_all(lambda c: c.poisoned)

    def _reset_all(self, which: Any) -> None:
        for conn in list(self._conns):
            if which(conn) and not conn.closed:
                conn.reset()
                self.stats.resets += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        conn = _Conn(writer)
        if self.mode == "cut":  # raced with a cut: refuse as the closed port would
            conn.reset()
            return
        self._conns.add(conn)
        self.stats.open = len(self._conns)
        try:
            if self.mode == "blackhole":
                # The SYN was answered (by the middlebox) but nothing reaches the broker.
                conn.poisoned = True
                await self._pump(conn, reader, None, "up")
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 5.0)
            except (OSError, TimeoutError):
                self.stats.refused_upstream += 1
                conn.reset()
                return
            conn.upstream = up_writer
            with contextlib.suppress(TypeError):
                up_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = asyncio.ensure_future(self._pump(conn, reader, up_writer, "up"))
            down = asyncio.ensure_future(self._pump(conn, up_reader, writer, "down"))
            conn.tasks = [up, down]
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in conn.tasks:
                task.cancel()
            if not conn.closed:
                conn.closed = True
                with contextlib.suppress(Exception):
                    writer.close()
                if conn.upstream is not None:
                    with contextlib.suppress(Exception):
                        conn.upstream.close()
            self._conns.discard(conn)
            self.stats.open = len(self._conns)

    async def _pump(
        self,
        conn: _Conn,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter | None,
        direction: Literal["up", "down"],
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError):
            while not conn.closed:
                data = await src.read(CHUNK)
                if not data:
                    return
                mode, p = self.mode, self.params
                if mode == "blackhole" or conn.poisoned or dst is None:
                    conn.poisoned = True
                    self.stats.bytes_dropped += len(data)
                    continue
                if mode == "slow" and p.latency_s > 0:
                    await asyncio.sleep(p.latency_s)
                elif mode == "lossy":
                    r = self._rng.random()
                    if r < p.reset_p:
                        conn.reset()
                        self.stats.resets += 1
                        return
                    if r < p.reset_p + p.stall_p:
                        await asyncio.sleep(self._rng.uniform(0, p.stall_max_s))
                if conn.closed or conn.poisoned:
                    continue  # cut, or blackholed while this chunk waited
                # Counted before the write, so a peer that received them sees them counted.
                if direction == "up":
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                dst.write(data)
                await dst.drain()


def parse_script(text: str) -> list[tuple[Mode, float]]:
    """``"cut:3,pass:5,blackhole:2"`` -> [("cut", 3.0), ("pass", 5.0), ("blackhole", 2.0)]."""
    steps: list[tuple[Mode, float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        mode, _, seconds = part.partition(":")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} in {part!r}; one of {', '.join(MODES)}")
        steps.append((mode, float(seconds or 1.0)))  # type: ignore[arg-type]  # checked just above
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.netproxy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="host:port of the broker")
    ap.add_argument("--listen", type=int, default=0, help="loopback port to listen on (0: any)")
    ap.add_argument("--script", default="", help="mode:seconds,... (empty: pass until Ctrl-C)")
    ap.add_argument("--repeat", type=int, default=1, help="run the script this many times")
    ap.add_argument("--latency-s", type=float, default=0.1)
    ap.add_argument("--reset-p", type=float, default=0.02)
    ap.add_argument("--stall-p", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    host, _, port = args.upstream.rpartition(":")
    proxy = NetProxy((host or LOOPBACK, int(port)), listen_port=args.listen, seed=args.seed)
    proxy.start()
    proxy.params = LinkParams(latency_s=args.latency_s, reset_p=args.reset_p, stall_p=args.stall_p)
    print(f"listening on {LOOPBACK}:{proxy.port} -> {args.upstream}", flush=True)
    try:
        steps = parse_script(args.script)
        if not steps:
            while True:
                time.sleep(3600)
        for _ in range(max(args.repeat, 1)):
            proxy.run_script(steps)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"stats: {proxy.stats}", flush=True)
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
