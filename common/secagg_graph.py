"""The SecAgg+ communication graph: complete for small federations, sparse above, and safe
for every order a coordinator could pick.

The graph
---------
With neighbourhoods of ``k`` nodes (the node itself included), the ``n`` nodes of a round sit in
a cyclic order and each is a neighbour of the ``h = k // 2`` nodes on either side (Flower's
circulant construction, :func:`flower_neighbourhoods`). Node ``i`` Shamir-shares its mask seed
and its pairwise-mask key into ``k`` shares at threshold ``s``, one per member of ``N(i)``, and
adds a pairwise mask with every other member. ``k = n`` is the complete graph. The order is not
the coordinator's: it is :func:`common.identity.public_order`, a hash of the round's signed keys,
which every organisation recomputes (``client.secagg``).

Two thresholds
--------------
* ``t`` (the noise threshold, ``NoisySumSpec.min_survivors``): every organisation adds
  ``Sk(mu / t)``; shares are revealed only for a survivor set ``S`` that at least ``t``
  organisations signed in the consistency stage (``client.secagg``), so the sum carries
  ``Sk(|S| mu / t)`` with ``|S| >= t``. With ``3t > 2n`` no ``n - t`` colluders can get two
  different sets signed (that takes ``2t - n`` organisations signing both), so ``S`` is the one
  set every honest survivor reveals for.
* ``s`` (the Shamir threshold per neighbourhood, this module's ``threshold``).

Why no placement breaks the graph
---------------------------------
Let ``D`` organisations be declared dead (``D <= n - t``, since ``|S| >= t``) and ``C``
collude with the coordinator (``C <= n - t``), placed anywhere in the order, even with hindsight.
Against one unique ``S`` an honest organisation reveals, per neighbour, its seed share (a member
of ``S``) or its key share (not in ``S``), never both. The coordinator then learns more than the
sum over ``S`` only if

1. some honest ``i`` has ``s`` colluders in ``N(i)``: they hold ``s`` shares of the kind of secret
   the honest ones withhold. Impossible when ``s > C``.
2. the honest survivors' graph falls apart: pairwise masks cancel inside each connected
   component, so each component's partial sum would be unmasked. In the cyclic order, consecutive
   honest survivors are neighbours unless ``h`` removed nodes (dead or colluding) lie between
   them, and the survivors stay connected unless two such gaps exist. Impossible when
   ``2h > D + C``.

A round halts (nothing revealed) only if a node keeps fewer than ``s`` live members in its
neighbourhood; with ``k - D >= s`` no ``D`` dropouts can cause that.

:func:`choose_graph` therefore takes, for ``d = n - t`` dropouts and as many colluders, the
sparse graph ``k = 2d + 3`` (``h = d + 1``), ``s = d + 2`` (``> k / 2``, ``> C``, ``<= k - D``)
whenever it is smaller than the complete graph, and the complete graph at Shamir threshold
``min(t, n - 1)`` otherwise (``s > C`` as ``2t > n``; Flower needs ``s < k``). Its privacy
failure is exactly 0, whatever the order: nobody has to trust a shuffle, and nothing is added to
delta. Bell, Bonawitz, Gascon, Lepoint and Raykova (CCS 2020) reach degree ``O(log n)`` by
assuming a random graph that dropouts cannot see; a lying coordinator sees the graph before it
declares anyone dead, so on a circulant graph the degree must grow with ``n - t`` instead:
``k = 5`` at ``t = n - 1``, ``k = 13`` for 5 dropouts (n = 100, t = 95).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Below this many organisations the graph is complete.
SPARSE_FROM = 20
#: Keys of a round's request that carry the graph (``to_config``).
NUM_SHARES, THRESHOLD = "secagg.num_shares", "secagg.threshold"


class GraphError(ValueError):
    """No graph with the requested degree meets the requested dropout and collusion tolerance."""


@dataclass(frozen=True)
class SecAggGraph:
    """The SecAgg+ graph of one round, and the tolerance it was chosen for.

    ``num_shares`` (k): neighbourhood size, the node itself included (Flower's ``num_shares``);
    ``threshold`` (s): Shamir threshold within a neighbourhood (Flower's
    ``reconstruction_threshold``); ``max_dropouts`` (D) and ``max_colluders`` (C): what the
    round must tolerate.
    """

    organisations: int
    num_shares: int
    threshold: int
    max_dropouts: int
    max_colluders: int

    def __post_init__(self) -> None:
        n, k, s = self.organisations, self.num_shares, self.threshold
        if k == n:
            if not 1 <= s < n:
                raise GraphError(f"a complete SecAgg+ graph among {n} organisations needs 1 <= threshold < {n}, got {s}")
            return
        if not 3 <= k < n:
            raise GraphError(f"a SecAgg+ neighbourhood of {k} nodes among {n} organisations: need 3 <= k <= n")
        if k % 2 == 0:
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

    def safe(self) -> bool:
        """No placement of D dead and C colluding organisations breaks privacy (docstring, 1 and 2)."""
        if self.threshold <= self.max_colluders:
            return False
        return self.complete or 2 * self.half > self.max_dropouts + self.max_colluders

    def live(self) -> bool:
        """No D dropouts can leave a neighbourhood below the Shamir threshold (halting the round)."""
        return self.num_shares - self.max_dropouts >= self.threshold

    def to_config(self) -> dict[str, int]:
        """The request keys the guard judges (``client.guard``)."""
        return {NUM_SHARES: self.num_shares, THRESHOLD: self.threshold}

    def summary(self) -> dict[str, Any]:
        """What ``privacy.json`` states about the graph."""
        return {
            "graph": "complete" if self.complete else "sparse (circulant, in a public order no party chooses)",
            "organisations": self.organisations,
            "neighbourhood_size_k": self.num_shares,
            "shamir_threshold_per_neighbourhood": self.threshold,
            "chosen_for_dropouts": self.max_dropouts,
            "chosen_for_colluders": self.max_colluders,
            "safe_for_every_order": self.safe(),
        }


def default_min_survivors(organisations: int) -> int:
    """The default ``t``: one dropout tolerated, but never ``3t <= 2n`` (``t = n`` for 3 organisations)."""
    return max(organisations - 1, 2 * organisations // 3 + 1)


def tolerance(organisations: int, min_survivors: int) -> tuple[int, int]:
    """(D, C) a job's graph is chosen for: ``n - t`` dropouts and as many colluders."""
    return organisations - min_survivors, organisations - min_survivors


def complete_graph(organisations: int, min_survivors: int) -> SecAggGraph:
    """Every organisation shares with every other one, at Shamir threshold ``min(t, n - 1)``."""
    dropouts, colluders = tolerance(organisations, min_survivors)
    return SecAggGraph(organisations, organisations, min(min_survivors, organisations - 1), dropouts, colluders)


def sparse_graph(organisations: int, num_shares: int, dropouts: int, colluders: int) -> SecAggGraph | None:
    """Degree ``num_shares`` at the smallest threshold that is safe and live, or None."""
    k, threshold = num_shares, max(colluders + 1, num_shares // 2 + 1)
    if not (3 <= k < organisations and k % 2 and threshold < k):
        return None
    graph = SecAggGraph(organisations, k, threshold, dropouts, colluders)
    return graph if graph.safe() and graph.live() else None


def smallest_safe_degree(dropouts: int, colluders: int) -> int:
    """``2h + 1`` for the smallest ``h`` with ``2h > D + C``."""
    return 2 * ((dropouts + colluders) // 2 + 1) + 1


def choose_graph(organisations: int, min_survivors: int, neighbours: int | None = None) -> SecAggGraph:
    """The SecAgg+ graph of a round over ``organisations`` with noise threshold ``min_survivors``.

    ``neighbours``: the neighbourhood size (``k``) asked for; None chooses: the complete graph
    below :data:`SPARSE_FROM` organisations or when the safe sparse graph would be as large, else
    the smallest safe one. A requested ``k`` that cannot raises :class:`GraphError` saying what would.
    """
    n, t = organisations, min_survivors
    dropouts, colluders = tolerance(n, t)
    if neighbours == n:
        return complete_graph(n, t)
    if neighbours is not None:
        graph = sparse_graph(n, neighbours, dropouts, colluders)
        if graph is None:
            raise GraphError(cannot_meet(n, t, neighbours))
        return graph
    if n < SPARSE_FROM:
        return complete_graph(n, t)
    return sparse_graph(n, smallest_safe_degree(dropouts, colluders), dropouts, colluders) or complete_graph(n, t)


def cannot_meet(organisations: int, min_survivors: int, neighbours: int) -> str:
    """Why ``neighbours`` fails the job's tolerance, and which degree or ``t`` would not."""
    n, t = organisations, min_survivors
    dropouts, colluders = tolerance(n, t)
    if not (3 <= neighbours <= n and (neighbours == n or neighbours % 2)):
        return f"secagg neighbours {neighbours}: use an odd number from 3 to {n - 1}, or {n} (the complete graph)"
    fits = smallest_safe_degree(dropouts, colluders)
    what = f"use at least {fits} neighbours" if fits < n else f"use {n} (the complete graph)"
    fewer = next((d for d in range(dropouts - 1, -1, -1) if smallest_safe_degree(d, d) <= neighbours), None)
    if fewer is not None:
        what += f", or t = {n - fewer} (tolerating {fewer} dropouts)"
    return (
        f"a SecAgg+ neighbourhood of {neighbours} among {n} organisations cannot tolerate {dropouts} dropouts "
        f"(n - t, t={t}) and as many colluders placed anywhere by a coordinator that lies; {what}"
    )


def graph_from_request(request: Mapping[str, Any], organisations: int, min_survivors: int) -> SecAggGraph:
    """The graph a round's request asks for (the complete graph when it names none)."""
    if NUM_SHARES not in request:
        return complete_graph(organisations, min_survivors)
    dropouts, colluders = tolerance(organisations, min_survivors)
    return SecAggGraph(organisations, int(request[NUM_SHARES]), int(request[THRESHOLD]), dropouts, colluders)


def flower_neighbourhoods(order: Sequence[int], num_shares: int) -> dict[int, set[int]]:
    """The circulant neighbourhoods of a cyclic ``order`` (Flower 1.41's ``setup_stage`` construction)."""
    half, n = num_shares >> 1, len(order)
    return {nid: {order[(i + d) % n] for d in range(-half, half + 1)} for i, nid in enumerate(order)}


def privacy_broken(neighbourhoods: Mapping[int, set[int]], threshold: int, dropped: set[int], colluders: set[int]) -> bool:
    """Whether a concrete graph, dead set and colluder set break the argument (docstring, 1 and 2)."""
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
