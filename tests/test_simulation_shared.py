"""What a simulated organisation holds travels to Ray once (``simulations.engine.Shared``).

Flower's Ray backend pickles the ClientApp into every message's task; a table held through
``Shared`` must pickle as a reference into Ray's object store, the same one every time, and come
back equal in a process that never saw it. That the simulation runs on it end to end is every
``fedsynth simulate`` test.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import ray
from ray import cloudpickle

from fedsynth.simulations.engine import Shared


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.integers(17, 90, rows), "sex": rng.choice(["Female", "Male"], rows)})


def test_a_shared_table_pickles_as_one_small_reference_however_often(local_ray):
    frame = table(50_000)
    shared = Shared(frame)
    first, second = cloudpickle.dumps(shared), cloudpickle.dumps(shared)
    assert len(first) < len(cloudpickle.dumps(frame)) / 100
    assert pickle.loads(first)._ref == pickle.loads(second)._ref  # put into the object store once


def test_an_actor_gets_the_table_back_equal(local_ray):
    frame = table(1_000)
    shared = Shared(frame)

    @ray.remote
    def rows_and_ages(held: Shared) -> tuple[int, int]:
        got = held.get()
        return len(got), int(got["age"].sum())

    assert ray.get(rows_and_ages.remote(shared)) == (1_000, int(frame["age"].sum()))
    assert pickle.loads(cloudpickle.dumps(shared)).get().equals(frame)
