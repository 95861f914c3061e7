"""One organisation's side of a fedsynth job, as plain functions over its own table.

The ClientApp (``fedsynth.client.app``) is a thin Flower adapter over :class:`Organisation`;
everything here runs and is tested without Flower. What leaves this module is always a
vector for the secure noisy sum (counts, a selection vote, or a clipped gradient sum), never rows, row counts or
a validation report: a refusal that reaches the coordinator is a fixed code naming a rule and
public parameters only (:func:`refusal`).

The agreed schema: every organisation holds the one schema it takes part with (``accepts``,
configured locally and pinned) and refuses any other, except one discovered from it by a paid
schema discovery (``common.discovery.discovered_from``: same columns, kinds and label, every
unlisted value mapped to ``other`` or clipped, so no row's fate depends on anything but the row);
the comparison reads only the request and the agreed schema. The table is read under the agreed schema only, and no answer depends on
whether it conforms: rows that break the schema are left out of every count and reported in
the organisation's own log (:meth:`LocalTable.from_frame`), and a table that cannot be read at all
counts as a table without rows. Whether a row is left out depends on that row alone, so two
neighbouring tables give local tables that are still neighbours (or equal) and every round keeps its
sensitivity; the pre-flight ``check`` reads nothing of the table, so its answer is the same
whatever the table holds. The daemon checks the table strictly before it starts
(``client.daemon.preflight``): an organisation learns of a problem before it joins.

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

from ..common.discovery import TASK as DISCOVERY
from ..common.discovery import discovered_from, local_vector
from ..common.discovery.protocol import read_request, schema_kinds
from ..common.marginals import (
    cliques_from_json,
    in_slot,
    Layout,
    layout,
    local_errors,
    scores_on_grid,
    marginals,
    split_blocks,
)
from ..common.rounds import row_cap
from ..common.schema import Schema, TableFileError
from ..common.vote import VOTE_SENSITIVITY, exponential_top_k, vote_penalties

if TYPE_CHECKING:
    from .guard import Guard
    from ..common.identity import Identity

log = logging.getLogger(__name__)

#: ``load(node_config, schema) -> raw table`` (every cell as read from the source).
TableLoader = Callable[[Mapping[str, Any], Schema], pd.DataFrame]


class RequestRefused(RuntimeError):
    """The organisation will not answer this request; the message is public (see :func:`refusal`)."""


def layouts(request: Mapping[str, Any], domain: Mapping[str, int]) -> list[Layout]:
    """Each candidate's layout for ``local_errors``: its error is taken given the first column of
    the request's public ``given`` list (the columns on which organisations differ, most first)
    that it holds."""
    given = json.loads(str(request.get("given", "[]")))
    return [layout(clique, domain, given) for clique in cliques_from_json(str(request["cliques"]))]


def refusal(org: str, rule: str, public: str = "") -> str:
    """The one form of a refusal that may leave the organisation: its name, a rule, public facts."""
    return f"{org}: refused (rule {rule}{'; ' + public if public else ''}); nothing was sent"


class TableUnreadable(RuntimeError):
    """The table cannot be read; the message names the cause and stays in the organisation's log."""


def read_csv_from_node_config(node_config: Mapping[str, Any], schema: Schema) -> pd.DataFrame:
    """Deployment loader: the table at node config ``data-path``, read per the schema."""
    if "data-path" not in node_config:
        raise TableUnreadable("node config has no 'data-path'")
    try:
        return schema.read_csv(str(node_config["data-path"]))
    except TableFileError as exc:
        raise TableUnreadable(str(exc)) from None


@dataclass(frozen=True)
class LocalTable:
    """The organisation's rows that conform to its agreed schema, integer-encoded: ``codes`` has
    the schema's columns, then each fine grid's (``Schema.measured_domain``)."""

    schema: Schema
    codes: np.ndarray

    @classmethod
    def from_frame(cls, schema: Schema, frame: pd.DataFrame, org: str) -> "LocalTable":
        """The rows of ``frame`` that conform to ``schema``, encoded; the others are left out.

        Every problem goes to the organisation's own log in full (the validation report) and
        nowhere else. A row is kept or left out on its own content (``Schema.conforming_rows``),
        so removing a row from the table removes at most that row here.
        """
        keep = schema.conforming_rows(frame)
        report = schema.validate(frame)
        if not keep.all():
            log.error(
                "%s: %d of %d rows of the local table do not conform to schema '%s' and are left out of "
                "every count (nothing about them is sent):\n%s",
                org, int((~keep).sum()), len(keep), schema.name, report,
            )
        for note in report.infos:  # values mapped to ``other`` or clipped, as the schema states: said here only
            log.warning("%s: %s", org, note)
        if not keep.any():
            return cls(schema, np.empty((0, len(schema.measured_domain())), dtype=np.int64))
        return cls(schema, schema.encode(frame[keep], fine=True))

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
        """The columns of ``codes``: the schema's, then its fine grids."""
        return self.schema.measured_domain()


class Organisation:
    """Answers the coordinator's requests from one local table.

    ``accepts``: the agreed schema, the only one the organisation takes part with (configured
    locally; a request under any other is refused). ``load(schema)`` reads the raw table; it
    raises :class:`TableUnreadable` when it cannot. ``guard``: its own privacy guard
    (``client.guard``), consulted by the ClientApp before every contribution and at the job's
    pre-flight check. ``identity``: its signing key and the federation's roster
    (``common.identity``), with which it takes part in authenticated SecAgg+ (``client.secagg``).
    ``cap_seed``: the secret seed of the row-cap subsample (default: drawn from OS entropy once
    per instance; the daemon keeps one on disk so that every process of the organisation draws
    the same rows). ``tables``: tables already validated from the same rows, by the JSON of the
    schema they were validated under (a warm daemon process's, ``client.app.warm_tables``).
    Schema discovery (``common.discovery``): its rounds count the raw table (every cell as text)
    under the agreed schema's column names and kinds (:attr:`columns`: configuration, not data),
    and a schema discovered from the agreed one (``common.discovery.discovered_from``: the same
    columns, kinds and label, every unlisted value mapped to ``other`` or clipped) is accepted for
    the job's later phases.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[Schema], pd.DataFrame],
        *,
        accepts: Schema,
        guard: Guard | None = None,
        identity: Identity | None = None,
        cap_seed: int | None = None,
        tables: Mapping[str, LocalTable] | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self.accepts = accepts
        self._agreed = accepts.dumps("json")
        self.guard = guard
        self.identity = identity
        self.cap_seed = secrets.randbits(128) if cap_seed is None else cap_seed
        self._tables: dict[str, LocalTable] = dict(tables or {})

    @property
    def columns(self) -> dict[str, str]:
        """The local column configuration discovery counts under: the agreed schema's column names
        and discovery kinds (public, configured locally; never read from the table)."""
        return schema_kinds(self.accepts.columns)

    @property
    def validated_tables(self) -> Mapping[str, LocalTable]:
        """The tables validated so far, by the JSON of their schema."""
        return self._tables

    def table(self, schema_json: str) -> LocalTable:
        """The local table, for a request under the agreed schema or one discovered from it (any
        other is refused; ``common.discovery.discovered_from``)."""
        schema = self._accepted_schema(schema_json)
        key = schema.dumps("json")
        if key not in self._tables:
            self._tables[key] = LocalTable.from_frame(schema, self._read(), self.name)
        return self._tables[key]

    def _read(self) -> pd.DataFrame:
        """The raw table; one that cannot be read counts as one without rows (logged here only)."""
        try:
            return self._load(self.accepts)
        except TableUnreadable as exc:
            log.error("%s: cannot read the local table (it counts as empty; nothing about it is sent): %s", self.name, exc)
            return pd.DataFrame(columns=self.accepts.column_names, dtype=str)

    def _accepted_schema(self, schema_json: str) -> Schema:
        """The request's schema when it is the agreed one, or one discovered from it."""
        if schema_json == self._agreed:
            return self.accepts
        schema = Schema.from_dict(json.loads(schema_json))
        if schema.dumps("json") == self._agreed:
            return self.accepts
        if discovered_from(self.accepts, schema):
            return schema
        raise self._other_schema(schema)

    def _other_schema(self, schema: Schema) -> RequestRefused:
        ours, theirs = self.accepts.to_dict(), schema.to_dict()
        columns = [{c["name"]: c for c in d.pop("columns")} for d in (ours, theirs)]
        differ = [k for k in ours | theirs if ours.get(k) != theirs.get(k)]
        differ += [f"column {c}" for c in columns[0] | columns[1] if columns[0].get(c) != columns[1].get(c)]
        return RequestRefused(
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
        match the local configuration (``common.discovery.protocol.local_vector``). The refusal
        reads only the request and the configuration; a column the table lacks counts as empty."""
        columns, _, _ = read_request(request)
        differ = [name for name, kind in columns if self.columns.get(name) != kind]
        if differ:
            raise RequestRefused(refusal(self.name, "discovery-columns", f"its configuration differs on {', '.join(differ)}"))
        return local_vector(self._read(), request, lambda note: log.error("%s: %s", self.name, note))

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
        on the integer score grid (summed with Skellam noise: ``common.marginals.local_errors``)."""
        candidates = cliques_from_json(str(request["cliques"]))
        (view,) = arrays
        local = split_blocks(
            marginals(table.codes, list(table.domain), table.domain, candidates), table.domain, candidates
        )
        return scores_on_grid(local_errors(local, split_blocks(view, table.domain, candidates), layouts(request, table.domain)))

    def _vote(
        self, table: LocalTable, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """k-hot vote over the candidates, drawn by the exact exponential mechanism on local rows
        (``common.vote``: local errors minus the penalties this organisation computes itself)."""
        candidates = cliques_from_json(str(request["cliques"]))
        (view,) = arrays
        local = split_blocks(
            marginals(table.codes, list(table.domain), table.domain, candidates), table.domain, candidates
        )
        errors = local_errors(local, split_blocks(view, table.domain, candidates), layouts(request, table.domain))
        scores = errors - vote_penalties(float(request["penalty_std"]), candidates, table.domain)
        picks = exponential_top_k(
            rng, scores, float(request["epsilon"]), VOTE_SENSITIVITY, int(request["k"]), candidates
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
        from ..common.teacher import Features, TeacherSettings, integer_gradient_sum, weights_for

        if table.schema.label is None:
            raise RequestRefused(refusal(self.name, "no-label", f"schema '{table.schema.name}' has no label"))
        try:
            settings = TeacherSettings.from_config(request)
        except ValueError as exc:  # the request's own values, never a row
            raise RequestRefused(refusal(self.name, "teacher-settings", str(exc))) from None
        features = Features(table.schema.domain(), table.schema.label)
        model = weights_for(settings, features, arrays)
        return integer_gradient_sum(model, features.x(table.codes), features.y(table.codes), settings, rng)

    def check(self, request: Mapping[str, Any]) -> None:
        """Pre-flight: the job's schema is the agreed one and the guard accepts the plan (raises
        ``RequestRefused``). Reads nothing of the table: the answer is the same whatever it holds."""
        self._accepted_schema(str(request["schema"]))
        if self.guard is not None:
            self.guard.admit_job(request)
