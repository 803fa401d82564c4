"""Config files as ops keep them: chain -> store -> device merge order, and validation reports."""

from __future__ import annotations

from pathlib import Path

from device_configs.repo import deep_merge, load_repo
from sync.central.ops_cli import main as ops_main


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_deep_merge_tables_merge_lists_replace() -> None:
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "base"}
    out = deep_merge(base, {"a": {"y": 3}, "l": [9]})
    assert out == {"a": {"x": 1, "y": 3}, "l": [9], "s": "base"}
    assert base == {"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "base"}


def test_merge_order_chain_then_store_then_device(tmp_path: Path) -> None:
    write(
        tmp_path,
        "chain.toml",
        "schema_version = 2\n[sync]\nheartbeat_s = 10\nack_timeout_s = 5\nbatch_max_events = 7\n",
    )
    write(tmp_path, "stores/s1.toml", "[sync]\nheartbeat_s = 20\nack_timeout_s = 6\n")
    write(tmp_path, "devices/s1/d1.toml", "[sync]\nheartbeat_s = 30\n")
    write(tmp_path, "devices/s1/d2.json", "{}")
    write(tmp_path, "devices/s2/d1.toml", "")
    r = load_repo(tmp_path)
    assert r.errors == []
    d1, d2, other = r.configs[("s1", "d1")], r.configs[("s1", "d2")], r.configs[("s2", "d1")]
    assert (d1.sync.heartbeat_s, d1.sync.ack_timeout_s, d1.sync.batch_max_events) == (30, 6, 7)
    assert (d2.sync.heartbeat_s, d2.sync.ack_timeout_s) == (20, 6)
    assert (other.sync.heartbeat_s, other.sync.ack_timeout_s) == (10, 5)
    assert (d1.store, d1.device, other.store) == ("s1", "d1", "s2")


def test_validate_names_the_file_that_set_the_bad_value_and_the_field_path(tmp_path: Path) -> None:
    chain = write(tmp_path, "chain.toml", "schema_version = 2\n[sync]\nheartbeat_s = 0\n")
    store = write(
        tmp_path, "stores/s1.toml", '[[cameras]]\nid = "c1"\nsource = { kind = "device", index = 99 }\n'
    )
    dev = write(tmp_path, "devices/s1/d1.toml", "[outbox]\nmax_rows = 1\nbogus = true\n")
    write(tmp_path, "devices/s1/d2.toml", 'device = "other"\n')
    r = load_repo(tmp_path)
    joined = "\n".join(r.errors)
    assert f"{chain}: sync.heartbeat_s: Input should be greater than or equal to 1" in joined
    assert f"{store}: cameras.0.source.device.index: Input should be less than or equal to 63" in joined
    assert f"{dev}: outbox.max_rows: Input should be greater than or equal to 10" in joined
    assert f"{dev}: outbox.bogus: Extra inputs are not permitted" in joined
    assert "devices/s1/d2.toml: device: says 'other' but the file is for s1/d2" in joined


def test_validate_command_reports_every_error(tmp_path: Path, capsys: object) -> None:
    write(tmp_path, "chain.toml", "schema_version = 2\n")
    write(tmp_path, "devices/s1/d1.toml", "[sync]\nheartbeat_s = 0\nack_timeout_s = 0\n")
    write(tmp_path, "devices/s1/d2.toml", "not toml [")
    write(tmp_path, "devices/s1/ok.toml", "")
    assert ops_main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "d1.toml: sync.heartbeat_s" in out and "d1.toml: sync.ack_timeout_s" in out
    assert "d2.toml: not valid toml" in out
    assert "1 device(s) valid, 3 error(s)" in out
    (tmp_path / "devices/s1/d1.toml").write_text("")
    (tmp_path / "devices/s1/d2.toml").write_text("")
    assert ops_main(["validate", str(tmp_path)]) == 0
