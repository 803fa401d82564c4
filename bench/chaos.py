"""The long chaos run: at least 50 randomised rounds of faults, nothing lost or counted twice.

    python bench/chaos.py [--rounds 50] [--seed S] [--store sqlite|postgresql://...] [--pg-restart]

Progress and the summary come from ``harness.chaos``; the last line is one JSON object:
{"rounds", "faults", "faults_by_type", "produced", "lost", "duplicated", "seed"}.
Exit status 1 if any invariant was violated (the seed replays the fault schedule).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.chaos import Chaos, parse_args


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--rounds" not in args:
        args += ["--rounds", "50"]
    cfg = parse_args(args)
    if cfg.rounds < 50:
        print(f"note: {cfg.rounds} rounds (the benchmark's figure is for 50 or more)", flush=True)
    summary = Chaos(cfg, out=lambda line: print(line, flush=True)).run()
    print(json.dumps(summary.line()), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
