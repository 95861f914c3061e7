"""One organisation's side of a fedsynth job, as plain functions over its own table.

The ClientApp (``fedsynth.client.app``) is a thin Flower adapter over :class:`Organisation`;
everything here runs and is tested without Flower. What leaves this module is always a
vector for the secure noisy sum (counts, a selection vote, or a clipped gradient sum), never rows, row counts or
a validation report: a refusal that reaches the coordinator is a fixed code naming a rule and
public parameters only (:func:`refusal`); problems with the table are logged here in full and
reach the coordinator only as the code ``table-does-not-conform``.

Contribution bounding: every vector is projected onto the round's public box before it is sent
(``common.secure_sum``), so no round can fail because of the data. When a count round names a
public ``row_cap``, the table is first capped at it by uniform subsampling
(:meth:`LocalTable.capped`), drawn from a seed that stays with the organisation. Under add/remove
of one row the two capped tables can be coupled to differ in at most one row (added or removed
below the cap, replaced at the cap); the sensitivity this costs is accounted by
``common.marginals.count_sensitivity``. The subsample is a function of the secret seed and the
table only, so the coupling holds for every round at once.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsynth.common.discovery import TASK as DISCOVERY
from fedsynth.common.discovery import DiscoveryError, local_vector
from fedsynth.common.discovery.protocol import read_request
from fedsynth.common.marginals import (
    SCORE_SENSITIVITY,
    cliques_from_json,
    exponential_mechanism_top_k,
    in_slot,
    local_scores,
    scores_on_grid,
    marginals,
    split_blocks,
)
from fedsynth.common.rounds import row_cap
from fedsynth.common.schema import Schema, SchemaError

if TYPE_CHECKING:
    from fedsynth.client.guard import Guard

log = logging.getLogger(__name__)

#: ``load(node_config, schema) -> raw table`` (every cell as read from the source).
TableLoader = Callable[[Mapping[str, Any], Schema], pd.DataFrame]


class RequestRefused(RuntimeError):
    """The organisation will not answer this request; the message is public (see :func:`refusal`)."""


#: The fixed code of a local table that does not conform to the job's schema.
TABLE_DOES_NOT_CONFORM = "table-does-not-conform"


def refusal(org: str, rule: str, public: str = "") -> str:
    """The one form of a refusal that may leave the organisation: its name, a rule, public facts."""
    return f"{org}: refused (rule {rule}{'; ' + public if public else ''}); nothing was sent"


class TableDoesNotConform(RequestRefused):
    """The local table breaks the schema: a fixed public code; ``details`` stay in the local log."""

    def __init__(self, org: str, schema: str, details: str) -> None:
        super().__init__(refusal(org, TABLE_DOES_NOT_CONFORM, f"schema '{schema}'"))
        self.details = details


def read_csv_from_node_config(node_config: Mapping[str, Any], schema: Schema) -> pd.DataFrame:
    """Deployment loader: the table at node config ``data-path``, read per the schema."""
    if "data-path" not in node_config:
        raise RequestRefused(refusal(str(node_config.get("org", "organisation")), "no-data-path", "node config has no 'data-path'"))
    return schema.read_csv(str(node_config["data-path"]))


@dataclass(frozen=True)
class LocalTable:
    """The organisation's rows, validated against the job's schema and integer-encoded."""

    schema: Schema
    codes: np.ndarray

    @classmethod
    def from_frame(cls, schema: Schema, frame: pd.DataFrame, org: str) -> "LocalTable":
        try:
            report = schema.validate(frame, strict=True)
        except SchemaError as exc:
            log.error("%s: local table does not conform to the job's schema:\n%s", org, exc)
            problems = sorted({f"{v.column} ({v.problem})" for v in exc.report.errors})
            raise TableDoesNotConform(org, schema.name, "; ".join(problems)) from None
        for note in report.infos:  # values mapped to ``other`` or clipped, as the schema states: said here only
            log.warning("%s: %s", org, note)
        return cls(schema, schema.encode(frame))

    def capped(self, cap: int | None, seed: int) -> "LocalTable":
        """At most ``cap`` rows, a uniform subsample fixed by ``seed`` (None: the whole table).

        The permutation depends only on the secret seed and the row count, so the same table
        gives the same subsample in every round and in every process of the organisation.
        """
        if cap is None or len(self.codes) <= cap:
            return self
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.codes))[:cap])
        return LocalTable(self.schema, self.codes[keep])

    @property
    def domain(self) -> dict[str, int]:
        return self.schema.domain()


class Organisation:
    """Answers the coordinator's requests from one local table.

    ``accepts``: the only schema the organisation takes part with (None: any the table
    conforms to). ``guard``: its own privacy guard (``client.guard``), consulted by the
    ClientApp before every contribution and at the job's pre-flight check. ``cap_seed``: the
    secret seed of the row-cap subsample (default: drawn from OS entropy once per instance; the
    daemon keeps one on disk so that every process of the organisation draws the same rows).
    ``columns``: the organisation's local configuration of its columns' names and kinds, and
    ``raw``: its table as text, both for schema discovery (``common.discovery``), before any
    schema exists; None: it takes no part in discovery.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[Schema], pd.DataFrame],
        *,
        accepts: Schema | None = None,
        guard: Guard | None = None,
        cap_seed: int | None = None,
        columns: Mapping[str, str] | None = None,
        raw: Callable[[], pd.DataFrame] | None = None,
    ) -> None:
        self.name = name
        self.columns = dict(columns) if columns is not None else None
        self._raw = raw
        self._load = load
        self.accepts = accepts
        self.guard = guard
        self.cap_seed = secrets.randbits(128) if cap_seed is None else cap_seed
        self._tables: dict[str, LocalTable] = {}

    def table(self, schema_json: str) -> LocalTable:
        """The local table for the job's schema (validated and encoded once per schema)."""
        if schema_json not in self._tables:
            schema = Schema.from_dict(json.loads(schema_json))
            self._refuse_other_schema(schema)
            self._tables[schema_json] = LocalTable.from_frame(schema, self._load(schema), self.name)
        return self._tables[schema_json]

    def _refuse_other_schema(self, schema: Schema) -> None:
        if self.accepts is None or schema.dumps("json") == self.accepts.dumps("json"):
            return
        ours, theirs = self.accepts.to_dict(), schema.to_dict()
        columns = [{c["name"]: c for c in d.pop("columns")} for d in (ours, theirs)]
        differ = [k for k in ours | theirs if ours.get(k) != theirs.get(k)]
        differ += [f"column {c}" for c in columns[0] | columns[1] if columns[0].get(c) != columns[1].get(c)]
        raise RequestRefused(
            refusal(
                self.name,
                "agreed-schema",
                f"it accepts only its agreed schema '{self.accepts.name}'; the job's schema '{schema.name}' "
                f"differs in: {', '.join(differ)}",
            )
        )

    def contribute(
        self, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """The un-noised vector a request asks for (the noise share is added by the caller).

        The table is capped at the request's public row cap (``common.rounds.row_cap``) first.
        """
        if request["task"] == DISCOVERY:
            return self._discovery(request)
        table = self.table(str(request["schema"])).capped(row_cap(request), self.cap_seed)
        task = request["task"]
        if task == "marginals":
            return self._marginals(table, request)
        if task == "select":
            return self._vote(table, request, arrays, rng)
        if task == "scores":
            return self._scores(table, request, arrays)
        if task == "gradients":
            return self._gradients(table, request, arrays, rng)
        raise RequestRefused(refusal(self.name, "task", f"unknown task {task!r}"))

    def _discovery(self, request: Mapping[str, Any]) -> np.ndarray:
        """Counts of a schema discovery round over the raw table, for columns whose name and kind
        match the local configuration (``common.discovery.protocol.local_vector``)."""
        if self.columns is None or self._raw is None:
            raise RequestRefused(refusal(self.name, "discovery", "it has no local column configuration"))
        columns, _, _ = read_request(request)
        differ = [name for name, kind in columns if self.columns.get(name) != kind]
        if differ:
            raise RequestRefused(refusal(self.name, "discovery-columns", f"its configuration differs on {', '.join(differ)}"))
        try:
            return local_vector(self._raw(), request)
        except DiscoveryError:
            log.exception("%s: discovery round failed on the local table", self.name)
            raise RequestRefused(refusal(self.name, TABLE_DOES_NOT_CONFORM, "discovery")) from None

    def _marginals(self, table: LocalTable, request: Mapping[str, Any]) -> np.ndarray:
        """Counts of the requested cliques; in this organisation's own block when the request
        keeps organisations apart (``slots``: the organisations' names, in block order)."""
        counts = marginals(table.codes, list(table.domain), table.domain, cliques_from_json(str(request["cliques"])))
        if "slots" not in request:
            return counts
        slots = json.loads(str(request["slots"]))
        if self.name not in slots:
            raise RequestRefused(refusal(self.name, "slots", "the request's organisations do not include it"))
        return in_slot(counts, slots, self.name)

    def _scores(self, table: LocalTable, request: Mapping[str, Any], arrays: list[np.ndarray]) -> np.ndarray:
        """Each candidate's local L1 error against the model's view sent to this organisation,
        on the integer score grid (summed with Skellam noise: ``common.marginals.local_scores``)."""
        candidates = cliques_from_json(str(request["cliques"]))
        (view,) = arrays
        local = split_blocks(
            marginals(table.codes, list(table.domain), table.domain, candidates), table.domain, candidates
        )
        model = split_blocks(view, table.domain, candidates)
        return scores_on_grid(local_scores(local, model, np.zeros(len(candidates))))

    def _vote(
        self, table: LocalTable, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """k-hot vote over the candidates, drawn by the exponential mechanism on local rows."""
        candidates = cliques_from_json(str(request["cliques"]))
        model_marginals, penalties = arrays
        local = split_blocks(
            marginals(table.codes, list(table.domain), table.domain, candidates), table.domain, candidates
        )
        model = split_blocks(model_marginals, table.domain, candidates)
        scores = local_scores(local, model, penalties)
        picks = exponential_mechanism_top_k(
            rng, scores, float(request["epsilon"]), SCORE_SENSITIVITY, int(request["k"]), candidates
        )
        vote = np.zeros(len(candidates), dtype=np.int64)
        vote[picks] = 1
        return vote

    def _gradients(
        self, table: LocalTable, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """Clipped, integer-rounded per-example gradient sum of a Poisson batch (``common.teacher``)."""
        # Imported here: a deployed SuperNode starts a fresh ClientApp process per message, and
        # torch + Opacus take seconds to import that the other rounds do not need.
        from fedsynth.common.teacher import Features, TeacherSettings, integer_gradient_sum, weights_for

        if table.schema.label is None:
            raise RequestRefused(refusal(self.name, "no-label", f"schema '{table.schema.name}' has no label"))
        settings = TeacherSettings.from_config(request)
        features = Features(table.domain, table.schema.label)
        model = weights_for(settings, features, arrays)
        return integer_gradient_sum(model, features.x(table.codes), features.y(table.codes), settings, rng)

    def check(self, request: Mapping[str, Any]) -> None:
        """Pre-flight: the job's schema and plan are acceptable (raises ``RequestRefused``)."""
        self.table(str(request["schema"]))
        if self.guard is not None:
            self.guard.admit_job(request)

