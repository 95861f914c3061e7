"""One job definition (server/jobspec.py): every surface that sets up a job agrees with it.

No federation runs here: jobs are compared as the JobConfig each surface builds and as the plan
``preflight`` makes of it (noise, shares, teacher), which is what the organisations' guards judge.
"""

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedsynth.api import SYNTHESIZER_OPTIONS, FederatedSynthesizer
from fedsynth.cli import build_parser, bundled, main, resolve_simulate_options
from fedsynth.common.schema import load_schema
from fedsynth.protos import coordinator_pb2 as pb
from fedsynth.server.app import SERVICE_KEYS, config_from_run_config
from fedsynth.server.coordinator import Coordinator, CoordinatorConfig, app_defaults, spec_dict
from fedsynth.server.job import DEFAULT_SPLIT, parse_budget_split, preflight
from fedsynth.server.jobspec import JOB_OPTIONS, given, job_toml, option_values, read_job_file, run_config_default
from fedsynth.server.operator import job_spec
from fedsynth.simulations.main import config_from_args

SCHEMA_PATH = bundled("adult.schema.yaml")
SCHEMA = load_schema(SCHEMA_PATH)

#: A valid value other than the default for every job option. A new option must be added here,
#: or ``test_every_option_has_a_test_value`` fails: then every surface below is checked for it.
OTHER = {
    "parties": 4, "epsilon": 2.0, "delta": 1e-5, "min-survivors": 2, "max-rows": 1000, "rows": 500, "seed": 7,
    "rounds": 2, "per-round": 3, "timeout": 30.0, "labels": "argmax", "budget-split": "generator=0.6,teacher=0.4",
    "teacher": "mlp", "teacher-steps": 5, "teacher-rate": 0.5, "evaluate": 0.05,
    "secagg-neighbours": 5, "discover": 0.1,
}
#: A job that plans (3t > 2n, the teacher on full batches) with no option at its default but cap/ledger.
PLANNED = {**OTHER, "parties": 5, "min-survivors": 4, "teacher-rate": 1.0, "rows": 300, "discover": 0.0}
#: (No schema discovery in PLANNED: it re-plans the rest after it runs; tests/test_discover_job.py plans it.)


def simulate_config(argv):
    args = resolve_simulate_options(build_parser().parse_args(["simulate", *argv]))
    return config_from_args(args, load_schema(args.schema))


def flags(values):
    return [arg for name, value in values.items() for arg in (f"--{name}", str(value))]


def write_toml(path: Path, values) -> Path:
    path.write_text(job_toml(values, "0.1.0"), encoding="utf-8")
    return path


def test_every_option_has_a_test_value():
    assert set(OTHER) == {o.name for o in JOB_OPTIONS}
    assert all(OTHER[o.name] != o.default for o in JOB_OPTIONS)


def test_config_file_and_the_equivalent_flags_make_the_same_plan(tmp_path):
    from_file = simulate_config(["--config", str(write_toml(tmp_path / "job.toml", PLANNED))])
    from_flags = simulate_config(flags(PLANNED))
    assert from_file == from_flags
    assert preflight(from_file).summary() == preflight(from_flags).summary()
    plan = preflight(from_file).summary()
    assert plan["budget_split"] == pytest.approx({"generator": 0.6 * 0.95, "teacher": 0.4 * 0.95, "evaluation": 0.05})
    assert plan["teacher"]["model"] == "mlp"
    assert plan["min_survivors"] == 4 and 1.9 < plan["epsilon_planned"] <= 2.0
    assert plan != preflight(simulate_config([])).summary()  # the options did change the plan


def test_flags_override_the_file_and_paths_are_relative_to_it(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    job = folder / "job.toml"
    job.write_text('epsilon = 2\nlabels = "argmax"\nout = "releases/a"\n', encoding="utf-8")
    config = simulate_config(["--config", str(job), "--epsilon", "0.5"])
    assert config.epsilon == 0.5 and config.labels == "argmax" and config.out == folder / "releases" / "a"
    assert isinstance(simulate_config(["--config", str(job)]).epsilon, float)  # an integer is a number


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epsilonn = 1.0\n", "unknown key 'epsilonn' (did you mean 'epsilon'?); a job file may set: "
         "data, schema, split, out, ledger, cap, ray-address, parties, epsilon"),
        ("noise = 1.0\n", "unknown key 'noise'; a job file may set: data, schema"),
        ('epsilon = "one"\n', "'epsilon' must be a number, got str 'one'"),
        ("parties = 3.5\n", "'parties' must be an integer, got float 3.5"),
        ("parties = true\n", "'parties' must be an integer, got bool True"),
        ('labels = "best"\n', "'labels' must be one of sample, argmax, generator, got 'best'"),
        ("epsilon = \n", "not a TOML file"),
    ],
)
def test_a_bad_job_file_is_refused_with_a_precise_message(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.toml").write_text(text, encoding="utf-8")
    assert main(["simulate", "--config", "job.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedsynth simulate: job.toml: {message}") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]  # nothing released, nothing partial


def test_a_missing_job_file_is_refused(tmp_path, capsys):
    assert main(["simulate", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: cannot read the job file: No such file or directory" in capsys.readouterr().err


def test_the_flower_app_declares_every_option_with_the_definitions_default():
    declared = app_defaults()
    assert set(declared) == {o.name for o in JOB_OPTIONS} | set(SERVICE_KEYS)
    for o in JOB_OPTIONS:
        assert declared[o.name] == run_config_default(o), o.name
        assert type(declared[o.name]) is o.kind, o.name  # Flower keeps TOML's types


def test_the_default_split_is_the_jobs():
    (split,) = [o.default for o in JOB_OPTIONS if o.name == "budget-split"]
    assert parse_budget_split(split) == DEFAULT_SPLIT


@pytest.mark.parametrize("command", [["simulate"], ["job", "submit"]])
def test_help_shows_every_default(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for o in JOB_OPTIONS:
        assert f"--{o.name}" in text and f"(default: {o.shown_default()})" in text, o.name


def test_the_synthesizer_takes_every_option_but_parties_with_the_same_default():
    parameters = inspect.signature(FederatedSynthesizer).parameters
    assert list(parameters) == ["schema", *(o.dest for o in SYNTHESIZER_OPTIONS)]
    assert {o.name for o in JOB_OPTIONS} - {o.name for o in SYNTHESIZER_OPTIONS} == {"parties"}
    assert all(parameters[o.dest].default == o.default for o in SYNTHESIZER_OPTIONS)
    assert FederatedSynthesizer(SCHEMA).get_params() == {"schema": SCHEMA, **{
        o.dest: o.default for o in SYNTHESIZER_OPTIONS}}


def coordinator(tmp_path) -> Coordinator:
    path = tmp_path / "coordinator.toml"
    path.write_text(
        '[coordinator]\nlisten = "127.0.0.1:0"\nworkdir = "state"\ninsecure = true\n'
        '[federation]\nepsilon-cap = 10.0\ndelta = 1e-6\n[superlink]\naddress = "127.0.0.1:1"\ninsecure = true\n',
        encoding="utf-8",
    )
    return Coordinator(CoordinatorConfig.load(path), runs=None)


@pytest.mark.parametrize("name", list(OTHER))
def test_every_surface_carries_every_option(name, tmp_path):
    """Set one option away from its default on each surface; each must build the same job."""
    value = {name: OTHER[name]}
    if name == "parties":
        value["min-survivors"] = 3  # 3t > 2n on the command line's default t too
    expected = {**option_values(simulate_config([])), **value}

    configs = {
        "simulate flags": simulate_config(flags(value)),
        "job.toml": simulate_config(["--config", str(write_toml(tmp_path / "job.toml", value))]),
        "run-config": config_from_run_config({**app_defaults(), "schema": str(SCHEMA_PATH), **value}),
        "synthesizer": FederatedSynthesizer(SCHEMA, **{k.replace("-", "_"): v for k, v in value.items()
                                                       if k != "parties"}).job(value.get("parties", 3)),
    }
    # job submit: its flags -> JobSpec -> the run-config the coordinator hands to Flower
    args = build_parser().parse_args(["job", "submit", "--coordinator", "x:1", "--insecure", "--schema",
                                      str(SCHEMA_PATH), *flags(value)])
    spec = job_spec(SCHEMA.dumps("json"), given(args, JOB_OPTIONS))
    assert isinstance(spec, pb.JobSpec)
    run_config = coordinator(tmp_path).run_config("job-1", spec_dict(spec))
    configs["job submit"] = config_from_run_config({**run_config, "schema": str(SCHEMA_PATH)})

    for surface, config in configs.items():
        assert option_values(config) == expected, surface


def test_a_job_toml_reads_back_as_the_job(tmp_path):
    config = FederatedSynthesizer(SCHEMA, **{k.replace("-", "_"): v for k, v in PLANNED.items()
                                             if k != "parties"}).job(PLANNED["parties"])
    text = job_toml(option_values(config), "9.9.9")
    assert tomllib.loads(text)["fedsynth-version"] == "9.9.9"
    values = read_job_file(write_toml(tmp_path / "job.toml", option_values(config)))
    assert values == {k: v for k, v in option_values(config).items() if v is not None}


def test_import_fedsynth_is_light_and_help_shows_the_api():
    code = (
        "import sys, pydoc, fedsynth\n"
        "heavy = sorted(m for m in ('torch', 'flwr', 'pandas', 'grpc') if m in sys.modules)\n"
        "print(heavy)\n"
        "print(pydoc.render_doc(fedsynth, renderer=pydoc.plaintext))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[]\n")  # nothing heavy until the API is used
    assert "class FederatedSynthesizer" in out and "class Release" in out and "fit_remote(" in out
