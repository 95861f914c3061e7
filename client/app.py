"""Flower adapter for a fedsynth organisation: an :class:`Organisation` in, a ClientApp out.

Every SecAgg+ round reaches the ``train`` handler through ``secaggplus_mod``; the handler
asks the organisation for its vector, adds the noise share
(``fedsynth.common.secure_sum.noisy_share``) and returns it with the constant weight
``MAX_WEIGHT``: no row count, no metric, nothing else leaves. ``query`` messages carry no
data: the organisation's name, and whether it accepts a job (its table conforms to the
job's schema), answered by column and kind of problem only.

``app`` at the bottom is the deployment ClientApp (``fedsynth.client.app:app``): each
SuperNode reads its daemon's config file (node config ``config``; ``fedsynth client`` sets
it) or, bare, its table from node config ``data-path``.
"""

from __future__ import annotations

import logging
import secrets
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib import import_module
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from fedsynth.client.daemon import DaemonConfig
from fedsynth.client.guard import Guard
from fedsynth.client.organisation import Organisation, RequestRefused, read_csv_from_node_config
from fedsynth.common.secure_prg import harden
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec, noisy_share, secure_ranges

log = logging.getLogger(__name__)

# Masks from a ChaCha20 stream keyed by the whole shared secret, not Flower's 32-bit-seeded
# RandomState (upstream #7522); the coordinator does the same in ``server.secure_sum``.
harden(import_module("flwr.client.mod.secure_aggregation.secaggplus_mod"))


class Contributor(Protocol):
    """What the adapter needs from an organisation (``Organisation`` is the real one)."""

    name: str
    guard: Guard | None

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


def guarded_share(
    org: Contributor, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """One round's vector plus noise share, admitted and recorded by the organisation's guard.

    The guard judges the round before any data is read and records it (fsynced) after the
    share is computed and before it is returned to Flower: a refusal sends nothing, and a
    sent share is always in the organisation's own ledger.
    """
    spec = NoisySumSpec.from_config(request)
    ranges = secure_ranges(spec, int(request["num_clients"]))
    event = org.guard.admit(request, spec) if org.guard is not None else None
    share = noisy_share(org.contribute(request, arrays, rng), spec, ranges, rng)
    if org.guard is not None:
        org.guard.record(event, request, spec)
    return share


def build_client_app(
    make_org: OrganisationFactory, *, fixed_seed: int | None = None, mods: Sequence[Mod] = ()
) -> ClientApp:
    """A ClientApp whose SecAgg+ rounds send the organisation's vector plus a noise share.

    ``mods`` wrap every message outside SecAgg+ (they see exactly what leaves the node).
    """
    app = ClientApp(mods=list(mods))
    orgs: dict[int, Contributor] = {}  # one per node; simulation hosts several per process

    def organisation(context: Context) -> Contributor:
        if context.node_id not in orgs:
            orgs[context.node_id] = make_org(context)
        return orgs[context.node_id]

    @app.train(mods=[secaggplus_mod])
    def train(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        request = dict(fitins.config)
        rng = noise_rng(context, int(request["round"]), fixed_seed)
        share = guarded_share(organisation(context), request, parameters_to_ndarrays(fitins.parameters), rng)
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
                answer.update(ok=False, reason=str(exc))
        elif config["action"] != "hello":
            answer.update(ok=False, reason=f"unknown query action {config['action']!r}")
        return Message(RecordDict({"config": ConfigRecord(answer)}), reply_to=msg)

    return app


def table_organisation(context: Context) -> Organisation:
    """Deployment organisation: a daemon's config file (node config ``config``, see
    ``client.daemon``: table, accepted schema, guard), else the bare table at ``data-path``."""
    if "config" in context.node_config:
        return DaemonConfig.load(str(context.node_config["config"])).organisation()
    return Organisation(org_name(context), partial(read_csv_from_node_config, context.node_config))


app = build_client_app(table_organisation)
