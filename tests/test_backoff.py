"""Polling waits (``common.backoff``): short while a round is busy, growing while idle."""

from fedsynth.common.backoff import Backoff


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
