"""What operators read: the coordinator's log, the daemons' guard lines, ``fedsynth job status``
and a TLS mismatch named as such.

The coordinator service runs in-process (its gRPC API on a loopback port) with the SuperLink's
side replaced by the stand-in of tests/test_coordinator_unit.py; the test writes what a job's
ServerApp writes (its claim, its progress lines, its ledger entries). Guard lines come from the
real ClientApp handler (``client.app.guarded_share``) over a real guard and ledger.
"""

import json
import logging
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_adversarial_guard import count_round, honest_setup, org
from test_coordinator_unit import SPEC, StandInRuns, config

from fedsynth.cli import main
from fedsynth.client.app import guarded_share
from fedsynth.common.accounting import CombinedAccountant, skellam_event
from fedsynth.protos import coordinator_pb2_grpc as pb_grpc
from fedsynth.server.coordinator import Coordinator, Servicer
from fedsynth.server.jobstore import RUNNING, SUCCEEDED, JobStore

MAKE_CERTS = Path(__file__).resolve().parents[1] / "deploy" / "make_certs.py"
BIN = Path(sys.executable).parent


def serve(coord: Coordinator, credentials: grpc.ServerCredentials | None = None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CoordinatorServicer_to_server(Servicer(coord, threading.Event()), server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, port


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    made = subprocess.run([sys.executable, str(MAKE_CERTS), "--out", str(folder)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    return folder


def test_the_service_logs_where_it_listens(tmp_path):
    """``fedsynth coordinator`` logs at INFO by default: the bound address first."""
    path = config(tmp_path).path  # insecure, listen 127.0.0.1:0
    proc = subprocess.Popen([str(BIN / "fedsynth"), "coordinator", "--config", str(path)], stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        watchdog.cancel()
    assert "coordinator listening on 127.0.0.1:" in lines[-1] and "(insecure)" in lines[-1], "".join(lines)
    port = int(lines[-1].split("listening on 127.0.0.1:")[1].split()[0])
    assert port > 0  # the port the service bound, not the 0 it was asked for


def test_each_jobs_progress_is_logged_once_as_it_arrives(tmp_path, caplog):
    coord = Coordinator(config(tmp_path), StandInRuns(), follow_s=60.0)
    job = coord.submit(SPEC)
    serverapp = JobStore(coord.config.state)
    with caplog.at_level(logging.INFO, logger="fedsynth.server.coordinator"):
        coord.tick()  # hands it to the SuperLink
        assert serverapp.transition(job.job_id, RUNNING, expect=["SUBMITTED"], message="running on the SuperLink")
        serverapp.add_event(job.job_id, "generator round 1/2: measured age x sex")
        coord.tick()
        serverapp.add_event(job.job_id, "teacher: DP-SGD step 1/2")
        serverapp.transition(job.job_id, SUCCEEDED, expect=[RUNNING], message="release written: 10 rows")
        coord.tick()
        coord.tick()  # nothing new: nothing logged twice
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"job {job.job_id}")]
    assert logged == [
        f"job {job.job_id} QUEUED: queued; planned epsilon {job.epsilon_planned:.4f}",
        f"job {job.job_id} SUBMITTED: submitting to the SuperLink",
        f"job {job.job_id} SUBMITTED: Flower run 1 started",
        f"job {job.job_id} RUNNING: running on the SuperLink",
        f"job {job.job_id} RUNNING: generator round 1/2: measured age x sex",
        f"job {job.job_id} RUNNING: teacher: DP-SGD step 1/2",
        f"job {job.job_id} SUCCEEDED: release written: 10 rows",
    ]


def test_a_jobs_updated_time_is_that_of_its_latest_progress(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create("j1", {"parties": 3}, {"name": "x"}, 1.0)
    store.transition(job.job_id, "SUBMITTED", expect=["QUEUED"], message="submitted")
    store.transition(job.job_id, RUNNING, expect=["SUBMITTED"], message="running")
    for k in range(3):
        store.add_event(job.job_id, f"generator round {k + 1}/3")
        assert store.get(job.job_id).updated == store.events_after(job.job_id, 0)[-1].time


def test_job_status_prints_round_survivors_and_epsilon_spent_of_planned(tmp_path, capsys):
    coord = Coordinator(config(tmp_path, cap=3.0), StandInRuns())
    ledger = coord.config.ledger()
    earlier = skellam_event(50.0, 1.0, 1.0, count=15)
    ledger.append("generator", "an earlier job", earlier, {"round": 9, "survivors": ["org-0", "org-1"]})
    job = coord.submit(SPEC)
    coord.tick()
    serverapp = JobStore(coord.config.state)
    serverapp.transition(job.job_id, RUNNING, expect=["SUBMITTED"], message="running on the SuperLink")
    ours = [skellam_event(800.0, 1.0, 1.0, count=15), skellam_event(900.0, 1.0, 1.0, count=2)]
    ledger.append("generator", "1-way marginals", ours[0], {"round": 1, "survivors": ["org-0", "org-1", "org-2"]})
    ledger.append("generator", "2-way marginals", ours[1], {"round": 2, "survivors": ["org-0", "org-2"]})
    serverapp.add_event(job.job_id, "generator round 1/1: measured age x sex")
    server, port = serve(coord)
    try:
        connection = ["--coordinator", f"127.0.0.1:{port}", "--insecure"]
        assert main(["job", "status", job.job_id, *connection]) == 0
        text = capsys.readouterr().out
        assert main(["job", "status", job.job_id, *connection, "--json"]) == 0
        raw = json.loads(capsys.readouterr().out)
    finally:
        server.stop(grace=None)
    from dp_accounting import ComposedDpEvent

    spent = CombinedAccountant().compose(ComposedDpEvent(ours)).epsilon(1e-6).epsilon  # not the earlier job's
    assert f"job {job.job_id}: RUNNING, Flower run 1" in text
    assert "round     2 (generator), survivors org-0, org-2 (2)" in text
    assert f"epsilon   {spent:.4f} spent of {job.epsilon_planned:.4f} planned" in text
    assert "latest    generator round 1/1: measured age x sex" in text and "{" not in text
    assert raw["state"] == "RUNNING" and raw["round"] == "2" and raw["survivors"] == ["org-0", "org-2"]
    assert raw["epsilon_spent"] == pytest.approx(spent) and raw["spec"]["schema"].startswith("<")


def test_a_tls_mismatch_is_named_and_exits_2(tmp_path, certs, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key_and_chain = [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())]
    secure, port = serve(Coordinator(config(tmp_path / "a"), StandInRuns()), grpc.ssl_server_credentials(key_and_chain))
    plain, plain_port = serve(Coordinator(config(tmp_path / "b"), StandInRuns()))
    try:
        assert main(["job", "list", "--coordinator", f"localhost:{port}", "--insecure"]) == 2
        err = capsys.readouterr().err
        assert f"TLS mismatch: the coordinator at localhost:{port} speaks TLS but --insecure was given" in err
        assert "--root-certificates" in err and "Traceback" not in err
        ca = ["--root-certificates", str(certs / "ca.crt")]
        assert main(["job", "list", "--coordinator", f"localhost:{plain_port}", *ca]) == 2
        err = capsys.readouterr().err
        assert f"TLS mismatch: the coordinator at localhost:{plain_port} does not speak TLS" in err and "--insecure" in err
        # Matching modes connect; nothing listening is not called a mismatch.
        assert main(["job", "list", "--coordinator", f"localhost:{port}", *ca]) == 0
        assert main(["job", "list", "--coordinator", f"localhost:{plain_port}", "--insecure"]) == 0
    finally:
        secure.stop(grace=None)
        plain.stop(grace=None)
    assert main(["job", "list", "--coordinator", f"localhost:{plain_port}", "--insecure"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_guard_logs_each_admitted_and_refused_round(tmp_path, caplog):
    organisation = org(tmp_path)
    request, spec = count_round()
    with caplog.at_level(logging.INFO, logger="fedsynth.client.app"):
        guarded_share(organisation, request, [], np.random.default_rng(0), honest_setup(spec))
        with pytest.raises(Exception, match="rule scale"):
            guarded_share(organisation, count_round(scale=1000.0, round_=2)[0], [], np.random.default_rng(0))
    alone = CombinedAccountant().compose(organisation.guard.ledger.entries[0].dp_event()).epsilon(1e-6).epsilon
    admitted, refused = (r.getMessage() for r in caplog.records if "guard" in r.getMessage())
    assert admitted.startswith(f"hospital-a: guard admitted marginals round 1: epsilon {alone:.4g} for this round; "
                               f"ledger {alone:.4g} of cap 2 (delta 1e-06, 1 contributions)")
    assert refused.startswith("hospital-a: guard refused marginals round 2: refused (rule scale; ")
    assert all(r.levelno == logging.INFO for r in caplog.records if "guard" in r.getMessage())
