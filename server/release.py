"""The release directory: synthetic rows and the privacy statement that covers them.

A release is written into the job's staging directory (which already holds the fsynced
ledger) and renamed into place only when every file is complete, so a reader never sees a
partial release. ``privacy.json`` is computed from the ledger alone.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

import pandas as pd
import torch
from dp_accounting import ComposedDpEvent
from torch import nn

from fedsynth.common.accounting import CombinedAccountant, Ledger
from fedsynth.common.generator import Measurement
from fedsynth.common.secure_prg import is_hardened
from fedsynth.common.teacher import Features, TeacherSettings, build_model

UNIT_OF_PRIVACY = (
    "one record (row) added to or removed from any one organisation's table; "
    "neighbouring datasets differ in that row only"
)
LIBRARIES = ("fedsynth", "flwr", "dp-accounting", "mbi", "numpy", "pandas", "torch", "opacus", "jax")


@dataclass(frozen=True)
class Release:
    path: Path
    rows: int
    statement: dict


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
            "Flower SecAgg+ with masks from a ChaCha20 stream keyed by the whole shared secret "
            "(fedsynth.common.secure_prg), not Flower 1.41's 32-bit-seeded generator (upstream issue #7522)"
        )
    return "Flower SecAgg+ with Flower's own mask generator (32-bit seeds, upstream issue #7522)"


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
    return {
        "epsilon": total["epsilon"],
        "delta": ledger.delta,
        "accountant": total["method"],
        "epsilon_rdp": total["rdp"],
        "epsilon_pld": total["pld"],
        "federation_epsilon": ledger.epsilon().epsilon,
        "federation_cap": ledger.cap_epsilon,
        "unit_of_privacy": UNIT_OF_PRIVACY,
        "per_phase": {p: epsilon_of([e for e in entries if e.phase == p], ledger.delta) for p in phases},
        "events": [
            {"seq": e.seq, "phase": e.phase, "mechanism": e.mechanism, "event": e.event, **e.metadata}
            for e in entries
        ],
        "survivors_per_round": {str(e.metadata["round"]): e.metadata["survivors"] for e in entries},
        "organisations": sorted(organisations),
        "trust": {
            "coordinator": "honest-but-curious; sees only SecAgg+ sums of noised vectors",
            "min_honest_survivors_t": plan["min_survivors"],
            "noise": "each organisation adds Skellam noise sized so that any t of them carry "
            "the planned noise; epsilon above counts the noise of the organisations that "
            "actually contributed to each round",
            "if_up_to_n_minus_t_organisations_collude_with_the_coordinator": "epsilon is at "
            f"most {plan['epsilon_planned']:.4f}, the planned epsilon (t honest shares remain)",
            "secure_aggregation": secure_aggregation(),
        },
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
) -> Release:
    """Write every file into ``staging``, then move it to ``out`` in one rename.

    Missing values are written as ``missing_token`` (the schema's first ``na_values``), so
    the CSV reads back under the same schema as the input did.

    ``measurements.json`` holds every noisy marginal the coordinator saw (already private):
    a reviewer can check the synthetic rows against exactly what was learned. ``labeller.pt``
    (when a teacher was trained) holds the teacher's and student's weights: DP by
    post-processing, and what an ML engineer needs to label further rows (``load_labeller``).
    """
    statement = {**privacy_statement(ledger, first_entry, plan, organisations), "rows": len(synthetic)}
    if ledger.path.parent != staging:  # the federation's ledger: copy it with its head (verifiable)
        shutil.copyfile(ledger.path, staging / "ledger.jsonl")
        shutil.copyfile(ledger.head_path, staging / "ledger.jsonl.head")
    noisy = [{"clique": list(m.clique), "sigma": m.sigma, "counts": m.noisy.tolist()} for m in measurements]
    _write_text(staging / "measurements.json", json.dumps(noisy) + "\n")
    synthetic.to_csv(staging / "synthetic.csv", index=False, na_rep=missing_token)
    synthetic.to_parquet(staging / "synthetic.parquet", index=False)
    if labeller:
        _write_bytes(staging / "labeller.pt", _labeller_bytes(labeller))
    _write_text(staging / "privacy.json", json.dumps(statement, indent=2) + "\n")
    if out.exists():
        previous = out.with_name(out.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
    staging.rename(out)
    return Release(out, len(synthetic), statement)
