"""Flower's Shamir sharing run in the calling thread (``common.shamir_inline``), and the
signature checks a process remembers (``common.identity._verified``): same answers, less work."""

from __future__ import annotations

import importlib
import os
import random
import threading
import types

import pytest

import fedsynth.client.app  # noqa: F401  (patches Flower's Shamir module, as a node does)
import fedsynth.server.secure_sum  # noqa: F401  (and as the coordinator does)
from fedsynth.common import identity as identity_module
from fedsynth.common.identity import simulated_federation
from fedsynth.common.shamir_inline import InlineExecutor, run_inline

shamir = importlib.import_module("flwr.common.secure_aggregation.crypto.shamir")


def test_fedsynth_runs_flowers_shamir_module_inline():
    assert shamir.ThreadPoolExecutor is InlineExecutor


@pytest.mark.parametrize("size", [16, 32, 306])  # a seed, an exact block, a serialised private key
def test_any_threshold_of_shares_gives_the_secret_back_and_fewer_do_not(size):
    secret = random.Random(size).randbytes(size)
    shares = shamir.create_shares(secret, 4, 7)
    assert len(shares) == 7 and len({len(s) for s in shares}) == 1
    assert shamir.combine_shares(shares[:4]) == secret
    assert shamir.combine_shares(shares[3:]) == secret
    try:  # 3 of a threshold of 4 interpolate another polynomial: mostly bad padding, never the secret
        below_threshold = shamir.combine_shares(shares[:3])
    except ValueError:
        below_threshold = None
    assert below_threshold != secret


def test_no_thread_is_started_while_sharing_and_combining(monkeypatch):
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self))
    shares = shamir.create_shares(os.urandom(306), 7, 13)
    assert shamir.combine_shares(shares[:7]) and started == []


def test_inline_map_keeps_order_and_laziness_of_executor_map():
    with InlineExecutor(max_workers=8) as executor:
        mapped = executor.map(lambda a, b: a * b, [1, 2, 3], [4, 5, 6])
        assert not isinstance(mapped, list)
        assert list(mapped) == [4, 10, 18]


def test_run_inline_refuses_a_module_without_a_thread_pool_by_name():
    with pytest.raises(RuntimeError, match="'flwr_moved_it' has no 'ThreadPoolExecutor'"):
        run_inline(types.ModuleType("flwr_moved_it"))


def test_a_remembered_valid_signature_does_not_vouch_for_another_message_key_or_signature():
    identities = simulated_federation(2)
    a, b = identities["party-0"], identities["party-1"]
    message = b"survivors 1, 2, 3"
    signature = a.sign(message)
    identity_module._verified.cache_clear()
    assert b.roster.verify("party-0", message, signature)
    assert b.roster.verify("party-0", message, signature)  # answered from memory
    assert identity_module._verified.cache_info().hits == 1
    assert not b.roster.verify("party-0", message + b", 4", signature)
    assert not b.roster.verify("party-1", message, signature)
    assert not b.roster.verify("party-0", message, bytes([signature[0] ^ 1]) + signature[1:])
    assert not b.roster.verify("nobody", message, signature)
