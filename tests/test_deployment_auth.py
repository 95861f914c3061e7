"""TLS and SuperNode authentication of a real deployment over loopback (Flower 1.41).

Real processes, no mocks: `deploy/make_certs.py` makes the CA, the server certificate and
the SuperNode key pairs; a SuperLink runs with TLS and `--enable-supernode-auth`; the
operator registers org-0's public key with `flwr supernode register`; then

(a) a SuperNode with an unregistered key (org-1's) is refused by the SuperLink,
(b) a SuperNode speaking plain HTTP (`--insecure`, no root certificates) cannot connect,
(b') a SuperNode with the registered key that does not trust our CA cannot connect,
(c) the SuperNode with the registered key is accepted and listed online.

Flower's exit codes (305 = connection error) appear only in the log ("Exit Code: 305"):
`flwr_exit` ends the process with status 1 for every error code.

Without `--max-retries`, a SuperNode that cannot reach the SuperLink over a transport error,
such as case (b), retries forever with exponential backoff; the test bounds it with
`--max-retries 1` so that it exits by itself. A TLS verification failure (b') and a refusal
by the SuperLink (a) end the SuperNode at once, retries or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deployment import BIN, READY_DEADLINE_S, Processes, free_ports, operator_home, poll_until, wait_until_listening

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MAKE_CERTS = REPO / "deploy" / "make_certs.py"

CLI_DEADLINE_S = 60  # one `flwr` CLI call (about 2-3 s here)
REFUSED_DEADLINE_S = 60  # a refused SuperNode has exited (about 3-4 s here)
ONLINE_DEADLINE_S = 60  # the accepted SuperNode is listed online (about 3 s here)
CONNECTION = "tls"  # the operator's connection name in $FLWR_HOME/config.toml


def flwr_json(procs: Processes, name: str, args: list[str], home: Path) -> dict:
    """Run `flwr ... --format json`; it exits 0 even on failure, so check `success` too."""
    done = procs.run(name, [str(BIN / "flwr"), *args, "--format", "json"], home, CLI_DEADLINE_S)
    assert done.returncode == 0, f"`flwr {' '.join(args)}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"`flwr {' '.join(args)}` printed no JSON:\n{done.stdout}\n{done.stderr}")


def assert_refused(procs: Processes, name: str, proc: subprocess.Popen, reason: str) -> str:
    try:
        code = proc.wait(timeout=REFUSED_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} still running after {REFUSED_DEADLINE_S} s\n{procs.all_logs()}")
    log = procs.log(name, tail=10**6)
    assert code == 1, f"{name} exited {code}\n{log}"  # flwr_exit: status 1 for every error code
    assert "Exit Code: 305" in log and "Failed to initialize the connection to the SuperLink" in log, log
    assert reason in log, f"{name}: expected {reason!r} in its log\n{log}"
    assert "SuperNode ID:" not in log, log
    return log


def test_tls_superlink_admits_only_registered_supernodes(tmp_path):
    certs = tmp_path / "certs"
    made = subprocess.run(
        [sys.executable, str(MAKE_CERTS), "--out", str(certs), "--nodes", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    for name in ("ca.crt", "server.pem", "server.key", "org-0.key", "org-0.pub", "org-1.key", "org-1.pub"):
        assert (certs / name).is_file(), made.stdout
    ca = str(certs / "ca.crt")

    logs = tmp_path / "logs"
    logs.mkdir()
    link_port, *node_ports = free_ports(5)
    link_address = f"127.0.0.1:{link_port}"

    # The operator's Flower configuration: one named connection over TLS, trusting our CA.
    operator = operator_home(tmp_path, CONNECTION, link_address, certs / "ca.crt")

    def supernode(name: str, port: int, *extra: str) -> subprocess.Popen:
        # `--isolation process`: no run starts here, so the SuperNode need not start the
        # SuperExec that would launch ClientApps (one Python process less per SuperNode on 2
        # cores); connecting and authenticating are the same in both modes.
        return procs.start(
            name,
            [str(BIN / "flower-supernode"), "--superlink", link_address, "--port", str(port),
             "--isolation", "process", *extra],
            tmp_path / f"{name}-flwr",
        )

    procs = Processes(logs)
    try:
        link = procs.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--ssl-ca-certfile", ca, "--ssl-certfile", str(certs / "server.pem"),
             "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth",
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(link_port)],
            tmp_path / "superlink-flwr",
        )
        try:
            wait_until_listening(link_port, link, READY_DEADLINE_S)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"SuperLink not ready: {exc}\n{procs.all_logs()}")

        # The SuperNodes that must not get in start at once (none depends on the registration
        # below); org-0's starts once its key is registered (else it would be refused too).
        unregistered = supernode("supernode-unregistered", node_ports[0],
                                 "--root-certificates", ca, "--auth-supernode-private-key", str(certs / "org-1.key"))
        plaintext = supernode("supernode-insecure", node_ports[1], "--insecure", "--max-retries", "1")
        untrusting = supernode("supernode-untrusting", node_ports[2],
                               "--auth-supernode-private-key", str(certs / "org-0.key"))

        registered = flwr_json(
            procs, "flwr-register", ["supernode", "register", str(certs / "org-0.pub"), CONNECTION], operator
        )
        assert registered.get("success") is True, registered
        node_id = str(registered["node-id"])
        accepted = supernode("supernode-org-0", node_ports[3],
                             "--root-certificates", ca, "--auth-supernode-private-key", str(certs / "org-0.key"))

        # (a) Refused by the SuperLink: the key is not registered (HTTP 412, Flower API error 2004).
        assert_refused(procs, "supernode-unregistered", unregistered, "Failed to activate SuperNode")
        assert "No SuperNode found with the given public key" in procs.log("superlink", tail=10**6)
        # (b) Plain HTTP to the TLS port: the SuperLink hangs up; the node gives up after its retry.
        # (Observed: "Server disconnected without sending a response.") No Flower API error:
        # the SuperLink never answered it.
        assert "[code:" not in assert_refused(procs, "supernode-insecure", plaintext, "Giving up reconnection")
        # (b') TLS without our CA (system roots): the handshake fails, no retry.
        assert "[code:" not in assert_refused(procs, "supernode-untrusting", untrusting, "CERTIFICATE_VERIFY_FAILED")

        # (c) The registered node is admitted and listed online; it is the only node listed.
        listed: dict = {}

        def online() -> bool:
            nonlocal listed
            if accepted.poll() is not None:
                pytest.fail(f"org-0's SuperNode exited with {accepted.returncode}\n{procs.all_logs()}")
            listed = flwr_json(procs, "flwr-list", ["supernode", "list", CONNECTION], operator)
            return listed.get("success") is True and any(
                n["node-id"] == node_id and n["status"] == "online" for n in listed["nodes"]
            )

        assert poll_until(online, ONLINE_DEADLINE_S, accepted), f"org-0 not online: {listed}\n{procs.all_logs()}"
        assert [n["node-id"] for n in listed["nodes"]] == [node_id], listed
        assert f"SuperNode ID: {node_id}" in procs.log("supernode-org-0", tail=10**6)
    finally:
        left = procs.stop_all()
    assert not left, f"processes left running: {sorted(left)}"
