"""The SecAgg+ mask PRG: full-seed keying, exact uniformity, a round trip on Flower's primitives."""

import base64
import time
import types
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)
from scipy.stats import chisquare

from fedsynth.common.secure_prg import harden, is_hardened, mask_prg

SEED = bytes(range(32))
SHAPES = [(), (7,), (3, 4), (2, 0, 5), (2, 3, 4)]
DRAWS = 1_000_000
BUCKETS = 64


# --- contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("num_range", [2, 3, 192, 2**20, 3 * 2**61, 2**63])
def test_masks_are_deterministic_int64_in_range_with_flowers_shapes(num_range):
    masks = mask_prg(SEED, num_range, SHAPES)
    flower = pseudo_rand_gen(SEED, num_range, SHAPES)
    assert [(m.shape, m.dtype) for m in masks] == [(f.shape, f.dtype) for f in flower]
    assert [m.shape for m in masks] == SHAPES and masks[0].ndim == 0
    assert all(np.array_equal(a, b) for a, b in zip(masks, mask_prg(SEED, num_range, SHAPES)))
    flat = np.concatenate([m.ravel() for m in masks])
    assert 0 <= flat.min() and flat.max() < num_range


@pytest.mark.parametrize("num_range", [192, 2**20])
def test_a_longer_mask_extends_a_shorter_one_so_batching_cannot_matter(num_range):
    short = mask_prg(SEED, num_range, [(10,)])[0]
    longer = np.concatenate([m.ravel() for m in mask_prg(SEED, num_range, [(), (100_000,)])])
    assert np.array_equal(short, longer[:10])


@pytest.mark.parametrize("seed, num_range", [(b"", 2**20), (SEED, 1), (SEED, 2**63 + 1)])
def test_mask_prg_refuses_an_empty_seed_or_a_range_outside_2_to_2_63(seed, num_range):
    with pytest.raises(ValueError):
        mask_prg(seed, num_range, [(3,)])


def test_a_million_element_mask_takes_well_under_a_second():
    start = time.perf_counter()
    mask_prg(SEED, 192, [(1000, 1000)])  # rejection sampling: the slowest path
    assert time.perf_counter() - start < 1.0


# --- full-key dependence ----------------------------------------------------------------------


def test_seeds_that_collide_under_flowers_32_bit_fold_give_different_masks():
    colliding = bytearray(SEED)
    colliding[0] ^= 1  # the same bit of 32-bit words 0 and 1: their XOR fold is unchanged
    colliding[4] ^= 1
    shape = [(1000,)]
    assert np.array_equal(
        pseudo_rand_gen(SEED, 2**20, shape)[0], pseudo_rand_gen(bytes(colliding), 2**20, shape)[0]
    )
    ours, theirs = mask_prg(SEED, 2**20, shape)[0], mask_prg(bytes(colliding), 2**20, shape)[0]
    assert np.mean(ours == theirs) < 0.01


def test_flowers_pairwise_seed_is_the_44_byte_base64_text_of_a_32_byte_key():
    (sk_a, pk_a), (sk_b, pk_b) = generate_key_pairs(), generate_key_pairs()
    key = generate_shared_key(sk_a, pk_b)
    assert key == generate_shared_key(sk_b, pk_a)
    assert len(key) == 44 and len(base64.urlsafe_b64decode(key)) == 32


# --- uniformity -------------------------------------------------------------------------------


def bucket_counts(values: np.ndarray, num_range: int) -> np.ndarray:
    """Counts of ``values`` in 64 equal-width buckets of ``[0, num_range)`` (64 divides it)."""
    return np.bincount(values // (num_range // BUCKETS), minlength=BUCKETS)


@pytest.mark.parametrize("num_range", [2**20, 192, 3 * 2**61])
def test_masks_pass_a_chi_square_test_for_uniformity(num_range):
    values = mask_prg(b"uniformity" + bytes(22), num_range, [(DRAWS,)])[0]
    assert chisquare(bucket_counts(values, num_range)).pvalue > 1e-3


def bytes_mod_192() -> np.ndarray:
    """Uniform bytes reduced mod 192: values below 64 come up twice as often (modulo bias)."""
    return np.random.default_rng(0).integers(0, 256, DRAWS) % 192


def flower_mod_192() -> np.ndarray:
    """Flower's own generator: ``randint(0, num_range - 1)`` never outputs ``num_range - 1``."""
    return pseudo_rand_gen(SEED, 192, [(DRAWS,)])[0]


@pytest.mark.parametrize("biased", [bytes_mod_192, flower_mod_192])
def test_the_chi_square_test_rejects_a_biased_generator(biased):
    assert chisquare(bucket_counts(biased(), 192)).pvalue < 1e-9


# --- round trip on Flower's SecAgg+ primitives ------------------------------------------------

MOD_RANGE = 2**24
CLIP = 1000  # quantization range 2 * CLIP makes Flower's quantization step exactly 1
THRESHOLD = 2


@dataclass
class Client:
    """One SecAgg+ client after key sharing: its secrets and the Shamir shares it handed out."""

    nid: int
    vectors: list[np.ndarray]
    rd_seed: bytes
    sk1: bytes
    pk1: bytes
    rd_seed_shares: list[bytes]
    sk1_shares: list[bytes]


def make_clients(nids: list[int]) -> list[Client]:
    """Clients whose share ``j`` of each secret is held by client ``j`` (as Flower deals them)."""
    clients = []
    for nid in nids:
        sk, pk = generate_key_pairs()
        rng = np.random.default_rng(nid)
        vectors = [rng.integers(-CLIP, CLIP + 1, shape).astype(float) for shape in [(5,), (2, 3)]]
        rd_seed, sk1 = bytes([nid]) * 32, private_key_to_bytes(sk)
        clients.append(
            Client(
                nid, vectors, rd_seed, sk1, public_key_to_bytes(pk),
                create_shares(rd_seed, THRESHOLD, len(nids)),
                create_shares(sk1, THRESHOLD, len(nids)),
            )
        )
    return clients


def pairwise_mask(sk1: bytes, peer: Client, prg, shapes) -> list[np.ndarray]:
    """The mask of a pair, seeded by their ECDH key exactly as Flower derives it."""
    key = generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(peer.pk1))
    return prg(key, MOD_RANGE, shapes)


def masked_upload(me: Client, clients: list[Client], prg) -> list[np.ndarray]:
    """Client side, as in Flower's ``secaggplus_mod``: quantize, add own and pairwise masks."""
    vec = quantize(me.vectors, CLIP, 2 * CLIP)
    shapes = get_parameters_shape(vec)
    vec = parameters_addition(vec, prg(me.rd_seed, MOD_RANGE, shapes))
    for peer in (c for c in clients if c.nid != me.nid):
        mask = pairwise_mask(me.sk1, peer, prg, shapes)
        add = me.nid > peer.nid
        vec = parameters_addition(vec, mask) if add else parameters_subtraction(vec, mask)
    return parameters_mod(vec, MOD_RANGE)


def unmask(uploads: dict[int, list[np.ndarray]], clients: list[Client], prg) -> list[np.ndarray]:
    """Server side, as in Flower's ``SecAggPlusWorkflow.unmask_stage``, from survivors' shares."""
    held = [j for j, c in enumerate(clients) if c.nid in uploads]
    total = parameters_mod(reduce(parameters_addition, uploads.values()), MOD_RANGE)
    shapes = get_parameters_shape(total)
    for owner in clients:
        if owner.nid in uploads:
            rd_seed = combine_shares([owner.rd_seed_shares[j] for j in held])
            total = parameters_subtraction(total, prg(rd_seed, MOD_RANGE, shapes))
            continue
        sk1 = combine_shares([owner.sk1_shares[j] for j in held])
        for peer in (c for c in clients if c.nid != owner.nid):
            mask = pairwise_mask(sk1, peer, prg, shapes)
            add = owner.nid > peer.nid
            total = parameters_addition(total, mask) if add else parameters_subtraction(total, mask)
    decoded = dequantize(parameters_mod(total, MOD_RANGE), CLIP, 2 * CLIP)
    return [arr - (len(uploads) - 1) * CLIP for arr in decoded]


def survivor_round(server_prg) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Clients 3, 7, 11 mask with ``mask_prg``; 7 drops after masking. Returns (decoded, truth)."""
    clients = make_clients([3, 7, 11])
    uploads = {c.nid: masked_upload(c, clients, mask_prg) for c in clients}
    del uploads[7]
    survivors = [c.vectors for c in clients if c.nid in uploads]
    truth = [sum(parts) for parts in zip(*survivors)]
    return unmask(uploads, clients, server_prg), truth


def test_survivor_sum_decodes_exactly_when_both_sides_use_mask_prg():
    decoded, truth = survivor_round(mask_prg)
    assert all(np.array_equal(d, t) for d, t in zip(decoded, truth, strict=True))


def test_a_server_left_on_flowers_prg_cannot_remove_mask_prg_masks():
    decoded, truth = survivor_round(pseudo_rand_gen)
    assert not any(np.array_equal(d, t) for d, t in zip(decoded, truth, strict=True))


# --- harden -----------------------------------------------------------------------------------


def test_harden_rebinds_pseudo_rand_gen_and_is_idempotent():
    module = types.ModuleType("fake_secaggplus")
    module.pseudo_rand_gen = pseudo_rand_gen
    assert not is_hardened(module)
    harden(module)
    harden(module)
    assert is_hardened(module) and module.pseudo_rand_gen is mask_prg


def test_harden_refuses_a_module_without_pseudo_rand_gen_by_name():
    module = types.ModuleType("flwr_renamed_it")
    with pytest.raises(RuntimeError, match="'flwr_renamed_it' has no 'pseudo_rand_gen'"):
        harden(module)
    assert not is_hardened(module)


def test_fedsynth_hardens_both_sides_of_secagg_plus():
    """Importing fedsynth's ClientApp and coordinator rebinds both of Flower's call sites.

    That the two sides then really agree in a run is shown by every exact-sum test on real
    Flower (tests/test_secure_sum_flower.py, the loopback deployment): the coordinator removes
    each survivor's private mask with its own PRG, so a client left on Flower's PRG would make
    the decoded sum wrong (``test_a_server_left_on_flowers_prg_cannot_remove_mask_prg_masks``).
    """
    import importlib

    import fedsynth.client.app  # noqa: F401
    import fedsynth.server.secure_sum  # noqa: F401

    for name in ("flwr.client.mod.secure_aggregation.secaggplus_mod",
                 "flwr.server.workflow.secure_aggregation.secaggplus_workflow"):
        module = importlib.import_module(name)
        assert is_hardened(module), name
        assert module.pseudo_rand_gen is mask_prg


def test_the_privacy_statement_names_the_mask_generator_in_use(monkeypatch):
    import importlib

    from flwr.common.secure_aggregation import secaggplus_utils

    from fedsynth.server.release import secure_aggregation

    assert "ChaCha20" in secure_aggregation()
    workflow = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    monkeypatch.setattr(workflow, "pseudo_rand_gen", secaggplus_utils.pseudo_rand_gen)
    assert "Flower's own mask generator (32-bit seeds" in secure_aggregation()
