"""Helpers for the config push and fleet tests (no tests here): device documents, agents, ops pushes."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from sync.central.ops import OpsBroker, OpsClient, Outcome, new_deployment_id, plan, push
from sync.config_wire import ConfigAck, ConfigEnvelope, make_envelope


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def device_doc(root: Path, port: int, store: str = "s1", device: str = "d1", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 2,
        "store": store,
        "device": device,
        "state_dir": str(root / store / device),
        "mqtt": {"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 5},
        "sync": {"heartbeat_s": 1, "ack_timeout_s": 2},
        "simulated_sources": [{"id": "sim1", "rate_eps": 5}],
        "config_push": {"apply_timeout_s": 3},
    }
    for k, v in extra.items():
        doc[k] = v
    return doc


def changed(doc: dict[str, Any], **updates: Any) -> dict[str, Any]:
    """A copy of ``doc`` with dotted-path keys replaced: changed(doc, **{"sync.heartbeat_s": 2})."""
    out = copy.deepcopy(doc)
    for path, value in updates.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


@contextmanager
def running_agent(doc: dict[str, Any], base_dir: Path) -> Iterator[Agent]:
    agent = Agent(DeviceConfig.model_validate(doc), base_dir=base_dir)
    agent.start()
    try:
        wait_until(lambda: agent.uplink.stats.connected, 10, "agent connected")
        yield agent
    finally:
        agent.stop()


@contextmanager
def ops_client(port: int) -> Iterator[OpsClient]:
    client = OpsClient(OpsBroker(port=port))
    try:
        client.settle(quiet_s=0.3)
        yield client
    finally:
        client.close()


def push_docs(
    client: OpsClient, docs: dict[tuple[str, str], dict[str, Any]], timeout: float = 20.0, **kw: Any
) -> dict[tuple[str, str], Outcome]:
    configs = {k: DeviceConfig.model_validate(d) for k, d in docs.items()}
    todo, unchanged = plan(client, configs, deployment=new_deployment_id(), force=kw.pop("force", False))
    out = push(client, todo, timeout=timeout, **kw)
    out.update({o.key: o for o in unchanged})
    return out


def raw_envelope(store: str, device: str, config: dict[str, Any], version: int) -> ConfigEnvelope:
    return make_envelope(
        store=store,
        device=device,
        deployment=new_deployment_id(),
        version=version,
        config=config,
        issued_at=datetime.now(UTC),
    )


def publish_and_wait_ack(client: OpsClient, env: ConfigEnvelope, timeout: float = 20.0) -> ConfigAck:
    key = (env.store, env.device)
    client.publish_envelope(env)

    def answered() -> bool:
        ack = client.acks.get(key)
        return ack is not None and ack.deployment == env.deployment and ack.hash == env.hash

    assert client.wait(answered, timeout), f"no ack for {env.deployment}"
    return client.acks[key]
