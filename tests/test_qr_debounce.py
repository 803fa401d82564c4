"""Debounce edges on frame time, classification rules and pseudonym properties."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from device_configs.qr import KeyRef, QrConfig, QrRule
from edge_agent.qr.classify import Classifier
from edge_agent.qr.debounce import Debouncer
from edge_agent.qr.privacy import KeyLoadError, Pseudonymiser, load_key


def _scans(d: Debouncer, timeline: list[tuple[float, list[str]]]) -> list[tuple[float, str]]:
    out = []
    for t, keys in timeline:
        out += [(t, str(k)) for k in d.update(t, keys)]
    return out


def test_held_code_is_one_scan() -> None:
    d = Debouncer(quiet_s=2.0)
    assert _scans(d, [(i / 10, ["A"]) for i in range(50)]) == [(0.0, "A")]


def test_gap_exactly_the_quiet_window_is_a_new_scan() -> None:
    d = Debouncer(quiet_s=2.0)
    assert _scans(d, [(1.0, ["A"]), (3.0, ["A"])]) == [(1.0, "A"), (3.0, "A")]


def test_gap_just_under_the_quiet_window_is_the_same_scan() -> None:
    d = Debouncer(quiet_s=2.0)
    assert _scans(d, [(1.0, ["A"]), (2.999, ["A"])]) == [(1.0, "A")]


def test_boundary_survives_float_frame_times() -> None:
    # Frames 3 and 23 at 10 fps: 23/10 - 3/10 = 1.9999999999999998, still the quiet window.
    d = Debouncer(quiet_s=2.0)
    t0, t1 = 3 / 10, 23 / 10  # how SimulatedQrCamera.frame_time computes them
    assert t1 - t0 < 2.0
    assert _scans(d, [(t0, ["A"]), (t1, ["A"])]) == [(t0, "A"), (t1, "A")]


def test_two_codes_in_one_frame_are_two_scans_and_duplicates_one() -> None:
    d = Debouncer(quiet_s=2.0)
    assert _scans(d, [(0.0, ["A", "B", "A"]), (0.1, ["B"])]) == [(0.0, "A"), (0.0, "B")]


def test_other_codes_do_not_reset_a_quiet_window() -> None:
    d = Debouncer(quiet_s=2.0)
    timeline = [(0.0, ["A"]), (1.0, ["B"]), (1.5, ["A"]), (3.4, ["B"]), (3.5, ["A"])]
    assert _scans(d, timeline) == [(0.0, "A"), (1.0, "B"), (3.4, "B"), (3.5, "A")]


def test_max_hold_counts_a_long_hold_again() -> None:
    d = Debouncer(quiet_s=2.0, max_hold_s=5.0)
    assert _scans(d, [(i / 2, ["A"]) for i in range(23)]) == [(0.0, "A"), (5.0, "A"), (10.0, "A")]


def test_rules_first_match_wins_and_named_groups_become_fields() -> None:
    c = Classifier(
        (
            QrRule(name="sku", kind="product", regex=r"P:(?P<sku>\d+)(?:;(?P<batch>\w+))?"),
            QrRule(name="p-any", kind="other", prefix="P:"),
            QrRule(name="pay", kind="payment", prefix="upi://"),
        )
    )
    assert (c.classify("P:123;B7").kind, c.classify("P:123;B7").fields) == (
        "product",
        {"sku": "123", "batch": "B7"},
    )
    assert c.classify("P:123").fields == {"sku": "123"}
    assert (c.classify("P:x").kind, c.classify("P:x").rule) == ("other", "p-any")
    assert c.classify("upi://pay?pa=a@b").kind == "payment"
    assert (c.classify("zzz").kind, c.classify("zzz").rule) == ("other", None)
    assert c.classify(None).kind == "other"


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "r", "kind": "product"},
        {"name": "r", "kind": "product", "prefix": "a", "regex": "b"},
        {"name": "r", "kind": "product", "regex": "("},
        {"name": "r", "kind": "cash", "prefix": "a"},
    ],
)
def test_invalid_rules_rejected(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        QrRule.model_validate(bad)


def test_duplicate_rule_names_rejected() -> None:
    r = {"name": "r", "kind": "product", "prefix": "a"}
    with pytest.raises(ValidationError, match="unique"):
        QrConfig.model_validate({"camera": "c", "rules": [r, r]})


def test_every_qr_config_field_has_a_description() -> None:
    from device_configs import qr

    for model in (qr.QrConfig, qr.QrRule, qr.KeyRef, qr.DecoderConfig):
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name}"


def test_pseudonyms_stable_per_key_and_different_across_keys() -> None:
    a1 = Pseudonymiser(SecretStr("key-one"))
    a2 = Pseudonymiser(SecretStr("key-one"))
    b = Pseudonymiser(SecretStr("key-two"))
    assert a1.pseudonym(b"MEMBER:1") == a2.pseudonym(b"MEMBER:1")
    assert a1.pseudonym(b"MEMBER:1") != b.pseudonym(b"MEMBER:1")
    assert a1.pseudonym(b"MEMBER:1") != a1.pseudonym(b"MEMBER:2")
    assert len(a1.pseudonym(b"x")) == len("hmac-sha256:") + 64


def test_key_never_in_repr_str_or_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "member.key"
    key_file.write_text("s3cr3t-file-key\n", encoding="utf-8")
    secret = load_key(KeyRef(file=str(key_file)))
    assert secret.get_secret_value() == "s3cr3t-file-key"
    p = Pseudonymiser(secret)
    for shown in (repr(p), str(p), repr(secret), str(secret)):
        assert "s3cr3t" not in shown
    monkeypatch.setenv("QR_KEY_ENV", "s3cr3t-env-key")
    assert load_key(KeyRef(env="QR_KEY_ENV")).get_secret_value() == "s3cr3t-env-key"
    assert "s3cr3t" not in caplog.text


def test_missing_keys_raise_without_revealing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QR_NO_SUCH_KEY", raising=False)
    with pytest.raises(KeyLoadError, match="QR_NO_SUCH_KEY"):
        load_key(KeyRef(env="QR_NO_SUCH_KEY"))
    with pytest.raises(KeyLoadError, match="cannot read key file"):
        load_key(KeyRef(file=str(tmp_path / "absent")))
    with pytest.raises(ValidationError):
        KeyRef(env="A", file="b")
