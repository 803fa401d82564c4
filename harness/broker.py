"""Start and stop a private mosquitto with its own config file, by PID.

Used by the tests (a fresh broker per test on a free port), the demo and the fault harness, so each
can stop it, restart it, kill -9 it, and add TLS, passwords and ACLs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if Path(candidate).exists():
            return candidate
    return None


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


@dataclass
class Mosquitto:
    """A mosquitto process owned by the caller.

    ``extra_conf`` lines are appended to the generated config (listeners for TLS, password_file,
    acl_file...). ``listener_conf`` lines follow the main listener line, so they configure the
    listener on ``port`` itself (``cafile``/``certfile``/``keyfile`` make it a TLS port).
    ``max_queued_messages`` defaults to 0 (unlimited): see README "Broker settings".
    ``user``: the account mosquitto runs as when started as root (its ``user`` option). Started as
    root it defaults to root: mosquitto's own default drops to the ``mosquitto`` account, which
    cannot write a root-owned 0700 directory such as pytest's ``tmp_path``, and persistence would
    be lost silently (a broker restart test would then test nothing).
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    persistence: bool = True
    max_queued_messages: int = 0
    extra_conf: list[str] = field(default_factory=list)
    allow_anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None
    listener_conf: list[str] = field(default_factory=list)
    user: str | None = field(default_factory=lambda: "root" if os.geteuid() == 0 else None)
    # Ports of further listeners in ``extra_conf``: start() waits for them too, because mosquitto
    # opens its listeners one after the other (a TLS listener loads its certificates first), so
    # the first one answering does not mean the others do.
    extra_ports: list[int] = field(default_factory=list)

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            *self.listener_conf,
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"max_queued_messages {self.max_queued_messages}",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "set_tcp_nodelay true",
            *([f"user {self.user}"] if self.user else []),
            *self.extra_conf,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.write_conf()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf_path)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        try:
            for port in (self.port, *self.extra_ports):
                wait_port("127.0.0.1", port, timeout)
            self._wait_signal_handlers(timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log_tail()}") from None

    def _wait_signal_handlers(self, timeout: float) -> None:
        """Wait until mosquitto handles SIGHUP and SIGTERM itself.

        It opens its listeners before it installs its signal handlers, so a port that answers
        does not mean a SIGHUP (reload) is safe yet: sent in between, it is ignored when the
        broker inherited an ignored SIGHUP (under nohup) and kills the broker otherwise. The
        handlers show in /proc/PID/status as caught signals; without /proc this does not wait.
        """
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status")
        wanted = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGTERM - 1))
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = status.read_text()
            except OSError:
                return
            caught = next(
                (int(line.split()[1], 16) for line in text.splitlines() if line.startswith("SigCgt:")), None
            )
            if caught is None or caught & wanted == wanted:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError("mosquitto did not install its signal handlers")
            time.sleep(0.005)

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it does not exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password and ACL files (not listeners or TLS files)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()
