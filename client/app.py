"""Flower adapter for a fedsynth organisation: an :class:`Organisation` in, a ClientApp out.

Every SecAgg+ round reaches the ``train`` handler through ``secaggplus_mod``; the handler
asks the organisation for its vector, adds the noise share
(``fedsynth.common.secure_sum.noisy_share``) and returns it with the constant weight
``MAX_WEIGHT``: no row count, no metric, nothing else leaves. ``query`` messages carry no
data: the organisation's name, and whether it accepts a job (its table conforms to the
job's schema), answered by column and kind of problem only.

``app`` at the bottom is the deployment ClientApp (``fedsynth.client.app:app``): each
SuperNode reads its own table from node config ``data-path``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from fedsynth.client.organisation import Organisation, RequestRefused, read_csv_from_node_config
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec, noisy_share, secure_ranges

log = logging.getLogger(__name__)

class Contributor(Protocol):
    """What the adapter needs from an organisation (``Organisation`` is the real one)."""

    name: str

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
    partition = int(context.node_config.get("partition-id", 0))
    return np.random.default_rng([int(seed), partition, round_])


def build_client_app(make_org: OrganisationFactory, *, fixed_seed: int | None = None) -> ClientApp:
    """A ClientApp whose SecAgg+ rounds send the organisation's vector plus a noise share."""
    app = ClientApp()
    orgs: dict[int, Contributor] = {}  # one per node; simulation hosts several per process

    def organisation(context: Context) -> Contributor:
        if context.node_id not in orgs:
            orgs[context.node_id] = make_org(context)
        return orgs[context.node_id]

    @app.train(mods=[secaggplus_mod])
    def train(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        request = dict(fitins.config)
        spec = NoisySumSpec.from_config(request)
        ranges = secure_ranges(spec, int(request["num_clients"]))
        rng = noise_rng(context, int(request["round"]), fixed_seed)
        vector = organisation(context).contribute(request, parameters_to_ndarrays(fitins.parameters), rng)
        share = noisy_share(vector, spec, ranges, rng)
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
    """Deployment organisation: the SuperNode's own table at node config ``data-path``."""
    return Organisation(org_name(context), partial(read_csv_from_node_config, context.node_config))


app = build_client_app(table_organisation)
