"""The organisation's daemon: one config file, checked up front, then a Flower SuperNode.

``fedsynth client --config org.toml`` reads the file below, checks it (the local table
against the schema the organisation accepts, the guard's ledger against its hash chain) and
then becomes a Flower SuperNode running fedsynth's ClientApp, which reads the same file (node
config ``config``) for every message. Nothing is sent before the checks pass. The SuperNode
runs with ``--isolation process`` next to a warm SuperExec that stays up across rounds and
jobs and starts each ClientApp task as a fork of itself (``client.node``).

```toml
[organisation]
name = "hospital-a"                        # public name in releases
data = "/srv/fedsynth/data/table.csv"      # the local table (.csv or .parquet); read only here
# data = "postgresql+psycopg://reader@db/clinic"   # or a database (SQLAlchemy URL) ...
# query = "SELECT age, sex, ... FROM visits"        # ... and the query that gives the table
schema = "/etc/fedsynth/schema.yaml"       # the only schema this organisation accepts

[superlink]
address = "coordinator.example.org:9092"
root-certificates = "/etc/fedsynth/ca.crt" # TLS (or: insecure = true, loopback trials only)
auth-key = "/etc/fedsynth/hospital-a.key"  # this node's private key, registered at the SuperLink
clientappio-port = 9094                    # local port of the SuperNode (one per SuperNode on a host)

[guard]                                    # the organisation's own privacy guard (client.guard)
ledger = "/var/lib/fedsynth/ledger.jsonl"
epsilon-cap = 4.0
delta = 1e-6
min-noise-multiplier = 0.5
min-survivors = 2
noise-accounting = "planned"               # or "own-share": account only this organisation's noise

[identity]                                 # authenticated SecAgg+ (client.secagg)
signing-key = "/etc/fedsynth/hospital-a.signing.pem"  # this organisation's Ed25519 key (make_certs.py)
roster = "/etc/fedsynth/roster.toml"       # the federation's public signing keys, pinned here
```

Relative paths are relative to the config file. Next to the guard's ledger the daemon keeps
``<ledger>.cap-seed`` (created once from OS entropy, readable by the daemon's user only): the
secret seed of the row-cap subsample, so that every ClientApp process draws the same rows. A ``[testing] noise-seed`` makes the noise
reproducible for tests; it is logged as a warning and must never be set in production.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy

from .guard import Guard, GuardPolicy
from .organisation import LocalTable, Organisation, TableUnreadable
from ..common.schema import Schema, TableFileError, load_schema
from ..common.schema.io import as_text_frame
from ..common.identity import Identity, IdentityError

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_PORT = 9094  # flower-supernode --port
#: The environment variable that carries ``fedsynth --log-level`` from a daemon to its ClientApps.
LOG_LEVEL_ENV = "FEDSYNTH_LOG_LEVEL"

SECTIONS = {
    "organisation": {"name", "data", "schema", "query"},
    "superlink": {"address", "root-certificates", "auth-key", "insecure", "clientappio-port"},
    "guard": {"ledger", "epsilon-cap", "delta", "min-noise-multiplier", "min-survivors", "noise-accounting"},
    "identity": {"signing-key", "roster"},
    "testing": {"noise-seed"},
}
REQUIRED = {
    "organisation": {"name", "data", "schema"},
    "superlink": {"address"},
    "guard": {"ledger", "epsilon-cap", "delta", "min-noise-multiplier", "min-survivors"},
    "identity": {"signing-key", "roster"},
}


class ConfigError(ValueError):
    """The daemon's config file is wrong (the message names the file, section and key)."""


def cap_seed(path: Path) -> int:
    """The organisation's secret row-cap seed, created once (mode 0600) from OS entropy.

    Written in full to a private temporary file that is then hard-linked into place: a
    concurrent creator either wins the link or reads the complete seed of the one that did.
    """
    if not path.exists():
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(str(secrets.randbits(128)))
                f.flush()
                os.fsync(f.fileno())
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temp)
    return int(path.read_text(encoding="ascii"))


@dataclass(frozen=True)
class DaemonConfig:
    """One organisation's daemon settings (see the module docstring for the file)."""

    path: Path
    name: str
    data: Path | str  # a file, or an SQLAlchemy URL read with ``query``
    schema: Path
    address: str
    root_certificates: Path | None
    auth_key: Path | None
    insecure: bool
    clientappio_port: int | None
    guard: GuardPolicy
    signing_key: Path
    roster: Path
    query: str | None = None
    noise_seed: int | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DaemonConfig":
        path = Path(path).resolve()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the daemon config: {exc}") from None
        _check_keys(path, raw)
        org, link, guard = raw["organisation"], raw["superlink"], raw["guard"]

        def file(value: Any) -> Path:
            return (path.parent / str(value)).resolve()

        insecure = bool(link.get("insecure", False))
        if not insecure and "root-certificates" not in link:
            raise ConfigError(f"{path} [superlink]: give root-certificates (TLS), or insecure = true for loopback trials")
        try:
            policy = GuardPolicy(
                ledger=file(guard["ledger"]),
                epsilon_cap=float(guard["epsilon-cap"]),
                delta=float(guard["delta"]),
                min_noise_multiplier=float(guard["min-noise-multiplier"]),
                min_survivors=int(guard["min-survivors"]),
                noise_accounting=str(guard.get("noise-accounting", "planned")),
            )
        except ValueError as exc:
            raise ConfigError(f"{path} [guard]: {exc}") from None
        seed = raw.get("testing", {}).get("noise-seed")
        is_url = "://" in str(org["data"])
        if is_url != ("query" in org):
            raise ConfigError(f"{path} [organisation]: a database URL in data needs a query, and only it")
        return cls(
            path=path,
            name=str(org["name"]),
            data=str(org["data"]) if is_url else file(org["data"]),
            query=str(org["query"]) if is_url else None,
            schema=file(org["schema"]),
            address=str(link["address"]),
            root_certificates=file(link["root-certificates"]) if "root-certificates" in link else None,
            auth_key=file(link["auth-key"]) if "auth-key" in link else None,
            insecure=insecure,
            clientappio_port=int(link["clientappio-port"]) if "clientappio-port" in link else None,
            guard=policy,
            signing_key=file(raw["identity"]["signing-key"]),
            roster=file(raw["identity"]["roster"]),
            noise_seed=None if seed is None else int(seed),
        )

    def identity(self) -> Identity:
        """The organisation's signing key and the roster it pinned (``[identity]``)."""
        try:
            return Identity.load(self.name, self.signing_key, self.roster)
        except IdentityError as exc:
            raise ConfigError(f"{self.path} [identity]: {exc}") from None

    def accepted_schema(self) -> Schema:
        return load_schema(self.schema)

    def read_table(self, schema: Schema) -> pd.DataFrame:
        """The local table with every cell as text (missing: NaN), as the schema checks it."""
        if self.query is not None:
            return as_text_frame(self._read_sql())
        try:
            return schema.read_csv(self.data)  # CSV, or Parquet by its suffix
        except TableFileError as exc:
            raise TableUnreadable(str(exc)) from None

    def _read_sql(self) -> pd.DataFrame:
        url = sqlalchemy.engine.make_url(str(self.data))
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as conn:
                return pd.read_sql_query(sqlalchemy.text(self.query), conn)
        except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
            cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
            raise TableUnreadable(
                f"cannot read its table from {url.render_as_string(hide_password=True)} ({type(cause).__name__})"
            ) from None
        finally:
            engine.dispose()

    def organisation(self, tables: Mapping[str, LocalTable] | None = None, schema: Schema | None = None) -> Organisation:
        """The organisation this daemon speaks for, with its guard, its one schema (``schema``: the
        agreed schema already parsed from its file) and its cap seed (and ``tables`` already
        validated from its table file, see :class:`Organisation`)."""
        guard = Guard(self.name, self.guard)
        return Organisation(
            self.name,
            self.read_table,
            accepts=self.accepted_schema() if schema is None else schema,
            guard=guard,
            identity=self.identity(),
            cap_seed=cap_seed(self.guard.ledger.with_name(self.guard.ledger.name + ".cap-seed")),
            tables=tables,
        )

    def table_stamp(self) -> tuple[int, ...] | None:
        """The table file and the agreed schema's file as the file system sees them now (device,
        inode, size, modification and change times of each: any write or replacement changes the
        change time, which no user tool can set back); None for a table read from a database, or
        a file that cannot be read."""
        if self.query is not None:
            return None
        try:
            stats = [Path(self.data).stat(), self.schema.stat()]
        except OSError:
            return None
        return tuple(x for st in stats for x in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))

    def node_config(self) -> str:
        """Flower ``--node-config``: the ClientApp finds everything else in this file."""
        entries = [f'config="{self.path}"', f'org="{self.name}"']
        if self.noise_seed is not None:
            entries.append(f"noise-seed={self.noise_seed}")
        return " ".join(entries)

    def supernode_command(self, wake_fd: int) -> list[str]:
        """The SuperNode's command line (``client.node``: Flower's SuperNode, prompt polling,
        signalling its SuperExec each stored message on the pipe ``wake_fd``)."""
        cmd = [sys.executable, "-m", "fedsynth.client.node", "supernode", "--wake-fd", str(wake_fd), "--superlink", self.address,
               "--node-config", self.node_config(), "--isolation", "process", "--port", str(self.runtime_port)]
        if self.insecure:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(self.root_certificates)]
        if self.auth_key is not None:
            cmd += ["--auth-supernode-private-key", str(self.auth_key)]
        return cmd

    def superexec_command(self, supernode_pid: int, wake_fd: int) -> list[str]:
        """The warm SuperExec's command line (``client.node``), which ends with its SuperNode and
        waits on the pipe ``wake_fd`` for its messages."""
        return [sys.executable, "-m", "fedsynth.client.node", "superexec",
                "--runtime-api-address", f"127.0.0.1:{self.runtime_port}", "--parent-pid", str(supernode_pid),
                "--config", str(self.path), "--wake-fd", str(wake_fd)]

    @property
    def runtime_port(self) -> int:
        """The SuperNode's local Runtime API port (``clientappio-port``, Flower's default 9094)."""
        return self.clientappio_port if self.clientappio_port is not None else DEFAULT_RUNTIME_PORT


def _check_keys(path: Path, raw: dict[str, Any]) -> None:
    for section in raw.keys() - SECTIONS.keys():
        raise ConfigError(f"{path}: unknown section [{section}] (sections: {', '.join(SECTIONS)})")
    for section, keys in SECTIONS.items():
        given = raw.get(section, {})
        unknown = sorted(given.keys() - keys)
        missing = sorted(REQUIRED.get(section, set()) - given.keys())
        if unknown:
            raise ConfigError(f"{path} [{section}]: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(keys))})")
        if missing:
            raise ConfigError(f"{path} [{section}]: missing key(s) {', '.join(missing)}")


def preflight(config: DaemonConfig) -> str:
    """Check everything the daemon can check alone; return a one-line summary or raise."""
    files = [("schema", config.schema), ("root-certificates", config.root_certificates), ("auth-key", config.auth_key),
             ("signing-key", config.signing_key), ("roster", config.roster)]
    if config.query is None:
        files.append(("data", config.data))
    for what, file in files:
        if file is None:
            continue
        if not file.is_file():
            raise ConfigError(f"{config.path}: {what} file {file} does not exist")
    schema = config.accepted_schema()
    org = config.organisation()  # opens and verifies the guard's ledger
    try:
        frame = config.read_table(schema)
    except TableUnreadable as exc:
        raise ConfigError(f"{config.name}: {exc}") from None
    report = schema.validate(frame)
    if not report.ok:
        log.error("%s: local table does not conform to schema '%s':\n%s", config.name, schema.name, report)
        problems = sorted({f"{v.column} ({v.problem})" for v in report.errors})
        raise ConfigError(
            f"{config.name}: local table does not conform to schema '{schema.name}': {'; '.join(problems)} "
            "(see the validation report above); the daemon does not start until it does"
        )
    spent = org.guard.ledger.epsilon().epsilon if org.guard and len(org.guard.ledger) else 0.0
    return (
        f"{config.name}: {len(frame):,} rows conform to schema '{schema.name}'; guard ledger "
        f"{config.guard.ledger} holds {len(org.guard.ledger) if org.guard else 0} contributions, "
        f"epsilon {spent:.4g} of cap {config.guard.epsilon_cap:g} (delta {config.guard.delta:g})"
    )


def wake_pipe() -> tuple[int, int]:
    """A pipe (read end, write end) whose ends lie above the standard streams: a daemon started with
    one of them closed would otherwise get it as an end, which the SuperExec's own stdin replaces."""
    ends = os.pipe()
    try:
        return fcntl.fcntl(ends[0], fcntl.F_DUPFD_CLOEXEC, 3), fcntl.fcntl(ends[1], fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        for fd in ends:
            os.close(fd)


def run_daemon(config_path: Path, check_only: bool) -> int:
    """``fedsynth client``: check the config and table, start the warm SuperExec, then become
    the SuperNode (``client.node``; the SuperExec ends when the SuperNode does)."""
    try:
        config = DaemonConfig.load(config_path)
        print(preflight(config), flush=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if check_only:
        return 0
    os.environ[LOG_LEVEL_ENV] = logging.getLevelName(log.getEffectiveLevel())  # for its ClientApps' guard lines
    wake_read, wake_write = wake_pipe()  # the SuperNode tells its SuperExec of each message (client.node.WakePipe)
    superexec = config.superexec_command(os.getpid(), wake_read)  # exec keeps this pid: the SuperNode's
    subprocess.Popen(superexec, stdin=subprocess.DEVNULL, pass_fds=(wake_read,))  # noqa: S603 (our own module)
    os.close(wake_read)
    os.set_inheritable(wake_write, True)
    command = config.supernode_command(wake_write)
    print("starting: " + " ".join(command), flush=True)
    os.execv(command[0], command)
    return 0  # not reached
