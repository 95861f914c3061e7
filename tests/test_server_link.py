"""``fedsynth superlink``: the warm ServerApp executor connects where Flower's own SuperExec would."""

from pathlib import Path

from fedsynth.server.link import serverexec_args


def test_the_warm_executor_reaches_the_superlink_on_loopback_over_tls_with_its_ca():
    flags = ["--ssl-ca-certfile", "/etc/fedsynth/ca.crt", "--ssl-certfile", "s.pem", "--ssl-keyfile", "s.key",
             "--host", "0.0.0.0", "--port", "9092"]
    assert serverexec_args(flags) == ["--runtime-api-address", "127.0.0.1:9092", "--root-certificates", "/etc/fedsynth/ca.crt"]
    assert serverexec_args([*flags, "--superexec-auth-secret-file", "/etc/fedsynth/exec.key"])[-2:] == [
        "--superexec-auth-secret-file", "/etc/fedsynth/exec.key"]  # the SuperLink asks for it in process isolation


def test_an_insecure_superlink_on_its_own_host_is_reached_without_tls():
    assert serverexec_args(["--insecure", "--host", "10.0.0.5", "--port=9300"]) == [
        "--runtime-api-address", "10.0.0.5:9300", "--insecure"]
    assert serverexec_args(["--insecure", "--host", "::"])[1].startswith("[::1]:")  # IPv6 bind-all: loopback


def start_superlink(tmp_path, port):
    import os
    import subprocess

    from deployment import BIN

    flags = ["--insecure", "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"]
    return subprocess.Popen([str(BIN / "fedsynth"), "superlink", "--", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "FLWR_HOME": str(tmp_path), "FLWR_TELEMETRY_ENABLED": "0"})


def started_pids(proc):
    """The SuperLink's and the ServerApp starter's pids, from the line the command prints once both
    have started (read as it comes: the command's output is the signal, no polling)."""
    for line in proc.stdout:
        if line.startswith("fedsynth superlink: SuperLink pid"):
            words = line.split()
            return int(words[4].rstrip(",")), int(words[-1])
    raise AssertionError(f"fedsynth superlink ended (code {proc.wait()}) without starting both processes")


def test_when_the_serverapp_starter_dies_the_superlink_stops_and_the_command_fails(tmp_path):
    import os
    import signal

    from deployment import free_ports

    proc = start_superlink(tmp_path, free_ports(1)[0])
    link, warm = started_pids(proc)
    assert "--isolation process" in (Path(f"/proc/{link}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    os.kill(warm, signal.SIGKILL)  # an OOM kill, say: no job's ServerApp would ever start
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "the process that starts each job's ServerApp exited" in output
    assert not os.path.exists(f"/proc/{link}")  # the SuperLink was stopped (and reaped) with it


def test_a_stopped_superlink_command_stops_both_processes_and_succeeds(tmp_path):
    import os
    import signal

    from deployment import free_ports

    proc = start_superlink(tmp_path, free_ports(1)[0])
    children = started_pids(proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children)


def test_an_isolation_flag_is_refused_before_anything_starts(capsys):
    from fedsynth.server.link import run_superlink

    assert run_superlink(["--insecure", "--isolation=subprocess"]) == 2
    assert "leave --isolation out" in capsys.readouterr().err
