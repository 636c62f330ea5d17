"""The task tiers, easiest first: the one list every part of rlfarm orders and validates by."""

from __future__ import annotations

from typing import Literal, get_args

Tier = Literal["warmup", "beginner", "intermediate", "advanced", "expert"]
TIERS: tuple[str, ...] = get_args(Tier)
