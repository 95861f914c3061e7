"""The job definition: every public option of a synthesis job, declared once.

Each :class:`Option` names a setting of the job (``epsilon``, ``teacher-steps``, ...), its type,
its default, its help and where it lands in :class:`~fedsynth.server.job.JobConfig` (the job
itself, its :class:`~fedsynth.common.generator.GeneratorSettings` or its
:class:`~fedsynth.common.teacher.TeacherSettings`). Every surface that sets up a job is derived
from :data:`JOB_OPTIONS`, so none can lack an option or disagree on a default:

* ``fedsynth simulate``'s flags (:func:`add_arguments`, defaults shown in ``--help``) and its
  ``--config job.toml`` file (:func:`read_job_file`: keys are the option names);
* the Flower run-config of the deployment ServerApp (:func:`from_run_config`, and the defaults
  ``fedsynth/flower_app/pyproject.toml`` declares, :func:`run_config_default`);
* ``fedsynth job submit``'s flags and the coordinator's ``JobSpec`` (field :attr:`Option.proto`);
* the keyword arguments of ``fedsynth.FederatedSynthesizer`` (:attr:`Option.dest`);
* ``job.toml`` in every release (:func:`job_toml`), which repeats the run with
  ``fedsynth simulate --config RELEASE/job.toml``.

Privacy: every option is public (it is chosen before any data is touched and every
organisation's guard sees the plan derived from it); nothing here reads data.
"""

from __future__ import annotations

import argparse
import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the definition itself stays light: building a parser imports no torch or Flower
    from ..common.schema import Schema
    from .job import JobConfig

#: Where an option lands: a field of the JobConfig, of its GeneratorSettings or its TeacherSettings.
JOB, GENERATOR, TEACHER = "job", "generator", "teacher"
#: The key of job.toml that records the fedsynth version that wrote it (informational).
VERSION_KEY = "fedsynth-version"
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", Path: "a path (string)"}


class JobFileError(ValueError):
    """A job file cannot be read, or holds an unknown key or a value of the wrong type."""


@dataclass(frozen=True)
class Option:
    """One public option of a job (or of the command that runs it).

    ``name`` is the flag (``--name``), the job.toml key and the run-config key; ``dest``
    (``name`` with ``_``) the Python keyword and argparse destination. ``default`` None means
    "chosen from public facts" (or "none"), as ``default_text`` says; it is encoded as 0 (or "") where a
    value cannot be missing (Flower run-config, proto3).
    """

    name: str
    kind: type
    default: Any
    help: str
    lands: str = JOB
    field: str = ""  # the attribute where it lands; "" = dest
    choices: tuple[str, ...] = ()
    default_text: str = ""  # the default as --help shows it ("" = the value); what None stands for
    proto_field: str = ""  # the JobSpec field; "" = dest

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def attr(self) -> str:
        return self.field or self.dest

    @property
    def proto(self) -> str:
        return self.proto_field or self.dest

    def shown_default(self) -> str:
        return self.default_text or str(self.default)


JOB_OPTIONS: tuple[Option, ...] = (
    Option("parties", int, 3, "number of organisations the job runs over"),
    Option("epsilon", float, 1.0, "total privacy budget of the job"),
    Option("delta", float, 1e-6, "total delta of the job; a coordinator requires its federation's"),
    Option("min-survivors", int, None, "t: organisations that must survive every round",
           default_text="parties - 1, but more than 2/3 of parties"),
    Option("max-rows", int, None, "public cap on rows per organisation: each draws a uniform subsample of at "
           "most this many rows (counts then cost a replaced row's sensitivity)", default_text="no cap"),
    Option("rows", int, None, "synthetic rows to release", default_text="the noisy row count the generator paid for"),
    Option("seed", int, 0, "seed of the coordinator's choices and the sampling (and of a simulation's split)"),
    Option("rounds", int, None, "generator: select-and-measure rounds", lands=GENERATOR,
           default_text="planned from the columns and epsilon"),
    Option("per-round", int, None, "generator: marginals measured per round", lands=GENERATOR,
           default_text="planned from the columns"),
    Option("timeout", float, 600.0, "seconds a round waits for the organisations' replies; 0 = wait forever",
           proto_field="timeout_s"),
    Option("labels", str, None, "label column of the release: drawn from the distilled student's "
           "probabilities (sample), its most likely class (argmax), or the generator's own (generator: no "
           "teacher is trained, all budget goes to the generator)", choices=("sample", "argmax", "generator"),
           default_text="sample, or generator when the schema names no label column"),
    Option("budget-split", str, "generator=0.7,teacher=0.3",
           "shares of the budget per phase, e.g. generator=0.7,teacher=0.3"),
    Option("teacher", str, "logreg", "the DP teacher's model (federated DP-SGD)", lands=TEACHER, field="model",
           choices=("logreg", "mlp")),
    Option("teacher-steps", int, 30, "DP-SGD steps of the teacher (one secure round each)", lands=TEACHER,
           field="steps"),
    Option("teacher-rate", float, 1.0, "Poisson sampling rate of each DP-SGD step (1 = full batches: see "
           "fedsynth.common.teacher)", lands=TEACHER, field="sampling_rate"),
    Option("secagg-neighbours", int, None, "SecAgg+ neighbourhood size k (odd; = parties for the complete graph)",
           default_text="complete below 20 parties, else the sparsest graph tolerating parties - t dropouts"),
    Option("evaluate", float, 0.0, "share of epsilon for a federated evaluation: the union's noisy counts of "
           "every 1-way marginal and some public column pairs, compared with the release in privacy.json "
           "(e.g. 0.05; 0: none, the main job's cost is unchanged)"),
    Option("discover", float, 0.0, "share of epsilon for a first phase that discovers the schema's categories, "
           "bounds, bins and missing values from the organisations' rows (DP, phase schema; e.g. 0.1; 0: the schema "
           "is used as given); the schema then gives only the columns, their kinds and the label"),
)


def defaults(options: Iterable[Option] = JOB_OPTIONS) -> dict[str, Any]:
    return {o.name: o.default for o in options}


# ---- argparse
def add_arguments(parser: argparse.ArgumentParser, options: Iterable[Option] = JOB_OPTIONS) -> None:
    """``--name`` for every option, its default shown in the help.

    The argparse default is None, so that a caller can tell a flag given on the command line
    (which overrides a job file) from one left out (:func:`given`).
    """
    for o in options:
        parser.add_argument(f"--{o.name}", dest=o.dest, type=o.kind, default=None, choices=o.choices or None,
                            help=f"{o.help} (default: {o.shown_default()})")


def given(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """The options set on the command line (argparse leaves the others None)."""
    return {o.name: getattr(args, o.dest) for o in options if getattr(args, o.dest, None) is not None}


# ---- job files (TOML)
def read_job_file(path: Path, options: Iterable[Option] = JOB_OPTIONS) -> dict[str, Any]:
    """The options a TOML job file sets, checked against ``options``.

    Keys are option names; paths are relative to the file's folder. Raises
    :class:`JobFileError` naming the file, the key and what is wrong.
    """
    by_name = {o.name: o for o in options}
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read the job file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobFileError(f"{path}: not a TOML file: {exc}") from None
    raw.pop(VERSION_KEY, None)
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise JobFileError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(_guess(k, by_name) for k in unknown)}; "
            f"a job file may set: {', '.join(by_name)}"
        )
    return {name: _checked(path, by_name[name], value) for name, value in raw.items()}


def _guess(key: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(names), n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def _checked(path: Path, option: Option, value: Any) -> Any:
    kind = option.kind
    ok = (
        isinstance(value, str) if kind in (str, Path)
        else isinstance(value, int) and not isinstance(value, bool) if kind is int
        else isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    if not ok:
        raise JobFileError(
            f"{path}: '{option.name}' must be {_KIND_NAMES[kind]}, got {type(value).__name__} {value!r}"
        )
    if option.choices and value not in option.choices:
        raise JobFileError(f"{path}: '{option.name}' must be one of {', '.join(option.choices)}, got {value!r}")
    if kind is Path:
        return Path(path).parent / value
    return kind(value)


def job_toml(values: Mapping[str, Any], version: str) -> str:
    """A job file setting ``values`` (None values are left out: they are the defaults)."""
    lines = [
        "# The job definition of this release: repeat the run with",
        "#   fedsynth simulate --config job.toml --data TABLE --schema SCHEMA",
        f'{VERSION_KEY} = "{version}"',
    ]
    for o in JOB_OPTIONS:
        value = values.get(o.name)
        if value is not None:
            lines.append(f"{o.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)  # JSON's string escapes are TOML's


# ---- JobConfig
def default_labels(schema: Schema) -> str:
    """The labels of a job that names none: the student's draws when there is a label column."""
    return "sample" if schema.label is not None else "generator"


def job_config(values: Mapping[str, Any], *, schema: Schema, out: Path, ledger: Path | None = None,
               cap: float | None = None) -> JobConfig:
    """The job that option ``values`` (names as in :data:`JOB_OPTIONS`; missing = default) describe."""
    from ..common.generator import GeneratorSettings
    from ..common.secagg_graph import default_min_survivors
    from ..common.teacher import TeacherSettings
    from .job import JobConfig, parse_budget_split

    values = {**defaults(), **values}
    landed: dict[str, dict[str, Any]] = {JOB: {}, GENERATOR: {}, TEACHER: {}}
    for o in JOB_OPTIONS:
        landed[o.lands][o.attr] = values[o.name]
    job = landed[JOB]
    parties = job["parties"]
    if job["min_survivors"] is None:
        job["min_survivors"] = default_min_survivors(parties)
    job["timeout"] = job["timeout"] or None  # 0: wait forever
    job["budget_split"] = parse_budget_split(job["budget_split"])
    job["labels"] = job["labels"] or default_labels(schema)
    return JobConfig(
        schema=schema, out=Path(out), ledger=ledger, cap=cap,
        generator=GeneratorSettings(**landed[GENERATOR]), teacher=TeacherSettings(**landed[TEACHER]), **job,
    )


def option_values(config: JobConfig) -> dict[str, Any]:
    """The option values of a job (the inverse of :func:`job_config`)."""
    sources = {JOB: config, GENERATOR: config.generator, TEACHER: config.teacher}
    values = {o.name: getattr(sources[o.lands], o.attr) for o in JOB_OPTIONS}
    values["timeout"] = values["timeout"] or 0.0
    values["budget-split"] = ",".join(f"{p}={s!r}" for p, s in config.budget_split.items())
    return values


# ---- Flower run-config and the coordinator's JobSpec (None is encoded as 0 or "")
def run_config_default(option: Option) -> Any:
    """The option's default as ``fedsynth/flower_app/pyproject.toml`` declares it."""
    return option.kind() if option.default is None else option.default


def from_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Option values from Flower run-config (keys the app declares; missing = default)."""
    values = {}
    for o in JOB_OPTIONS:
        if o.name in run_config:
            value = o.kind(run_config[o.name])
            values[o.name] = None if o.default is None and not value else value
    return values
