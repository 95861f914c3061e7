"""The same rounds as :class:`~fedsynth.server.secure_sum.Federation`, in one process.

For a single trusted curator (central DP) and for the "same code, no secure aggregation"
baseline of the benchmarks: each organisation's vector and noise share are computed exactly
as its ClientApp would (``Organisation.contribute`` + ``noisy_share``) and summed here. It is a
context manager with ``check`` and ``org_names`` like ``Federation``, so
``server.job.run_job_with`` runs a whole job (release included) on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..client.organisation import Organisation, RequestRefused
from ..common.accounting import Ledger
from ..common.secure_sum import NoisySumSpec, noisy_share, secure_ranges
from ..common.rounds import round_event
from .secure_sum import JobRefused, SumResult


class CentralAggregator:
    """Sums organisations' noisy shares in-process and records each round in the ledger."""

    def __init__(self, orgs: Sequence[Organisation], ledger: Ledger, seed: int) -> None:
        self.orgs = list(orgs)
        self.ledger = ledger
        self.num_clients = len(self.orgs)
        self._rng = np.random.default_rng(seed)
        self._round = 0

    def __enter__(self) -> "CentralAggregator":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def organisations(self) -> tuple[str, ...]:
        return tuple(org.name for org in self.orgs)

    @property
    def org_names(self) -> dict[int, str]:
        return dict(enumerate(self.organisations))

    def check(self, request: Mapping[str, Any]) -> None:
        """Every organisation's pre-flight check, as ``Federation.check`` asks it."""
        refusals = []
        for org in self.orgs:
            try:
                org.check(request)
            except RequestRefused as exc:
                refusals.append(str(exc))
        if refusals:
            raise JobRefused("job refused before any data left an organisation:\n- " + "\n- ".join(refusals))

    def _arrays(
        self, parameters: list[np.ndarray] | None, node_parameters: Mapping[str, list[np.ndarray]] | None
    ) -> list[list[np.ndarray]]:
        return [(node_parameters or {}).get(org.name, parameters or []) for org in self.orgs]

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
        self._round += 1
        self.ledger.check(round_event(request, spec), phase=phase)
        ranges = secure_ranges(spec, self.num_clients)
        shares = [
            noisy_share(org.contribute(request, arrays, self._rng), spec, ranges, self._rng)
            for org, arrays in zip(self.orgs, self._arrays(parameters, node_parameters), strict=True)
        ]
        names = tuple(org.name for org in self.orgs)
        mu = spec.mu_of_survivors(self.num_clients)
        self.ledger.append(phase, mechanism, round_event(request, spec, mu), {"round": self._round, "survivors": list(names), "mu": mu})
        total = np.rint(np.sum(shares, axis=0)).astype(np.int64)
        return SumResult(total=total, survivors=names, dropped=(), mu=mu, round=self._round)
