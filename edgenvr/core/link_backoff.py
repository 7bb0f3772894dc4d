"""How long the box waits before trying again after a link failed (the city hub, the MQTT broker): doubling
from FIRST_S up to MAX_S, with jitter so a city's boxes coming back after one cut do not all knock at once,
never spinning.

Owns that rule, for every connection the box keeps outward (uploads and the channel to the hub, the broker)."""

from __future__ import annotations

import random

FIRST_S = 2.0
MAX_S = 300.0


class LinkBackoff:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._step = 0.0

    def failed(self) -> float:
        """Another failure: the next wait (half to all of the doubled step)."""
        self._step = min(MAX_S, max(FIRST_S, self._step * 2))
        return self._step * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        """The link carried something: the next failure waits FIRST_S again."""
        self._step = 0.0
