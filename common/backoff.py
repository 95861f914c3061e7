"""Polling waits that stay short while a job is busy and lengthen while it is idle.

Flower 1.41's deployment moves every message by polling: a SuperNode asks the SuperLink for
messages, the coordinator's grid asks it for replies. Within a secure round the next stage
follows a reply within a second or two, so a wait that has already grown when it arrives is
pure latency, paid at every stage of every round (a SecAgg+ round has five); while nothing runs,
every poll is still a request the SuperLink serves, so waits must grow.

Messages travel in two steps: their header first, then their content as separate objects, each
pulled with retries (``flwr.supercore.inflatable.inflatable_utils.pull_objects``). A SuperNode
stores a message's header before it has pulled the content, so the ClientApp task it starts
asks for objects that are still arriving; the coordinator's grid meets the same with replies.
Flower waits 1 s after such a miss, then 2 s, up to 10 s: measured on a 3-organisation loopback
job, 40% of the ClientApp tasks waited 1 to 3.6 s for content that arrived within milliseconds
(90 s of the tasks' 178 s). :func:`prompt_pulls` starts those waits at :data:`PULL_FIRST_S`,
doubling to :data:`PULL_MAX_S`, for up to :data:`PULL_MAX_TRIES` tries: about as long as Flower's
own 500 tries at its 10 s cap (some 83 minutes), so content that never comes stalls a pull no
longer than before (Flower's ``max_time``, 2 hours, still applies).

:class:`Backoff`: after activity, wait :attr:`~Backoff.first_s` between polls for
:attr:`~Backoff.hot_s` seconds; after that each wait doubles, up to :attr:`~Backoff.max_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

#: The first wait after an object that has not arrived yet (Flower's: 1 s) ...
PULL_FIRST_S = 0.01
#: ... doubling up to this (Flower's: 10 s) ...
PULL_MAX_S = 1.0
#: ... for at most this many tries (Flower's: 500, which at its cap wait some 83 minutes).
PULL_MAX_TRIES = 5000


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


def prompt_pulls(module: ModuleType) -> None:
    """Make ``module`` (Flower's ``inflatable_utils``) retry a missing object after
    :data:`PULL_FIRST_S`, doubling to :data:`PULL_MAX_S`, at most :data:`PULL_MAX_TRIES` times.

    Sets the keyword defaults of its ``pull_objects`` and ``pull_and_inflate_object_from_tree``,
    which every caller in Flower 1.41 leaves at their defaults. Raises ``RuntimeError`` when either
    function lacks those keywords: Flower changed, and this must be reviewed rather than skipped.
    """
    for name in ("pull_objects", "pull_and_inflate_object_from_tree"):
        defaults = getattr(getattr(module, name, None), "__kwdefaults__", None) or {}
        if not {"initial_backoff", "backoff_cap", "max_tries_per_object", "max_time"} <= defaults.keys():
            raise RuntimeError(
                f"{module.__name__}.{name} has no initial_backoff, backoff_cap, max_tries_per_object and "
                "max_time keywords (Flower's object pulls changed); review fedsynth.common.backoff.prompt_pulls"
            )
        defaults.update(initial_backoff=PULL_FIRST_S, backoff_cap=PULL_MAX_S, max_tries_per_object=PULL_MAX_TRIES)
