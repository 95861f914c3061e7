"""The whole deployment over loopback, as operators run it, and a coordinator crash mid-job.

Processes, all real, started by the test: a SuperLink with TLS and SuperNode authentication;
three organisation daemons (`fedsynth client --config org-N.toml`, each with its own table,
accepted schema, node key and privacy guard); the coordinator service (`fedsynth coordinator`).
A job is submitted through the gRPC API with the generated stub over TLS, its progress is
streamed; once it runs, the coordinator is killed (SIGKILL) and restarted, and the stream is
picked up where it stopped. Then the release is fetched and every ledger is checked: the
federation's, the release's and each organisation's own.

The daemons draw their noise from a fixed seed (`[testing] noise-seed`, tests only), so the
test replays every organisation's share and checks that the first secure round's decoded sum
is exactly the sum of what they sent.

Slow (a few minutes on 2 cores): every Flower message starts a fresh ClientApp process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from deployment import BIN, READY_DEADLINE_S, Processes, free_ports, operator_home, wait_until_listening

from fedsynth.common.accounting import Ledger
from fedsynth.common.marginals import marginals
from fedsynth.common.schema import load_schema
from fedsynth.common.secure_sum import NoisySumSpec, noisy_share, secure_ranges
from fedsynth.protos import coordinator_pb2 as pb
from fedsynth.protos import coordinator_pb2_grpc as pb_grpc
from fedsynth.server.operator import write_release

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "fedsynth" / "data"
MAKE_CERTS = REPO / "deploy" / "make_certs.py"
ORGS = ("org-0", "org-1", "org-2")
ROWS_PER_ORG = 1500
NOISE_SEED = 123
MAX_ROWS = 1_000_000  # the job's default max_rows: the bound of every count vector
FEDERATION_CAP = 1.2  # one job of epsilon 1 fits; a second one does not
JOB = dict(parties=3, epsilon=1.0, delta=1e-6, min_survivors=3, rounds=1, per_round=2, teacher_steps=2)
RELEASE_FILES = [
    "job.toml", "labeller.pt", "ledger.jsonl", "ledger.jsonl.head", "measurements.json", "privacy.json", "schema.yaml", "synthetic.csv",
    "synthetic.parquet",
]

CLI_DEADLINE_S = 60
JOB_DEADLINE_S = 720  # the whole job, from submission to SUCCEEDED


def write_tables(folder: Path) -> list[Path]:
    """Rows 0-1499, 1500-2999, 3000-4499 of the bundled sample, header and '?' kept verbatim."""
    header, *rows = (DATA / "adult.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    paths = []
    for i, org in enumerate(ORGS):
        path = folder / org / "table.csv"
        path.parent.mkdir(parents=True)
        path.write_text(header + "".join(rows[i * ROWS_PER_ORG : (i + 1) * ROWS_PER_ORG]), encoding="utf-8")
        paths.append(path)
    return paths


def org_config(folder: Path, org: str, link: str, certs: Path, port: int) -> Path:
    path = folder / org / "org.toml"
    path.write_text(
        f'[organisation]\nname = "{org}"\ndata = "table.csv"\nschema = "{DATA / "adult.schema.yaml"}"\n\n'
        f'[superlink]\naddress = "{link}"\nroot-certificates = "{certs / "ca.crt"}"\n'
        f'auth-key = "{certs / f"{org}.key"}"\nclientappio-port = {port}\n\n'
        f'[guard]\nledger = "state/ledger.jsonl"\nepsilon-cap = 5.0\ndelta = 1e-6\n'
        f"min-noise-multiplier = 0.5\nmin-survivors = 2\n\n"
        f'[identity]\nsigning-key = "{certs / f"{org}.signing.pem"}"\nroster = "{certs / "roster.toml"}"\n\n'
        f"[testing]\nnoise-seed = {NOISE_SEED}\n",
        encoding="utf-8",
    )
    return path


def coordinator_config(folder: Path, port: int, link: str, certs: Path) -> Path:
    path = folder / "coordinator.toml"
    path.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:{port}"\nworkdir = "state"\n'
        f'certificate = "{certs / "server.pem"}"\nprivate-key = "{certs / "server.key"}"\n\n'
        f"[federation]\nepsilon-cap = {FEDERATION_CAP}\ndelta = 1e-6\n\n"
        f'[superlink]\naddress = "{link}"\nroot-certificates = "{certs / "ca.crt"}"\n',
        encoding="utf-8",
    )
    return path


def expected_first_round(tables: list[Path], planned_mu: float) -> np.ndarray:
    """What secure round 1 must decode to: every organisation's 1-way counts (of every column and
    fine grid) plus its share."""
    schema = load_schema(DATA / "adult.schema.yaml")
    domain = schema.measured_domain()
    columns = list(domain)
    spec = NoisySumSpec(dim=sum(domain.values()), mu=planned_mu, min_survivors=3, max_abs=MAX_ROWS)
    ranges = secure_ranges(spec, len(ORGS))
    total = np.zeros(spec.dim, dtype=np.int64)
    for i, table in enumerate(tables):
        codes = schema.encode(schema.read_csv(table), fine=True)
        rng = np.random.default_rng([NOISE_SEED, zlib.crc32(ORGS[i].encode()), 1])  # seed, org, round
        counts = marginals(codes, columns, domain, [(c,) for c in columns])
        total += noisy_share(counts, spec, ranges, rng).astype(np.int64)
    return total


def test_operators_run_a_job_through_the_coordinator_which_survives_a_crash(tmp_path):
    certs = tmp_path / "certs"
    made = subprocess.run(
        [sys.executable, str(MAKE_CERTS), "--out", str(certs), *[a for o in ORGS for a in ("--node", o)]],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    tables = write_tables(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    link_port, api_port, *node_ports = free_ports(2 + len(ORGS))
    link = f"127.0.0.1:{link_port}"
    operator = operator_home(tmp_path, "fed", link, certs / "ca.crt")
    coordinator_cfg = coordinator_config(tmp_path, api_port, link, certs)
    fedsynth = str(BIN / "fedsynth")

    procs = Processes(logs)
    try:
        superlink = procs.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--disable-runtime-dependency-installation",
             "--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
             "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth",
             "--host", "127.0.0.1", "--port", str(link_port)],
            tmp_path / "superlink-flwr",
        )
        wait_until_listening(link_port, superlink, READY_DEADLINE_S)
        for org in ORGS:  # the operator registers each organisation's public key first
            done = procs.run(f"register-{org}", [str(BIN / "flwr"), "supernode", "register",
                             str(certs / f"{org}.pub"), "fed", "--format", "json"], operator, CLI_DEADLINE_S)
            assert json.loads(done.stdout).get("success") is True, done.stdout + done.stderr
        for org, port in zip(ORGS, node_ports, strict=True):
            config = org_config(tmp_path, org, link, certs, port)
            check = procs.run(f"check-{org}", [fedsynth, "client", "--config", str(config), "--check"],
                              tmp_path / f"{org}-flwr", CLI_DEADLINE_S)
            assert check.returncode == 0 and f"{ROWS_PER_ORG:,} rows conform" in check.stdout, check.stderr
            procs.start(org, [fedsynth, "client", "--config", str(config)], tmp_path / f"{org}-flwr")

        coordinator = procs.start("coordinator", [fedsynth, "coordinator", "--config", str(coordinator_cfg)],
                                  tmp_path / "coordinator-home")
        wait_until_listening(api_port, coordinator, READY_DEADLINE_S)
        credentials = grpc.ssl_channel_credentials((certs / "ca.crt").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{api_port}", credentials) as channel:
            stub = pb_grpc.CoordinatorStub(channel)
            spec = pb.JobSpec(schema=(DATA / "adult.schema.yaml").read_text(encoding="utf-8"), **JOB)
            job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec))
            assert job.state == pb.QUEUED and 0.9 < job.epsilon_planned <= 1.0
            seen = []
            for event in stub.StreamEvents(pb.StreamEventsRequest(job_id=job.job_id), timeout=JOB_DEADLINE_S):
                seen.append(event)
                if "organisations accept schema" in event.message:
                    break  # the job is running: the organisations have passed its pre-flight
        assert seen[-1].state == pb.RUNNING, procs.all_logs()

        # The coordinator dies mid-job and is restarted with the same config.
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(timeout=30)
        coordinator = procs.start("coordinator-restarted", [fedsynth, "coordinator", "--config", str(coordinator_cfg)],
                                  tmp_path / "coordinator-home")
        wait_until_listening(api_port, coordinator, READY_DEADLINE_S)
        with grpc.secure_channel(f"127.0.0.1:{api_port}", credentials) as channel:
            stub = pb_grpc.CoordinatorStub(channel)
            request = pb.StreamEventsRequest(job_id=job.job_id, after_seq=seen[-1].seq)
            seen += list(stub.StreamEvents(request, timeout=JOB_DEADLINE_S))
            done = stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
            assert done.state == pb.SUCCEEDED, f"{done.error}\n{procs.all_logs()}"
            assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
            assert any(e.message.startswith("teacher: DP-SGD step 2/2") for e in seen)
            assert sorted(done.release_files) == RELEASE_FILES
            release = tmp_path / "fetched"
            write_release(stub.FetchRelease(pb.FetchReleaseRequest(job_id=job.job_id)), release)
            ledger = stub.GetLedger(pb.GetLedgerRequest())
            with pytest.raises(grpc.RpcError) as refused:  # the federation's cap holds across jobs
                stub.SubmitJob(pb.SubmitJobRequest(spec=spec))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert f"above the cap {FEDERATION_CAP:g}" in refused.value.details()

        # The release: complete, its statement recomputable from its ledger.
        assert sorted(p.name for p in release.iterdir()) == RELEASE_FILES
        privacy = json.loads((release / "privacy.json").read_text(encoding="utf-8"))
        assert privacy["organisations"] == list(ORGS) and done.epsilon_spent == privacy["epsilon"]
        released = Ledger(release / "ledger.jsonl", cap_epsilon=FEDERATION_CAP, delta=1e-6)
        assert released.epsilon().epsilon == pytest.approx(privacy["epsilon"])

        # One spend per round, written once, despite the crash: the served ledger is the
        # release's, entry for entry and hash for hash, and rounds are numbered 1..n once each.
        entries = released.entries
        assert [(e.seq, e.hash) for e in ledger.entries] == [(e.seq, e.hash) for e in entries]
        assert [e.metadata["round"] for e in entries] == list(range(1, len(entries) + 1)) and len(entries) == 7
        assert all(e.metadata["survivors"] == list(ORGS) for e in entries)

        # Each organisation's own ledger holds the same rounds, at the planned noise (t shares).
        for org in ORGS:
            guard = Ledger(tmp_path / org / "state" / "ledger.jsonl", cap_epsilon=5.0, delta=1e-6)
            assert [g.metadata["round"] for g in guard.entries] == [e.metadata["round"] for e in entries]
            for mine, theirs in zip(guard.entries, entries, strict=True):
                assert mine.metadata["mu"] == theirs.metadata.get("planned_mu", 0.0)
            assert guard.epsilon().epsilon >= released.epsilon().epsilon  # t shares, not 3

        # The first secure round decoded to exactly the sum of what the organisations sent.
        first = entries[0].metadata
        measurements = json.loads((release / "measurements.json").read_text(encoding="utf-8"))
        columns = load_schema(DATA / "adult.schema.yaml").measured_domain()  # every column, then each fine grid
        decoded = np.concatenate([np.asarray(m["counts"], dtype=np.int64) for m in measurements[: len(columns)]])
        np.testing.assert_array_equal(decoded, expected_first_round(tables, float(first["planned_mu"])))

        # What operators read: where the service listens, the job's progress, each guard's decisions.
        service_log = procs.log("coordinator-restarted", tail=200_000)
        assert f"coordinator listening on 127.0.0.1:{api_port} (TLS)" in service_log
        assert f"job {job.job_id} RUNNING: running on the SuperLink" in service_log  # resumed: its events logged
        for org in ORGS:
            daemon_log = procs.log(org, tail=2_000_000)
            assert f"{org}: job check passed" in daemon_log, daemon_log[-3000:]
            guard = Ledger(tmp_path / org / "state" / "ledger.jsonl", cap_epsilon=5.0, delta=1e-6)
            for g in guard.entries:
                assert f"{org}: guard admitted {g.mechanism} round {g.metadata['round']}: epsilon " in daemon_log
    finally:
        left = procs.stop_all()
    assert not left, f"processes left running: {sorted(left)}"
