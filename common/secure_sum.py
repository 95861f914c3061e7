"""The secure noisy sum: what each client sends and what the coordinator may decode.

Mechanism
---------
Every fedsynth phase needs one primitive: each organisation ``i`` holds a vector ``x_i``
computed from its own rows, and the coordinator may learn only ``sum_i x_i`` plus noise
that protects any single record. One round works as follows.

1. Client ``i`` maps its vector to integers: ``v_i = R(scale * x_i)`` where ``R`` is unbiased
   randomized rounding (the identity on integer vectors such as counts, ``scale == 1``).
   It projects ``v_i`` onto the public box ``[-max_abs, max_abs]`` (a no-op for the vectors an
   organisation computes, whose bounds hold by construction; projection is non-expansive in L1
   and L2, so it never raises the sensitivity and no round fails because of the data).
2. It adds its noise share ``Z_i ~ Sk(mu / t)`` per coordinate (see ``fedsynth.common.noise``),
   where ``mu`` is the planned Skellam parameter of the aggregate noise and ``t`` the job's
   guaranteed minimum number of honest survivors, and checks ``|v_i + Z_i| <= c`` with
   ``c = max_abs + b``. The check fails only if some ``|Z_i| > b``, which the tail bound ``b``
   (``noise.skellam_tail_bound``) makes at most ``noise.TAIL_PROBABILITY`` per coordinate; a
   round whose abort can depend on ``v_i`` is within total variation ``dim * TAIL_PROBABILITY``
   of one that never aborts, so it adds at most ``(1 + e^epsilon) * dim * TAIL_PROBABILITY`` to
   delta (the release adds this term: ``server.release.tail_delta``).
3. It hands ``y_i = v_i + Z_i`` to Flower's SecAgg+ as a float vector. The ranges are chosen
   so that SecAgg+ is exact on it: quantization range ``2c`` for clipping range ``c`` makes
   the quantization step exactly 1, so Flower's stochastic rounding of the integer ``y_i + c``
   is the identity (``ceil(k) == k``, the random draw can never decrement it), nothing is
   clipped because ``|y_i| <= c``, and the modulus ``M > n * 2c`` (a power of two) means the
   modular sum of ``n`` shifted vectors never wraps.
4. SecAgg+ reveals to the coordinator only ``sum_{i in S} y_i`` for the set ``S`` of survivors
   whose masked vectors arrived; with ``num_shares = n`` and reconstruction threshold ``t``
   the round cannot be unmasked at all when ``|S| < t``.

Privacy argument
----------------
The revealed value is ``sum_{i in S} v_i + sum_{i in S} Z_i`` and, Skellam being closed under
summation, ``sum_{i in S} Z_i ~ Sk(|S| * mu / t)`` per coordinate with ``|S| >= t``. Adding or
removing one record of one organisation changes ``sum_i v_i`` by at most the per-record L1
and L2 sensitivity of the round (integer units, after scaling and rounding; for the counts of a
row-capped table 2 and sqrt(2): ``common.rounds``). That is the Skellam mechanism of Agarwal, Kairouz &
Liu (2021) with parameter ``|S| * mu / t``, which the coordinator records in the combined
accountant with the survivors it actually saw. Everything the coordinator does afterwards is
post-processing.

Collusion: a coordinator that lies chooses the survivor set (it may declare honest survivors
dead), so a set of exactly ``t`` vectors can hold up to ``n - t`` colluders, who subtract their
own shares: only ``2t - n`` honest shares remain. :meth:`NoisySumSpec.against_collusion` sizes a
round for that: the aggregate parameter at ``t`` survivors is ``mu * t / (2t - n)``, so any ``2t - n``
honest shares carry the planned ``mu`` (:meth:`NoisySumSpec.honest_mu`), what every guard accounts
in its ``planned`` mode. The colluders cannot unmask an honest client's vector, nor form a partial
sum, either: authenticated SecAgg+ with ``3t > 2n`` (``client.secagg``, ``common.secagg_graph``).
Noise is drawn on the client from operating-system entropy (a fixed seed is for tests only);
the coordinator never chooses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from .noise import sample_skellam, share_of_mu, skellam_tail_bound

#: Flower casts quantized values to int32 before masking: ``2c`` must stay below 2**31.
MAX_CLIPPING_RANGE = 2**30 - 1
#: Masked vectors are summed in int64; keep ``n * M`` far below 2**63.
MAX_MODULUS_BITS = 56
#: SecAgg+ weights each vector by ``num_examples / max_weight``; fedsynth always sends
#: ``num_examples == MAX_WEIGHT`` (a constant, never a row count) so the weight is exactly 1.
MAX_WEIGHT = 1000


class SecureRangeError(ValueError):
    """A job's vectors cannot fit SecAgg+'s ranges without wrap-around."""


class ContributionError(ValueError):
    """A client's vector violates the public bounds of the round it was asked for."""


@dataclass(frozen=True)
class NoisySumSpec:
    """Public parameters of one secure noisy sum, agreed before any data is touched.

    ``max_abs`` bounds every coordinate of one client's un-noised integer vector and must
    itself be public (e.g. a job's declared maximum rows per organisation for counts).
    ``mu`` is the Skellam parameter of the aggregate noise (variance ``2 * mu``) that any
    ``min_survivors`` clients must carry; ``mu == 0`` disables noise and is refused by the
    accountant, so it serves only tests of exactness.
    """

    dim: int
    mu: float
    min_survivors: int
    max_abs: int
    l1_sensitivity: float = 1.0
    l2_sensitivity: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")
        if self.min_survivors < 1:
            raise ValueError(f"min_survivors (t) must be >= 1, got {self.min_survivors}")
        if self.max_abs < 0 or self.scale <= 0:
            raise ValueError(f"need max_abs >= 0 and scale > 0, got {self.max_abs}, {self.scale}")

    @property
    def mu_share(self) -> float:
        """Skellam parameter each client adds."""
        return share_of_mu(self.mu, self.min_survivors)

    def mu_of_survivors(self, survivors: int) -> float:
        """Skellam parameter the sum actually carries when ``survivors`` vectors arrived."""
        return survivors * self.mu_share

    def against_collusion(self, organisations: int) -> "NoisySumSpec":
        """This round with its aggregate noise raised so that ``mu`` survives ``n - t`` colluders
        among ``t`` survivors (module docstring); needs ``3t > 2n``, as authenticated SecAgg+ does."""
        t = self.min_survivors
        if not 2 * organisations < 3 * t <= 3 * organisations:
            raise ValueError(f"t={t} of n={organisations}: need 2n/3 < t <= n against n - t colluders")
        return replace(self, mu=self.mu * t / (2 * t - organisations))

    def honest_mu(self, organisations: int) -> float:
        """The Skellam parameter left when ``n - t`` of ``t`` survivors collude (0 if ``2t <= n``)."""
        return max(0, 2 * self.min_survivors - organisations) * self.mu_share

    def to_config(self) -> dict[str, float | int]:
        """Flat scalars for a Flower ConfigRecord."""
        return {f"sum.{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict) -> "NoisySumSpec":
        fields = {k[len("sum.") :]: v for k, v in config.items() if k.startswith("sum.")}
        return cls(
            dim=int(fields["dim"]),
            mu=float(fields["mu"]),
            min_survivors=int(fields["min_survivors"]),
            max_abs=int(fields["max_abs"]),
            l1_sensitivity=float(fields["l1_sensitivity"]),
            l2_sensitivity=float(fields["l2_sensitivity"]),
            scale=float(fields["scale"]),
        )


@dataclass(frozen=True)
class SecureRanges:
    """SecAgg+ ranges under which the integer sum is exact (see the module docstring)."""

    clipping_range: int
    quantization_range: int
    modulus_range: int

    @property
    def modulus_bits(self) -> int:
        return self.modulus_range.bit_length() - 1


def secure_ranges(spec: NoisySumSpec, num_clients: int) -> SecureRanges:
    """Choose exact SecAgg+ ranges for ``num_clients`` vectors of ``spec``, or refuse.

    Bit-width rule (as in TFF's secure sum): each client value lies in ``[-c, c]`` with
    ``c = max_abs + tail(noise share)``; shifted by ``c`` it is in ``[0, 2c]``, so the sum
    of ``n`` of them, and SecAgg+'s weight factor ``n * 2c``, fit below ``M = 2**ceil(log2(n*2c+1))``.
    """
    if num_clients < spec.min_survivors:
        raise SecureRangeError(
            f"{num_clients} clients cannot meet the minimum of {spec.min_survivors} survivors"
        )
    c = max(1, spec.max_abs + skellam_tail_bound(spec.mu_share))  # Flower needs a range > 0
    if c > MAX_CLIPPING_RANGE:
        raise SecureRangeError(
            f"values up to {c:,} (max_abs {spec.max_abs:,} plus the noise tail) do not fit "
            f"SecAgg+'s 31-bit quantization (limit {MAX_CLIPPING_RANGE:,}); lower the declared "
            "maximum rows per organisation or the vector's scale"
        )
    bits = math.ceil(math.log2(num_clients * 2 * c + 1))
    if bits > MAX_MODULUS_BITS:
        raise SecureRangeError(
            f"a sum over {num_clients} clients of values up to {c:,} needs a {bits}-bit "
            f"modulus; at most {MAX_MODULUS_BITS} bits are safe"
        )
    return SecureRanges(clipping_range=c, quantization_range=2 * c, modulus_range=2**bits)


def randomized_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Unbiased rounding to integers: ``floor(x) + Bernoulli(x - floor(x))``."""
    low = np.floor(x)
    return (low + (rng.random(x.shape) < (x - low))).astype(np.int64)


def to_integer_grid(x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Map a real vector to the integer grid of step ``1 / scale`` (exact for integers)."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) and scale == 1.0:
        return x.astype(np.int64)
    if not np.all(np.isfinite(x)):
        raise ContributionError("the vector is not finite")
    return randomized_round(rng, np.asarray(x, dtype=np.float64) * scale)


def noisy_share(
    x: np.ndarray,
    spec: NoisySumSpec,
    ranges: SecureRanges,
    rng: np.random.Generator,
) -> np.ndarray:
    """Client side: integer vector, projected onto the public box, plus this client's Skellam share.

    Errors carry public parameters only (the round's dimension), never a value of the vector.
    """
    x = np.asarray(x).reshape(-1)
    if x.size != spec.dim:
        raise ContributionError(f"the vector does not have the round's dimension {spec.dim}")
    v = np.clip(to_integer_grid(x, spec.scale, rng), -spec.max_abs, spec.max_abs)
    y = v + sample_skellam(rng, spec.mu_share, spec.dim)
    if np.any(np.abs(y) > ranges.clipping_range):  # only if some |noise| > tail bound (see module docstring)
        raise ContributionError("noise exceeded the secure range; retry the round")
    return y.astype(np.float64)


def decode_sum(mean: np.ndarray, survivors: int, spec: NoisySumSpec) -> np.ndarray:
    """Coordinator side: SecAgg+ returns the survivors' mean; recover the exact integer sum."""
    total = np.asarray(mean, dtype=np.float64) * survivors
    rounded = np.rint(total)
    if rounded.size and np.max(np.abs(total - rounded)) > 1e-3:
        raise ArithmeticError("SecAgg+ result is not on the integer grid; ranges are wrong")
    return rounded.astype(np.int64)


def quantization_error_bound(spec: NoisySumSpec, survivors: int) -> float:
    """Largest possible |decoded/scale - plain sum| per coordinate with noise disabled."""
    return 0.0 if spec.scale == 1.0 else survivors / spec.scale
