"""A short randomised chaos run over the whole pipeline: nothing lost, nothing counted twice.

The seed is printed; replay a failure with ``OMNI_CHAOS_SEED=<seed> pytest tests/test_chaos.py``
(or ``python -m harness.chaos --seed <seed>`` for the CLI's output). The longer run is
``bench/chaos.py``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from harness.broker import Mosquitto
from harness.chaos import DEFAULT_FAULTS, Chaos, ChaosConfig

pytestmark = pytest.mark.broker


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # ``mosquitto``: only so the test skips (or fails in CI) like every broker test when the
    # binary is missing; the chaos lab runs its own broker, which it kills and restarts.
    seed = int(os.environ.get("OMNI_CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"chaos seed {seed}: replay with OMNI_CHAOS_SEED={seed} pytest {__file__}")
    lines: list[str] = []
    cfg = ChaosConfig(
        rounds=len(DEFAULT_FAULTS),  # every fault type leads one round (cover_all)
        seed=seed,
        duration_s=1.5,
        max_faults=2,
        agents=3,
        ingests=2,
        scan_eps=20,
        footfall_eps=5,
        drain_timeout_s=45,
        workdir=tmp_path / "chaos",
    )
    summary = Chaos(cfg, out=lines.append).run()
    output = "\n".join(lines)
    print(output)
    assert summary.rounds == cfg.rounds, output
    assert set(summary.faults_by_type) >= set(DEFAULT_FAULTS), output
    assert summary.produced > 0
    assert summary.lost == 0, output
    assert summary.duplicated == 0, output
    assert summary.ok, output
