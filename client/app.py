"""Flower adapter for a fedsynth organisation: an :class:`Organisation` in, a ClientApp out.

Every SecAgg+ round reaches the ``train`` handler through ``secaggplus_mod``; the handler
checks that the SecAgg+ setup this node joined with is what the round's request implies
(``client.guard.verify_setup``), lets the guard admit and record the round, asks the
organisation for its vector, adds the noise share (``fedsynth.common.secure_sum.noisy_share``)
and returns it with the constant weight ``MAX_WEIGHT``: no row count, no metric, nothing else
leaves. A mod before ``secaggplus_mod`` (``client.secagg.secagg_guard``) makes SecAgg+ the
malicious-coordinator protocol: keys signed under the roster the organisation pinned, a public
neighbour order, and a consistency stage before any share of a secret is revealed. ``query`` messages
carry no data: the organisation's name, and whether it accepts a job, as a fixed refusal code.

Nothing else can carry data out: the outermost mod (:func:`public_errors`) lets a refusal
(``RequestRefused``, whose text is a fixed code and public parameters) through and replaces
any other exception, whose text could hold anything, by the fixed code ``internal-error``;
the exception itself goes to the organisation's own log.

``app`` at the bottom is the deployment ClientApp (``fedsynth.client.app:app``): each
SuperNode reads its daemon's config file (node config ``config``; ``fedsynth client`` sets
it) or, bare, its table from node config ``data-path`` under the agreed schema at node config
``schema-path``, with a default guard (:func:`default_guard`). No deployed ClientApp runs
without a guard or without an agreed schema: a bare one that names no schema refuses every
message with the fixed code ``no-agreed-schema`` (:func:`agreed_schema`), which depends on its
configuration only.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from dp_accounting import DpEvent
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat

from .daemon import LOG_LEVEL_ENV, DaemonConfig
from .guard import Guard, GuardPolicy, verify_setup
from .organisation import LocalTable, Organisation, RequestRefused, read_csv_from_node_config, refusal
from .secagg import secagg_guard
from ..common.accounting import CombinedAccountant
from ..common.backoff import prompt_pulls
from ..common.identity import Identity
from ..common.schema import Schema, SchemaError, load_schema
from ..common.secagg_graph import graph_from_request
from ..common.secure_prg import harden
from ..common.secure_sum import MAX_WEIGHT, NoisySumSpec, SecureRanges, noisy_share, secure_ranges
from ..common.shamir_inline import run_inline

log = logging.getLogger(__name__)

# Masks from a ChaCha20 stream keyed by the whole shared secret, not Flower's 32-bit-seeded
# RandomState (upstream #7522); the coordinator does the same in ``server.secure_sum``.
harden(import_module("flwr.client.mod.secure_aggregation.secaggplus_mod"))
# Shamir sharing in the calling thread, not a fresh thread pool per secret (``common.shamir_inline``).
run_inline(import_module("flwr.common.secure_aggregation.crypto.shamir"))
# A task's message content is pulled as soon as it arrives, not after a 1-10 s wait (``common.backoff``).
prompt_pulls(import_module("flwr.supercore.inflatable.inflatable_utils"))


class Contributor(Protocol):
    """What the adapter needs from an organisation (``Organisation`` is the real one)."""

    name: str
    guard: Guard | None
    identity: Identity | None

    def contribute(
        self, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
    ) -> np.ndarray: ...

    def check(self, request: Mapping[str, Any]) -> None: ...


#: Builds the organisation a SuperNode speaks for, from the node's context.
OrganisationFactory = Callable[[Context], Contributor]


def org_name(context: Context) -> str:
    """The organisation's public name: node config ``org``, else ``party-<partition-id>``."""
    if "org" in context.node_config:
        return str(context.node_config["org"])
    return f"party-{context.node_config.get('partition-id', '?')}"


def noise_rng(context: Context, round_: int, fixed_seed: int | None) -> np.random.Generator:
    """The generator for this round's noise share, drawn from OS entropy in production.

    A fixed seed (argument, or node config ``noise-seed``) makes the noise reproducible by
    anyone who knows it: it exists for tests and is logged as a warning.
    """
    seed = fixed_seed if fixed_seed is not None else context.node_config.get("noise-seed")
    if seed is None:
        return np.random.default_rng(secrets.randbits(128))
    log.warning("%s: noise drawn from a fixed seed (tests only)", org_name(context))
    return np.random.default_rng([int(seed), seed_stream(context), round_])


def seed_stream(context: Context) -> int:
    """Distinct per node under a fixed seed: the partition id, else a CRC of the org's name."""
    if "partition-id" in context.node_config:
        return int(context.node_config["partition-id"])
    return zlib.crc32(org_name(context).encode("utf-8"))


class ClientError(RuntimeError):
    """What reaches the coordinator instead of an unexpected exception: a fixed code."""


def public_errors(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Outermost mod: only fixed refusal codes leave; any other exception is logged here only."""
    try:
        return call_next(msg, context)
    except RequestRefused:
        raise
    except Exception:
        name = org_name(context)
        log.exception("%s: a %s message failed (only a fixed code was sent)", name, msg.metadata.message_type)
        raise ClientError(f"{name}: error (rule internal-error; details in {name}'s own log)") from None


def guarded_share(
    org: Contributor,
    request: Mapping[str, Any],
    arrays: list[np.ndarray],
    rng: np.random.Generator,
    setup: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """One round's vector plus noise share, checked, admitted and recorded before it is computed.

    ``setup``: the SecAgg+ setup this node joined with (``secaggplus_mod``'s state); it must be
    what the request implies. The guard judges the round before any data is read and records
    it (fsynced) before the vector is computed: a refusal sends nothing, and a computed share
    is always in the organisation's own ledger.
    """
    spec = NoisySumSpec.from_config(request)
    num_clients = int(request["num_clients"])
    try:
        event = org.guard.admit(request, spec, arrays) if org.guard is not None else None
        ranges = secure_ranges(spec, num_clients)
        if setup is not None:
            graph = graph_from_request(request, num_clients, spec.min_survivors)
            verify_setup(org.name, setup, spec, ranges, num_clients, graph)
        if org.guard is not None:
            org.guard.record(event, request, spec)
    except RequestRefused as exc:
        public = str(exc).removeprefix(f"{org.name}: ")
        log.info("%s: guard refused %s round %s: %s", org.name, request.get("task"), request.get("round"), public)
        raise
    if org.guard is not None:
        log_admitted(org.guard, request, event)
    return share_of_recorded_round(org, request, arrays, rng, spec, ranges)


def share_of_recorded_round(
    org: Contributor, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator,
    spec: NoisySumSpec, ranges: SecureRanges,
) -> np.ndarray:
    """The organisation's noisy share for an admitted, recorded round, whatever its rows hold.

    A refusal (``RequestRefused``: fixed codes from the request and the configuration) still
    stops the round. Any other failure, while computing the vector or while noising it (a
    vector of another length than the request's ``sum.dim``), could depend on a row (a value no
    parser expected), so it never leaves as an error: the round, already paid, is answered with
    a stand-in vector (:func:`stand_in`) plus the noise share, and only the organisation's own log says why. Both
    paths end in the same call, so a request cannot tell them apart by their outcome.
    """
    try:
        return noisy_share(org.contribute(request, arrays, rng), spec, ranges, rng)
    except RequestRefused:
        raise
    except Exception:  # noqa: BLE001 (any failure: its kind could depend on the rows)
        log.exception("%s: computing %s round %s failed; answered with a zero vector and its noise "
                      "(this log only)", org.name, request.get("task"), request.get("round"))
        return noisy_share(stand_in(request, spec, rng), spec, ranges, rng)


def stand_in(request: Mapping[str, Any], spec: NoisySumSpec, rng: np.random.Generator) -> np.ndarray:
    """What a failed round answers: zeros, or for a vote (which may carry no Skellam noise, so a
    zero vote would lower the vote total in the clear) ``k`` candidates drawn uniformly."""
    vector = np.zeros(spec.dim, dtype=np.int64)
    if request.get("task") == "select":
        vector[rng.choice(spec.dim, size=min(int(request["k"]), spec.dim), replace=False)] = 1
    return vector


def log_admitted(guard: Guard, request: Mapping[str, Any], event: DpEvent) -> None:
    """The organisation's log line for an admitted round: its task, round and epsilon (INFO)."""
    if not log.isEnabledFor(logging.INFO):
        return
    delta = guard.policy.delta
    alone = CombinedAccountant().compose(event).epsilon(delta).epsilon
    log.info(
        "%s: guard admitted %s round %s: epsilon %.4g for this round; ledger %.4g of cap %g (delta %g, %d contributions)",
        guard.org, request.get("task"), request.get("round"), alone, guard.ledger.epsilon().epsilon,
        guard.policy.epsilon_cap, delta, len(guard.ledger),
    )


def build_client_app(
    make_org: OrganisationFactory,
    *,
    fixed_seed: int | None = None,
    mods: Sequence[Mod] = (),
    identities: Mapping[str, Identity] | None = None,
) -> ClientApp:
    """A ClientApp whose SecAgg+ rounds send the organisation's vector plus a noise share.

    ``mods`` wrap every message outside SecAgg+ (they see exactly what leaves the node), inside
    :func:`public_errors`. An organisation signs its SecAgg+ keys with its own ``identity``, else
    with ``identities[its name]`` (a simulation's federation, ``common.identity.simulated_federation``);
    without either it takes part in no SecAgg+ round.
    """
    app = ClientApp(mods=[public_errors, *mods])
    orgs: dict[int, Contributor] = {}  # one per node; simulation hosts several per process

    def organisation(context: Context) -> Contributor:
        if context.node_id not in orgs:
            orgs[context.node_id] = make_org(context)
        return orgs[context.node_id]

    def identity(context: Context) -> Identity | None:
        org = organisation(context)
        return getattr(org, "identity", None) or (identities or {}).get(org.name)

    @app.train(mods=[secagg_guard(identity), secaggplus_mod])
    def train(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        request = dict(fitins.config)
        rng = noise_rng(context, int(request["round"]), fixed_seed)
        setup = dict(context.state.config_records[RECORD_KEY_STATE])
        share = guarded_share(organisation(context), request, parameters_to_ndarrays(fitins.parameters), rng, setup)
        reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([share]), MAX_WEIGHT, {})
        return Message(compat.fitres_to_recorddict(reply, keep_input=False), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        config = dict(msg.content["config"])
        org = organisation(context)
        answer: dict[str, str | bool] = {"org": org.name, "ok": True}
        if config["action"] == "check":
            try:
                org.check(config)
            except RequestRefused as exc:
                log.info("%s: job check refused: %s", org.name, str(exc).removeprefix(f"{org.name}: "))
                answer.update(ok=False, reason=str(exc))
            else:
                log.info("%s: job check passed: schema and privacy plan accepted", org.name)
        elif config["action"] == "columns":  # names and kinds from local configuration: no data
            answer["columns"] = json.dumps(org.columns)
        elif config["action"] != "hello":
            answer.update(ok=False, reason=refusal(org.name, "query-action", f"unknown action {config['action']!r}"))
        return Message(RecordDict({"config": ConfigRecord(answer)}), reply_to=msg)

    return app


#: The guard of a bare ClientApp (no daemon config): node config ``guard-ledger`` overrides the
#: ledger's place; the rest is a conservative default an organisation should replace by its own.
DEFAULT_GUARD = {"epsilon_cap": 4.0, "delta": 1e-6, "min_noise_multiplier": 0.5, "min_survivors": 2}


def default_guard(context: Context) -> Guard:
    """The guard a ClientApp uses when its organisation configured none (logged as a warning)."""
    name = org_name(context)
    default = Path.home() / ".local" / "state" / "fedsynth" / name / "guard-ledger.jsonl"
    ledger = Path(str(context.node_config.get("guard-ledger", default)))
    log.warning("%s: no guard configured; using the default guard %s with ledger %s", name, DEFAULT_GUARD, ledger)
    return Guard(name, GuardPolicy(ledger=ledger, **DEFAULT_GUARD))


#: The fixed code of a ClientApp that has no agreed schema.
NO_AGREED_SCHEMA = "no-agreed-schema"


def agreed_schema(context: Context) -> Schema:
    """A bare ClientApp's agreed schema: the file at node config ``schema-path``.

    Without one (or with one that does not load) it refuses, with the fixed code
    ``no-agreed-schema``: a ClientApp that took whatever schema a coordinator sends would read its
    table under schemas of the coordinator's choosing.
    """
    name = org_name(context)
    if "schema-path" not in context.node_config:
        log.error("%s: node config names neither 'config' (a daemon's config file) nor 'schema-path'; "
                  "refusing every message until it names its agreed schema", name)
        raise RequestRefused(refusal(name, NO_AGREED_SCHEMA, "node config names no 'schema-path'"))
    path = str(context.node_config["schema-path"])
    try:
        return load_schema(path)
    except (SchemaError, OSError, ValueError) as exc:
        log.error("%s: cannot load its agreed schema %s: %s", name, path, exc)
        raise RequestRefused(refusal(name, NO_AGREED_SCHEMA, "its agreed schema does not load")) from None


def log_to_stderr() -> None:
    """A deployed ClientApp logs fedsynth's lines (its guard's decisions, at INFO) to its stderr,
    which Flower's ``flwr-clientapp`` process shares with its SuperNode, i.e. the daemon's log;
    at the level in ``FEDSYNTH_LOG_LEVEL`` (``fedsynth --log-level ... client`` sets it)."""
    logger = logging.getLogger("fedsynth")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO"))
    logger.propagate = False


def table_organisation(context: Context) -> Organisation:
    """Deployment organisation: a daemon's config file (node config ``config``, see
    ``client.daemon``: table, agreed schema, guard), else the bare table at ``data-path`` under
    the agreed schema at ``schema-path`` (:func:`agreed_schema`), :func:`default_guard` and the
    signing identity at ``signing-key`` and ``roster`` (:func:`node_identity`)."""
    log_to_stderr()
    if "config" in context.node_config:
        return daemon_organisation(str(context.node_config["config"]))
    return Organisation(
        org_name(context),
        partial(read_csv_from_node_config, context.node_config),
        accepts=agreed_schema(context),
        guard=default_guard(context),
        identity=node_identity(context),
    )


@dataclass(frozen=True)
class WarmTable:
    """The daemon's table as a warm process validated it (``client.node``): the table file's and
    agreed schema's stamp (``DaemonConfig.table_stamp``), the agreed schema parsed from that file,
    and the tables by schema JSON."""

    stamp: tuple[int, ...]
    schema: Schema
    tables: dict[str, LocalTable]


#: By daemon config file, what the warm process validated before it forks its ClientApp tasks.
WARM: dict[Path, WarmTable] = {}


def warm_tables(config_path: str) -> None:
    """Validate the daemon's table under its agreed schema in the warm process, unless the table
    file and the schema's file are unchanged since it last did (``DaemonConfig.table_stamp``);
    called before every fork, so that each task starts with it (``client.node``).

    Only the validated table and the agreed schema it was validated under are kept: every task
    still builds its organisation, guard and identity from the files (an edited cap or roster
    applies to the next task), and reads the guard's ledger when a decision needs it. A table read
    from a database is not kept. A failure is logged and leaves every task to read the table and
    the schema itself, as without a warm process.
    """
    try:
        config = DaemonConfig.load(config_path)
        stamp = config.table_stamp()
        if stamp is None or (config.path in WARM and WARM[config.path].stamp == stamp):
            return
        org = config.organisation()
        org.table(org.accepts.dumps("json"))
        WARM[config.path] = WarmTable(stamp, org.accepts, dict(org.validated_tables))
    except Exception:  # the tasks then read the table and report what fails through their usual paths
        log.exception("could not prepare the table of %s in the warm process", config_path)


def daemon_organisation(config_path: str) -> Organisation:
    """The organisation of the daemon config at ``config_path``, built from its files, with the
    warm process's agreed schema and validated table while the table's and the schema's files are
    the ones it validated."""
    config = DaemonConfig.load(config_path)
    warm = WARM.get(config.path)
    if warm is None or warm.stamp != config.table_stamp():
        return config.organisation()
    return config.organisation(tables=warm.tables, schema=warm.schema)


def node_identity(context: Context) -> Identity | None:
    """A bare ClientApp's signing key and roster (node config ``signing-key``, ``roster``); without
    them it takes part in no SecAgg+ round (``client.secagg``: rule ``secagg-identity``)."""
    config = context.node_config
    if "signing-key" not in config or "roster" not in config:
        log.warning("%s: no signing-key and roster in the node config; it will refuse every SecAgg+ round", org_name(context))
        return None
    return Identity.load(org_name(context), str(config["signing-key"]), str(config["roster"]))


app = build_client_app(table_organisation)
