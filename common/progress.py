"""Progress people can see: a bar on a terminal, plain lines when output goes to a file or a pipe.

Long work reports through the job's one callback, ``progress(message)`` (``server.job``).
A message that counts, one holding ``<done>/<total>`` such as ``"teacher: DP-SGD step 7/30"``
or ``"generator round 2/5: measured ..."``, advances the bar named by the text before the
count (``"teacher: DP-SGD step"``); any other message is printed as a line. Off a terminal a
counted task prints its first step, each further tenth of the way and its last, so logs stay
short. Messages carry only public facts (counts of rounds and steps, the epsilon spent):
nothing here touches data.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

COUNT = re.compile(r"(\d+)/(\d+)")


def counted(message: str) -> tuple[str, int, int, str] | None:
    """``(task, done, total, rest)`` of a counting message, or None for a plain one."""
    match = COUNT.search(message)
    if match is None or int(match.group(2)) == 0:
        return None
    task = message[: match.start()].strip(" :") or "progress"
    return task, int(match.group(1)), int(match.group(2)), message[match.end() :].strip(" :")


class ProgressReporter:
    """``progress(message)`` callback: a rich bar per counted task on a terminal, else plain lines.

    Use it as a context manager around the work (the bar is drawn while inside)::

        with ProgressReporter() as progress:
            simulate(config, parties, progress)

    ``bar`` forces either form (default: a bar exactly when ``stream`` is a terminal).
    """

    def __init__(self, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._printed_tenth: dict[str, int] = {}

    def __enter__(self) -> ProgressReporter:
        if self.bar:
            console = Console(file=self.stream, force_terminal=True)
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}"), console=console,
            )
            self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, message: str) -> None:
        count = counted(message)
        if count is None:
            self._line(message)
        elif self._progress is not None:
            self._advance(*count)
        elif self._worth_a_line(*count[:3]):
            self._line(message)

    def _line(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def _advance(self, task: str, done: int, total: int, detail: str) -> None:
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total, detail="")
        self._progress.update(self._tasks[task], completed=done, total=total, detail=detail[:60])

    def _worth_a_line(self, task: str, done: int, total: int) -> bool:
        tenth = 10 * done // total
        if done in (1, total) or tenth > self._printed_tenth.get(task, 0):
            self._printed_tenth[task] = tenth
            return True
        return False
