"""``fedsynth.FederatedSynthesizer``: one real federation in Flower's simulation engine (three
organisations of 200 rows of the bundled Adult sample, epsilon 1, the generator's labels), the
release's job.toml that repeats it, and the same job submitted to an in-process coordinator
service whose SuperLink side the test plays, driven by the job's own events."""

import json
import shutil
import threading
import tomllib
from concurrent import futures
from dataclasses import replace

import grpc
import pandas as pd
import pytest

import fedsynth
from fedsynth.cli import build_parser, bundled, resolve_simulate_options
from fedsynth.common.schema import load_schema
from fedsynth.protos import coordinator_pb2_grpc as pb_grpc
from fedsynth.server.app import config_from_run_config
from fedsynth.server.coordinator import Coordinator, CoordinatorConfig, Servicer
from fedsynth.server.job import preflight
from fedsynth.server.jobstore import RUNNING, SUBMITTED, SUCCEEDED, JobStore
from fedsynth.simulations.main import config_from_args

SCHEMA_PATH = bundled("adult.schema.yaml")
SCHEMA = load_schema(SCHEMA_PATH)


def written(release) -> dict:
    """The privacy statement as the release's privacy.json holds it."""
    return json.loads((release.path / "privacy.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    table = pd.read_csv(bundled("adult.csv")).head(600)  # as a user reads a table: pandas' own dtypes
    frames = [table.iloc[i::3] for i in range(3)]
    synth = fedsynth.FederatedSynthesizer(SCHEMA_PATH, epsilon=1.0, labels="generator", rounds=1, per_round=2, seed=3)
    messages = []
    release = synth.fit(frames, out=tmp_path_factory.mktemp("fit") / "release", progress=messages.append)
    return synth, release, messages


def test_fit_runs_the_federation_in_simulation_and_returns_its_release(fitted):
    synth, release, messages = fitted
    assert isinstance(release, fedsynth.Release) and synth.release_ is release
    assert sorted(p.name for p in release.path.iterdir()) == [
        "job.toml", "ledger.jsonl", "ledger.jsonl.head", "measurements.json", "privacy.json", "schema.yaml", "synthetic.csv",
        "synthetic.parquet"]  # generator labels: no teacher, no labeller
    s = release.statement
    assert s["epsilon"] <= s["plan"]["epsilon_planned"] <= 1.0 and set(s["per_phase"]) == {"generator"}
    assert s["organisations"] == ["party-0", "party-1", "party-2"] and s["plan"]["labels"] == "generator"
    synthetic = SCHEMA.read_csv(release.path / "synthetic.csv")
    assert SCHEMA.validate(synthetic).ok and len(synthetic) == release.rows
    assert 450 < release.rows < 750  # the noisy count of 600 rows
    assert messages[0].startswith("all 3 organisations accept schema 'adult'")


def test_the_releases_job_toml_repeats_the_run(fitted, tmp_path):
    synth, release, _ = fitted
    job = tomllib.loads((release.path / "job.toml").read_text(encoding="utf-8"))
    assert job["fedsynth-version"] == fedsynth.__version__ and job["seed"] == 3
    args = build_parser().parse_args(["simulate", "--config", str(release.path / "job.toml"), "--out", str(tmp_path)])
    config = config_from_args(resolve_simulate_options(args), SCHEMA)
    assert config == synth.job(3, out=tmp_path)
    assert json.loads(json.dumps(preflight(config).summary())) == written(release)["plan"]


class StandInSuperLink:
    """Takes the coordinator's runs; the test plays the ServerApp each run would start."""

    def __init__(self):
        self.run_configs = []

    def start(self, run_config):
        self.run_configs.append(run_config)
        return len(self.run_configs)

    def status(self, run_id):
        return "running"


@pytest.fixture()
def service(tmp_path):
    path = tmp_path / "coordinator.toml"
    path.write_text(
        '[coordinator]\nlisten = "127.0.0.1:0"\nworkdir = "state"\ninsecure = true\n'
        '[federation]\nepsilon-cap = 1.6\ndelta = 1e-6\n[superlink]\naddress = "127.0.0.1:1"\ninsecure = true\n',
        encoding="utf-8",
    )
    coord = Coordinator(CoordinatorConfig.load(path), StandInSuperLink())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    stopping = threading.Event()
    pb_grpc.add_CoordinatorServicer_to_server(Servicer(coord, stopping), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield coord, f"127.0.0.1:{port}"
    stopping.set()
    server.stop(grace=None)


def test_fit_remote_submits_the_same_job_and_fetches_its_release(fitted, service, tmp_path):
    synth, release, _ = fitted
    coord, address = service
    served = []

    def serverapp(message):
        """What the SuperLink's ServerApp does once the job is queued: claim it, write the release."""
        if not message.startswith("queued"):
            return
        coord.tick()  # the coordinator hands the job to the SuperLink
        (run_config_path,) = coord.runs.run_configs
        served.append(config_from_run_config(tomllib.loads(run_config_path.read_text(encoding="utf-8"))))
        store, job_id = JobStore(coord.config.state), run_config_path.parent.name
        assert store.transition(job_id, RUNNING, expect=[SUBMITTED], message="running")
        shutil.copytree(release.path, coord.config.job_dir(job_id) / "release")
        store.transition(job_id, SUCCEEDED, expect=[RUNNING], message="release written")

    remote = synth.fit_remote(address, parties=3, out=tmp_path / "fetched", insecure=True, progress=serverapp)
    (job,) = served  # what the ServerApp runs is the synthesizer's job, on the coordinator's ledger and cap
    assert replace(job, out=tmp_path, ledger=None, cap=None) == synth.job(3, out=tmp_path)
    assert job.ledger == coord.config.ledger_path and job.cap == 1.6
    assert remote.path == tmp_path / "fetched" and remote.rows == release.rows
    assert remote.statement == written(release) and synth.release_ is remote
    assert sorted(p.name for p in remote.path.iterdir()) == sorted(p.name for p in release.path.iterdir())

    with pytest.raises(RuntimeError, match="FAILED_PRECONDITION: .* above the cap 1.6"):
        fedsynth.FederatedSynthesizer(SCHEMA_PATH, epsilon=5.0).fit_remote(address, parties=3, insecure=True)
    with pytest.raises(ValueError, match="root_certificates=CA_FILE .* or insecure=True"):
        synth.fit_remote(address, parties=3)
