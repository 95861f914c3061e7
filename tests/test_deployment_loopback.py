"""A real deployment over loopback: one SuperLink, three SuperNodes, `flwr run deploy/app`.

Everything runs as separate processes exactly as an operator would start them (no simulation
engine, no mocks): each SuperNode reads its own CSV from node config, the app is submitted
with `flwr run` through a connection in the operator's `$FLWR_HOME/config.toml`, and the test
checks the release the ServerApp wrote. The SuperNodes draw their noise from a fixed seed
(node config `noise-seed`, tests only), so the test can replicate every organisation's share
and check that the first secure round's decoded sum is exactly the sum of what they sent.

Slow (a few minutes on 2 cores): every Flower message starts a fresh ClientApp process, and
Flower polls every 3 s on both the SuperNode and the ServerApp side.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fedsynth.common.marginals import marginals
from fedsynth.common.schema import load_schema
from fedsynth.common.secure_sum import NoisySumSpec, noisy_share, secure_ranges

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "deploy" / "app"
DATA = REPO / "fedsynth" / "data"
BIN = Path(sys.executable).parent  # flwr's console scripts live next to the interpreter

PARTIES = 3
ROWS_PER_PARTY = 1500
NOISE_SEED = 123
ROUNDS, PER_ROUND = 1, 2  # generator shape: one select-and-measure round after the 1-way marginals
TEACHER_STEPS = 2  # federated DP-SGD steps of the teacher (each one SecAgg+ round)
MAX_ROWS = 1_000_000  # the app's default `max-rows`, the bound of every count vector
RELEASE_FILES = ("privacy.json", "ledger.jsonl", "synthetic.csv", "synthetic.parquet", "measurements.json")

READY_DEADLINE_S = 90  # SuperLink accepting connections
RUN_DEADLINE_S = 720  # `flwr run --stream` returns when the run has finished
STOP_DEADLINE_S = 30  # every process gone after SIGTERM (then SIGKILL)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML) for Flower's `k=v` config parser."""
    assert '"' not in value, f"Flower's k=v parser cannot carry a double quote: {value!r}"
    return json.dumps(value)


def write_party_csvs(folder: Path) -> list[Path]:
    """Rows 0-1499, 1500-2999, 3000-4499 of the bundled sample, header and '?' kept verbatim."""
    lines = (DATA / "adult.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    paths = []
    for i in range(PARTIES):
        path = folder / f"org-{i}.csv"
        path.write_text(header + "".join(rows[i * ROWS_PER_PARTY : (i + 1) * ROWS_PER_PARTY]), encoding="utf-8")
        paths.append(path)
    return paths


class Processes:
    """Every process this test starts, tagged so that their descendants can be found too.

    Flower starts children of its own (SuperExec, `flwr-serverapp`, `flwr-clientapp`; the
    SuperLink's SuperExec in a session of its own), so killing the direct children is not
    enough. Each started process gets a unique environment variable, which every descendant
    inherits; on Linux the test finds them all by it in /proc.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.tag = f"fedsynth-loopback-{uuid.uuid4().hex}"
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], flwr_home: Path) -> subprocess.Popen:
        flwr_home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            # SuperExecs poll for new ClientApp/ServerApp tasks every 1 s by default; every
            # secure round has 4 stages, each waiting for one such poll.
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
            "FEDSYNTH_LOOPBACK_TEST": self.tag,
        }
        log = open(self.logs / f"{name}.log", "wb")  # a file, not a pipe: a full pipe blocks Flower
        try:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.logs
            )
        finally:
            log.close()
        self.started[name] = proc
        return proc

    def log(self, name: str, tail: int = 4000) -> str:
        text = (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        return text[-tail:]

    def all_logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{self.log(name)}" for name in self.started)

    def tagged(self) -> set[int]:
        """Live (non-zombie) processes carrying this test's tag, or the started ones without /proc."""
        proc_dir = Path("/proc")
        if not proc_dir.is_dir():
            return {p.pid for p in self.started.values() if p.poll() is None}
        needle = f"FEDSYNTH_LOOPBACK_TEST={self.tag}".encode()
        found = set()
        for entry in proc_dir.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if state not in ("Z", "X"):
                found.add(int(entry.name))
        return found

    def stop_all(self) -> set[int]:
        """SIGTERM the started processes (CLI first, SuperLink last), then SIGKILL stragglers.

        Returns the tagged processes still alive at the end (should be none).
        """
        for proc in reversed(list(self.started.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_DEADLINE_S)
        # Flower's own children watch their parent's pid and leave shortly after it.
        poll_until(lambda: not self.tagged(), STOP_DEADLINE_S)
        for pid in self.tagged():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        poll_until(lambda: not self.tagged(), 5)
        return self.tagged()


def poll_until(condition, deadline_s: float, interval_s: float = 0.2) -> bool:
    """Check ``condition`` until it holds or ``deadline_s`` passes; return whether it held.

    Only for states the test cannot wait on directly (a port starting to listen, Flower's
    grandchild processes leaving); processes the test started are waited on with ``wait``.
    """
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def wait_until_listening(port: int, proc: subprocess.Popen, deadline_s: float) -> None:
    """Readiness check: poll until ``port`` accepts TCP connections (or the process died)."""

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    if not poll_until(listening, deadline_s):
        raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {deadline_s} s")


def expected_first_round(csvs: list[Path], planned_mu: float) -> tuple[NoisySumSpec, np.ndarray]:
    """What secure round 1 must decode to: the sum of each node's 1-way counts plus its share."""
    schema = load_schema(DATA / "adult.schema.yaml")
    domain = schema.domain()
    columns = list(domain)
    cliques = [(c,) for c in columns]
    spec = NoisySumSpec(dim=sum(domain.values()), mu=planned_mu, min_survivors=2, max_abs=MAX_ROWS)
    ranges = secure_ranges(spec, PARTIES)
    total = np.zeros(spec.dim, dtype=np.int64)
    for i, csv in enumerate(csvs):
        codes = schema.encode(schema.read_csv(csv))
        rng = np.random.default_rng([NOISE_SEED, i, 1])  # node config noise-seed, partition-id, round
        total += noisy_share(marginals(codes, columns, domain, cliques), spec, ranges, rng).astype(np.int64)
    return spec, total


def test_flwr_run_over_loopback_releases_the_exact_secure_sum(tmp_path):
    csvs = write_party_csvs(tmp_path)
    release = tmp_path / "release"
    logs = tmp_path / "logs"
    logs.mkdir()
    link_port, *node_ports = free_ports(1 + PARTIES)

    # The operator's Flower configuration: one named connection to the SuperLink.
    operator_home = tmp_path / "operator-flwr"
    operator_home.mkdir()
    (operator_home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n'
        f'[superlink.loopback]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n',
        encoding="utf-8",
    )
    run_config = " ".join(
        [
            f"schema={toml_string(str(DATA / 'adult.schema.yaml'))}",
            f"out={toml_string(str(release))}",
            f"parties={PARTIES} epsilon=1.0 delta=1e-6 min-survivors=2 rounds={ROUNDS} per-round={PER_ROUND} seed=0",
            f"teacher-steps={TEACHER_STEPS}",
        ]
    )

    procs = Processes(logs)
    try:
        link = procs.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", str(link_port)],
            tmp_path / "superlink-flwr",
        )
        for i, (port, csv) in enumerate(zip(node_ports, csvs, strict=True)):
            node_config = (
                f"partition-id={i} num-partitions={PARTIES} data-path={toml_string(str(csv))} "
                f"org={toml_string(f'org-{i}')} noise-seed={NOISE_SEED}"
            )
            procs.start(
                f"supernode-{i}",
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                 "--port", str(port), "--node-config", node_config],
                tmp_path / f"supernode-{i}-flwr",
            )
        try:
            wait_until_listening(link_port, link, READY_DEADLINE_S)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"SuperLink not ready: {exc}\n{procs.all_logs()}")

        run = procs.start(
            "flwr-run",
            [str(BIN / "flwr"), "run", str(APP), "loopback", "--run-config", run_config, "--stream"],
            operator_home,
        )
        try:
            code = run.wait(timeout=RUN_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`flwr run` did not finish within {RUN_DEADLINE_S} s\n{procs.all_logs()}")
        assert code == 0, f"`flwr run` exited with {code}\n{procs.all_logs()}"
        assert "Successfully started run" in procs.log("flwr-run", tail=10**6), procs.all_logs()
        assert release.is_dir(), f"no release at {release}\n{procs.all_logs()}"
        for name in RELEASE_FILES:
            assert (release / name).is_file(), f"release lacks {name}: {sorted(os.listdir(release))}"
        assert not release.with_name(release.name + ".partial").exists()

        privacy = json.loads((release / "privacy.json").read_text(encoding="utf-8"))
        assert privacy["survivors_per_round"]["1"] == ["org-0", "org-1", "org-2"]
        assert privacy["organisations"] == ["org-0", "org-1", "org-2"]

        ledger = [json.loads(line) for line in (release / "ledger.jsonl").read_text(encoding="utf-8").splitlines()]
        first = ledger[0]["metadata"]
        assert first["round"] == 1 and first["survivors"] == ["org-0", "org-1", "org-2"] and first["dropped"] == []

        spec, expected = expected_first_round(csvs, float(first["planned_mu"]))
        assert first["dim"] == spec.dim
        teacher = [e for e in ledger if e["phase"] == "teacher"]
        assert [e["mechanism"] for e in teacher] == [f"DP-SGD step {i}" for i in (1, 2)]
        assert all(e["metadata"]["survivors"] == ["org-0", "org-1", "org-2"] for e in teacher)
        assert privacy["plan"]["labels"] == "sample" and "teacher" in privacy["per_phase"]
        assert first["mu"] == pytest.approx(spec.mu_of_survivors(PARTIES))

        measurements = json.loads((release / "measurements.json").read_text(encoding="utf-8"))
        columns = load_schema(DATA / "adult.schema.yaml").column_names
        one_way = measurements[: len(columns)]
        assert [m["clique"] for m in one_way] == [[c] for c in columns]
        decoded = np.concatenate([np.asarray(m["counts"], dtype=np.int64) for m in one_way])
        np.testing.assert_array_equal(decoded, expected)
    finally:
        left = procs.stop_all()
    assert not left, f"processes left running: {sorted(left)}"
