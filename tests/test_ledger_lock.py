"""Two processes appending to one ledger at once lose no entry and keep the chain and the cap."""

import multiprocessing

from fedsynth.common.accounting import BudgetExceeded, Ledger, skellam_event

PER_WRITER = 15
EVENT = skellam_event(50.0, 1.0, 1.0)


def writer(path: str, name: str, start: multiprocessing.Event, cap: float) -> None:
    ledger = Ledger(path, cap_epsilon=cap, delta=1e-6)  # opened before the other wrote anything
    start.wait()
    for i in range(PER_WRITER):
        try:
            ledger.append("test", f"{name}-{i}", EVENT)
        except BudgetExceeded:
            return


def run_writers(path, cap: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=writer, args=(str(path), name, start, cap)) for name in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0


def test_two_processes_appending_at_once_lose_no_entry(tmp_path):
    path = tmp_path / "ledger.jsonl"
    run_writers(path, cap=1e6)
    ledger = Ledger(path, cap_epsilon=1e6, delta=1e-6)  # verifies the hash chain and the head
    mechanisms = sorted(e.mechanism for e in ledger.entries)
    assert mechanisms == sorted(f"{n}-{i}" for n in "ab" for i in range(PER_WRITER))
    assert [e.seq for e in ledger.entries] == list(range(1, 2 * PER_WRITER + 1))


def test_the_cap_holds_over_both_writers(tmp_path):
    path = tmp_path / "ledger.jsonl"
    alone = Ledger(tmp_path / "alone.jsonl", cap_epsilon=1e6, delta=1e-6)
    for _ in range(12):
        alone.append("test", "x", EVENT)
    cap = alone.epsilon().epsilon * 1.0001  # room for exactly 12 of the 30 attempted entries
    run_writers(path, cap=cap)
    ledger = Ledger(path, cap_epsilon=cap, delta=1e-6)
    assert len(ledger) == 12 and ledger.epsilon().epsilon <= cap
