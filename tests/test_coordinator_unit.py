"""The coordinator service's logic and its gRPC API, in-process (no SuperLink).

The scheduler's SuperLink side is replaced by a stand-in only to cause what cannot be caused
cheaply for real: a Flower run that ends without its ServerApp reporting, and a service that
dies between marking a job submitted and learning its run id. The end-to-end loopback test
(tests/test_coordinator_loopback.py) runs the real thing.
"""

import dataclasses
import json
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from concurrent import futures

import grpc
import pytest

from fedsynth.cli import bundled
from fedsynth.common.accounting import BudgetExceeded, Ledger, skellam_event
from fedsynth.protos import coordinator_pb2 as pb
from fedsynth.protos import coordinator_pb2_grpc as pb_grpc
from fedsynth.server.coordinator import Coordinator, CoordinatorConfig, Servicer, SpecError, app_defaults
from fedsynth.server.jobstore import FAILED, QUEUED, RUNNING, SUBMITTED, SUCCEEDED, JobStore, new_job_id
from fedsynth.server.operator import write_release

MAKE_CERTS = Path(__file__).resolve().parents[1] / "deploy" / "make_certs.py"

SCHEMA = bundled("adult.schema.yaml").read_text(encoding="utf-8")
SPEC = {"schema": SCHEMA, "parties": 3, "epsilon": 1.0, "delta": 1e-6, "rounds": 1, "per_round": 2, "teacher_steps": 2}


class StandInRuns:
    """What the scheduler asked of the SuperLink, and the run statuses the test decides."""

    def __init__(self):
        self.started, self.statuses = [], {}

    def start(self, run_config):
        self.started.append(run_config)
        return len(self.started)

    def status(self, run_id):
        return self.statuses.get(run_id, "running")


def config(tmp_path, cap=1.6) -> CoordinatorConfig:
    path = tmp_path / "coordinator.toml"
    path.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:0"\nworkdir = "state"\ninsecure = true\n'
        f"[federation]\nepsilon-cap = {cap}\ndelta = 1e-6\n"
        f'[superlink]\naddress = "127.0.0.1:1"\ninsecure = true\n',
        encoding="utf-8",
    )
    return CoordinatorConfig.load(path)


def test_a_job_is_planned_as_the_serverapp_will_run_it(tmp_path):
    coord = Coordinator(config(tmp_path), StandInRuns())
    job = coord.submit(SPEC)
    assert job.state == QUEUED and 0.9 < job.epsilon_planned <= 1.0
    run_config = tomllib.loads((coord.config.job_dir(job.job_id) / "run-config.toml").read_text())
    assert run_config.keys() == app_defaults().keys()  # Flower refuses keys the app does not declare
    assert run_config["rounds"] == 1 and run_config["teacher-steps"] == 2 and run_config["parties"] == 3
    assert run_config["labels"] == "" and run_config["timeout"] == 600.0  # unset: the app's defaults
    assert run_config["job-id"] == job.job_id and run_config["ledger"] == str(coord.config.ledger_path)
    assert run_config["cap"] == 1.6 and run_config["state"] == coord.config.state
    assert [e.message for e in coord.store.events_after(job.job_id, 0)] == [
        f"queued; planned epsilon {job.epsilon_planned:.4f}"
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "columns: [oops"}, "invalid job"),
        ({"parties": 1}, "invalid job"),
        ({"delta": 1e-5}, "delta must be the federation's"),
        ({"labels": "nonsense"}, "labels must be one of"),
    ],
)
def test_an_invalid_spec_is_refused_and_leaves_nothing(tmp_path, change, message):
    coord = Coordinator(config(tmp_path), StandInRuns())
    with pytest.raises(SpecError, match=message):
        coord.submit({**SPEC, **change})
    assert coord.store.jobs() == [] and list((coord.config.workdir / "jobs").iterdir()) == []


def test_the_cap_counts_the_ledger_and_every_unfinished_jobs_plan(tmp_path):
    coord = Coordinator(config(tmp_path, cap=1.6), StandInRuns())
    coord.submit(SPEC)
    coord.submit(SPEC)  # two planned jobs of epsilon ~1 compose to 1.45
    with pytest.raises(BudgetExceeded, match=r"cap 1.6 would be passed.*plans of 2 unfinished job\(s\)"):
        coord.submit(SPEC)
    assert len(coord.store.jobs()) == 2


def test_jobs_run_one_at_a_time_and_a_run_without_an_outcome_fails(tmp_path):
    runs = StandInRuns()
    coord = Coordinator(config(tmp_path), runs, follow_s=0.0)  # ask the SuperLink on every tick
    first, second = coord.submit(SPEC), coord.submit(SPEC)
    coord.tick()
    assert [coord.store.get(j.job_id).state for j in (first, second)] == [SUBMITTED, QUEUED]
    assert runs.started == [coord.config.job_dir(first.job_id) / "run-config.toml"]
    coord.tick()  # still running: nothing else starts
    assert len(runs.started) == 1
    runs.statuses[1] = "finished:failed"  # the ServerApp died without reporting
    coord.tick()
    failed = coord.store.get(first.job_id)
    assert failed.state == FAILED and "without reporting" in failed.error
    assert coord.store.get(second.job_id).state == SUBMITTED and len(runs.started) == 2


def test_a_job_that_reports_is_not_asked_about_and_a_silent_one_is(tmp_path):
    runs = StandInRuns()
    coord = Coordinator(config(tmp_path), runs, follow_s=60.0)
    job = coord.submit(SPEC)
    coord.tick()  # submitted: its event is seconds old
    runs.statuses[1] = "finished:failed"  # what the SuperLink would answer
    coord.tick()
    assert coord.store.get(job.job_id).state == SUBMITTED  # it reported within 60 s: not asked
    silent = dataclasses.replace(coord.store.get(job.job_id), updated="2000-01-01T00:00:00.000+00:00")
    assert coord.due_to_ask(silent)
    coord._follow(silent)
    assert coord.store.get(job.job_id).state == FAILED and not coord.due_to_ask(silent)  # asked once per 60 s


def test_a_job_lost_while_being_submitted_fails_and_its_serverapp_cannot_claim_it(tmp_path):
    coord = Coordinator(config(tmp_path), StandInRuns())
    job = coord.submit(SPEC)
    assert coord.store.transition(job.job_id, SUBMITTED, expect=[QUEUED], message="submitting")  # then a crash
    restarted = Coordinator(config(tmp_path), StandInRuns())
    restarted.tick()
    assert restarted.store.get(job.job_id).state == FAILED
    serverapp_view = JobStore(coord.config.state)
    assert not serverapp_view.transition(job.job_id, RUNNING, expect=[SUBMITTED], message="running")


def test_compare_and_set_lets_exactly_one_writer_win(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create(new_job_id(), {"parties": 3}, {"name": "x"}, 1.0)
    store.transition(job.job_id, SUBMITTED, expect=[QUEUED], message="submitted")
    wins = []
    barrier = threading.Barrier(8)

    def claim(i):
        other = JobStore(store.url)  # its own engine, as another process would have
        barrier.wait()
        wins.append(other.transition(job.job_id, RUNNING if i % 2 else FAILED, expect=[SUBMITTED], message=f"w{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert [e.seq for e in store.events_after(job.job_id, 0)] == [1, 2, 3]


@pytest.fixture()
def api(tmp_path):
    coord = Coordinator(config(tmp_path), StandInRuns())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    stopping = threading.Event()
    pb_grpc.add_CoordinatorServicer_to_server(Servicer(coord, stopping), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield coord, pb_grpc.CoordinatorStub(channel)
    stopping.set()
    server.stop(grace=None)


def test_the_grpc_api_submits_streams_and_fetches(api, tmp_path):
    coord, stub = api
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(**SPEC)))
    assert job.state == pb.QUEUED and job.spec.parties == 3
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(**{**SPEC, "epsilon": 5.0})))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cap 1.6" in refused.value.details()
    with pytest.raises(grpc.RpcError) as early:
        list(stub.FetchRelease(pb.FetchReleaseRequest(job_id=job.job_id)))
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # What the job's ServerApp does on the SuperLink: claim, report, write the release.
    coord.tick()
    serverapp = JobStore(coord.config.state)
    assert serverapp.transition(job.job_id, RUNNING, expect=[SUBMITTED], message="running")
    serverapp.add_event(job.job_id, "generator: measured 15 1-way marginals")
    release = coord.config.job_dir(job.job_id) / "release"
    release.mkdir()
    (release / "privacy.json").write_text(json.dumps({"epsilon": 0.97}))
    (release / "synthetic.csv").write_bytes(b"a,b\n" + b"1,2\n" * 400_000)  # several chunks
    serverapp.transition(job.job_id, SUCCEEDED, expect=[RUNNING], message="release written")

    events = list(stub.StreamEvents(pb.StreamEventsRequest(job_id=job.job_id)))
    assert [e.message for e in events][-2:] == ["generator: measured 15 1-way marginals", "release written"]
    assert events[-1].state == pb.SUCCEEDED and [e.seq for e in events] == list(range(1, len(events) + 1))
    done = stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
    assert done.epsilon_spent == 0.97 and list(done.release_files) == ["privacy.json", "synthetic.csv"]
    fetched = write_release(stub.FetchRelease(pb.FetchReleaseRequest(job_id=job.job_id)), tmp_path / "fetched")
    assert [p.name for p in fetched] == ["privacy.json", "synthetic.csv"]
    assert (tmp_path / "fetched" / "synthetic.csv").read_bytes() == (release / "synthetic.csv").read_bytes()
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetJob(pb.GetJobRequest(job_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_ledger_is_served_as_written(api):
    coord, stub = api
    ledger = Ledger(coord.config.ledger_path, cap_epsilon=1.6, delta=1e-6)
    ledger.append("generator", "1-way marginals", skellam_event(800.0, 1.0, 1.0, count=15), {"round": 1})
    served = stub.GetLedger(pb.GetLedgerRequest())
    assert served.cap == 1.6 and served.epsilon == pytest.approx(ledger.epsilon().epsilon)
    assert [(e.seq, e.mechanism, e.hash) for e in served.entries] == [(1, "1-way marginals", ledger.entries[0].hash)]
    assert json.loads(served.entries[0].metadata_json) == {"round": 1}


def test_the_federation_cap_counts_past_spends_at_their_planned_noise(tmp_path):
    """A past round whose survivors carried far more noise than planned is counted at the plan:
    the cap must hold even if only t of them were honest."""
    coord = Coordinator(config(tmp_path, cap=1.6), StandInRuns())
    ledger = coord.config.ledger()
    # Seen by the coordinator: mu 400 (epsilon ~0.3); planned, with t honest survivors: mu 8 (epsilon ~1).
    ledger.append("generator", "past job", skellam_event(400.0, 1.0, 1.0, count=3), {"mu": 400.0, "planned_mu": 8.0})
    assert ledger.epsilon().epsilon < 0.6
    with pytest.raises(BudgetExceeded, match="at its planned noise"):
        coord.submit(SPEC)
    assert coord.store.jobs() == []


def test_fifty_concurrent_submissions_over_tls_admit_plans_within_the_cap_and_lose_none(tmp_path):
    from dp_accounting import ComposedDpEvent

    from fedsynth.common.accounting import CombinedAccountant, event_from_dict

    coord = Coordinator(config(tmp_path, cap=1.6), StandInRuns())
    certs = tmp_path / "certs"
    made = subprocess.run([sys.executable, str(MAKE_CERTS), "--out", str(certs)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    stopping = threading.Event()
    pb_grpc.add_CoordinatorServicer_to_server(Servicer(coord, stopping), server)
    key_and_chain = [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())]
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(key_and_chain))
    server.start()
    spec = pb.JobSpec(**{**SPEC, "epsilon": 0.3, "labels": "generator"})
    start = threading.Barrier(50)

    def submit(stub):
        start.wait()
        try:
            return stub.SubmitJob(pb.SubmitJobRequest(spec=spec)).job_id
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "cap 1.6" in exc.details()
            return None

    try:
        trust = grpc.ssl_channel_credentials((certs / "ca.crt").read_bytes())
        with grpc.secure_channel(f"localhost:{port}", trust) as channel:  # TLS, as operators connect
            stub = pb_grpc.CoordinatorStub(channel)
            with futures.ThreadPoolExecutor(max_workers=50) as pool:
                answers = list(pool.map(lambda _i: submit(stub), range(50)))
    finally:
        stopping.set()
        server.stop(grace=None)
    admitted = [a for a in answers if a is not None]
    stored = coord.store.jobs()
    assert sorted(j.job_id for j in stored) == sorted(admitted) and len(set(admitted)) == len(admitted)
    plans = ComposedDpEvent([event_from_dict(j.plan_event) for j in stored])
    assert CombinedAccountant().compose(plans).epsilon(1e-6).epsilon <= 1.6
    assert 2 <= len(admitted) < 50  # some fit, the rest were refused
