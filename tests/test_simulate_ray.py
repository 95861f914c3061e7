"""The simulation engine on an existing Ray cluster (``fedsynth simulate --ray-address``).

The test starts a Ray head in a child process of its own (its own temp dir, so no other Ray
instance on the machine finds it; stopped by that process's ``ray.shutdown``, never by a
machine-wide ``ray stop``), runs one small federation against the head's address, and asks the
head which drivers and actors it ran: this process must be one of its jobs, and Flower's
ClientApp actors must have lived on the head's node, in that job. An address where no head
answers is refused up front (Ray itself would retry for minutes).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from fedsynth.cli import main
from fedsynth.client.app import build_client_app
from fedsynth.common.secure_sum import NoisySumSpec
from fedsynth.common.identity import simulated_federation
from fedsynth.server.secure_sum import Federation
from fedsynth.simulations.engine import run_in_simulation

PARTIES = 3

HEAD = """
import json, sys
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", _temp_dir=sys.argv[1])
print(json.dumps({"address": ray.get_runtime_context().gcs_address,
                  "node": ray.get_runtime_context().get_node_id()}), flush=True)
sys.stdin.readline()  # the test's question: who ran here?
jobs = [{"job": j["JobID"], "driver_pid": j["DriverPid"]} for j in ray._private.state.jobs()]
actors = [{"job": a["JobID"], "class": a["ActorClassName"], "node": a["Address"]["NodeID"]}
          for a in ray._private.state.actors().values()]
print(json.dumps({"jobs": jobs, "actors": actors}), flush=True)
ray.shutdown()
"""


class CountingParty:
    """An organisation whose vector the test knows: ``partition-id + 1`` in every cell."""

    guard = None

    def __init__(self, context):
        self.party = int(context.node_config["partition-id"])
        self.name = f"party-{self.party}"

    def contribute(self, _request, _arrays, _rng):
        return np.full(4, self.party + 1, dtype=np.int64)

    def check(self, _request):
        pass


def one_round(grid, context):
    """Connect, say hello, and sum one noise-free vector over every organisation."""
    with Federation(grid, context, PARTIES, ledger=None) as fed:
        spec = NoisySumSpec(dim=4, mu=0.0, min_survivors=PARTIES, max_abs=10)
        result = fed.noisy_sum(spec, {"task": "count"}, phase="test", mechanism="exact sum")
        return fed.organisations, result.total


@pytest.fixture
def ray_head():
    folder = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's sockets live under it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD, folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        started = json.loads(head.stdout.readline())
        yield head, started
    finally:
        if head.poll() is None:
            head.stdin.close()
            head.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # Ray head start-up plus one simulation: 1-2 minutes on 2 busy cores
def test_simulation_runs_on_the_given_ray_cluster(ray_head):
    head, started = ray_head
    organisations, total = run_in_simulation(
        one_round, build_client_app(CountingParty, fixed_seed=1, identities=simulated_federation(PARTIES)), PARTIES, ray_address=started["address"]
    )
    assert organisations == ("party-0", "party-1", "party-2")
    assert total.tolist() == [6, 6, 6, 6]

    head.stdin.write("report\n")
    head.stdin.flush()
    report = json.loads(head.stdout.readline())
    ours = [j["job"] for j in report["jobs"] if j["driver_pid"] == os.getpid()]
    assert len(ours) == 1, report["jobs"]
    flower = [a for a in report["actors"] if a["class"] == "ClientAppActor"]
    assert flower and {a["job"] for a in flower} == set(ours)
    assert {a["node"] for a in flower} == {started["node"]}


def test_an_address_where_no_ray_head_answers_is_refused_before_anything_runs(tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "release"
    code = main(["simulate", "--ray-address", f"127.0.0.1:{port}", "--parties", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--ray-address 127.0.0.1:{port}: no Ray head answers there" in err
    assert f"ray start --head --port={port}" in err and "Traceback" not in err
    assert not out.exists() and not out.with_name("release.partial").exists()
    assert main(["simulate", "--ray-address", "head-without-port", "--out", str(out)]) == 2
    assert "expected HOST:PORT of a Ray head" in capsys.readouterr().err
