"""``fedsynth superlink``: the warm ServerApp executor connects where Flower's own SuperExec would."""

from fedsynth.server.link import serverexec_args


def test_the_warm_executor_reaches_the_superlink_on_loopback_over_tls_with_its_ca():
    flags = ["--ssl-ca-certfile", "/etc/fedsynth/ca.crt", "--ssl-certfile", "s.pem", "--ssl-keyfile", "s.key",
             "--host", "0.0.0.0", "--port", "9092"]
    assert serverexec_args(flags, 7) == ["--runtime-api-address", "127.0.0.1:9092",
                                         "--root-certificates", "/etc/fedsynth/ca.crt", "--parent-pid", "7"]


def test_an_insecure_superlink_on_its_own_host_is_reached_without_tls():
    assert serverexec_args(["--insecure", "--host", "10.0.0.5", "--port=9300"], 7)[:3] == [
        "--runtime-api-address", "10.0.0.5:9300", "--insecure"]
    assert serverexec_args(["--insecure", "--host", "::"], 7)[1].startswith("[::1]:")  # IPv6 bind-all: loopback
