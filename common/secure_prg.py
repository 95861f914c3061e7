"""A cryptographically secure mask generator for Flower's SecAgg+.

Problem
-------
Flower 1.41 derives every SecAgg+ mask from
``flwr.common.secure_aggregation.secaggplus_utils.pseudo_rand_gen(seed, num_range, dims)``.
It XOR-folds the seed into one 32-bit word and seeds ``np.random.RandomState`` (Mersenne
Twister) with it (upstream issue flwrlabs/flower#7522). The seeds themselves are strong: the
private-mask seed is ``os.urandom(32)`` and a pairwise seed is the output of Flower's
``generate_shared_key``, the urlsafe base64 text (44 ASCII bytes) of an HKDF-SHA256 digest of
an ECDH secret on P-384. After the fold, though, a mask can take only ``2**32`` values, one for
each folded seed, and the coordinator can list all of them. A client's masked vector is
``y = x + r + sum_j (+/-) m_j mod M``. The coordinator learns the private mask ``r`` legitimately
whenever it unmasks a survivor, so only the pairwise masks ``m_j`` stay secret, and a colluding
neighbour removes its own. ``x`` is far from uniform (small counts on a huge modulus), so the
coordinator can keep whichever seeds leave a plausible ``x``. One remaining mask falls to
``2**32`` trials, and ``k`` of them to at most ``2**(32k)`` (less with meet-in-the-middle). That
is far below the security SecAgg+ assumes, and it reveals an individual organisation's vector,
which SecAgg+ exists to hide. Mersenne Twister is not a cryptographic
generator either, and ``randint(0, num_range - 1)`` never outputs ``num_range - 1``.

Construction
------------
``mask_prg`` keys a stream cipher with the whole seed:

1. ``key = HKDF-SHA256(ikm=seed, salt=None, info=_INFO, length=32)``. The seed goes in whole,
   with no folding. The ``info`` string makes the mask key differ from any other key derived
   from the same bytes (Flower's own HKDF call uses ``info=None``).
2. The keystream of ChaCha20 under ``key`` with the all-zero 16-byte nonce (RFC 7539 counter
   0, nonce 0) is read as little-endian 64-bit words.
3. Each word becomes a value uniform on ``[0, num_range)`` with no modulo bias. If ``num_range``
   is a power of two, the word is masked to its low ``log2(num_range)`` bits. Otherwise
   rejection sampling applies: the word is masked to ``b = bit_length(num_range - 1)`` bits
   and kept only if it is below ``num_range``. At least half of all words are kept. Output
   value ``k`` is the ``k``-th kept word of the stream whatever the batch sizes, and the flat
   output is split over ``dimensions_list`` in order.

The fixed nonce is safe because a nonce must be unique per key only when a key encrypts
several messages. Here each seed gives its own key, and that key only ever produces one
stream: the mask of this seed. Regenerating it is the point. The coordinator has to rebuild
exactly the mask the client added, and a pairwise mask has to be identical at both ends so
that it cancels. No plaintext is ever encrypted, so keystream reuse exposes nothing. Flower
draws a fresh ``rd_seed`` and fresh key pairs in each round. One stream can yield ``2**32``
64-byte blocks (256 GiB), far more than any mask.

Why it is secure
----------------
HKDF-SHA256 is a PRF keyed by a high-entropy seed (256 bits for ``rd_seed``, about 192 bits
of ECDH security for a P-384 pairwise key). ChaCha20 is a PRG on a uniform 256-bit key. Both
mappings to ``[0, num_range)`` are exactly uniform on uniform input bits. The masks are
therefore computationally indistinguishable from independent uniform vectors on
``Z_num_range``, which is what SecAgg+'s one-time-pad argument assumes, and recovering a seed
takes about ``2**192`` work instead of ``2**32``.

Deployment
----------
``harden(module)`` rebinds ``module.pseudo_rand_gen`` to ``mask_prg``. Flower imports the
function by name, so the binding that counts is the one in each module that calls it:
``flwr.client.mod.secure_aggregation.secaggplus_mod`` (client masks) and
``flwr.server.workflow.secure_aggregation.secaggplus_workflow`` (coordinator unmasking).
Coordinator and clients must harden identically. fedsynth calls ``harden`` when its ClientApp
module and its coordinator secure-sum module are imported. If only one side is hardened, the
masks no longer cancel and the decoded sum is garbage. This module does not import Flower.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

#: HKDF ``info``: binds derived keys to this one use (and lets the construction be versioned).
_INFO = b"fedsynth SecAgg+ masks: HKDF-SHA256 -> ChaCha20 v1"
#: RFC 7539 layout (4-byte little-endian block counter, 12-byte nonce), all zero: one stream a key.
_NONCE = bytes(16)
#: Largest modulus whose values all fit in int64, the mask dtype Flower adds to its vectors.
MAX_NUM_RANGE = 2**63


class _KeyStream:
    """The ChaCha20 keystream under one key, read as consecutive little-endian uint64 words."""

    def __init__(self, key: bytes) -> None:
        self._encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()

    def words(self, count: int) -> NDArray[np.uint64]:
        """Return the next ``count`` words (the encryption of zeros is the keystream itself)."""
        return np.frombuffer(self._encryptor.update(bytes(8 * count)), dtype="<u8")


def _mask_key(seed: bytes) -> bytes:
    """Derive the 256-bit ChaCha20 key from the whole seed with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(seed)


def _uniform_below(stream: _KeyStream, num_range: int, count: int) -> NDArray[np.int64]:
    """Draw ``count`` values uniform on ``[0, num_range)``: bit masking, rejection if needed."""
    low_bits = np.uint64((1 << (num_range - 1).bit_length()) - 1)
    if num_range & (num_range - 1) == 0:
        return (stream.words(count) & low_bits).astype(np.int64)
    kept = stream.words(0)
    while kept.size < count:
        # Acceptance is num_range / (low_bits + 1) > 1/2; 1/8 spare words make one batch usual.
        expected = (count - kept.size) * (int(low_bits) + 1) // num_range
        batch = stream.words(expected + expected // 8 + 64) & low_bits
        accepted = batch[batch < np.uint64(num_range)][: count - kept.size]
        kept = np.concatenate([kept, accepted])
    return kept.astype(np.int64)


def mask_prg(
    seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]
) -> list[NDArray[np.int64]]:
    """Return one int64 mask per shape in ``dimensions_list``, uniform on ``[0, num_range)``.

    This is a drop-in replacement for Flower's ``pseudo_rand_gen``. The output depends on every
    bit of ``seed`` and is the same for the same arguments. A shape ``()`` gives a 0-d array.
    """
    if not seed:
        raise ValueError("mask_prg needs a non-empty seed")
    if not 2 <= num_range <= MAX_NUM_RANGE:
        raise ValueError(f"num_range must lie in [2, 2**63], got {num_range}")
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in dimensions_list]
    flat = _uniform_below(_KeyStream(_mask_key(seed)), num_range, sum(sizes))
    ends = np.cumsum(sizes)
    return [
        flat[end - size : end].reshape(shape)
        for shape, size, end in zip(dimensions_list, sizes, ends, strict=True)
    ]


def harden(module: ModuleType) -> None:
    """Rebind ``module.pseudo_rand_gen`` to ``mask_prg``. Calling it twice is harmless.

    Raises ``RuntimeError`` when ``module`` has no ``pseudo_rand_gen``, because that means
    Flower's SecAgg+ has changed and the replacement must be reviewed rather than skipped.
    """
    if not hasattr(module, "pseudo_rand_gen"):
        raise RuntimeError(
            f"cannot harden SecAgg+ masks: module {module.__name__!r} has no 'pseudo_rand_gen' "
            "(Flower's SecAgg+ changed); review fedsynth.common.secure_prg against this Flower "
            "version before running"
        )
    module.pseudo_rand_gen = mask_prg  # type: ignore[attr-defined]


def is_hardened(module: ModuleType) -> bool:
    """Tell whether ``module.pseudo_rand_gen`` is ``mask_prg``."""
    return getattr(module, "pseudo_rand_gen", None) is mask_prg
