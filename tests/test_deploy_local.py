"""`fedsynth deploy local`: a real federation on loopback in one command (Flower 1.41, no mocks).

The slow test runs the command as a user would, with a small job (900 rows, the generator's
labels, one select-and-measure round, a schema discovery first on 0.3 of epsilon): it makes the
credentials, starts a SuperLink with TLS and node authentication, three organisation daemons and
the coordinator service, runs the job to SUCCEEDED, fetches the release and stops everything.
The discovery runs through the coordinator service and the daemons as every other phase: each
guard admits its rounds (the daemon's log says so, round by round), the ledgers record them under
the phase ``schema``, and the daemons then accept the discovered schema. The test starts the command under its
own tag (``deployment.Processes``), which every descendant inherits, so it sees any process
left behind. Each organisation's guard must have admitted and recorded exactly the release's
rounds, which `fedsynth client --check` reads back from its ledger; its daemon's log shows
the daemon checked its table and guard before it joined.

The fast tests: a port already taken is refused before anything starts (exit 2, the port and
its option named); a port that only the last run's closed connections hold (TIME_WAIT) is not,
so the command runs again at once.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from deployment import BIN, Processes, free_ports

from fedsynth.common.accounting import Ledger
from fedsynth.server.deploy_local import Ports

REPO = Path(__file__).resolve().parents[1]
ADULT = REPO / "fedsynth" / "data" / "adult.csv"
ORGS = ("org-0", "org-1", "org-2")
ROWS = 900
DEPLOY_DEADLINE_S = 900  # the whole command: start, job, stop (about 4-7 min on a busy 2-core machine)


def small_table(folder: Path) -> Path:
    """The first ``ROWS`` rows of the bundled Adult sample, header kept."""
    header, *rows = ADULT.read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "adult-small.csv"
    path.write_text(header + "".join(rows[:ROWS]), encoding="utf-8")
    return path


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def deployment_ports(parties: int) -> list[int]:
    """Free ports for the SuperLink and the coordinator, and a first node port with free successors."""
    for _ in range(100):
        link, api, node = free_ports(3)
        nodes = range(node, node + parties)
        if all(port_is_free(p) for p in nodes) and not {link, api} & set(nodes):
            return [link, api, node]
    raise RuntimeError(f"no {parties} consecutive free ports found")


def deploy_command(out: Path, ports: list[int], *job: str) -> list[str]:
    link, api, node = ports
    return [str(BIN / "fedsynth"), "deploy", "local", "--out", str(out), "--superlink-port", str(link),
            "--coordinator-port", str(api), "--first-node-port", str(node), *job]


@pytest.mark.slow
def test_one_command_runs_a_job_over_tls_with_node_authentication_and_leaves_nothing_running(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "deployment"
    command = deploy_command(out, deployment_ports(len(ORGS)), "--data", str(small_table(tmp_path)),
                             "--labels", "generator", "--rounds", "1", "--per-round", "1", "--discover", "0.3")
    procs = Processes(logs)
    try:
        done = procs.run("deploy-local", command, tmp_path / "flwr-home", DEPLOY_DEADLINE_S)
    finally:
        left = procs.stop_all()
    assert not left, f"processes left running: {sorted(left)}"
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "SuperLink on 127.0.0.1" in done.stdout and "(TLS, node authentication)" in done.stdout
    assert "SUCCEEDED" in done.stdout and "stopped every process it started" in done.stdout, done.stdout

    # The release, fetched over the coordinator's TLS API.
    release = out / "release"
    assert {"privacy.json", "synthetic.csv", "ledger.jsonl", "schema.yaml"} <= {p.name for p in release.iterdir()}
    privacy = json.loads((release / "privacy.json").read_text(encoding="utf-8"))
    assert privacy["organisations"] == list(ORGS) and 0 < privacy["epsilon"] <= 1.0
    entries = Ledger(release / "ledger.jsonl", cap_epsilon=1.0, delta=1e-6).entries
    rounds = [e.metadata["round"] for e in entries]
    assert rounds == list(range(1, len(rounds) + 1))
    phases = [e.phase for e in entries]
    assert phases == sorted(phases, key=lambda p: p != "schema") and phases.count("schema") >= 2, phases
    assert len(rounds) - phases.count("schema") >= 2  # then the 1-way marginals and one select round
    assert set(privacy["per_phase"]) == {"schema", "generator"}
    assert privacy["per_phase"]["schema"]["epsilon"] == pytest.approx(0.3, rel=1e-3)
    discovered = (release / "schema.yaml").read_text(encoding="utf-8")
    assert "name: adult-discovered" in discovered and "phase: schema" in discovered
    assert "all 3 organisations accept schema 'adult-discovered'" in done.stdout, done.stdout

    for org in ORGS:
        # Node authentication: each daemon joined as the node its registered key was given.
        registered = json.loads((out / "logs" / f"register-{org}.out").read_text(encoding="utf-8"))
        assert registered.get("success") is True, registered
        daemon_log = (out / "logs" / f"{org}.log").read_text(encoding="utf-8", errors="replace")
        assert f"SuperNode ID: {registered['node-id']}" in daemon_log, daemon_log[-3000:]
        assert f"--root-certificates {out.resolve() / 'certs' / 'ca.crt'}" in daemon_log  # TLS
        assert f"{org}: 300 rows conform to schema 'adult'" in daemon_log and "Sent successfully" in daemon_log
        # Its guard admitted and recorded every round of the release, no more: read back as an operator does.
        check = subprocess.run([str(BIN / "fedsynth"), "client", "--config", str(out / "orgs" / org / "org.toml"),
                                "--check"], capture_output=True, text=True, timeout=120, check=False)
        assert check.returncode == 0, check.stderr
        assert f"holds {len(rounds)} contributions" in check.stdout, check.stdout
        guard = Ledger(out / "orgs" / org / "state" / "ledger.jsonl", cap_epsilon=10.0, delta=1e-6)
        assert [e.metadata["round"] for e in guard.entries] == rounds
        assert [e.phase == "schema" for e in guard.entries] == [p == "schema" for p in phases]
        # Each decision in the daemon's own log, discovery rounds included.
        for entry in guard.entries:
            kind = "discovery" if entry.phase == "schema" else r"(marginals|select|scores)"
            assert re.search(rf"{org}: guard admitted {kind} round {entry.metadata['round']}: epsilon", daemon_log)


def test_a_port_already_taken_is_refused_before_anything_starts(tmp_path):
    out = tmp_path / "deployment"
    link, api, node = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", api))
        taken.listen()
        done = subprocess.run(deploy_command(out, [link, api, node]), capture_output=True, text=True,
                              timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert f"port {api} on 127.0.0.1 is taken (choose another with --coordinator-port)" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_a_port_held_only_by_a_closed_connection_is_free(tmp_path):
    """The server side closes first, so its end of the connection stays in TIME_WAIT on the port."""
    link, api, node = free_ports(3)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's servers bind
        listener.bind(("127.0.0.1", node))
        listener.listen()
        with socket.create_connection(("127.0.0.1", node)) as client:
            accepted, _ = listener.accept()
            accepted.close()
            client.recv(1)
    with socket.socket() as plain:
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", node))  # what the check did before: refused for a minute
    Ports(superlink=link, coordinator=api, first_node=node).check_free(1)
