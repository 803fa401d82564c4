"""The supervisor restarts a crashing pipeline with backoff and never lets it take the agent down."""

from __future__ import annotations

import threading

from edge_agent.pipeline import PipelineContext
from edge_agent.supervisor import Supervisor
from sync.wire import HealthPayload, Payload
from tests.e2e import wait_until


class Flaky:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    def run(self, ctx: PipelineContext) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        ctx.emit(HealthPayload(status="ok", message="up"))
        ctx.report(status="live")
        ctx.stop.wait()


def test_crashing_pipeline_is_restarted_and_reported() -> None:
    emitted: list[Payload] = []
    sup = Supervisor(emitted.append, backoff_min_s=0.01, backoff_max_s=0.05)
    flaky = Flaky(failures=3)
    sup.start(flaky)
    wait_until(lambda: len(emitted) == 1, timeout=10, what="pipeline up after 3 crashes")
    health = sup.health()["flaky"]
    assert health["restarts"] == 3
    assert health["last_error"] == "RuntimeError: boom 3"
    assert health["state"] == "running"
    assert health["status"] == "live"
    sup.stop_all()
    assert flaky.runs == 4
    assert sup.children == {}


def test_stop_interrupts_the_backoff_wait() -> None:
    sup = Supervisor(lambda p: None, backoff_min_s=30, backoff_max_s=60)
    sup.start(Flaky(failures=100))
    wait_until(lambda: sup.children["flaky"].state == "backoff", what="backoff")
    done = threading.Event()
    threading.Thread(target=lambda: (sup.stop_all(timeout=5), done.set())).start()
    assert done.wait(5)
