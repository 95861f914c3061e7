"""The release directory: synthetic rows and the privacy statement that covers them.

A release is written into the job's staging directory (which already holds the fsynced
ledger) and renamed into place only when every file is complete, so a reader never sees a
partial release. ``privacy.json`` is computed from the ledger alone.

:class:`Release` loads a release folder and samples any number of further rows from it: it
refits the marginal model to the release's own noisy measurements (``measurements.json``)
under its public schema (``schema.yaml``, the rules' structural zeros included), samples rule-
abiding rows and labels them with the released student (``labeller.pt``). ``sample(n, where=...)``
(``fedsynth sample --where COL=VALUE``) draws from the same model conditioned on some columns'
values (``MarginalModel.conditioned``: the evidence as ``mbi`` constraints, so message passing
carries it to every column). All of it reads only what the release already published, so it is
post-processing: no round, no ledger entry, no budget, however many rows are drawn.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from dp_accounting import ComposedDpEvent
from torch import nn

from ..common.accounting import CombinedAccountant, Ledger
from ..common.generator import MarginalModel, Measurement
from ..common.marginals import cells
from ..common.noise import TAIL_PROBABILITY
from ..common.schema import Column, Schema, SchemaError, load_schema
from ..common.secure_prg import is_hardened
from ..common.student import relabel
from ..common.teacher import Features, TeacherSettings, build_model
from .generator import Relabel, refit, sample_rows

UNIT_OF_PRIVACY = (
    "one record (row) added to or removed from any one organisation's table; "
    "neighbouring datasets differ in that row only"
)
LIBRARIES = ("fedsynth", "flwr", "dp-accounting", "mbi", "numpy", "pandas", "torch", "opacus", "jax")


#: The files every release holds that :meth:`Release.load` needs.
REQUIRED_FILES = ("privacy.json", "measurements.json", "schema.yaml")


class ReleaseError(ValueError):
    """A release folder that cannot be read: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Release:
    """A release folder: its privacy statement, and more rows from its model for free.

    ``Release.load(path)`` reads and checks one; ``sample(n, seed=...)`` refits the model to the
    release's noisy measurements (once, kept in memory) and draws ``n`` rows that keep the schema's
    rules, labelled by the release's student when it has one. Post-processing: no budget is spent.
    """

    path: Path
    rows: int
    statement: dict
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | Path) -> Release:
        """Read the release in ``path``; :class:`ReleaseError` names a missing or corrupt file."""
        path = Path(path)
        if not path.is_dir():
            raise ReleaseError(f"{path}: no release folder there (a release is the folder `fedsynth simulate --out` wrote)")
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise ReleaseError(f"{path}: missing {', '.join(missing)}; a release folder holds {', '.join(REQUIRED_FILES)}")
        statement = _read_json(path / "privacy.json", dict)
        for key in ("epsilon", "delta", "organisations", "plan", "rows"):
            if key not in statement:
                raise ReleaseError(f"{path / 'privacy.json'}: no '{key}'; the file is not a fedsynth privacy statement")
        shapes = {"rows": int, "organisations": list, "plan": dict}
        wrong = [key for key, kind in shapes.items() if not isinstance(statement[key], kind)]
        if wrong:
            raise ReleaseError(f"{path / 'privacy.json'}: '{wrong[0]}' is not a {shapes[wrong[0]].__name__}; the file is damaged")
        release = cls(path, statement["rows"], statement)
        release._cache["schema"] = _read_schema(path / "schema.yaml")
        release._cache["measurements"] = _read_measurements(path / "measurements.json", release)
        return release

    @property
    def schema(self) -> Schema:
        """The job's public schema (``schema.yaml``)."""
        if "schema" not in self._cache:
            self._cache["schema"] = _read_schema(self.path / "schema.yaml")
        return self._cache["schema"]

    @property
    def measurements(self) -> list[Measurement]:
        """Every noisy marginal the job measured (``measurements.json``)."""
        if "measurements" not in self._cache:
            self._cache["measurements"] = _read_measurements(self.path / "measurements.json", self)
        return self._cache["measurements"]

    @property
    def organisations(self) -> int:
        """How many organisations took part (``privacy.json``)."""
        return len(self.statement["organisations"])

    @property
    def labels(self) -> str:
        """How the release's label column was made (``sample``, ``argmax`` or ``generator``)."""
        return str(self.statement["plan"].get("labels", "generator"))

    @property
    def privacy(self) -> dict:
        """The privacy statement in brief; ``statement`` (``privacy.json``) has everything."""
        return {
            "epsilon": self.statement["epsilon"],
            "delta": self.statement["delta"],
            "accountant": self.statement.get("accountant"),
            "organisations": self.organisations,
            "per_phase": {phase: spent["epsilon"] for phase, spent in self.statement.get("per_phase", {}).items()},
            "unit_of_privacy": self.statement.get("unit_of_privacy", UNIT_OF_PRIVACY),
        }

    @property
    def labeller(self) -> dict[str, nn.Module] | None:
        """The released ``teacher`` and ``student`` (``labeller.pt``), or None without one."""
        if "labeller" not in self._cache:
            self._cache["labeller"] = _read_labeller(self) if (self.path / "labeller.pt").is_file() else None
        return self._cache["labeller"]

    def model(self) -> MarginalModel:
        """The marginal model refitted to the release's noisy measurements (once; then from memory).

        As many mirror-descent iterations as the job ran in all, and fine grids denoised as the plan
        says, from the plan (deterministic): when the job's model had the organisation column, this
        is the very model the release's rows were drawn from (``server.generator.release_model``).
        """
        if "model" not in self._cache:
            settings = {"fit_iters": 300, "rounds": 0, "final_iters": 1500, **self.statement["plan"].get("generator", {})}
            self._cache["model"] = refit(self.schema, self.measurements, settings)
        return self._cache["model"]

    def sample(self, n: int, seed: int = 0, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """``n`` new rows that keep the schema's rules, labelled as the release's were.

        ``where`` (column -> value, as the column's values are written: ``{"sex": "Female"}``)
        samples from the model conditioned on those values (``MarginalModel.conditioned``); a
        numeric column's value is set on every row of its bin. A label drawn by the student is
        conditioned on by keeping the rows the student gives that label. The same ``seed`` gives
        the same rows. Post-processing of the release: no privacy cost.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"rows to sample must be a whole number of at least 1, got {n!r}")
        rng = np.random.default_rng(seed)
        if not where:
            return sample_rows(self.model(), self.schema, int(n), rng, self._relabel())
        codes, values = evidence(self.schema, where)
        relabel, label = self._relabel(), self.schema.label
        on_model = {column: code for column, code in codes.items() if relabel is None or column != label}
        try:
            model = self.model().conditioned(on_model) if on_model else self.model()
        except ValueError:
            raise ReleaseError(f"where {_where_text(where)}: the release's model gives no mass to such rows; "
                               "nothing to sample") from None
        if relabel is not None and label in codes:
            relabel = _labelled_as(relabel, self.schema.column_names.index(label), codes[label])
        return sample_rows(model, self.schema, int(n), rng, relabel, fixed=values)

    def label(self, frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
        """``frame`` (the schema's columns; the label may be absent) with the label column drawn
        by the release's student, in the release's labels mode, typed as :meth:`sample` types it.

        The label is not one of the student's inputs, so a frame without it is encoded with a
        placeholder label (its first code) under the rules that do not name the label.
        """
        if self.labeller is None:
            raise ReleaseError(f"{self.path}: no labeller.pt (the job ran with labels 'generator'); nothing to label with")
        schema, label = self.schema, str(self.schema.label)
        if label in frame.columns:
            codes = schema.encode(frame[schema.column_names])
        else:
            placeholder = frame.assign(**{label: _first_value(schema, label, frame.index)})
            codes = _without_label_rules(schema).encode(placeholder[schema.column_names])
        relabelled = self._relabel()(codes, np.random.default_rng(seed))
        labels = schema.decode(relabelled, np.random.default_rng(seed))[label]
        return frame.assign(**{label: pd.Series(labels.array, index=frame.index)})

    def _relabel(self) -> Relabel | None:
        if self.labeller is None or self.labels == "generator":
            return None
        student, features, mode = self.labeller["student"], self.features, self.labels

        def draw_labels(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return relabel(codes, features, student, mode, rng)

        return draw_labels

    @property
    def features(self) -> Features:
        """The labeller's inputs: the schema's columns, one-hot, but the label."""
        return Features(self.schema.domain(), str(self.schema.label))


def evidence(schema: Schema, where: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """(column -> code, column -> typed value) of conditions given as the columns' written values.

    Each value is read as the schema reads a data cell (its ``na_values`` mean missing); an
    unknown column or a value outside the column's domain raises :class:`ReleaseError` naming it.
    """
    codes, values = {}, {}
    for name, value in where.items():
        if name not in schema.column_names:
            raise ReleaseError(f"where {name}={value}: the release has no column {name!r}; its columns are "
                               f"{', '.join(schema.column_names)}")
        one = replace(schema, columns=(schema[name],), label=None, rules=())
        cell = pd.DataFrame({name: pd.Series([value], dtype=object)})
        if not one.validate(cell).ok:
            raise ReleaseError(f"where {name}={value}: {value!r} is not a value of column {name!r}, which takes "
                               f"{_domain_text(schema[name], schema.na_values)}")
        codes[name] = int(one.encode(cell)[0, 0])
        values[name] = one.conform(cell)[name].iloc[0]
    return codes, values


def _domain_text(column: Column, na_values: Sequence[str]) -> str:
    """The values a column takes, in a few words (for an error message)."""
    if column.categories is not None:
        more = f", ... ({len(column.categories)} in all)" if len(column.categories) > 20 else ""
        text = f"one of {', '.join(column.categories[:20])}{more}"
    elif column.kind == "boolean":
        text = "true or false (also 1/0, yes/no)"
    elif column.codes is not None:
        text = f"one of its {len(column.codes)} listed codes from {column.lower} to {column.upper}"
    else:
        what = "a whole number" if column.kind == "integer" else f"a {column.kind} value"
        text = f"{what} from {column.lower} to {column.upper}"
    if column.missing and na_values:
        text += f", or {na_values[0]!r} (missing)"
    return text


def _where_text(where: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in where.items())


def _labelled_as(relabel: Relabel, position: int, code: int) -> Relabel:
    """``relabel`` keeping only the rows whose drawn label has ``code`` (conditioning on the label)."""

    def draw_labels(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        labelled = relabel(codes, rng)
        return labelled[labelled[:, position] == code]

    return draw_labels


def _without_label_rules(schema: Schema) -> Schema:
    """``schema`` less the rules that name its label: a placeholder label must not break one."""
    return replace(schema, rules=tuple(rule for rule in schema.rules if schema.label not in rule.columns))


def _first_value(schema: Schema, name: str, index: pd.Index) -> pd.Series:
    """Column ``name``'s value of code 0 on every row of ``index``, typed by the schema."""
    first = schema.decode(np.zeros((1, len(schema.columns)), dtype=np.int64), 0)[name]
    return pd.Series(first.array.take(np.zeros(len(index), dtype=np.int64)), index=index)


def _read_json(path: Path, kind: type) -> object:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{path}: cannot be read as JSON ({exc}); the release is damaged") from None
    if not isinstance(data, kind):
        raise ReleaseError(f"{path}: expected a JSON {'object' if kind is dict else 'list'}, got {type(data).__name__}")
    return data


def _read_schema(path: Path) -> Schema:
    try:
        return load_schema(path)
    except SchemaError as exc:
        raise ReleaseError(f"{path}: not a valid schema ({exc})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReleaseError(f"{path}: cannot be read ({exc}); the release is damaged") from None


def _read_measurements(path: Path, release: Release) -> list[Measurement]:
    """The noisy marginals, each checked against the schema's columns and fine grids."""
    domain = release.schema.measured_domain()
    out = []
    for k, entry in enumerate(_read_json(path, list)):
        try:
            clique, sigma = tuple(entry["clique"]), float(entry["sigma"])
            counts = np.asarray(entry["counts"], dtype=np.float64)
        except (TypeError, KeyError, ValueError) as exc:
            raise ReleaseError(f"{path}: measurement #{k + 1} is not {{clique, sigma, counts}} ({exc!r})") from None
        unknown = [c for c in clique if c not in domain]
        if unknown:
            raise ReleaseError(f"{path}: measurement #{k + 1} names {', '.join(map(repr, unknown))}, not in schema.yaml")
        if counts.ndim != 1 or counts.size != cells(domain, clique) or not sigma > 0:
            raise ReleaseError(
                f"{path}: measurement #{k + 1} ({' x '.join(clique)}) has {counts.size} counts and sigma {sigma}; "
                f"expected {cells(domain, clique)} counts (schema.yaml) and sigma > 0"
            )
        out.append(Measurement(clique, counts, sigma))
    if not out:
        raise ReleaseError(f"{path}: holds no measurement; nothing to fit a model to")
    return out


def _read_labeller(release: Release) -> dict[str, nn.Module]:
    try:
        models = load_labeller(release.path, release.features)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ReleaseError(f"{release.path / 'labeller.pt'}: cannot be loaded ({exc})") from None
    if "student" not in models:
        raise ReleaseError(f"{release.path / 'labeller.pt'}: holds no student (only {', '.join(models)})")
    return models


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def epsilon_of(entries: Iterable, delta: float) -> dict:
    """Composed epsilon of some ledger entries, as the combined accountant reports it."""
    events = [e.dp_event() for e in entries]
    eps = CombinedAccountant().compose(ComposedDpEvent(events)).epsilon(delta)
    return {"epsilon": eps.epsilon, "method": eps.method, "rdp": eps.rdp, "pld": eps.pld}


def secure_aggregation() -> str:
    """What masked the organisations' vectors, read from the SecAgg+ code this process runs."""
    workflow = import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    if is_hardened(workflow):
        return (
            "Flower SecAgg+ made the malicious-coordinator protocol (fedsynth.client.secagg: keys signed under "
            "a roster every organisation pins, a public neighbour order, a consistency stage before any share "
            "is revealed), with masks from a ChaCha20 stream keyed by the whole shared secret "
            "(fedsynth.common.secure_prg), not Flower 1.41's 32-bit-seeded generator (upstream issue #7522)"
        )
    return "Flower SecAgg+ with Flower's own mask generator (32-bit seeds, upstream issue #7522)"


def contribution_bounding(plan: Mapping) -> str:
    """How each organisation bounded its rows (``client.organisation.LocalTable.capped``)."""
    cap = plan.get("max_rows_per_organisation")
    if cap is None:
        return "no row cap in this job's plan"
    return (
        f"each organisation capped its table at {cap:,} rows by uniform subsampling (a secret local seed) "
        "before computing any count; counts are accounted at L1 2 / L2 sqrt(2), the change one added or "
        "removed row can make to a capped table (a row replaced once the cap binds)"
    )


def tail_delta(entries: Iterable, organisations: int, epsilon: float) -> float:
    """What the noise-tail check adds to delta (``common.secure_sum``, step 2).

    Each organisation aborts a round only if one of its ``dim`` noise draws passes the tail
    bound, with probability at most ``dim * TAIL_PROBABILITY``; over every noised round of the
    job and every organisation the job with aborts is within total variation ``tau`` of one
    without, so it is ``(epsilon, delta + (1 + e^epsilon) * tau)``-DP.
    """
    noised = [e for e in entries if e.metadata.get("mu", 0) > 0]
    tau = sum(organisations * int(e.metadata.get("dim", 0)) * TAIL_PROBABILITY for e in noised)
    return (1.0 + math.exp(min(epsilon, 700.0))) * tau


def tolerated_colluders(t: int, n: int) -> int:
    """Organisations that may collude with a coordinator, even one that lies, while the planned
    epsilon still holds: ``n - t`` when ``3t > 2n``, else none.

    Every round's noise is sized so that the ``2t - n`` honest shares left in a survivor set of
    ``t`` with ``n - t`` colluders carry the planned ``mu`` (``common.secure_sum``); every
    organisation reveals shares only for a survivor set signed by ``t`` of them, and with
    ``3t > 2n`` no ``n - t`` colluders get a second set signed or a Shamir threshold of an honest
    organisation's secrets (``client.secagg``, ``common.secagg_graph``).
    """
    return n - t if 3 * t > 2 * n else 0


def trust(entries: Sequence, plan: Mapping, organisations: Sequence[str]) -> dict:
    """The trust section of ``privacy.json``: who must behave for which epsilon (docs/trust-model.md)."""
    t, n = int(plan["min_survivors"]), len(organisations)
    k = tolerated_colluders(t, n)
    return {
        "coordinator": "the epsilon above is the coordinator's account of the noise that actually reached each "
        "sum; the planned epsilon below holds even if the coordinator lies",
        "min_honest_survivors_t": t,
        "organisations_n": n,
        "shamir_threshold": f"each organisation shares its mask secrets under SecAgg+ keys signed with its own "
        f"key (roster pinned by every organisation) and reveals shares only for a survivor set that t={t} of "
        f"n={n} organisations signed; {'3t > 2n' if 3 * t > 2 * n else '3t <= 2n: colluders could get two sets signed'}",
        "noise": "each organisation adds Skellam noise sized so that any t of them carry the planned "
        "noise; epsilon above counts the noise of the organisations that actually contributed to each round",
        "tolerated_colluding_organisations": k,
        "if_up_to_tolerated_organisations_collude_with_the_coordinator": "epsilon is at most "
        f"{plan['epsilon_planned']:.4f}, the planned epsilon, even if the coordinator lies (every sum it can "
        "unmask holds at least t honest shares); each organisation's own guard ledger records it",
        "beyond_that": "not covered by this statement; an organisation whose guard runs in 'own-share' mode "
        "accounts its own share mu/t only, which holds whatever every other party does (docs/trust-model.md)",
        "secure_aggregation": secure_aggregation(),
        **secagg_graph(plan),
    }


def secagg_graph(plan: Mapping) -> dict:
    """The trust section's account of the SecAgg+ graph (``common.secagg_graph``), if planned."""
    graph = plan.get("secagg")
    if graph is None:
        return {}
    if graph["neighbourhood_size_k"] == graph["organisations"]:
        how = "complete: every organisation Shamir-shares its mask secrets with every other one"
    else:
        how = (
            f"sparse: each organisation shares its mask secrets with the {graph['neighbourhood_size_k'] - 1} "
            f"organisations next to it in a public order (a hash of the round's signed keys, which every "
            f"organisation recomputes), at Shamir threshold {graph['shamir_threshold_per_neighbourhood']}; no "
            f"placement of {graph['chosen_for_dropouts']} dead and {graph['chosen_for_colluders']} colluding "
            "organisations can isolate a partial sum or gather a threshold of one organisation's secrets"
        )
    return {"secagg_graph": {"kind": how, **graph}}


def privacy_statement(ledger: Ledger, first_entry: int, plan: dict, organisations: Iterable[str]) -> dict:
    """Everything a data steward needs to sign off the release, recomputed from the ledger.

    The job's events are ``ledger.entries[first_entry:]``; earlier entries belong to earlier
    jobs on the same federation and count towards ``federation_epsilon``. ``plan`` holds the
    job's public plan: ``min_survivors`` (t), ``epsilon_planned`` (the composed epsilon at
    exactly t survivors) and the noise parameters of each phase.
    """
    entries = ledger.entries[first_entry:]
    total = epsilon_of(entries, ledger.delta)
    phases = sorted({e.phase for e in entries})
    organisations = sorted(organisations)
    tail = tail_delta(entries, len(organisations), total["epsilon"])
    return {
        "epsilon": total["epsilon"],
        "delta": ledger.delta + tail,
        "delta_accountant": ledger.delta,
        "delta_noise_tail": tail,
        "accountant": total["method"],
        "epsilon_rdp": total["rdp"],
        "epsilon_pld": total["pld"],
        "federation_epsilon": ledger.epsilon().epsilon,
        "federation_cap": ledger.cap_epsilon,
        "unit_of_privacy": UNIT_OF_PRIVACY,
        "contribution_bounding": contribution_bounding(plan),
        "per_phase": {p: epsilon_of([e for e in entries if e.phase == p], ledger.delta) for p in phases},
        "events": [
            {"seq": e.seq, "phase": e.phase, "mechanism": e.mechanism, "event": e.event, **e.metadata}
            for e in entries
        ],
        "survivors_per_round": {str(e.metadata["round"]): e.metadata["survivors"] for e in entries},
        "organisations": sorted(organisations),
        "trust": trust(entries, plan, organisations),
        "plan": plan,
        "libraries": library_versions(),
        "ledger": "ledger.jsonl (hash-chained; this job's events are those from seq "
        f"{first_entry + 1}; verify with fedsynth.common.accounting.Ledger)",
    }


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _labeller_bytes(models: Mapping[str, nn.Module]) -> bytes:
    buffer = io.BytesIO()
    torch.save({name: model.state_dict() for name, model in models.items()}, buffer)
    return buffer.getvalue()


def load_labeller(release: Path, features: Features) -> dict[str, nn.Module]:
    """The released ``teacher`` and ``student`` (DP by post-processing), ready to label rows.

    Their architectures are in ``privacy.json``'s plan; ``features`` is the job schema's.
    """
    plan = json.loads((release / "privacy.json").read_text(encoding="utf-8"))["plan"]
    states = torch.load(release / "labeller.pt", weights_only=True)
    models = {}
    for name, state in states.items():
        model = build_model(TeacherSettings(model=plan[name]["model"], hidden=plan[name]["hidden"]), features, 0)
        model.load_state_dict(state)
        models[name] = model
    return models


def write_release(
    staging: Path,
    out: Path,
    synthetic: pd.DataFrame,
    ledger: Ledger,
    first_entry: int,
    plan: dict,
    organisations: Iterable[str],
    measurements: Iterable[Measurement],
    missing_token: str = "",
    labeller: Mapping[str, nn.Module] | None = None,
    job: str = "",
    evaluation: Mapping | None = None,
    *,
    schema: Schema,
) -> Release:
    """Write every file into ``staging``, then move it to ``out`` in one rename.

    Missing values are written as ``missing_token`` (the schema's first ``na_values``), so
    the CSV reads back under the same schema as the input did.

    ``measurements.json`` holds every noisy marginal of the schema's columns the coordinator
    measured (already private), the ones the release's model is fitted to
    (``server.generator.release_model``): a reviewer can check the synthetic rows against them.
    No file holds anything per organisation: ``privacy.json`` names the organisations and who
    survived each round (who took part, not what their tables hold). ``labeller.pt``
    (when a teacher was trained) holds the teacher's and student's weights: DP by
    post-processing, and what an ML engineer needs to label further rows (``load_labeller``).
    ``job.toml`` (``job``, from ``server.jobspec``) records the job's options, its seed and the
    fedsynth version, so that ``fedsynth simulate --config job.toml`` repeats the run.
    ``schema.yaml`` is the job's public schema, which :class:`Release` refits the model under.
    """
    statement = {**privacy_statement(ledger, first_entry, plan, organisations), "rows": len(synthetic)}
    if evaluation is not None:  # a federated evaluation's published figures (``common.evaluation``)
        statement["evaluation"] = dict(evaluation)
    if ledger.path.parent != staging:  # the federation's ledger: copy it with its head (verifiable)
        shutil.copyfile(ledger.path, staging / "ledger.jsonl")
        shutil.copyfile(ledger.head_path, staging / "ledger.jsonl.head")
    noisy = [{"clique": list(m.clique), "sigma": m.sigma, "counts": m.noisy.tolist()} for m in measurements]
    _write_text(staging / "measurements.json", json.dumps(noisy) + "\n")
    _write_text(staging / "schema.yaml", schema.dumps("yaml"))
    synthetic.to_csv(staging / "synthetic.csv", index=False, na_rep=missing_token)
    synthetic.to_parquet(staging / "synthetic.parquet", index=False)
    if labeller:
        _write_bytes(staging / "labeller.pt", _labeller_bytes(labeller))
    _write_text(staging / "privacy.json", json.dumps(statement, indent=2) + "\n")
    if job:
        _write_text(staging / "job.toml", job)
    (staging / "ledger.jsonl.lock").unlink(missing_ok=True)  # the job's writers are done; not part of a release
    if out.exists():
        previous = out.with_name(out.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
    staging.rename(out)
    return Release(out, len(synthetic), statement)


#: Files ``fedsynth sample`` writes, by suffix.
SAMPLE_FORMATS = (".csv", ".parquet")


def check_sample_file(out: Path) -> None:
    """``out`` can take a sample: a .csv or .parquet file in an existing, writable folder."""
    if out.suffix.lower() not in SAMPLE_FORMATS:
        raise ReleaseError(f"--out {out}: write a .csv or a .parquet file")
    if out.is_dir():
        raise ReleaseError(f"--out {out}: is a folder; name a .csv or .parquet file")
    if not out.parent.is_dir():
        raise ReleaseError(f"--out {out}: no folder {out.parent}; create it first")
    if not os.access(out.parent, os.W_OK):
        raise ReleaseError(f"--out {out}: cannot write into {out.parent} (permission denied)")


def write_sample(
    release: Release, rows: int, out: Path, seed: int = 0, where: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Sample ``rows`` rows from ``release`` (given ``where``: :meth:`Release.sample`) into ``out``
    (.csv or .parquet), atomically.

    The rows are written to a temporary file beside ``out`` and renamed onto it only when
    complete, so ``out`` is never partial; on any error nothing is left behind.
    """
    check_sample_file(out)
    frame = release.sample(rows, seed=seed, where=where)
    temp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        if out.suffix.lower() == ".csv":
            na = release.schema.na_values[0] if release.schema.na_values else ""
            frame.to_csv(temp, index=False, na_rep=na)
        else:
            frame.to_parquet(temp, index=False)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return frame


def parse_where(conditions: Sequence[str]) -> dict[str, str]:
    """``--where COL=VALUE`` options as {column: value}; :class:`ReleaseError` names a malformed one."""
    where = {}
    for condition in conditions:
        name, equals, value = condition.partition("=")
        if not equals or not name.strip():
            raise ReleaseError(f"--where {condition}: write COLUMN=VALUE, e.g. --where sex=Female")
        if name.strip() in where:
            raise ReleaseError(f"--where {condition}: column {name.strip()!r} is given twice; give each column once")
        where[name.strip()] = value
    return where


def run_sample(release_path: Path, rows: int, out: Path, seed: int, conditions: Sequence[str] = ()) -> int:
    """``fedsynth sample``: more rows from a release, free of privacy cost; exit 2 on bad input."""
    try:
        if rows < 1:
            raise ReleaseError(f"--rows must be at least 1, got {rows}")
        where = parse_where(conditions)
        check_sample_file(out)
        started = time.perf_counter()
        release = Release.load(release_path)
        evidence(release.schema, where)
        release.model().conditionals()
        fitted = time.perf_counter()
        write_sample(release, rows, out, seed, where)
    except (ReleaseError, SchemaError, OSError) as exc:
        print(f"fedsynth sample: {exc}", file=sys.stderr)
        return 2
    print(
        f"fedsynth sample: wrote {rows:,} rows{' where ' + _where_text(where) if where else ''} to {out} (model refitted from {release_path / 'measurements.json'} "
        f"in {fitted - started:.1f} s, sampled and written in {time.perf_counter() - fitted:.1f} s; "
        "post-processing of the release: no privacy budget spent, its ledger unchanged)",
        file=sys.stderr,
    )
    return 0
