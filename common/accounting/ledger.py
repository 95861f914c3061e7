"""The privacy ledger of one federation: an append-only, hash-chained JSON-lines file.

Each line is one spend: ``seq`` (1-based, equal to the line number), UTC ``time``,
``phase``, ``mechanism``, the serialised ``event`` (``events.event_to_dict``), free-form
``metadata``, ``prev_hash`` and ``hash`` = sha256 of the canonical JSON of the entry
without its hash. A head file ``<path>.head`` holds the entry count and last hash, so
that deleting whole trailing lines is detected too.

Appending composes the new event with all earlier ones FIRST and refuses (raising
BudgetExceeded, writing nothing) if the combined epsilon would pass the cap. Otherwise
it rewrites the file atomically (temp file in the same folder, fsync, os.replace,
fsync of the folder), then the head the same way, and only then returns: use a noisy
result only after ``append`` has returned.

Several processes may append to one ledger (an organisation's ClientApp processes, two
coordinators): ``append`` holds an exclusive ``fcntl`` lock on ``<path>.lock`` while it reads
the file's current state (reloading and re-verifying it if another process appended), checks
the cap against it, and writes. No entry is lost and the cap holds over all writers.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from dp_accounting.dp_event import DpEvent
from dp_accounting.privacy_accountant import UnsupportedEventError

from .accountant import CombinedAccountant, Epsilon
from .events import event_from_dict, event_to_dict

GENESIS_HASH = "0" * 64
_FIELDS = ("seq", "time", "phase", "mechanism", "event", "metadata", "prev_hash", "hash")


class BudgetExceeded(Exception):
    """A spend would take the ledger past its epsilon cap; nothing was written."""


class LedgerCorrupt(Exception):
    """The ledger file or its head fails verification."""


@dataclass(frozen=True)
class Entry:
    """One verified line of the ledger (``event`` in its serialised form)."""

    seq: int
    time: str
    phase: str
    mechanism: str
    event: Mapping[str, Any]
    metadata: Mapping[str, Any]
    prev_hash: str
    hash: str

    def dp_event(self) -> DpEvent:
        """The entry's event as a dp-accounting DpEvent."""
        return event_from_dict(self.event)

    def planned_event(self) -> DpEvent:
        """The entry's event at its planned noise (metadata ``planned_mu``: exactly ``t`` survivors).

        A coordinator records each round with the noise of the survivors it saw; the planned
        event is what holds when only ``t`` of them are honest, and what a cap should count.
        """
        if "planned_mu" not in self.metadata:
            return self.dp_event()
        return event_from_dict(_with_mu(self.event, float(self.metadata["planned_mu"])))


class Ledger:
    """Persistent privacy ledger with an epsilon cap at a fixed delta."""

    def __init__(self, path: str | os.PathLike, cap_epsilon: float, delta: float):
        if not cap_epsilon > 0:
            raise ValueError(f"cap_epsilon must be positive, got {cap_epsilon!r}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.cap_epsilon = cap_epsilon
        self.delta = delta
        self._lines: list[str] = []
        self._accountant = CombinedAccountant()
        with self._locked():
            self._load()

    @property
    def entries(self) -> tuple[Entry, ...]:
        """All entries, oldest first (fresh copies: changing them changes nothing here)."""
        return tuple(Entry(**json.loads(line)) for line in self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def epsilon(self) -> Epsilon:
        """Combined-accountant epsilon of all entries at the ledger's delta."""
        return self._accountant.epsilon(self.delta)

    def check(self, event: DpEvent, phase: str = "pre-flight check") -> Epsilon:
        """The epsilon the ledger would reach with ``event``; raises BudgetExceeded past the cap."""
        return self._try(event, phase)[1]

    def would_exceed(self, event: DpEvent) -> bool:
        """Whether spending ``event`` would take the ledger past its cap."""
        try:
            self.check(event)
        except BudgetExceeded:
            return True
        return False

    def append(
        self, phase: str, mechanism: str, event: DpEvent, metadata: Optional[Mapping[str, Any]] = None
    ) -> Entry:
        """Spend ``event``: refuse past the cap, else write it durably and return its entry.

        The cap is checked on the event as read back from its serialised form, so the
        ledger accounts exactly what it stores.
        """
        if not (isinstance(phase, str) and isinstance(mechanism, str)):
            raise TypeError("phase and mechanism must be strings")
        with self._locked():
            self._refresh()
            return self._append(phase, mechanism, event, metadata)

    def _append(
        self, phase: str, mechanism: str, event: DpEvent, metadata: Optional[Mapping[str, Any]]
    ) -> Entry:
        body = {
            "seq": len(self._lines) + 1,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
            "phase": phase,
            "mechanism": mechanism,
            "event": event_to_dict(event),
            "metadata": dict(metadata or {}),
            "prev_hash": self._last_hash(),
        }
        line = _canonical({**body, "hash": _hash(body)})
        accountant, _ = self._try(event_from_dict(json.loads(line)["event"]), phase)
        _atomic_write(self.path, "".join(self._lines) + line + "\n")
        self._lines.append(line + "\n")
        self._accountant = accountant
        self._write_head()
        return Entry(**json.loads(line))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the ledger's exclusive lock (``fcntl.flock`` on ``<path>.lock``)."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _refresh(self) -> None:
        """Reload (and re-verify) the file if another process appended since we last read it."""
        head = self._read_head()
        if head is not None and head["count"] == len(self._lines) and head["hash"] == self._last_hash():
            return
        self._lines, self._accountant = [], CombinedAccountant()
        self._load()

    def _try(self, event: DpEvent, phase: str) -> tuple[CombinedAccountant, Epsilon]:
        accountant = self._accountant.copy().compose(event)
        epsilon = accountant.epsilon(self.delta)
        if epsilon.epsilon > self.cap_epsilon:
            raise BudgetExceeded(
                f"phase {phase!r} would bring epsilon to {epsilon.epsilon:.6g} (delta {self.delta:g}, "
                f"{epsilon.method}), above the cap {self.cap_epsilon:g}"
            )
        return accountant, epsilon

    def _last_hash(self) -> str:
        return json.loads(self._lines[-1])["hash"] if self._lines else GENESIS_HASH

    def _write_head(self) -> None:
        _atomic_write(self.head_path, _canonical({"count": len(self._lines), "hash": self._last_hash()}) + "\n")

    def _load(self) -> None:
        for number, line in enumerate(self._read_lines(), 1):
            try:
                self._accountant.compose(self._verified_event(number, line))
            except UnsupportedEventError as err:
                raise LedgerCorrupt(f"{self.path} line {number}: event cannot be accounted ({err})") from err
            self._lines.append(line)
        self._check_head()

    def _read_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        try:
            *lines, rest = self.path.read_bytes().decode("ascii").split("\n")
        except UnicodeDecodeError as err:
            raise LedgerCorrupt(f"{self.path}: not ASCII ({err})") from err
        if rest:
            raise LedgerCorrupt(f"{self.path} line {len(lines) + 1}: cut short (no line end)")
        return [line + "\n" for line in lines]

    def _verified_event(self, number: int, line: str) -> DpEvent:
        where = f"{self.path} line {number}"
        try:
            entry = json.loads(line)
            if not (isinstance(entry, dict) and tuple(sorted(entry)) == tuple(sorted(_FIELDS))):
                raise ValueError("not a ledger entry")
            event = event_from_dict(entry["event"])
        except ValueError as err:
            raise LedgerCorrupt(f"{where}: malformed ({err})") from err
        body = {key: value for key, value in entry.items() if key != "hash"}
        if entry["seq"] != number or entry["prev_hash"] != self._last_hash():
            raise LedgerCorrupt(f"{where}: hash chain broken (entry missing, reordered or inserted)")
        if entry["hash"] != _hash(body):
            raise LedgerCorrupt(f"{where}: hash mismatch (entry altered)")
        return event

    def _check_head(self) -> None:
        head = self._read_head()
        if head is None and len(self._lines) > 1:
            raise LedgerCorrupt(f"{self.head_path} missing for a ledger of {len(self._lines)} entries")
        count = head["count"] if head else 0
        if len(self._lines) < count:
            raise LedgerCorrupt(f"{self.path} has {len(self._lines)} entries, its head says {count}: truncated")
        if count and json.loads(self._lines[count - 1])["hash"] != head["hash"]:
            raise LedgerCorrupt(f"{self.path} line {count}: hash differs from the head's")
        if len(self._lines) > count + 1:
            raise LedgerCorrupt(f"{self.path} has {len(self._lines)} entries, its head says {count}")
        if len(self._lines) == count + 1:  # crash between the ledger and head writes
            self._write_head()

    def _read_head(self) -> Optional[dict[str, Any]]:
        if not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_bytes())
            if not (isinstance(head.get("count"), int) and isinstance(head.get("hash"), str)):
                raise ValueError("needs an integer count and a string hash")
        except (ValueError, AttributeError) as err:
            raise LedgerCorrupt(f"{self.head_path}: malformed ({err})") from err
        return head


def _with_mu(event: Any, mu: float) -> Any:
    """``event`` (serialised) with every Skellam ``mu`` replaced by ``mu``."""
    if isinstance(event, Mapping):
        return {k: mu if k == "mu" else _with_mu(v, mu) for k, v in event.items()}
    if isinstance(event, list):
        return [_with_mu(v, mu) for v in event]
    return event


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body).encode("ascii")).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once, durably (temp file, fsync, rename, fsync dir)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
