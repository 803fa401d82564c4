"""The strict base every config model derives from.

Unknown keys are errors (a typo in a pushed config must never be silently ignored), models are
immutable once validated (the running config is shared between threads), and every field carries
bounds and a description (see tests/test_config_schema.py, which checks the descriptions).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
