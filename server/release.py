"""The release directory: synthetic rows and the privacy statement that covers them.

A release is written into the job's staging directory (which already holds the fsynced
ledger) and renamed into place only when every file is complete, so a reader never sees a
partial release. ``privacy.json`` is computed from the ledger alone.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

import pandas as pd
import torch
from dp_accounting import ComposedDpEvent
from torch import nn

from fedsynth.common.accounting import CombinedAccountant, Ledger
from fedsynth.common.generator import Measurement
from fedsynth.common.noise import TAIL_PROBABILITY
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


def graph_delta(entries: Iterable, epsilon: float) -> float:
    """What sparse SecAgg+ graphs add to delta (``common.secagg_graph``).

    A round's graph breaks the privacy argument with probability at most its recorded
    ``privacy_failure`` (0 for the complete graph), independently of the data; the job is within
    total variation of the sum of these of one where no graph fails, so it adds
    ``(1 + e^epsilon)`` times that sum, like :func:`tail_delta`.
    """
    tau = sum(float(e.metadata.get("graph", {}).get("privacy_failure", 0.0)) for e in entries)
    return (1.0 + math.exp(min(epsilon, 700.0))) * tau


def tolerated_colluders(entries: Iterable, t: int, n: int) -> int:
    """Organisations that may collude with the coordinator while the planned epsilon still holds.

    Colluders subtract their own shares: with ``s`` survivors the sum keeps ``(s - k) mu / t``,
    the planned ``mu`` while ``k <= s - t``. With ``2t > n`` such ``k < t`` colluders also hold
    too few Shamir shares to unmask an honest vector; with ``2t <= n`` none is tolerated.
    """
    if 2 * t <= n:
        return 0
    survivors = [len(e.metadata["survivors"]) for e in entries if "survivors" in e.metadata]
    return max(0, min(survivors, default=n) - t)


def trust(entries: Sequence, plan: Mapping, organisations: Sequence[str]) -> dict:
    """The trust section of ``privacy.json``: who must behave for which epsilon (docs/trust-model.md)."""
    t, n = int(plan["min_survivors"]), len(organisations)
    k = tolerated_colluders(entries, t, n)
    return {
        "coordinator": "honest-but-curious for the epsilon above: it follows the protocol and sees "
        "only SecAgg+ sums of noised vectors",
        "min_honest_survivors_t": t,
        "organisations_n": n,
        "shamir_threshold": f"each organisation's mask secrets are Shamir-shared at threshold t={t} among "
        f"n={n}; {'2t > n' if 2 * t > n else '2t <= n: t colluders could unmask one organisation'}",
        "noise": "each organisation adds Skellam noise sized so that any t of them carry the planned "
        "noise; epsilon above counts the noise of the organisations that actually contributed to each round",
        "tolerated_colluding_organisations": k,
        "if_up_to_tolerated_organisations_collude_with_the_coordinator": "epsilon is at most "
        f"{plan['epsilon_planned']:.4f}, the planned epsilon (every round kept at least t honest shares)",
        "beyond_that_or_a_malicious_coordinator": "not covered by this statement; each organisation's own "
        "guard refuses requests it cannot verify and accounts its own ledger, at the planned noise or, in "
        "its 'own-share' mode, at its own share mu/t only (docs/trust-model.md)",
        "secure_aggregation": secure_aggregation(),
        **secagg_graph(plan),
    }


def secagg_graph(plan: Mapping) -> dict:
    """The trust section's account of the SecAgg+ graph (``common.secagg_graph``), if planned."""
    graph = plan.get("secagg")
    if graph is None:
        return {}
    if graph["neighbourhood_size_k"] == graph["organisations"]:
        how = "complete: every organisation Shamir-shares its mask secrets with every other one at threshold t"
    else:
        how = (
            f"sparse: each organisation shares its mask secrets with the {graph['neighbourhood_size_k'] - 1} "
            f"organisations next to it in an order the coordinator draws at random each round, at Shamir threshold "
            f"{graph['shamir_threshold_per_neighbourhood']} (more than half its neighbourhood); the tolerated "
            f"colluders hold except with probability {graph['privacy_failure_per_round']:.3g} per round (in "
            "delta_graph_failure); a coordinator that chose the order itself could gather its colluders round one "
            "organisation, so beyond honest-but-curious fewer colluders than that threshold are tolerated"
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
    graph = graph_delta(entries, total["epsilon"])
    return {
        "epsilon": total["epsilon"],
        "delta": ledger.delta + tail + graph,
        "delta_accountant": ledger.delta,
        "delta_noise_tail": tail,
        "delta_graph_failure": graph,
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
    (staging / "ledger.jsonl.lock").unlink(missing_ok=True)  # the job's writers are done; not part of a release
    if out.exists():
        previous = out.with_name(out.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
    staging.rename(out)
    return Release(out, len(synthetic), statement)
