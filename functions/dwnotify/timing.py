"""How long a request may take, and how long to wait before trying again: one rule each."""

from __future__ import annotations

from collections.abc import Callable


def time_left(timeout_s: float, deadline: float | None, clock: Callable[[], float]) -> float:
    """Seconds one request may take in all: its timeout, or what is left before `deadline` if less."""
    return timeout_s if deadline is None else min(timeout_s, deadline - clock())


def backoff(attempt: int, base_s: float, cap_s: float, jitter: float) -> float:
    """Exponential backoff for the `attempt`-th try (1, 2, ...): doubling from `base_s`, capped at
    `cap_s`, then scaled by 0.5-1.0 with `jitter` in [0, 1) so that callers do not retry in step."""
    return min(cap_s, base_s * 2.0 ** max(0, attempt - 1)) * (0.5 + jitter / 2)
