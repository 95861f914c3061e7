"""The operator's deployment files in deploy/: Compose, Kubernetes, systemd, configs, image.

Fast structural and consistency checks (no container, cluster or daemon is started): every
file parses; every path a config names is mounted where the config says; the SuperLink and
the coordinator share the state volume; Kubernetes ConfigMaps carry exactly the files of
deploy/config. Where the tools exist it also runs `docker compose config -q` and
`systemd-analyze verify`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CONFIG = DEPLOY / "config"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"

ORGS = [f"org-{i}" for i in range(3)]
IMAGE = "fedsynth:0.1.0"
STATE = "/var/lib/fedsynth"
SERVICES = {"superlink", "register-nodes", "coordinator", *ORGS}
# What `deploy/make_certs.py --nodes 3` writes (the only files Compose may bind from ./certs).
CERT_FILES = ({"ca.crt", "server.pem", "server.key", "roster.toml"}
              | {f"{o}.{ext}" for o in ORGS for ext in ("key", "pub", "signing.pem")})

ORG_SECTIONS = {
    "organisation": {"name", "data", "schema"},
    "superlink": {"address", "root-certificates", "auth-key", "clientappio-port"},
    "guard": {"ledger", "epsilon-cap", "delta", "min-noise-multiplier", "min-survivors"},
    "identity": {"signing-key", "roster"},
}
COORDINATOR_SECTIONS = {
    "coordinator": {"listen", "state", "workdir", "certificate", "private-key"},
    "federation": {"epsilon-cap", "delta"},
    "superlink": {"address", "root-certificates"},
}


def load_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def mounts(service: dict) -> list[dict]:
    """The service's volumes; all in long syntax (a short one would create missing host paths)."""
    vols = service.get("volumes", [])
    assert all(isinstance(v, dict) for v in vols), f"use the long volume syntax: {vols}"
    return vols


def bind_targets(service: dict) -> dict[str, str]:
    return {m["target"]: m["source"] for m in mounts(service) if m["type"] == "bind"}


def volume_targets(service: dict) -> dict[str, str]:
    return {m["target"]: m["source"] for m in mounts(service) if m["type"] == "volume"}


def under(path: str, folder: str) -> bool:
    return PurePosixPath(path).is_relative_to(folder)


def flag(command: list[str], name: str) -> str | None:
    """Value of ``--name=value`` or ``--name value`` in an argv list (None if absent)."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(command):
            return command[i + 1]
    return None


def assert_superlink_command(command: list[str], where: str) -> None:
    """The SuperLink flags that the federation depends on, wherever it is started (``fedsynth
    superlink -- FLAGS``: flower-superlink with a warm ServerApp executor)."""
    assert command[0].endswith("fedsynth") and command[1:3] == ["superlink", "--"], where
    for name in ("--disable-runtime-dependency-installation", "--enable-supernode-auth"):
        assert name in command, f"{where}: {name} missing"
    assert "--insecure" not in command, where
    assert flag(command, "--ssl-ca-certfile") == "/etc/fedsynth/ca.crt", where
    assert flag(command, "--ssl-certfile") == "/etc/fedsynth/server.pem", where
    assert flag(command, "--ssl-keyfile") == "/etc/fedsynth/server.key", where
    assert flag(command, "--port") == "9092", where
    assert flag(command, "--host") == "0.0.0.0", where
    database = flag(command, "--database")
    assert database and under(database, STATE), f"{where}: registrations must persist in {STATE}"


# --------------------------------------------------------------------------- Compose


def test_compose_has_every_service_built_from_the_one_image(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["image"] == IMAGE, name
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
    assert_superlink_command(services["superlink"]["command"], "compose superlink")
    assert services["coordinator"]["command"] == ["fedsynth", "coordinator", "--config", "/etc/fedsynth/coordinator.toml"]
    for org in ORGS:
        assert services[org]["command"] == ["fedsynth", "client", "--config", "/etc/fedsynth/org.toml"]
    assert services["register-nodes"]["command"] == ["fedsynth-register-nodes"]
    assert services["register-nodes"]["restart"] == "no"


def test_compose_binds_only_existing_configs_and_make_certs_outputs(compose):
    for name, service in compose["services"].items():
        for target, source in bind_targets(service).items():
            rel = PurePosixPath(source)
            assert not rel.is_absolute(), f"{name}: {source} should be relative to deploy/"
            folder = rel.parts[1] if rel.parts[0] == "." else rel.parts[0]
            if folder == "config":
                assert (DEPLOY / rel).is_file(), f"{name}: {source} does not exist in deploy/config"
            elif folder == "certs":
                assert rel.name in CERT_FILES, f"{name}: make_certs.py writes no {rel.name}"
            elif folder == "data":
                assert re.fullmatch(r"org-\d\.csv", rel.name) and name == rel.stem, (name, source)
                assert target == "/data/table.csv"
            else:
                raise AssertionError(f"{name}: unexpected bind source {source}")
            bind = [m for m in mounts(service) if m["target"] == target][0]
            assert bind.get("read_only") is True, f"{name}: {target} should be read-only"
            assert not bind.get("bind", {}).get("create_host_path", False)
    # Private keys go to their owners only.
    for name, service in compose["services"].items():
        keys = {PurePosixPath(s).name for s in bind_targets(service).values() if s.endswith(".key")}
        expected = {"superlink": {"server.key"}, "coordinator": {"server.key"}}.get(name, {f"{name}.key"} if name in ORGS else set())
        assert keys == expected, name


def test_compose_superlink_and_coordinator_share_the_state_volume(compose):
    services = compose["services"]
    link, coord = volume_targets(services["superlink"]), volume_targets(services["coordinator"])
    assert link.get(STATE) and link.get(STATE) == coord.get(STATE), "SuperLink and coordinator must share the state volume"
    shared = link[STATE]
    assert shared in compose["volumes"]
    for org in ORGS:  # each organisation keeps its ledger in a volume of its own
        own = volume_targets(services[org])
        assert own.get(STATE) == f"{org}-state" and own[STATE] in compose["volumes"]
        assert own[STATE] != shared
    coordinator = load_toml(CONFIG / "coordinator.toml")["coordinator"]
    assert coordinator["state"].startswith("sqlite:///") and under(coordinator["state"][len("sqlite:///"):], STATE)
    assert under(coordinator["workdir"], STATE)


def test_compose_start_order(compose):
    services = compose["services"]
    assert "healthcheck" in services["superlink"]
    assert services["register-nodes"]["depends_on"] == {"superlink": {"condition": "service_healthy"}}
    assert services["coordinator"]["depends_on"]["superlink"]["condition"] == "service_healthy"
    for org in ORGS:
        assert services[org]["depends_on"] == {"register-nodes": {"condition": "service_completed_successfully"}}
    register = services["register-nodes"]
    env = register["environment"]
    assert env["SUPERLINK_ADDRESS"] == "superlink:9092"
    keys = bind_targets(register)
    assert env["CA_CERT"] in keys
    assert {t for t in keys if under(t, env["KEYS_DIR"])} == {f"{env['KEYS_DIR']}/{o}.pub" for o in ORGS}


def test_every_path_in_a_config_is_mounted_where_the_config_says(compose):
    services = compose["services"]
    for org in ORGS:
        service = services[org]
        binds, volumes = bind_targets(service), volume_targets(service)
        config = load_toml(DEPLOY / binds["/etc/fedsynth/org.toml"])
        assert binds["/etc/fedsynth/org.toml"] == f"./config/{org}.toml"
        for section, key in (("organisation", "data"), ("organisation", "schema"),
                             ("superlink", "root-certificates"), ("superlink", "auth-key"),
                             ("identity", "signing-key"), ("identity", "roster")):
            assert config[section][key] in binds, f"{org}: [{section}] {key} = {config[section][key]} is not mounted"
        assert any(under(config["guard"]["ledger"], target) for target in volumes), f"{org}: ledger not on a volume"
        assert config["superlink"]["address"] == "superlink:9092"
    service = services["coordinator"]
    binds = bind_targets(service)
    config = load_toml(DEPLOY / binds["/etc/fedsynth/coordinator.toml"])
    for section, key in (("coordinator", "certificate"), ("coordinator", "private-key"), ("superlink", "root-certificates")):
        assert config[section][key] in binds, f"coordinator: [{section}] {key} is not mounted"
    assert config["superlink"]["address"] == "superlink:9092"
    link = bind_targets(services["superlink"])
    for name in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert flag(services["superlink"]["command"], name) in link


def test_compose_config_is_valid_for_docker_compose():
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        try:
            version = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version.returncode == 0:
            break
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is available")
    result = subprocess.run([*cmd, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("org", ORGS)
def test_org_config_has_the_daemon_sections(org):
    config = load_toml(CONFIG / f"{org}.toml")
    assert {s: set(keys) for s, keys in config.items()} == ORG_SECTIONS
    assert config["organisation"]["name"] == org
    assert config["superlink"]["auth-key"] == f"/etc/fedsynth/{org}.key"
    assert "insecure" not in config["superlink"] and "testing" not in config  # never noise-seed
    guard = config["guard"]
    assert guard["min-survivors"] >= 2 and guard["min-noise-multiplier"] > 0
    assert 0 < guard["delta"] < 1 and guard["epsilon-cap"] > 0
    try:
        from fedsynth.client.daemon import DaemonConfig
    except ImportError:
        return
    loaded = DaemonConfig.load(CONFIG / f"{org}.toml")  # the daemon's own parser accepts it
    assert loaded.name == org and not loaded.insecure and loaded.noise_seed is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # typer/click, imported with Flower
def test_coordinator_config_has_its_sections():
    config = load_toml(CONFIG / "coordinator.toml")
    assert {s: set(keys) for s, keys in config.items()} == COORDINATOR_SECTIONS
    assert config["coordinator"]["listen"].endswith(":7000")
    assert "insecure" not in config["coordinator"] and "insecure" not in config["superlink"]
    try:
        from fedsynth.server.coordinator import CoordinatorConfig
    except ImportError:
        return
    loaded = CoordinatorConfig.load(CONFIG / "coordinator.toml")  # the service's own parser accepts it
    assert not loaded.insecure and not loaded.superlink_insecure
    assert loaded.workdir == Path(STATE) and loaded.superlink == "superlink:9092"


def test_deploy_schema_is_the_bundled_one():
    assert (CONFIG / "schema.yaml").read_bytes() == (REPO / "fedsynth" / "data" / "adult.schema.yaml").read_bytes()


# --------------------------------------------------------------------------- image


def test_dockerfile_installs_cpu_torch_first_and_copies_only_kept_sources():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert text.splitlines()[[l.startswith("FROM") for l in text.splitlines()].index(True)] == "FROM python:3.11-slim"
    torch = text.index("--index-url https://download.pytorch.org/whl/cpu torch==2.13.0")
    assert torch < text.index("pip install .")
    ignore = [l.strip() for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    assert ignore[0] == "*"
    kept = {l[1:] for l in ignore if l.startswith("!")}
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY "):
            args = [a for a in line.split()[1:] if not a.startswith("--")]
            sources += args[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert source in kept, f"{source} is not re-included by Dockerfile.dockerignore"
    assert "fedsynth-register-nodes" in text and "USER 10001" in text


def test_register_script_is_valid_shell():
    script = DEPLOY / "register-nodes.sh"
    if not shutil.which("sh"):
        pytest.skip("no sh")
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def k8s() -> tuple[dict, list[dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d is not None]
    return kustomization, docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_k8s_every_manifest_parses_and_is_listed(k8s):
    kustomization, docs = k8s
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.template.yaml"}
    assert listed == on_disk
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc is not None, path
            if path.name != "kustomization.yaml":
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
                if doc["kind"] != "Namespace":
                    assert doc["metadata"].get("namespace") == "fedsynth", (path, doc["metadata"]["name"])
    assert kustomization["namespace"] == "fedsynth"
    assert set(by_kind(docs, "Namespace")) == {"fedsynth"}
    assert "fedsynth-state" in by_kind(docs, "PersistentVolumeClaim")
    assert set(by_kind(docs, "Deployment")) == {"superlink", "coordinator", *ORGS}
    assert set(by_kind(docs, "Service")) == {"superlink", "coordinator"}
    assert set(by_kind(docs, "Job")) == {"register-nodes"}


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def volume_of(doc: dict, mount_path: str, container: int = 0) -> dict:
    spec = pod_spec(doc)
    mount = [m for m in spec["containers"][container]["volumeMounts"] if m["mountPath"] == mount_path]
    assert mount, f"{doc['metadata']['name']}: nothing mounted at {mount_path}"
    return [v for v in spec["volumes"] if v["name"] == mount[0]["name"]][0]


def projected_files(doc: dict, configmaps: dict, generated: dict[str, set[str]]) -> set[str]:
    """File names that the projected /etc/fedsynth volume of ``doc`` holds."""
    files = set()
    for source in volume_of(doc, "/etc/fedsynth")["projected"]["sources"]:
        if "secret" in source:
            files |= generated[source["secret"]["name"]]
        else:
            files |= set(configmaps[source["configMap"]["name"]]["data"])
    return files


def test_k8s_configmaps_equal_the_deploy_configs(k8s):
    _, docs = k8s
    configmaps = by_kind(docs, "ConfigMap")
    assert configmaps["fedsynth-coordinator-config"]["data"] == {"coordinator.toml": (CONFIG / "coordinator.toml").read_text()}
    assert configmaps["fedsynth-schema"]["data"] == {"schema.yaml": (CONFIG / "schema.yaml").read_text()}
    for org in ORGS:
        assert configmaps[f"fedsynth-{org}-config"]["data"] == {"org.toml": (CONFIG / f"{org}.toml").read_text()}


def test_k8s_secrets_come_from_make_certs_outputs(k8s):
    kustomization, docs = k8s
    generated = {g["name"]: [PurePosixPath(f) for f in g["files"]] for g in kustomization["secretGenerator"]}
    for name, files in generated.items():
        for f in files:
            assert f.parts[0] == "certs" and f.name in CERT_FILES, (name, f)
    assert "ca.key" not in {f.name for files in generated.values() for f in files}
    template = {d["metadata"]["name"]: set(d["stringData"]) for d in yaml.safe_load_all((K8S / "secrets.template.yaml").read_text())}
    for name, keys in template.items():
        assert {f.name for f in generated[name]} == keys, name
    assert set(generated) - set(template) == {"fedsynth-org-1-key", "fedsynth-org-2-key", "fedsynth-org-1-signing",
                                               "fedsynth-org-2-signing"}  # shown once as an example


def test_k8s_pods_mount_what_their_configs_name(k8s):
    kustomization, docs = k8s
    generated = {g["name"]: {PurePosixPath(f).name for f in g["files"]} for g in kustomization["secretGenerator"]}
    configmaps = by_kind(docs, "ConfigMap")
    deployments = by_kind(docs, "Deployment")

    def etc(path: str) -> str:
        assert under(path, "/etc/fedsynth"), path
        return PurePosixPath(path).name

    link = deployments["superlink"]
    container = pod_spec(link)["containers"][0]
    assert_superlink_command(container["command"], "k8s superlink")
    assert container["image"] == IMAGE
    link_files = projected_files(link, configmaps, generated)
    for name in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert etc(flag(container["command"], name)) in link_files

    coord = deployments["coordinator"]
    coord_files = projected_files(coord, configmaps, generated)
    config = load_toml(CONFIG / "coordinator.toml")
    assert "coordinator.toml" in coord_files
    for section, key in (("coordinator", "certificate"), ("coordinator", "private-key"), ("superlink", "root-certificates")):
        assert etc(config[section][key]) in coord_files

    for org in ORGS:
        deployment = deployments[org]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        container = pod_spec(deployment)["containers"][0]
        assert container["command"] == ["fedsynth", "client", "--config", "/etc/fedsynth/org.toml"]
        files = projected_files(deployment, configmaps, generated)
        config = load_toml(CONFIG / f"{org}.toml")
        assert "org.toml" in files
        for section, key in (("organisation", "schema"), ("superlink", "root-certificates"), ("superlink", "auth-key")):
            assert etc(config[section][key]) in files, (org, key)
        assert "server.key" not in files
        data = volume_of(deployment, "/data")["persistentVolumeClaim"]["claimName"]
        state = volume_of(deployment, STATE)["persistentVolumeClaim"]["claimName"]
        assert (data, state) == (f"{org}-data", f"{org}-state")
        assert PurePosixPath(config["organisation"]["data"]).parent == PurePosixPath("/data")
        assert under(config["guard"]["ledger"], STATE)
        assert by_kind(docs, "PersistentVolumeClaim").keys() >= {data, state}

    job = by_kind(docs, "Job")["register-nodes"]
    container = pod_spec(job)["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["command"] == ["fedsynth-register-nodes"] and env["SUPERLINK_ADDRESS"] == "superlink:9092"
    keys = volume_of(job, env["KEYS_DIR"])["secret"]["secretName"]
    assert generated[keys] == {f"{o}.pub" for o in ORGS}


def test_k8s_superlink_and_coordinator_share_the_state_volume(k8s):
    _, docs = k8s
    deployments = by_kind(docs, "Deployment")
    claims = {name: volume_of(deployments[name], STATE)["persistentVolumeClaim"]["claimName"] for name in ("superlink", "coordinator")}
    assert claims["superlink"] == claims["coordinator"] == "fedsynth-state"
    # ReadWriteOnce (SQLite): the coordinator must run on the SuperLink's node.
    terms = pod_spec(deployments["coordinator"])["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    link_labels = deployments["superlink"]["spec"]["template"]["metadata"]["labels"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"].items() <= link_labels.items()
               for t in terms)
    for name in ("superlink", "coordinator"):
        assert deployments[name]["spec"]["replicas"] == 1 and deployments[name]["spec"]["strategy"]["type"] == "Recreate"


def test_k8s_services_select_their_deployments(k8s):
    _, docs = k8s
    deployments = by_kind(docs, "Deployment")
    for name, service in by_kind(docs, "Service").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert deployments[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        ports = {p["name"]: p["containerPort"] for p in pod_spec(deployments[name])["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)
    assert by_kind(docs, "Service")["superlink"]["spec"]["ports"][0]["port"] == 9092
    assert by_kind(docs, "Service")["coordinator"]["spec"]["ports"][0]["port"] == 7000


# --------------------------------------------------------------------------- systemd


def unit_entries(path: Path) -> dict[str, list[str]]:
    """``Key`` -> its values (in order) of a unit file; continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            entries.setdefault(key, []).append(value)
    return entries


UNITS = {
    "fedsynth-client.service": ["/opt/fedsynth/.venv/bin/fedsynth", "client", "--config", "/etc/fedsynth/org.toml"],
    "fedsynth-coordinator.service": ["/opt/fedsynth/.venv/bin/fedsynth", "coordinator", "--config", "/etc/fedsynth/coordinator.toml"],
    "fedsynth-superlink.service": None,
}


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_unit_is_hardened(unit):
    entries = unit_entries(SYSTEMD / unit)
    command = shlex.split(entries["ExecStart"][0])
    if UNITS[unit] is not None:
        assert command == UNITS[unit]
    else:
        assert_superlink_command(command, unit)
        assert command[0] == "/opt/fedsynth/.venv/bin/fedsynth"
    assert entries["User"] == ["fedsynth"] and entries["Restart"] == ["on-failure"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert entries[key] == [value], key
    assert STATE in entries["ReadWritePaths"][0].split()
    ledger = load_toml(CONFIG / "org-0.toml")["guard"]["ledger"]
    assert under(ledger, entries["ReadWritePaths"][0])


def test_systemd_units_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart binaries exist: point /opt/fedsynth/.venv/bin at this venv's.
    bindir = Path(sys.executable).parent
    for name in ("fedsynth", "flower-superlink"):
        if not (bindir / name).exists():
            pytest.skip(f"{name} is not installed next to {sys.executable}")
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text(encoding="utf-8").replace("/opt/fedsynth/.venv/bin/", f"{bindir}/")
        (tmp_path / unit).write_text(text, encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / u) for u in UNITS)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    complaints = [line for line in output.splitlines() if any(u in line for u in UNITS)]
    assert not complaints, "\n".join(complaints)  # e.g. "Unknown key", "Failed to parse"
