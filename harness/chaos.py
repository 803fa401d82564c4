"""Randomised chaos rounds against the whole pipeline, with an invariant check after each round.

    python -m harness.chaos --rounds 50 --seed 7 [--duration-s 2] [--store sqlite|postgresql://...]

Each round picks one to ``--max-faults`` faults (``harness.faults.FAULTS``) that touch different
processes, injects them concurrently while the simulated agents keep producing, heals, waits
until every event produced up to the heal is settled (the outboxes hold nothing at or below it),
and checks the invariants (``harness.invariants``) over everything stored since the start. The
seed is printed first: the same seed replays the same fault schedule (which faults, targets,
durations and moments; the processes' own timing still varies). Exit status 1 on any violation.

With ``--store postgresql://...`` the run uses a fresh schema on that server and drops it at the
end; ``--pg-restart`` adds PostgreSQL restarts (``pg_ctlcluster``), which disturb anyone else
using that server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.faults import FAULTS, FaultCheckFailed, Injection, Lab, wait_for
from harness.invariants import InvariantReport, check, missing_dead_letters
from sync.central.stores import open_central_store

# pg_restart disturbs everyone on that server; disk_enospc needs tmpfs mounts (--tmpfs-mb).
DEFAULT_FAULTS = tuple(name for name in FAULTS if name not in ("pg_restart", "disk_enospc"))
# Fault details that are parameters, not observations.
NOT_EVIDENCE = frozenset({"cap", "rows", "ledger", "after_commits", "persistence", "rc"})


@dataclass
class ChaosConfig:
    rounds: int = 10
    seed: int | None = None
    duration_s: float = 2.0  # longest fault; each lasts 0.3 s .. this
    max_faults: int = 2  # faults per round, at most
    store: str = "sqlite"  # "sqlite" or a postgresql:// URL (a fresh schema is used)
    agents: int = 3
    ingests: int = 2
    scan_eps: float = 25.0
    footfall_eps: float = 6.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    drain_timeout_s: float = 60.0
    pg_restart: bool = False
    tmpfs_mb: int = 0  # agents' state on tmpfs mounts of this size (for disk_enospc)
    workdir: Path | None = None  # default: a temporary directory, removed unless the run failed
    keep: bool = False
    stop_on_failure: bool = True
    # The first rounds lead with each fault type once (in a seeded order), so even a short run
    # exercises every type; later rounds draw freely.
    cover_all: bool = True
    verbose: bool = False  # print what each fault reported


@dataclass
class RoundResult:
    number: int
    faults: list[str]
    details: list[dict[str, Any]]
    violations: list[str]
    drain_s: float
    seconds: float


@dataclass
class ChaosSummary:
    seed: int
    rounds: int = 0
    faults_by_type: Counter[str] = field(default_factory=Counter)
    produced: int = 0
    lost: int = 0
    duplicated: int = 0
    given_up: int = 0  # footfall/health evicted or refused under disk_full (explained gaps)
    folded: int = 0  # footfall windows folded into earlier ones under disk_full (explained gaps)
    # Visitor counts (in + out) over every device: produced, landed, evicted; devices not conserved.
    footfall: dict[str, int] = field(default_factory=dict)
    kill_window_rescans: int = 0
    dead_letters: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workdir: str = ""
    # What the faults reported, summed per "fault.key" (e.g. ingest_commit_crash.crashed_between_
    # commit_and_ack: how many crashes really hit that window) and the slowest storm recovery.
    evidence: Counter[str] = field(default_factory=Counter)
    slowest_reconnect_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and self.lost == 0 and self.duplicated == 0

    def line(self) -> dict[str, Any]:
        """The one-line JSON result (bench/chaos.py prints it last)."""
        return {
            "rounds": self.rounds,
            "faults": sum(self.faults_by_type.values()),
            "faults_by_type": dict(sorted(self.faults_by_type.items())),
            "produced": self.produced,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "folded": self.folded,
            "footfall_produced": self.footfall.get("produced", 0),
            "footfall_landed": self.footfall.get("landed", 0),
            "footfall_evicted": self.footfall.get("evicted", 0),
            "footfall_not_conserved": self.footfall.get("not_conserved", 0),
            "seed": self.seed,
        }


def replay_args(cfg: ChaosConfig, seed: int) -> str:
    """The command-line options that replay this run's fault schedule (store credentials elided)."""
    args = [
        f"--rounds {cfg.rounds}", f"--seed {seed}", f"--duration-s {cfg.duration_s}",
        f"--max-faults {cfg.max_faults}", f"--agents {cfg.agents}", f"--ingests {cfg.ingests}",
    ]  # fmt: skip
    if cfg.faults != DEFAULT_FAULTS:
        args.append(f"--faults {','.join(cfg.faults)}")
    if cfg.store != "sqlite":
        args.append("--store postgresql://..." if "://" in cfg.store else f"--store {cfg.store}")
    if cfg.tmpfs_mb:
        args.append(f"--tmpfs-mb {cfg.tmpfs_mb}")
    return " ".join(args)


def choose_faults(
    lab: Lab, rng: random.Random, cfg: ChaosConfig, first: str | None = None
) -> list[Injection]:
    """One to ``max_faults`` injections on disjoint resources, drawn from ``rng`` only; ``first``
    (a fault type) leads when given."""
    wanted = rng.randint(1, max(1, cfg.max_faults))
    picked: list[Injection] = []
    held: set[str] = set()
    for attempt in range(wanted * 5):
        if len(picked) == wanted:
            break
        kind = first if attempt == 0 and first is not None else rng.choice(cfg.faults)
        injection = FAULTS[kind](lab, rng, rng.uniform(0.3, cfg.duration_s))
        if injection.resources & held:
            continue
        picked.append(injection)
        held |= injection.resources
    return picked


def _run_injections(injections: list[Injection], delays: list[float], timeout: float) -> list[Any]:
    """Run the injections concurrently; returns per injection its details dict or the exception."""
    results: list[Any] = [None] * len(injections)

    def worker(k: int) -> None:
        time.sleep(delays[k])
        try:
            results[k] = injections[k].run()
        except Exception as exc:  # noqa: BLE001 - reported as a violation of the round
            results[k] = exc

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(injections))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return [r if r is not None else TimeoutError("fault did not finish") for r in results]


class Chaos:
    def __init__(self, cfg: ChaosConfig, out: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)
        self.out = out
        self.summary = ChaosSummary(seed=self.seed)
        self.last_report: InvariantReport | None = None
        self._leaders = list(cfg.faults) if cfg.cover_all else []
        self.rng.shuffle(self._leaders)

    def run(self) -> ChaosSummary:
        cfg = self.cfg
        self.out(f"chaos seed={self.seed}  (replay: python -m harness.chaos {replay_args(cfg, self.seed)})")
        started = time.monotonic()
        own_dir = cfg.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="omni-chaos-")) if cfg.workdir is None else cfg.workdir
        self.summary.workdir = str(workdir)
        try:
            with central_store(cfg.store, workdir, cfg.keep) as url:
                lab = Lab(
                    workdir,
                    url,
                    agents=cfg.agents,
                    ingests=cfg.ingests,
                    scan_eps=cfg.scan_eps,
                    footfall_eps=cfg.footfall_eps,
                    run_id=f"c{self.seed % 100_000}",
                    seed=self.seed,
                    pg_restart=cfg.pg_restart,
                    tmpfs_mb=cfg.tmpfs_mb,
                )
                with lab:
                    self._warm_up(lab)
                    for n in range(1, cfg.rounds + 1):
                        result = self._round(lab, n, url)
                        if result.violations and cfg.stop_on_failure:
                            break
                    ev = self.summary.evidence
                    ev["agents.batches_resent_without_ack"] = lab.agent_log_count("resent batch")
                    ev["agents.connections_lost"] = lab.agent_log_count("connection to broker lost")
        finally:
            self.summary.seconds = round(time.monotonic() - started, 1)
            if own_dir and self.summary.ok and not cfg.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        self._print_summary()
        return self.summary

    def _warm_up(self, lab: Lab) -> None:
        ok = wait_for(lambda: all(lab.observer.online_since(a.store, a.device, 0) for a in lab.agents), 30)
        if not ok:
            self.summary.violations.append("agents did not connect within 30 s at start")

    def _round(self, lab: Lab, n: int, url: str) -> RoundResult:
        cfg = self.cfg
        t0 = time.monotonic()
        leader = self._leaders[n - 1] if n <= len(self._leaders) else None
        injections = choose_faults(lab, self.rng, cfg, leader)
        delays = [self.rng.uniform(0, 0.3) for _ in injections]
        outcomes = _run_injections(injections, delays, timeout=cfg.duration_s + 90)
        violations: list[str] = []
        details: list[dict[str, Any]] = []
        for inj, outcome in zip(injections, outcomes, strict=True):
            self.summary.faults_by_type[inj.kind] += 1
            if isinstance(outcome, FaultCheckFailed):
                violations.append(f"{inj.kind}({inj.target}): {outcome}")
            elif isinstance(outcome, BaseException):
                violations.append(f"{inj.kind}({inj.target}) failed: {type(outcome).__name__}: {outcome}")
            else:
                details.append({"fault": inj.kind, "target": inj.target, **outcome})
                self._collect(inj.kind, outcome)
        died = lab.heal_all()
        violations += [f"died on its own: {d}" for d in died]
        snaps = lab.snapshot()
        violations += [f"{s.device}: outbox unreadable, nothing to check" for s in snaps if s.upto_seq == 0]
        t_drain = time.monotonic()
        stuck = lab.wait_drained(snaps, cfg.drain_timeout_s)
        drain_s = time.monotonic() - t_drain
        if stuck:
            violations.append(f"backlog not settled within {cfg.drain_timeout_s:.0f} s: {stuck}")
        self._settle_hostile(lab, url, any(i.loses_broker_messages for i in injections))
        report = check(
            url,
            snaps,
            hostile_dead=lab.hostile_dead,
            hostile_required=lab.hostile_required,
            processes=lab.processes(),
        )
        self.last_report = report
        violations += report.violations
        s = self.summary
        s.rounds = n
        s.produced, s.lost, s.duplicated = report.produced, report.lost, report.duplicated
        s.given_up = sum(d.given_up for d in report.devices)
        s.footfall = report.footfall_totals()
        s.folded = s.footfall["folded"]
        s.kill_window_rescans = sum(d.kill_window_rescans for d in report.devices)
        s.dead_letters = report.dead_letters
        s.violations += [f"round {n}: {v}" for v in violations]
        names = [f"{i.kind}({i.target})" for i in injections]
        result = RoundResult(n, names, details, violations, drain_s, time.monotonic() - t0)
        self.out(
            f"round {n:>3}/{cfg.rounds}: {' + '.join(result.faults):<60} produced={s.produced:<7} "
            f"lost={s.lost} dup={s.duplicated} drain={drain_s:.1f}s {'OK' if not violations else 'FAIL'}"
        )
        if cfg.verbose:
            for d in details:
                self.out(f"    {d}")
        for v in violations:
            self.out(f"    violation: {v}")
        return result

    def _collect(self, kind: str, details: dict[str, Any]) -> None:
        for key, value in details.items():
            if key == "all_back_s":
                self.summary.slowest_reconnect_s = max(self.summary.slowest_reconnect_s, float(value))
            elif isinstance(value, bool | int) and key not in NOT_EVIDENCE:
                self.summary.evidence[f"{kind}.{key}"] += int(value)

    def _settle_hostile(self, lab: Lab, url: str, broker_lost: bool) -> None:
        """Wait (bounded) for the hostile messages to reach the dead letters; a broker fault in the
        same round may have dropped some in flight: those are no longer required."""
        store = open_central_store(url)
        try:
            missing: set[str] = set()

            def arrived() -> bool:
                missing.clear()
                missing.update(missing_dead_letters(store, lab.hostile_required))
                return not missing

            if not wait_for(arrived, timeout=15, step=0.25) and broker_lost:
                self.out(f"    note: {len(missing)} hostile messages lost in a broker fault (not required)")
                lab.hostile_required -= missing
        finally:
            store.close()

    def _print_summary(self) -> None:
        s = self.summary
        self.out(f"chaos seed={s.seed}: {s.rounds} rounds in {s.seconds:.0f} s")
        for kind, count in sorted(s.faults_by_type.items()):
            self.out(f"  {kind:<22} {count}")
        self.out(
            f"  events produced {s.produced}, lost {s.lost}, duplicated {s.duplicated}; "
            f"footfall/health given up by the capacity policy {s.given_up}; "
            f"scans re-made after a kill -9 between commit and ledger {s.kill_window_rescans}; "
            f"dead letters {s.dead_letters} (all injected)"
        )
        ff = s.footfall
        self.out(
            f"  visitor counts (in + out): produced {ff.get('produced', 0)}, stored {ff.get('landed', 0)}, "
            f"evicted {ff.get('evicted', 0)}; footfall windows folded {s.folded}; devices whose counts "
            f"were not conserved {ff.get('not_conserved', 0)}"
        )
        evidence = ", ".join(f"{k} {v}" for k, v in sorted(s.evidence.items()))
        self.out(f"  evidence: {evidence}")
        self.out(f"  slowest reconnect of all agents after a broker restart: {s.slowest_reconnect_s} s")
        if s.violations:
            self.out(f"  {len(s.violations)} violations; workdir kept: {s.workdir}")
            for v in s.violations[:20]:
                self.out(f"    {v}")
        self.out("RESULT " + ("OK" if s.ok else "FAILED"))


@contextlib.contextmanager
def central_store(spec: str, workdir: Path, keep: bool) -> Iterator[str]:
    """``sqlite``: a file in ``workdir``. A postgresql:// URL: a fresh schema there, dropped after."""
    if not spec.startswith(("postgresql://", "postgres://")):
        yield str(workdir / "central.db") if spec == "sqlite" else spec
        return
    import psycopg

    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(spec, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in spec else "?"
    try:
        yield f"{spec}{sep}options=-csearch_path%3D{schema}"
    finally:
        if not keep:
            with psycopg.connect(spec, autocommit=True, connect_timeout=30) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def parse_args(argv: list[str] | None) -> ChaosConfig:
    ap = argparse.ArgumentParser(prog="python -m harness.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None, help="replay a run (printed first)")
    ap.add_argument("--duration-s", type=float, default=2.0, help="longest single fault (s)")
    ap.add_argument("--max-faults", type=int, default=2, help="faults per round, at most")
    ap.add_argument("--store", default="sqlite", help="sqlite, a file path, or a postgresql:// URL")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--ingests", type=int, default=2)
    ap.add_argument("--scan-eps", type=float, default=25.0, help="scans per second per agent")
    ap.add_argument("--footfall-eps", type=float, default=6.0, help="footfall windows per second per agent")
    ap.add_argument(
        "--faults", default=",".join(DEFAULT_FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}"
    )
    ap.add_argument("--drain-timeout-s", type=float, default=60.0, help="backlog must settle within this")
    ap.add_argument("--pg-restart", action="store_true", help="also restart PostgreSQL (shared server!)")
    ap.add_argument(
        "--tmpfs-mb", type=int, default=0, help="agents' state on tmpfs mounts of N MB; adds disk_enospc"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the workdir and the PostgreSQL schema")
    ap.add_argument("--keep-going", action="store_true", help="run every round even after a violation")
    ap.add_argument("-v", "--verbose", action="store_true", help="print what each fault reported")
    args = ap.parse_args(argv)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        ap.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    if args.pg_restart and "pg_restart" not in faults:
        faults += ("pg_restart",)
    if args.tmpfs_mb and "disk_enospc" not in faults:
        faults += ("disk_enospc",)
    return ChaosConfig(
        rounds=args.rounds,
        seed=args.seed,
        duration_s=args.duration_s,
        max_faults=args.max_faults,
        store=args.store,
        agents=args.agents,
        ingests=args.ingests,
        scan_eps=args.scan_eps,
        footfall_eps=args.footfall_eps,
        faults=faults,
        pg_restart=args.pg_restart,
        tmpfs_mb=args.tmpfs_mb,
        drain_timeout_s=args.drain_timeout_s,
        workdir=args.workdir,
        keep=args.keep,
        stop_on_failure=not args.keep_going,
        verbose=args.verbose,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    summary = Chaos(cfg, out=lambda line: print(line, flush=True)).run()
    print(json.dumps(summary.line()), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
