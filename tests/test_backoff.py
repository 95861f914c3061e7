"""Polling waits (``common.backoff``): short while a round is busy, growing while idle."""

import threading
from types import SimpleNamespace

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

import fedsynth.client.app  # noqa: F401  (applies prompt_pulls, as a ClientApp task does)
import fedsynth.server.secure_sum  # noqa: F401  (the same at the coordinator)
from fedsynth.common.backoff import PULL_FIRST_S, PULL_MAX_S, PULL_MAX_TRIES, Backoff, prompt_pulls


class FakeTime:
    """A clock that moves only when something sleeps (no real waiting in the test)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def backoff(fake: FakeTime) -> Backoff:
    return Backoff(first_s=0.1, max_s=1.0, hot_s=0.5, clock=fake.clock, sleep=fake.sleep)


def test_waits_stay_short_for_the_hot_period_then_double_up_to_the_maximum():
    fake = FakeTime()
    polls = backoff(fake)
    for _ in range(12):
        polls.idle()
    assert fake.slept[:5] == [0.1] * 5  # 0.5 s hot
    assert fake.slept[5:10] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_activity_makes_the_next_waits_short_again():
    fake = FakeTime()
    polls = backoff(fake)
    for _ in range(9):
        polls.idle()
    assert fake.slept[-1] == 1.0
    polls.active()
    polls.idle()
    polls.idle()
    assert fake.slept[-2:] == [0.1, 0.1]


class RecordedWaits(threading.Event):
    """Flower's retry wait (an ``Event.wait`` with a timeout), recorded and not slept."""

    waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            return super().wait()
        RecordedWaits.waits.append(timeout)
        return False


def pull_after(misses: int, monkeypatch) -> list[float]:
    """Flower's own ``pull_objects`` for an object that is missing ``misses`` times: its waits."""
    monkeypatch.setattr(RecordedWaits, "waits", [])
    monkeypatch.setattr(inflatable_utils.threading, "Event", RecordedWaits)
    asked: list[str] = []

    def pull(object_id: str) -> bytes:
        asked.append(object_id)
        if len(asked) <= misses:
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert inflatable_utils.pull_objects(["object"], pull) == {"object": b"content"}
    assert len(asked) == misses + 1
    return RecordedWaits.waits


def test_a_missing_object_is_asked_for_again_after_10_ms_doubling_to_1_s(monkeypatch):
    waits = pull_after(12, monkeypatch)
    expected = [min(PULL_FIRST_S * 2**i, PULL_MAX_S) for i in range(12)]
    assert PULL_FIRST_S == 0.01 and PULL_MAX_S == 1.0  # Flower's own: 1 s, doubling to 10 s
    assert all(0.8 * e <= w <= 1.2 * e for w, e in zip(waits, expected, strict=True))  # Flower's +-20% jitter


def schedule_s(first: float, cap: float, tries: int) -> float:
    """The total wait of ``tries`` tries, doubling from ``first`` up to ``cap`` (no jitter)."""
    total, wait = 0.0, first
    for _ in range(tries):
        total, wait = total + wait, min(2 * wait, cap)
    return total


def test_a_missing_object_is_waited_for_about_as_long_as_flower_would_then_given_up(monkeypatch):
    assert len(pull_after(600, monkeypatch)) == 600  # beyond Flower's 500 tries: its waits were 10x longer
    flower_s = schedule_s(1.0, 10.0, 500)  # Flower's own: 1 s doubling to 10 s, 500 tries
    ours_s = schedule_s(PULL_FIRST_S, PULL_MAX_S, PULL_MAX_TRIES)
    assert 0.9 * flower_s <= ours_s <= 1.1 * flower_s
    with pytest.raises(inflatable_utils.ObjectPullError):
        pull_after(PULL_MAX_TRIES, monkeypatch)
    assert inflatable_utils.pull_and_inflate_object_from_tree.__kwdefaults__["initial_backoff"] == PULL_FIRST_S


def test_prompt_pulls_refuses_a_flower_whose_object_pulls_changed():
    def pull_objects(object_ids, pull_object_fn, *, backoff=1):  # noqa: ANN001, ANN202
        return {}

    changed = SimpleNamespace(__name__="flwr.changed", pull_objects=pull_objects,
                              pull_and_inflate_object_from_tree=pull_objects)
    with pytest.raises(RuntimeError, match="review fedsynth.common.backoff.prompt_pulls"):
        prompt_pulls(changed)


def test_the_supernode_wakes_its_superexec_for_each_stored_message_and_only_then():
    import os

    from fedsynth.client.node import SuperExecClock, WakePipe, announce_messages

    read_fd, write_fd = os.pipe()
    waiting, node = WakePipe(read_fd), WakePipe(write_fd)
    pulled = iter([None, 7, None, 8, 9])  # what Flower's _pull_and_store_message returns: no message, run 7, ...
    flower = SimpleNamespace(_pull_and_store_message=lambda **kwargs: next(pulled))
    announce_messages(flower, node)
    assert flower._pull_and_store_message(state=None) is None
    assert not waiting.wait(0)  # no message, no word
    assert flower._pull_and_store_message(state=None) == 7
    assert waiting.wait(0) and not waiting.wait(0)  # one word, consumed
    assert flower._pull_and_store_message(state=None) is None
    flower._pull_and_store_message(state=None), flower._pull_and_store_message(state=None)
    assert waiting.wait(0) and not waiting.wait(0)  # two messages while it was busy: it asks once, then again on its own

    clock = SuperExecClock(waiting)
    node.signal()
    clock.sleep(0.1)  # Flower's interval is ignored: the SuperExec waits on the pipe and takes the word
    assert not waiting.wait(0)
    os.close(write_fd)  # the SuperNode is gone: no busy loop on the closed pipe
    assert not waiting.wait(0) and waiting.closed
    os.close(read_fd)

    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the SuperExec is gone: the SuperNode stops rather than take messages nobody runs
    with pytest.raises(SystemExit, match="SuperExec .* has exited"):
        WakePipe(write_fd).signal()
    os.close(write_fd)


def test_the_wake_pipe_lies_above_the_standard_streams_and_no_task_holds_it():
    import os

    from flwr.supercore.constant import TaskType

    from fedsynth.client.daemon import wake_pipe
    from fedsynth.common.warm_exec import ForkExecutor

    read_fd, write_fd = wake_pipe()
    assert min(read_fd, write_fd) > 2 and not os.get_inheritable(read_fd)  # pass_fds hands it to the SuperExec only

    def task(spec):  # in the fork: exit 0 when the wake pipe is closed here, 3 when the task could read it
        try:
            os.fstat(read_fd)
        except OSError:
            os._exit(0)
        os._exit(3)

    executor = ForkExecutor({TaskType.CLIENT_APP: task}, private_fds=(read_fd,))
    executor.launch(SimpleNamespace(task_type=TaskType.CLIENT_APP))
    _, status = os.wait()
    assert os.waitstatus_to_exitcode(status) == 0
    os.fstat(read_fd)  # still open in the SuperExec itself
    os.close(read_fd), os.close(write_fd)
