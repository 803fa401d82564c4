"""Config push end to end on a real mosquitto: apply live, reject, roll back, redeliver, boot offline."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_configs.content import document_hash
from device_configs.device import DeviceConfig
from edge_agent.agent import Agent
from edge_agent.config_manager import FAILED_FILE, LKG_FILE, load_bootstrap
from harness.broker import Mosquitto
from sync.central.ops import OpsClient, Outcome
from sync.central.ops_cli import main as ops_main
from sync.config_wire import public_key_b64, sign
from tests.test_config_support import (
    changed,
    device_doc,
    ops_client,
    publish_and_wait_ack,
    push_docs,
    raw_envelope,
    running_agent,
    wait_until,
)
from tests.test_detector_onnx import write_model

pytestmark = pytest.mark.broker


def test_push_to_one_device_applies_live_and_restarts_only_what_changed(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    doc = device_doc(tmp_path, mosquitto.port)
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        sim1 = agent.supervisor.children["sim:sim1"]
        new = changed(
            doc,
            **{"sync.ack_timeout_s": 3, "simulated_sources": [*doc["simulated_sources"], {"id": "sim2"}]},
        )
        out = push_docs(ops, {("s1", "d1"): new})[("s1", "d1")]
        assert (out.result, out.version, out.running_version) == ("applied", 1, 1)
        ack = ops.acks[("s1", "d1")]
        assert ack.changes["started"] == ["sim:sim2"] and ack.changes["unchanged"] == ["sim:sim1"]
        assert agent.supervisor.children["sim:sim1"] is sim1  # not restarted
        assert agent.uplink.sync.ack_timeout_s == 3  # sync settings applied live
        assert agent.config.running.version == 1
        lkg = orjson.loads((agent.state_dir / LKG_FILE).read_bytes())
        assert lkg["version"] == 1 and lkg["hash"] == ack.hash
        # The retained online status carries the running config version.
        wait_until(lambda: ops.status.get(("s1", "d1"), {}).get("config_version") == 1, 10, "status v1")


def test_push_by_store_and_to_all_through_the_cli(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "configs"
    (repo / "devices/s1").mkdir(parents=True)
    (repo / "devices/s2").mkdir(parents=True)
    port = mosquitto.port
    (repo / "chain.toml").write_text(
        f"schema_version = 2\n[mqtt]\nport = {port}\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
        '[sync]\nheartbeat_s = 1\n[[simulated_sources]]\nid = "sim1"\nrate_eps = 5\n'
    )
    keys = [("s1", "d1"), ("s1", "d2"), ("s2", "d1")]
    for store, device in keys:
        (repo / f"devices/{store}/{device}.toml").write_text(f'state_dir = "{tmp_path / store / device}"\n')
    from device_configs.repo import load_repo

    configs = load_repo(repo).configs
    agents = [Agent(configs[k], base_dir=tmp_path) for k in keys]
    for a in agents:
        a.start()
    try:
        wait_until(lambda: all(a.uplink.stats.connected for a in agents), 10, "agents connected")
        broker = ["--broker", f"127.0.0.1:{port}"]
        # The agents run exactly what the files say: the first push only assigns version 1.
        assert ops_main(["push", str(repo), "--store", "s1", "--timeout", "20", *broker]) == 0
        out = capsys.readouterr().out
        assert "s1/d1" in out and "s1/d2" in out and "s2/d1" not in out
        assert [a.config.running.version for a in agents] == [1, 1, 0]
        assert all(a.supervisor.children["sim:sim1"].restarts == 0 for a in agents)

        (repo / "stores").mkdir()
        (repo / "stores/s1.toml").write_text("[sync]\nheartbeat_s = 2\n")
        (repo / "chain.toml").write_text(
            (repo / "chain.toml").read_text().replace("rate_eps = 5", "rate_eps = 6")
        )
        assert ops_main(["diff", str(repo), *broker]) == 0
        diff = capsys.readouterr().out
        assert (
            "s1/d1:\n    simulated_sources.0.rate_eps: 5.0 -> 6.0\n    sync.heartbeat_s: 1.0 -> 2.0" in diff
        )
        assert "s2/d1: new (not published)" in diff

        assert ops_main(["push", str(repo), "--all", "--canary", "s2/d1", "--timeout", "20", *broker]) == 0
        table = capsys.readouterr().out
        assert table.count("applied") == 3, table
        assert [a.config.running.version for a in agents] == [2, 2, 1]
        assert [a.cfg.sync.heartbeat_s for a in agents] == [2, 2, 1]
        assert all(a.cfg.simulated_sources[0].rate_eps == 6 for a in agents)

        assert ops_main(["status", *broker]) == 0
        status = capsys.readouterr().out
        assert status.count("online") == 3 and "v2" in status
    finally:
        for a in agents:
            a.stop()


def test_rejected_config_is_acknowledged_with_reasons_and_the_running_config_stays(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    doc = device_doc(tmp_path, mosquitto.port)
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        before = agent.config.running
        bad = changed(doc, **{"sync.heartbeat_s": 0, "outbox.bogus": 1})
        ack = publish_and_wait_ack(ops, raw_envelope("s1", "d1", bad, 1))
        assert ack.result == "rejected" and ack.running_version == 0
        assert any(r.startswith("sync.heartbeat_s:") for r in ack.reasons), ack.reasons
        assert any(r.startswith("outbox.bogus:") for r in ack.reasons), ack.reasons

        moved = changed(doc, state_dir=str(tmp_path / "elsewhere"))
        ack = publish_and_wait_ack(ops, raw_envelope("s1", "d1", moved, 2))
        assert ack.result == "rejected"
        assert any("state_dir cannot change remotely" in r for r in ack.reasons)

        ack = publish_and_wait_ack(ops, raw_envelope("s1", "d1", changed(doc, device="d9"), 3))
        assert ack.result == "rejected" and "this config is for another device" in " ".join(ack.reasons)

        tampered = raw_envelope("s1", "d1", doc, 4).model_copy(update={"hash": "0" * 64})
        ack = publish_and_wait_ack(ops, tampered)
        assert ack.result == "rejected" and "hash mismatch" in ack.reasons[0]
        assert agent.config.running == before
        assert agent.supervisor.children["sim:sim1"].restarts == 0

        # A new version of the config ops meant is accepted: the rejections left nothing behind.
        ack = publish_and_wait_ack(ops, raw_envelope("s1", "d1", changed(doc, **{"sync.heartbeat_s": 2}), 5))
        assert ack.result == "applied" and ack.running_version == 5


def push_good_then_broken(
    ops: OpsClient, doc: dict[str, Any], camera: dict[str, Any], **pipelines: Any
) -> Outcome:
    """Push version 1 (heartbeat 2 s, applied), then version 2 adding ``camera`` and ``pipelines``
    (heartbeat 3 s); return version 2's ack."""
    good = changed(doc, **{"sync.heartbeat_s": 2})
    assert push_docs(ops, {("s1", "d1"): good})[("s1", "d1")].result == "applied"
    broken = changed(good, cameras=[camera], **pipelines, **{"sync.heartbeat_s": 3})
    return push_docs(ops, {("s1", "d1"): broken})[("s1", "d1")]


def test_camera_that_cannot_open_rolls_back_to_the_last_known_good(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    doc = device_doc(tmp_path, mosquitto.port)
    doc["config_push"] = {"apply_timeout_s": 1.5}
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        camera = {"id": "door", "source": {"kind": "folder", "path": str(tmp_path / "no-such-camera")}}
        out = push_good_then_broken(ops, doc, camera, qr=[{"camera": "door"}])
        assert out.result == "rolled_back", out
        assert out.running_version == 1
        assert any(r.startswith("qr:door: not up within 1.5s") for r in out.reasons), out.reasons
        assert "rolled back to version 1" in out.reasons[-1]
        assert out.restored == 1  # ops re-published v1 as the desired config
        assert "qr:door" not in agent.supervisor.children
        assert agent.cfg.sync.heartbeat_s == 2
        assert agent.config.running.version == 1
        assert orjson.loads((agent.state_dir / LKG_FILE).read_bytes())["version"] == 1
        assert (agent.state_dir / FAILED_FILE).exists()
        # The restored desired config is the running one: acknowledged as a no-op.
        wait_until(
            lambda: ops.acks[("s1", "d1")].noop and ops.acks[("s1", "d1")].version == 1, 10, "noop ack"
        )


def test_footfall_detector_model_that_cannot_run_rolls_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # A person model exported with a fixed input shape, pushed with another input_size: the
    # detector refuses it when the pipeline builds its counter, and the push is rolled back.
    model = write_model(tmp_path / "fixed.onnx", np.zeros((1, 84, 100), np.float32), fixed_input=True)
    doc = device_doc(tmp_path, mosquitto.port)
    doc["config_push"] = {"apply_timeout_s": 5}
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        camera = {"id": "door", "source": {"kind": "simulated", "scenario": "footfall_single_in"}}
        detector = {"kind": "onnx", "model_path": model, "input_size": 96}
        out = push_good_then_broken(ops, doc, camera, footfall=[{"camera": "door", "detector": detector}])
        assert out.result == "rolled_back", out
        assert out.running_version == 1
        assert any(
            r.startswith("footfall:door:") and "does not run at input_size 96" in r for r in out.reasons
        ), out.reasons
        assert "footfall:door" not in agent.supervisor.children
        assert agent.cfg.sync.heartbeat_s == 2


def test_same_retained_config_after_reconnect_restarts_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = device_doc(tmp_path, mosquitto.port)
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        new = changed(doc, simulated_sources=[{"id": "sim1", "rate_eps": 5}, {"id": "sim2"}])
        assert push_docs(ops, {("s1", "d1"): new})[("s1", "d1")].result == "applied"
        children = dict(agent.supervisor.children)
        first = ops.acks[("s1", "d1")]
        mosquitto.restart()  # persistence on: the retained config comes back on resubscribe
        wait_until(lambda: agent.uplink.stats.connects >= 2, 20, "agent reconnected")
        wait_until(
            lambda: (a := ops.acks.get(("s1", "d1"))) is not None and a.ts > first.ts,
            20,
            "ack after reconnect",
        )
        again = ops.acks[("s1", "d1")]
        assert again.result == "applied" and again.noop and again.hash == first.hash
        assert agent.supervisor.children == children
        assert all(c.restarts == 0 for c in children.values())
        assert agent.config.running.version == 1


def test_old_schema_version_is_migrated_on_the_device(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = device_doc(tmp_path, mosquitto.port)
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        v1 = {k: v for k, v in doc.items() if k not in ("opening_hours", "config_push")}
        v1["schema_version"] = 1
        v1["sync"] = {"heartbeat_s": 4}
        ack = publish_and_wait_ack(ops, raw_envelope("s1", "d1", v1, 1))
        assert ack.result == "applied", ack.reasons
        assert ack.hash == document_hash(v1)  # the hash is of the document as sent
        assert agent.cfg.schema_version == 2
        assert agent.cfg.opening_hours.always_open
        assert agent.cfg.sync.heartbeat_s == 4


def test_signed_configs_only_when_a_key_is_configured(tmp_path: Path, mosquitto: Mosquitto) -> None:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    doc = device_doc(tmp_path, mosquitto.port, config_push={"trusted_keys": [public_key_b64(key)]})
    with running_agent(doc, tmp_path) as agent, ops_client(mosquitto.port) as ops:
        new = changed(doc, **{"sync.heartbeat_s": 2})
        ack = publish_and_wait_ack(ops, raw_envelope("s1", "d1", new, 1))
        assert ack.result == "rejected" and "not signed" in ack.reasons[0]

        ack = publish_and_wait_ack(ops, sign(raw_envelope("s1", "d1", new, 2), other))
        assert ack.result == "rejected" and "bad signature" in ack.reasons[0]

        # Tampered after signing: config and hash changed consistently, the signature no longer fits.
        signed = sign(raw_envelope("s1", "d1", new, 3), key)
        evil = changed(new, **{"sync.heartbeat_s": 3600})
        tampered = signed.model_copy(update={"config": evil, "hash": document_hash(evil)})
        ack = publish_and_wait_ack(ops, tampered)
        assert ack.result == "rejected" and "bad signature" in ack.reasons[0]

        garbage = signed.model_copy(update={"signature": base64.b64encode(b"x" * 64).decode()})
        assert publish_and_wait_ack(ops, garbage).result == "rejected"
        assert agent.config.running.version == 0

        ack = publish_and_wait_ack(ops, sign(raw_envelope("s1", "d1", new, 4), key))
        assert ack.result == "applied" and agent.cfg.sync.heartbeat_s == 2


def test_agent_boots_offline_on_the_last_known_good(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = device_doc(tmp_path, mosquitto.port)
    bootstrap = tmp_path / "device.json"
    bootstrap.write_text(orjson.dumps(doc).decode())
    pushed = changed(doc, simulated_sources=[{"id": "sim1", "rate_eps": 5}, {"id": "sim2"}])
    with running_agent(doc, tmp_path), ops_client(mosquitto.port) as ops:
        assert push_docs(ops, {("s1", "d1"): pushed})[("s1", "d1")].result == "applied"
    mosquitto.stop()

    running, base_dir = load_bootstrap(bootstrap)
    assert running.version == 1 and running.cfg == DeviceConfig.model_validate(pushed)
    agent = Agent(running.cfg, base_dir=base_dir, running=running)
    agent.start()
    try:
        wait_until(lambda: {"sim:sim1", "sim:sim2"} <= set(agent.supervisor.children), 10, "pipelines")
        assert not agent.uplink.stats.connected
        assert agent.config.running.version == 1
    finally:
        agent.stop()

    # A bootstrap file that is itself newer than the LKG wins (here: an envelope of version 7).
    env = raw_envelope("s1", "d1", doc, 7)
    bootstrap.write_text(env.model_dump_json())
    running, _ = load_bootstrap(bootstrap)
    assert running.version == 7 and running.cfg == DeviceConfig.model_validate(doc)


def test_canary_failure_halts_the_rollout_and_silent_devices_are_reported(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    docs = {("s1", d): device_doc(tmp_path, mosquitto.port, device=d) for d in ("d1", "d2")}
    for d in docs.values():
        d["config_push"] = {"apply_timeout_s": 1}
    broken_camera = {
        "cameras": [{"id": "door", "source": {"kind": "folder", "path": str(tmp_path / "missing")}}],
        "qr": [{"camera": "door"}],
    }
    with (
        running_agent(docs[("s1", "d1")], tmp_path) as canary,
        running_agent(docs[("s1", "d2")], tmp_path) as other,
        ops_client(mosquitto.port) as ops,
    ):
        new = {k: changed(d, **broken_camera) for k, d in docs.items()}
        out = push_docs(ops, new, canaries=[("s1", "d1")], canary_timeout=20)
        assert out[("s1", "d1")].result == "rolled_back"
        assert out[("s1", "d2")].result == "not pushed"
        assert "halted: canaries did not apply it (s1/d1)" in out[("s1", "d2")].reasons[0]
        assert ("s1", "d2") not in ops.published  # never published: nothing in progress on d2
        assert canary.config.running.version == 0 and other.config.running.version == 0

        # A device that never answers ends as "no answer" after the timeout, not "in progress".
        ghost = device_doc(tmp_path, mosquitto.port, device="ghost")
        out = push_docs(ops, {("s1", "ghost"): ghost}, timeout=1)
        assert out[("s1", "ghost")].result == "no answer"
