"""Polling waits that stay short while a job is busy and lengthen while it is idle.

Flower 1.41's deployment moves every message by polling: a SuperNode asks the SuperLink for
messages, the coordinator's grid asks it for replies. Within a secure round the next stage
follows a reply within a second or two, so a wait that has already grown when it arrives is
pure latency, paid at every stage of every round (a SecAgg+ round has five); while nothing runs,
every poll is still a request the SuperLink serves, so waits must grow.

:class:`Backoff`: after activity, wait :attr:`~Backoff.first_s` between polls for
:attr:`~Backoff.hot_s` seconds; after that each wait doubles, up to :attr:`~Backoff.max_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Waits between polls: ``first_s`` for ``hot_s`` seconds after activity, then doubling to ``max_s``."""

    first_s: float
    max_s: float
    hot_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _wait_s: float = field(init=False)
    _since: float = field(init=False)

    def __post_init__(self) -> None:
        self.active()

    def active(self) -> None:
        """Something happened (a message, a reply, a task): poll promptly again."""
        self._wait_s, self._since = self.first_s, self.clock()

    def idle(self) -> None:
        """Wait before the next poll; once the hot period is over, lengthen the next wait."""
        self.sleep(self._wait_s)
        if self.clock() - self._since >= self.hot_s:
            self._wait_s = min(2 * self._wait_s, self.max_s)
