"""One organisation's side of a fedsynth job, as plain functions over its own table.

The ClientApp (``fedsynth.client.app``) is a thin Flower adapter over :class:`Organisation`;
everything here runs and is tested without Flower. What leaves this module is always a
vector for the secure noisy sum (counts, a selection vote, or a clipped gradient sum), never rows, row counts or
a validation report with values: problems with the table are logged here in full and
reported to the coordinator only by column and kind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsynth.common.marginals import (
    SCORE_SENSITIVITY,
    cliques_from_json,
    exponential_mechanism_top_k,
    local_scores,
    marginals,
    split_blocks,
)
from fedsynth.common.schema import Schema, SchemaError

if TYPE_CHECKING:
    from fedsynth.client.guard import Guard

log = logging.getLogger(__name__)

#: ``load(node_config, schema) -> raw table`` (every cell as read from the source).
TableLoader = Callable[[Mapping[str, Any], Schema], pd.DataFrame]


class RequestRefused(RuntimeError):
    """The organisation will not answer this request (the message says why)."""


def read_csv_from_node_config(node_config: Mapping[str, Any], schema: Schema) -> pd.DataFrame:
    """Deployment loader: the table at node config ``data-path``, read per the schema."""
    if "data-path" not in node_config:
        raise RequestRefused("node config has no 'data-path' pointing at the local table")
    return schema.read_csv(str(node_config["data-path"]))


@dataclass(frozen=True)
class LocalTable:
    """The organisation's rows, validated against the job's schema and integer-encoded."""

    schema: Schema
    codes: np.ndarray

    @classmethod
    def from_frame(cls, schema: Schema, frame: pd.DataFrame, org: str) -> "LocalTable":
        try:
            schema.validate(frame, strict=True)
        except SchemaError as exc:
            log.error("%s: local table does not conform to the job's schema:\n%s", org, exc)
            problems = sorted({f"{v.column} ({v.problem})" for v in exc.report.errors})
            raise RequestRefused(
                f"{org}: local table does not conform to schema '{schema.name}': "
                f"{'; '.join(problems)} (details in {org}'s own log)"
            ) from None
        return cls(schema, schema.encode(frame))

    @property
    def domain(self) -> dict[str, int]:
        return self.schema.domain()


class Organisation:
    """Answers the coordinator's requests from one local table.

    ``accepts``: the only schema the organisation takes part with (None: any the table
    conforms to). ``guard``: its own privacy guard (``client.guard``), consulted by the
    ClientApp before every contribution and at the job's pre-flight check.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[Schema], pd.DataFrame],
        *,
        accepts: Schema | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self.accepts = accepts
        self.guard = guard
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
            f"{self.name} accepts only its agreed schema '{self.accepts.name}'; the job's schema "
            f"'{schema.name}' differs in: {', '.join(differ)}"
        )

    def contribute(
        self, request: Mapping[str, Any], arrays: list[np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """The un-noised vector a request asks for (the noise share is added by the caller)."""
        table = self.table(str(request["schema"]))
        task = request["task"]
        if task == "marginals":
            return marginals(table.codes, list(table.domain), table.domain, cliques_from_json(str(request["cliques"])))
        if task == "select":
            return self._vote(table, request, arrays, rng)
        if task == "gradients":
            return self._gradients(table, request, arrays, rng)
        raise RequestRefused(f"{self.name}: unknown task {task!r}")

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
            raise RequestRefused(f"{self.name}: schema '{table.schema.name}' has no label to train a teacher on")
        settings = TeacherSettings.from_config(request)
        features = Features(table.domain, table.schema.label)
        model = weights_for(settings, features, arrays)
        return integer_gradient_sum(model, features.x(table.codes), features.y(table.codes), settings, rng)

    def check(self, request: Mapping[str, Any]) -> None:
        """Pre-flight: the job's schema and plan are acceptable (raises ``RequestRefused``)."""
        self.table(str(request["schema"]))
        if self.guard is not None:
            self.guard.admit_job(request)

