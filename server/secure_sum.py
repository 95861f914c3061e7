"""Coordinator side of the secure noisy sum on Flower's SecAgg+ (see ``common.secure_sum``).

One call of :meth:`Federation.noisy_sum` is one SecAgg+ round: every connected client
computes its vector, adds its Skellam share and masks it; the coordinator unmasks only the
survivors' sum, records the Skellam event with the survivors' actual noise in the ledger
(fsynced) and only then returns the decoded sum. A round with fewer than ``t`` survivors is
never unmasked and raises :class:`RoundAborted`.

The SecAgg+ graph is ``common.secagg_graph.choose_graph``: complete below ``SPARSE_FROM``
organisations, sparse above (neighbourhoods of ``2(n - t) + 3``, safe in every order), with
neighbourhoods in the public order of the round's signed keys. The workflow speaks the
authenticated protocol that ``client.secagg`` checks at every organisation (signed keys, public
order, consistency stage); it halts a round before unmasking when fewer than ``t`` masked vectors
or survivor-set signatures arrived.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, MessageType, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from ..common.secagg_wire import (
    CONSISTENCY,
    DIGEST,
    JOB,
    KEY_NODES,
    KEY_ORGS,
    KEY_PK1,
    KEY_PK2,
    KEY_SIGNATURES,
    ORG,
    ROUND,
    SIGNATURE,
    SIGNATURES,
    SIGNERS,
    SURVIVORS,
    T,
)
from ..common.accounting import Ledger
from ..common.backoff import prompt_pulls
from ..common.identity import SignedKeys, public_order, request_digest
from ..common.rounds import round_event
from ..common.secagg_graph import choose_graph, flower_neighbourhoods
from ..common.secure_prg import harden
from ..common.secure_sum import (
    MAX_WEIGHT,
    NoisySumSpec,
    decode_sum,
    secure_ranges,
)
from ..common.shamir_inline import run_inline

log = logging.getLogger(__name__)

# Unmasking regenerates the clients' masks: it must use the same secure PRG as
# ``client.app`` (ChaCha20 keyed by the whole shared secret; see ``common.secure_prg``).
harden(import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow"))
# Shamir sharing in the calling thread, not a fresh thread pool per secret (``common.shamir_inline``).
run_inline(import_module("flwr.common.secure_aggregation.crypto.shamir"))
# Replies' content pulled as soon as it arrives, not after a 1-10 s wait (``common.backoff``).
prompt_pulls(import_module("flwr.supercore.inflatable.inflatable_utils"))

HELLO = "hello"


class RoundAborted(RuntimeError):
    """A secure round produced nothing usable; nothing derived from it was used."""


class JobRefused(RuntimeError):
    """One or more organisations refused the job before any data was touched."""


@dataclass(frozen=True)
class SumResult:
    """Decoded integer sum of one round and who contributed to it."""

    total: np.ndarray
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    mu: float
    round: int

    def real_sum(self, spec: NoisySumSpec) -> np.ndarray:
        """The sum in the caller's units (integer grid divided by the spec's scale)."""
        return self.total / spec.scale


class _OneRound(FedAvg):
    """Strategy for exactly one SecAgg+ round: all clients, one request, capture the result.

    ``per_node``: parameters for particular nodes (by node id) instead of the round's shared ones.
    """

    def __init__(
        self, num_clients: int, config: Mapping[str, Any], per_node: Mapping[int, list[np.ndarray]] | None = None
    ) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=num_clients,
            min_available_clients=num_clients,
            on_fit_config_fn=lambda _round: dict(config),
        )
        self.per_node = {nid: ndarrays_to_parameters(arrays) for nid, arrays in (per_node or {}).items()}
        self.mean: np.ndarray | None = None
        self.survivor_ids: list[int] = []

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001 (Flower's API)
        return [
            (proxy, FitIns(self.per_node.get(proxy.node_id, ins.parameters), ins.config))
            for proxy, ins in super().configure_fit(server_round, parameters, client_manager)
        ]

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001 (Flower's API)
        if results:
            self.mean = parameters_to_ndarrays(results[0][1].parameters)[0]
            self.survivor_ids = [proxy.node_id for proxy, _ in results]
        return None, {}


class _ErrorsByNode:
    """The grid as SecAgg+ sees it, keeping each node's error reply (a refusal, a crash).

    Flower's workflow drops failed replies without a word; these let the coordinator say why.
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.errors: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001 (Grid's API)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.has_error():
                self.errors[reply.metadata.src_node_id] = client_error(reply.error.reason)
        return replies


def client_error(reason: str) -> str:
    """The ClientApp's exception message inside Flower's error reason.

    Deployment: ``"<class 'X'>:<'message'>"``. Simulation wraps it in a Ray error whose text
    ends ``"... Exception ClientAppException occurred. Message: message'>"``. A fedsynth
    organisation only ever raises fixed codes with public parameters (``client.app``).
    """
    wrapped = reason.rpartition("Exception ClientAppException occurred. Message: ")[2]
    if wrapped != reason:
        return wrapped.removesuffix("'>")
    match = re.fullmatch(r"<class '[\w.]+'>:<'(.*)'>", reason, flags=re.DOTALL)
    return match.group(1) if match else reason


class _Authenticating:
    """The grid as fedsynth's SecAgg+ workflow sees it: it adds the fields of authenticated
    SecAgg+ (``client.secagg``) to Flower's messages and keeps the signatures of the replies."""

    def __init__(self, grid: Any, workflow: "_TrackedSecAggPlus") -> None:
        self._grid = grid
        self._workflow = workflow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001 (Grid's API)
        messages = list(messages)
        for message in messages:
            configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is not None:
                configs.update(self._workflow.fields_for(str(configs.get(Key.STAGE))))
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            fields = {} if reply.has_error() else reply.content.config_records.get(RECORD_KEY_CONFIGS, {})
            if ORG in fields:
                self._workflow.signed[reply.metadata.src_node_id] = {ORG: fields[ORG], SIGNATURE: fields[SIGNATURE]}
        return replies


class _TrackedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow made the malicious-coordinator protocol that ``client.secagg``
    checks, remembering which nodes were still active after each stage.

    * setup names the job, round, ``t`` and the digest of the round's request
      (``common.identity.request_digest``); the replies carry each node's signed keys;
    * the neighbourhoods follow the public order of those signed keys
      (``common.identity.public_order``), not Flower's shuffle, and every node gets the whole
      signed list with its neighbours' keys;
    * after the masked vectors, a consistency stage asks every survivor to sign the survivor set;
      the unmask requests carry that set and its signatures;
    * the round halts before unmasking when fewer than ``min_survivors`` masked vectors or
      signatures arrived (Flower checks each neighbourhood only).

    Flower halts a round silently; the tracking lets the coordinator say who dropped, and when.
    ``neighbourhoods``: the round's graph (node id -> its neighbourhood, itself included).
    """

    def __init__(
        self, *args: Any, min_survivors: int = 0, job: str = "", round_: int = 0, request: bytes = b"", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.min_survivors, self.job, self.round, self.request = min_survivors, job, round_, request
        self.active: set[int] = set()
        self.neighbourhoods: dict[int, set[int]] = {}
        self.stage = "setup"
        self.signed: dict[int, dict[str, Any]] = {}  # node id -> its last reply's fields
        self.keys: list[SignedKeys] = []
        self.survivors: list[int] = []
        self.survivor_signatures: dict[int, bytes] = {}

    def __call__(self, grid, context) -> None:  # noqa: ANN001 (Flower's API)
        super().__call__(_Authenticating(grid, self), context)

    def fields_for(self, stage: str) -> dict[str, Any]:
        """What fedsynth adds to a Flower message of ``stage``."""
        if stage == Stage.SETUP:
            return {JOB: self.job, ROUND: self.round, T: self.min_survivors, DIGEST: self.request}
        if stage == Stage.SHARE_KEYS:
            return {
                KEY_NODES: [k.node_id for k in self.keys], KEY_ORGS: [k.org for k in self.keys],
                KEY_PK1: [k.pk1 for k in self.keys], KEY_PK2: [k.pk2 for k in self.keys],
                KEY_SIGNATURES: [k.signature for k in self.keys],
            }
        if stage == Stage.UNMASK:
            return {SURVIVORS: self.survivors, SIGNERS: list(self.survivor_signatures),
                    SIGNATURES: list(self.survivor_signatures.values())}
        return {}

    def _tracked(self, name: str, stage: Callable[..., bool], grid, context, state) -> bool:  # noqa: ANN001
        self.stage = name
        ok = stage(grid, context, state)
        self.active = set(state.active_node_ids)
        return ok

    def setup_stage(self, grid, context, state) -> bool:  # noqa: ANN001 (Flower's API)
        self._tracked("setup", super().setup_stage, grid, context, state)
        if not state.nid_to_publickeys:
            return False
        self.keys = [
            SignedKeys(nid, str(self.signed[nid][ORG]), bytes(pk1), bytes(pk2), bytes(self.signed[nid][SIGNATURE]))
            for nid, (pk1, pk2) in sorted(state.nid_to_publickeys.items())
            if nid in state.active_node_ids and ORG in self.signed.get(nid, {})
        ]
        state.active_node_ids = state.sampled_node_ids = {k.node_id for k in self.keys}
        order = public_order(self.job, self.round, self.keys)
        state.nid_to_neighbours = flower_neighbourhoods(order, state.num_shares)
        self.neighbourhoods = {nid: set(nbrs) for nid, nbrs in state.nid_to_neighbours.items()}
        self.active = set(state.active_node_ids)
        return len(self.keys) >= self.min_survivors and self._check_threshold(state)

    def share_keys_stage(self, grid, context, state) -> bool:  # noqa: ANN001
        return self._tracked("key sharing", super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid, context, state) -> bool:  # noqa: ANN001
        ok = self._tracked("masked vectors", super().collect_masked_vectors_stage, grid, context, state)
        if not ok or len(self.active) < self.min_survivors:
            return False
        self.stage = "consistency"
        self.survivors = sorted(state.active_node_ids)
        content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: CONSISTENCY, SURVIVORS: self.survivors})})
        replies = grid.send_and_receive(
            [Message(content, nid, MessageType.TRAIN, group_id=str(self.round)) for nid in self.survivors],
            timeout=self.timeout,
        )
        self.survivor_signatures = {
            r.metadata.src_node_id: bytes(r.content.config_records[RECORD_KEY_CONFIGS][SIGNATURE])
            for r in replies if not r.has_error()
        }
        return len(self.survivor_signatures) >= self.min_survivors


@dataclass
class Federation:
    """The connected organisations of one job, seen from the coordinator.

    Use as a context manager: it keeps Flower's client manager in sync with the grid,
    waits for ``num_clients`` nodes and asks each for its organisation name (a ``query``
    message; the answer holds no data). ``neighbours``: the SecAgg+ neighbourhood size asked
    for (None: ``choose_graph`` decides from the number of organisations and ``t``).
    """

    grid: Grid
    context: Context
    num_clients: int
    ledger: Ledger | None
    timeout: float | None = None
    neighbours: int | None = None
    org_names: dict[int, str] = field(default_factory=dict)
    last_graph: dict[int, set[int]] = field(default_factory=dict)  # the last round's neighbourhoods
    job: str = field(default_factory=lambda: uuid.uuid4().hex)  # what every round's signed keys are bound to
    _round: int = 0

    def __enter__(self) -> "Federation":
        if self.num_clients < 2:
            raise JobRefused("SecAgg+ needs at least 2 organisations; a single one is central DP")
        self._legacy = LegacyContext(
            context=self.context,
            config=ServerConfig(num_rounds=1),
            strategy=_OneRound(self.num_clients, {}),
        )
        self._thread, self._stop, done = start_update_client_manager_thread(
            self.grid, self._legacy.client_manager
        )
        done.wait()
        if not self._legacy.client_manager.wait_for(self.num_clients, timeout=600):
            raise RoundAborted(
                f"only {self._legacy.client_manager.num_available()} of "
                f"{self.num_clients} organisations connected"
            )
        self.org_names = self._hello()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def query(self, action: str, config: Mapping[str, Any] | None = None) -> dict[int, Message]:
        """Send a ``query`` message to every node; return the replies by node id."""
        content = RecordDict({"config": ConfigRecord({"action": action, **(config or {})})})
        node_ids = sorted(self.grid.get_node_ids())
        messages = [
            Message(content, nid, "query") for nid in node_ids
        ]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        return {reply.metadata.src_node_id: reply for reply in replies}

    def _hello(self) -> dict[int, str]:
        return {nid: str(answer["org"]) for nid, answer in self._answers(HELLO).items()}

    def _answers(self, action: str, config: Mapping[str, Any] | None = None) -> dict[int, dict]:
        answers = {}
        for nid, reply in self.query(action, config).items():
            if reply.has_error():
                raise JobRefused(f"{self.name(nid)} failed to answer '{action}': {reply.error.reason}")
            answers[nid] = dict(reply.content["config"])
        return answers

    def check(self, request: Mapping[str, Any]) -> None:
        """Ask every organisation whether it accepts ``request``; raise naming who refused."""
        refusals = [a["reason"] for a in self._answers("check", request).values() if not a["ok"]]
        if refusals:
            raise JobRefused("job refused before any data left an organisation:\n- " + "\n- ".join(refusals))

    def name(self, node_id: int) -> str:
        return self.org_names.get(node_id, f"node {node_id}")

    @property
    def organisations(self) -> tuple[str, ...]:
        """The organisations' names, sorted: the order of blocks that keep them apart."""
        return tuple(sorted(self.org_names.values()))

    def noisy_sum(
        self,
        spec: NoisySumSpec,
        request: Mapping[str, Any],
        *,
        phase: str,
        mechanism: str,
        parameters: list[np.ndarray] | None = None,
        node_parameters: Mapping[str, list[np.ndarray]] | None = None,
    ) -> SumResult:
        """Run one SecAgg+ round of ``spec`` and return the decoded sum.

        ``parameters`` go to every organisation; ``node_parameters`` (by organisation name)
        replace them for the organisations named.

        The round's ledger event is ``common.rounds.round_event`` of the request, the same
        function every organisation's guard uses. Before the round, the ledger checks that
        the event at the minimum ``t`` survivors fits the federation's cap (so no spend can be
        refused after data were touched); after it, the event with the survivors' actual noise
        is appended (fsynced) before the sum is returned.
        """
        self._round += 1
        if self.ledger is not None:
            self.ledger.check(round_event(request, spec), phase=phase)
        elif spec.mu > 0:
            raise ValueError("a noisy sum without a ledger is only for noise-free tests")
        spec = spec.against_collusion(self.num_clients)
        ranges = secure_ranges(spec, self.num_clients)
        graph = choose_graph(self.num_clients, spec.min_survivors, self.neighbours)
        by_node = {nid: node_parameters[name] for nid, name in self.org_names.items() if name in (node_parameters or {})}
        config = {**request, **spec.to_config(), **graph.to_config(), "job": self.job, "round": self._round,
                  "num_clients": self.num_clients}
        strategy = _OneRound(self.num_clients, config, by_node)
        self._legacy.strategy = strategy
        self._legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters(parameters or []), keep_input=True
        )
        self._legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: self._round}
        )
        workflow = _TrackedSecAggPlus(
            num_shares=graph.num_shares,
            reconstruction_threshold=graph.threshold,
            min_survivors=spec.min_survivors,
            job=self.job,
            round_=self._round,
            request=request_digest(config),
            max_weight=float(MAX_WEIGHT),
            clipping_range=float(ranges.clipping_range),
            quantization_range=ranges.quantization_range,
            modulus_range=ranges.modulus_range,
            timeout=self.timeout,
        )
        grid = _ErrorsByNode(self.grid)
        workflow(grid, self._legacy)
        self.last_graph = workflow.neighbourhoods
        reasons = "".join(f"\n- {self.name(n)}: {why}" for n, why in sorted(grid.errors.items()))
        if strategy.mean is None:
            alive = tuple(sorted(self.name(n) for n in workflow.active))
            lost = tuple(sorted(set(self.org_names.values()) - set(alive)))
            raise RoundAborted(
                f"{phase} round {self._round} ({mechanism}) aborted at the {workflow.stage} "
                f"stage: {len(alive)} of {self.num_clients} organisations remained, at least "
                f"t={spec.min_survivors} must; dropped or failed: {', '.join(lost) or 'none'}; "
                f"remaining: {', '.join(alive) or 'none'}. Nothing from this round was used.{reasons}"
            )
        survivors = tuple(sorted(self.name(n) for n in strategy.survivor_ids))
        dropped = tuple(sorted(set(self.org_names.values()) - set(survivors)))
        mu = spec.mu_of_survivors(len(survivors))
        if self.ledger is not None:
            self.ledger.append(
                phase,
                mechanism,
                round_event(request, spec, mu),
                metadata={
                    "round": self._round,
                    "survivors": list(survivors),
                    "dropped": list(dropped),
                    "mu": mu,
                    "planned_mu": spec.honest_mu(self.num_clients),
                    "dim": spec.dim,
                    "graph": {
                        "num_shares": graph.num_shares,
                        "threshold": graph.threshold,
                        "safe_for_every_order": graph.safe(),
                    },
                },
            )
        result = SumResult(
            total=decode_sum(strategy.mean, len(survivors), spec),
            survivors=survivors,
            dropped=dropped,
            mu=mu,
            round=self._round,
        )
        if dropped:
            log.warning(
                "round %d: %s dropped out; survivors' noise mu=%.3g%s", self._round, ", ".join(dropped), mu, reasons
            )
        return result
