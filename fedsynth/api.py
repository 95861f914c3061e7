"""The Python API: :class:`FederatedSynthesizer`, configured in its constructor, then fitted.

A composition root, like ``fedsynth.cli``: it joins the job definition
(``server.jobspec``), the simulation engine (``fedsynth.simulations``, which only these two
modules import) and the coordinator's client (``server.operator``). It adds no mechanism:
:meth:`FederatedSynthesizer.fit` runs exactly the job ``fedsynth simulate`` runs (every frame an
organisation behind its own privacy guard, real SecAgg+ in Flower's simulation engine), and
:meth:`FederatedSynthesizer.fit_remote` submits exactly the job ``fedsynth job submit`` does,
so the privacy argument and its statement (``privacy.json`` of the release) are theirs.
The constructor's keywords are the job options (``server.jobspec.JOB_OPTIONS``, ``-`` written
``_``) with the same defaults; only ``parties`` is not one: it is the number of frames given to
``fit``, or ``fit_remote``'s argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .common.schema import Schema, load_schema
from .server.job import JobConfig
from .server.jobspec import JOB_OPTIONS, defaults, job_config
from .server.release import Release

#: The job options a synthesizer is configured with (``parties`` comes from the federation).
SYNTHESIZER_OPTIONS = tuple(o for o in JOB_OPTIONS if o.name != "parties")

log = logging.getLogger("fedsynth")


class FederatedSynthesizer:
    """Federated, differentially private synthetic data from the tables of several organisations.

    Example::

        synth = FederatedSynthesizer("adult.schema.yaml", epsilon=1.0, labels="generator")
        release = synth.fit([frame_a, frame_b, frame_c], out="release")  # Flower simulation
        release = synth.fit_remote("coordinator:7000", parties=3, root_certificates="ca.crt")

    ``schema`` is the public schema (a :class:`~fedsynth.common.schema.Schema` or its file).
    The other arguments are the job's options, as ``fedsynth simulate --help`` lists them:
    ``epsilon`` and ``delta`` the job's total budget; ``min_survivors`` (t) the organisations
    that must survive every round (None: parties - 1, but more than 2/3 of parties); ``max_rows`` a public cap on
    each organisation's rows (None: none); ``rows`` the synthetic rows to release (None: the
    noisy row count); ``seed``; ``rounds`` and ``per_round`` the generator's shape (None:
    planned from the columns and epsilon); ``timeout`` the seconds a round waits (0: forever);
    ``labels`` sample | argmax | generator; ``budget_split`` the phases' shares; ``teacher``
    logreg | mlp, ``teacher_steps`` and ``teacher_rate`` the DP teacher's DP-SGD; ``secagg_neighbours`` the
    SecAgg+ neighbourhood size (None: chosen from parties and t); ``evaluate`` the
    share of epsilon for a federated evaluation (0: none); ``discover`` the share of epsilon for
    a first phase that discovers the schema's categories, bounds and bins (0: none).
    The job is validated and planned when it is fitted, before any data moves.
    """

    def __init__(
        self,
        schema: Schema | str | Path,
        *,
        epsilon: float = 1.0,
        delta: float = 1e-6,
        min_survivors: int | None = None,
        max_rows: int | None = None,
        rows: int | None = None,
        seed: int = 0,
        rounds: int | None = None,
        per_round: int | None = None,
        timeout: float = 600.0,
        labels: str | None = None,
        budget_split: str = "generator=0.7,teacher=0.3",
        teacher: str = "logreg",
        teacher_steps: int = 30,
        teacher_rate: float = 1.0,
        secagg_neighbours: int | None = None,
        evaluate: float = 0.0,
        discover: float = 0.0,
    ) -> None:
        self.schema = schema
        self.epsilon, self.delta = epsilon, delta
        self.min_survivors, self.max_rows, self.rows, self.seed = min_survivors, max_rows, rows, seed
        self.rounds, self.per_round, self.timeout = rounds, per_round, timeout
        self.labels, self.budget_split = labels, budget_split
        self.teacher, self.teacher_steps, self.teacher_rate = teacher, teacher_steps, teacher_rate
        self.secagg_neighbours, self.evaluate, self.discover = secagg_neighbours, evaluate, discover
        self.release_: Release | None = None

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments (scikit-learn's convention)."""
        return {"schema": self.schema, **{o.dest: getattr(self, o.dest) for o in SYNTHESIZER_OPTIONS}}

    def __repr__(self) -> str:
        default = defaults(SYNTHESIZER_OPTIONS)
        changed = [f"{o.dest}={getattr(self, o.dest)!r}" for o in SYNTHESIZER_OPTIONS
                   if getattr(self, o.dest) != default[o.name]]
        return f"{type(self).__name__}({', '.join([repr(self.schema), *changed])})"

    def options(self, parties: int) -> dict[str, Any]:
        """The job's option values (by option name) for a federation of ``parties``."""
        return {"parties": parties, **{o.name: getattr(self, o.dest) for o in SYNTHESIZER_OPTIONS}}

    def load_schema(self) -> Schema:
        return self.schema if isinstance(self.schema, Schema) else load_schema(Path(self.schema))

    def job(self, parties: int, out: str | Path = "release", ledger: str | Path | None = None,
            cap: float | None = None) -> JobConfig:
        """The job this synthesizer runs over ``parties`` organisations (validated here)."""
        return job_config(self.options(parties), schema=self.load_schema(), out=Path(out),
                          ledger=Path(ledger) if ledger is not None else None, cap=cap)

    def fit(
        self,
        frames: Sequence[pd.DataFrame],
        out: str | Path = "release",
        *,
        ledger: str | Path | None = None,
        cap: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Release:
        """Run the federation in Flower's simulation engine, one organisation per frame.

        Every frame must conform to the schema (``SchemaError`` otherwise, before any round).
        ``ledger`` and ``cap``: a federation ledger shared by several jobs and its epsilon cap
        (default: a fresh ledger in the release, capped at ``epsilon``). ``progress`` receives
        each step's message (default: the ``fedsynth`` logger at INFO). Returns the release
        written to ``out``, also kept as ``release_``.
        """
        from .simulations.main import simulate

        config = self.job(len(frames), out, ledger, cap)
        for frame in frames:
            config.schema.validate(frame, strict=True)
        self.release_ = simulate(config, list(frames), progress=progress or log.info)
        return self.release_

    def fit_remote(
        self,
        coordinator: str,
        *,
        parties: int,
        out: str | Path = "release",
        root_certificates: str | Path | None = None,
        insecure: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> Release:
        """Submit the job to a coordinator service (``HOST:PORT``), follow it, fetch its release.

        TLS with the coordinator's CA certificate ``root_certificates``, or ``insecure=True``
        (loopback trials only). The coordinator plans the job against its federation's cap and
        refuses it before any organisation is asked (``RuntimeError`` with its reason); a job
        that fails while running raises ``RuntimeError`` too (the spend of the rounds it ran is
        in the federation's ledger). Returns the release downloaded into ``out``.
        """
        import grpc

        from .protos import coordinator_pb2 as pb
        from .protos import coordinator_pb2_grpc as pb_grpc
        from .server.operator import channel, fetch, follow, job_spec, submit

        if (root_certificates is None) == (not insecure):
            raise ValueError("fit_remote needs either root_certificates=CA_FILE (TLS) or insecure=True (loopback trials)")
        self.job(parties)  # refuse an invalid job here, before it is sent
        spec = job_spec(self.load_schema().dumps("json"), self.options(parties))
        say = progress or log.info
        certificates = None if insecure else Path(root_certificates)
        with channel(coordinator, certificates) as chan:
            stub = pb_grpc.CoordinatorStub(chan)
            try:
                job = submit(stub, spec)
                ended = follow(stub, job.job_id, lambda event: say(event.message))
                if ended.state != pb.SUCCEEDED:
                    raise RuntimeError(f"job {job.job_id} {pb.JobState.Name(ended.state).lower()}: {ended.error}")
                fetch(stub, job.job_id, Path(out))
            except grpc.RpcError as exc:
                raise RuntimeError(f"the coordinator at {coordinator}: {exc.code().name}: {exc.details()}") from None
        self.release_ = Release.load(Path(out))
        return self.release_
