"""The SecAgg+ communication graph: complete for small federations, sparse (degree ~ log n) above.

Flower's graph
--------------
``SecAggPlusWorkflow(num_shares=k, reconstruction_threshold=s)`` shuffles the ``n`` sampled
nodes into a uniformly random cyclic order (``random.shuffle``) and makes each node a neighbour
of the ``h = k // 2`` nodes on either side of it: a circulant (Harary-like) graph whose
neighbourhood ``N(i)`` has ``k`` nodes, ``i`` included. Node ``i`` Shamir-shares its mask seed
and its mask key ``sk1`` into ``k`` shares at threshold ``s``, one per member of ``N(i)`` (it
keeps one), and adds a pairwise mask with every other member. ``k = n`` is the complete graph
fedsynth always used, with ``s = t``, the job's minimum of survivors. Because the order is
uniformly random, the ``k - 1`` other members of ``N(i)`` are a uniformly random
``(k - 1)``-subset of the other ``n - 1`` nodes, whatever set of nodes drops out or colludes,
as long as that set does not depend on the order (organisations fail and collude without
seeing the coordinator's shuffle).

Two thresholds
--------------
* ``t`` (the noise threshold, ``NoisySumSpec.min_survivors``): every organisation adds
  ``Sk(mu / t)``; the coordinator unmasks only when at least ``t`` masked vectors arrived
  (``server.secure_sum``; Flower itself checks only each neighbourhood), so the sum carries
  ``Sk(|S| mu / t)`` with ``|S| >= t`` survivors: the ledger records the ``|S|`` it saw, and with
  ``c`` colluders subtracting their shares ``(|S| - c) mu / t >= mu`` remains while ``c <= |S| - t``.
* ``s`` (the Shamir threshold per neighbourhood, this module's ``threshold``): ``2s > k``.
  An honest organisation reveals, per round, one kind of share per neighbour (its seed share if
  the coordinator says that neighbour is active, its ``sk1`` share if dead; ``client.guard.
  verify_unmask`` refuses a request naming a node both), so a coordinator that asks some
  members of ``N(i)`` for ``i``'s seed and others for its key gets at most ``k`` shares in all
  and, with ``2s > k``, never ``s`` of both kinds: it cannot strip both the private and the
  pairwise masks of ``i``'s vector.

What a sparse round tolerates, and with which probability
---------------------------------------------------------
For up to ``D`` dropouts and ``C`` organisations colluding with an honest-but-curious
coordinator (fedsynth chooses ``D = C = n - t``, the collusion the complete graph tolerates
when nobody drops), a round keeps the complete graph's guarantee unless one of these happens:

1. (privacy) some honest ``i`` has ``s`` or more colluders in ``N(i)``: they hold ``s`` shares
   of ``sk1_i`` and, with the seed the coordinator learns legitimately, unmask ``x_i``. The
   number of colluders among ``i``'s ``k - 1`` other members is hypergeometric
   ``H(n - 1, C, k - 1)``; over the ``n - C`` honest organisations (union bound)
   ``p_1 <= (n - C) P[H(n - 1, C, k - 1) >= s]``.
2. (privacy) the honest survivors' graph falls apart: pairwise masks cancel inside each
   connected component, so the coordinator would learn each component's partial sum, carrying
   fewer than ``t`` shares of noise. In the cyclic order, consecutive remaining nodes are
   neighbours unless at least ``h`` removed nodes (dropped or colluding, ``r <= D + C`` in all)
   lie between them, and the remaining nodes stay connected unless two such gaps exist. The
   removed positions are a uniformly random ``r``-subset of the ``n`` positions, so
   ``p_2 <= min(n P[h given positions removed], n(n-1)/2 P[2h given positions removed])`` with
   ``P[m given positions removed] = (r)_m / (n)_m`` (a hypergeometric draw of ``m`` hits).
3. (liveness only) some node has fewer than ``s`` surviving members in its neighbourhood:
   Flower halts the round before unmasking, nothing is revealed or used (``RoundAborted``).
   ``p_abort <= (n - D) P[H(n - 1, D, k - 1) > k - s] + D P[H(n - 1, D - 1, k - 1) >= k - s]``
   (a survivor counts itself, a dropped node does not).

``privacy_failure = p_1 + p_2`` is the probability, over the coordinator's shuffle alone
(independent of the data), that a round is not the Skellam mechanism the ledger records; a
mechanism that equals an ``(epsilon, delta)``-DP one except on an event of probability ``p`` is
``(epsilon, delta + (1 + e^epsilon) p)``-DP, so ``server.release`` adds ``(1 + e^epsilon)`` times
the sum of the rounds' ``privacy_failure`` to the release's delta, like the noise-tail term. The
parameters are chosen (:func:`choose_graph`) as Bell, Bonawitz, Gascon, Lepoint and Raykova
(CCS 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead") do: the smallest
degree ``k`` (odd, as Flower wants) and, for it, the smallest ``s > k / 2`` with
``privacy_failure <= 2**-40`` and ``p_abort <= 2**-20``; ``k`` then grows like ``log n``. For the
complete graph (``k = n``, ``s = t``, ``2t > n``) both privacy terms are exactly 0. Against a
coordinator that chooses the graph itself (malicious), only ``2s > k`` still holds: it can put its
colluders into ``N(i)``, so ``s`` colluding organisations suffice to unmask ``i`` in a sparse graph,
against ``t`` in the complete one (``docs/trust-model.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import hypergeom

#: Below this many organisations the graph is complete (fedsynth's original guarantees).
SPARSE_FROM = 20
#: Largest probability, per round, that the graph breaks the privacy argument (2**-40, as Bell et al.).
PRIVACY_FAILURE = 2.0**-40
#: Largest probability, per round, that the graph halts the round although at most D dropped.
ABORT_PROBABILITY = 2.0**-20
#: Keys of a round's request that carry the graph (``to_config``).
NUM_SHARES, THRESHOLD = "secagg.num_shares", "secagg.threshold"


class GraphError(ValueError):
    """No graph with the requested degree meets the requested dropout and collusion tolerance."""


def _tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """P[at least ``at_least`` marked items among ``draws`` drawn without replacement]."""
    if at_least <= 0:
        return 1.0
    if marked < at_least or draws < at_least:
        return 0.0
    return float(hypergeom(population, marked, draws).sf(at_least - 1))


def _all_removed(n: int, removed: int, positions: int) -> float:
    """P[``positions`` given positions all removed] when ``removed`` of ``n`` are, uniformly."""
    return _tail(n, removed, positions, positions)


@dataclass(frozen=True)
class SecAggGraph:
    """Flower's SecAgg+ graph for one round, and the tolerance it was chosen for.

    ``num_shares`` (k): neighbourhood size, the node itself included (Flower's ``num_shares``);
    ``threshold`` (s): Shamir threshold within a neighbourhood (Flower's
    ``reconstruction_threshold``); ``max_dropouts`` (D) and ``max_colluders`` (C): what the
    failure probabilities assume.
    """

    organisations: int
    num_shares: int
    threshold: int
    max_dropouts: int
    max_colluders: int

    def __post_init__(self) -> None:
        n, k, s = self.organisations, self.num_shares, self.threshold
        if k == n:  # the complete graph: Flower and the guard check t against n
            return
        if not 3 <= k < n:
            raise GraphError(f"a SecAgg+ neighbourhood of {k} nodes among {n} organisations: need 3 <= k <= n")
        if k < n and k % 2 == 0:
            raise GraphError(f"a sparse SecAgg+ neighbourhood has an odd number of nodes (Flower adds one), got {k}")
        if not k / 2 < s < k:
            raise GraphError(f"Shamir threshold {s} in a neighbourhood of {k}: need k/2 < threshold < k")

    @property
    def complete(self) -> bool:
        return self.num_shares == self.organisations

    @property
    def half(self) -> int:
        """Neighbours on each side in the cyclic order (Flower's ``num_shares >> 1``)."""
        return self.num_shares // 2

    def privacy_failure(self) -> float:
        """Bound on the probability that the graph breaks the privacy argument (module docstring, 1 + 2).

        Exactly 0 for the complete graph: every honest survivor neighbours every other one (no
        partial sums), and its ``C = n - t < t = s`` colluders (``2t > n``) hold too few shares.
        """
        if self.complete:
            return 0.0
        return _privacy_failure(self.organisations, self.num_shares, self.threshold, self.max_dropouts, self.max_colluders)

    def abort_probability(self) -> float:
        """Bound on the probability that Flower halts the round with at most D dropouts (3)."""
        n, k, s, d = self.organisations, self.num_shares, self.threshold, self.max_dropouts
        live = (n - d) * _tail(n - 1, d, k - 1, k - s + 1)  # a survivor keeps itself
        dead = d * _tail(n - 1, d - 1, k - 1, k - s) if d else 0.0
        return min(1.0, live + dead)

    def to_config(self) -> dict[str, int]:
        """The request keys the guard judges (``client.guard``)."""
        return {NUM_SHARES: self.num_shares, THRESHOLD: self.threshold}

    def summary(self) -> dict[str, Any]:
        """What ``privacy.json`` states about the graph."""
        return {
            "graph": "complete" if self.complete else "sparse (Flower's random circulant graph)",
            "organisations": self.organisations,
            "neighbourhood_size_k": self.num_shares,
            "shamir_threshold_per_neighbourhood": self.threshold,
            "chosen_for_dropouts": self.max_dropouts,
            "chosen_for_colluders": self.max_colluders,
            "privacy_failure_per_round": self.privacy_failure(),
            "abort_probability_per_round": self.abort_probability(),
        }


@functools.lru_cache(maxsize=4096)
def _privacy_failure(n: int, k: int, s: int, dropouts: int, colluders: int) -> float:
    unmasked = (n - colluders) * _tail(n - 1, colluders, k - 1, s)
    removed, h = min(n, dropouts + colluders), k // 2
    split = min(n * _all_removed(n, removed, h), n * (n - 1) / 2 * _all_removed(n, removed, 2 * h))
    return min(1.0, unmasked + split)


def tolerance(organisations: int, min_survivors: int) -> tuple[int, int]:
    """(D, C) a job's graph is chosen for: ``n - t`` dropouts and as many colluders."""
    return organisations - min_survivors, organisations - min_survivors


def complete_graph(organisations: int, min_survivors: int) -> SecAggGraph:
    """Every organisation shares with every other one, at Shamir threshold ``t``."""
    dropouts, colluders = tolerance(organisations, min_survivors)
    return SecAggGraph(organisations, organisations, min_survivors, dropouts, colluders)


def sparse_graph(
    organisations: int,
    num_shares: int,
    dropouts: int,
    colluders: int,
    failure: float = PRIVACY_FAILURE,
    abort: float = ABORT_PROBABILITY,
) -> SecAggGraph | None:
    """Degree ``num_shares`` with the smallest threshold meeting both bounds, or None.

    ``privacy_failure`` falls and ``abort_probability`` rises with the threshold, so the
    smallest threshold with ``privacy_failure <= failure`` is the only candidate.
    """
    n, k = organisations, num_shares
    low, high = k // 2 + 1, k - 1
    if low > high or _privacy_failure(n, k, high, dropouts, colluders) > failure:
        return None
    while low < high:
        mid = (low + high) // 2
        if _privacy_failure(n, k, mid, dropouts, colluders) <= failure:
            high = mid
        else:
            low = mid + 1
    graph = SecAggGraph(n, k, low, dropouts, colluders)
    return graph if graph.abort_probability() <= abort else None


@functools.lru_cache(maxsize=256)
def choose_graph(organisations: int, min_survivors: int, neighbours: int | None = None) -> SecAggGraph:
    """The SecAgg+ graph of a round over ``organisations`` with noise threshold ``min_survivors``.

    ``neighbours``: the neighbourhood size (``k``) asked for; None chooses: the complete graph
    below :data:`SPARSE_FROM` organisations, else the sparsest graph that tolerates ``n - t``
    dropouts and as many colluders (the complete graph when none does). A requested ``k`` that
    cannot raises :class:`GraphError` saying what would.
    """
    n, t = organisations, min_survivors
    dropouts, colluders = tolerance(n, t)
    if (neighbours is None and n < SPARSE_FROM) or neighbours == n:
        return complete_graph(n, t)
    if neighbours is not None:
        graph = sparse_graph(n, neighbours, dropouts, colluders) if 3 <= neighbours < n and neighbours % 2 else None
        if graph is None:
            raise GraphError(cannot_meet(n, t, neighbours))
        return graph
    return next(
        (g for k in range(3, n, 2) if (g := sparse_graph(n, k, dropouts, colluders)) is not None),
        complete_graph(n, t),
    )


def cannot_meet(organisations: int, min_survivors: int, neighbours: int) -> str:
    """Why ``neighbours`` fails the job's tolerance, and which degree or ``t`` would not."""
    n, t = organisations, min_survivors
    dropouts, _ = tolerance(n, t)
    if not (3 <= neighbours <= n and (neighbours == n or neighbours % 2)):
        return f"secagg neighbours {neighbours}: use an odd number from 3 to {n - 1}, or {n} (the complete graph)"
    fits = next((k for k in range(neighbours + 2, n, 2) if sparse_graph(n, k, dropouts, dropouts)), n)
    fewer = next(
        (d for d in range(dropouts - 1, -1, -1) if sparse_graph(n, neighbours, d, d) is not None), None
    )
    what = f"use at least {fits} neighbours" + (" (the complete graph)" if fits == n else "")
    if fewer is not None:
        what += f", or t = {n - fewer} (tolerating {fewer} dropouts)"
    return (
        f"a SecAgg+ neighbourhood of {neighbours} among {n} organisations cannot tolerate {dropouts} dropouts "
        f"(n - t, t={t}) and as many colluders with privacy failure <= 2^-40 and abort probability <= 2^-20 "
        f"per round; {what}"
    )


def graph_from_request(request: Mapping[str, Any], organisations: int, min_survivors: int) -> SecAggGraph:
    """The graph a round's request asks for (the complete graph when it names none)."""
    if NUM_SHARES not in request:
        return complete_graph(organisations, min_survivors)
    dropouts, colluders = tolerance(organisations, min_survivors)
    return SecAggGraph(organisations, int(request[NUM_SHARES]), int(request[THRESHOLD]), dropouts, colluders)


def flower_neighbourhoods(order: Sequence[int], num_shares: int) -> dict[int, set[int]]:
    """The neighbourhoods Flower 1.41 builds from a shuffled ``order`` (``setup_stage``)."""
    half, n = num_shares >> 1, len(order)
    return {nid: {order[(i + d) % n] for d in range(-half, half + 1)} for i, nid in enumerate(order)}


def privacy_broken(neighbourhoods: Mapping[int, set[int]], threshold: int, dropped: set[int], colluders: set[int]) -> bool:
    """Whether a concrete graph breaks the argument (events 1 and 2 of the module docstring)."""
    honest = [i for i in neighbourhoods if i not in colluders]
    if any(len((neighbourhoods[i] - {i}) & colluders) >= threshold for i in honest):
        return True
    remaining = {i for i in honest if i not in dropped}
    return not _connected(neighbourhoods, remaining)


def _connected(neighbourhoods: Mapping[int, set[int]], nodes: set[int]) -> bool:
    if not nodes:
        return True
    start = next(iter(nodes))
    seen, frontier = {start}, [start]
    while frontier:
        for j in neighbourhoods[frontier.pop()] & nodes - seen:
            seen.add(j)
            frontier.append(j)
    return seen == nodes
