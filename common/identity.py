"""Organisations' long-term signing keys, the federation's roster, and what they sign.

Why
---
Flower 1.41's SecAgg+ relays every node's two public keys through the coordinator unsigned. A
coordinator that substitutes keys of its own for every other node decrypts the victim's Shamir
shares (they are encrypted under keys agreed with the substituted ``pk2``) and strips every mask
from its vector without sending a single unmask request. Bell, Bonawitz, Gascon, Lepoint and
Raykova (CCS 2020, the malicious variant) close this with a PKI: each client signs its keys, and
each client verifies every key it receives before it shares a secret.

Mechanism
---------
* Every organisation holds an Ed25519 signing key; the **roster** maps each organisation's name
  to its public key. The roster is public and pinned in every organisation's own configuration
  (generated per run in a simulation, by ``deploy/make_certs.py`` for a deployment); the
  coordinator never supplies it.
* :func:`key_statement`: in a round's setup stage an organisation signs its fresh SecAgg+ public
  keys together with the job, the round, its Flower node id, its name and the digest of the
  round's whole request (:func:`request_digest`: noise, t, n, task, ranges). A key is accepted
  only with a valid signature of the roster key of the name it claims, each name at most once (no
  coordinator can pose as an organisation or as two), over the request this organisation was
  sent (no coordinator can ask organisations for different noise in one sum).
* :func:`survivors_statement`: in the consistency stage (before any share is revealed, after its
  own masked vector left) each surviving organisation signs the survivor set it was told, bound to
  the round's signed key list (:func:`keys_transcript`, so no signature outlives its run); it
  reveals shares only after seeing at least ``t`` valid signatures of distinct roster members on
  that same set. Two different sets
  each signed by ``t`` organisations need ``2t - n`` organisations that sign both, so with
  ``3t > 2n`` no ``n - t`` colluders can make the coordinator's survivor set inconsistent.
* :func:`public_order`: the neighbour order of a sparse graph is a hash of the job, the round and
  every signed key; each organisation recomputes it and refuses any other neighbourhood.

Every signed message starts with its own domain string and encodes each field with its length,
so no statement of one kind can be read as another, or as the same kind with other fields.

Cost: every organisation checks about ``n`` key signatures and ``t`` survivor-set signatures a
round, the same ones as every other organisation. A verification is a pure function of (public
key, message, signature), so :meth:`Roster.verify` remembers its recent answers
(:func:`_verified`): a process that hosts several organisations (a simulation) checks each
signature once, and a deployment, one organisation a process, pays what it paid before.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import numbers
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_KEYS = b"fedsynth secagg+ signed keys v1"
_SURVIVORS = b"fedsynth secagg+ survivor set v1"
_ORDER = b"fedsynth secagg+ neighbour order v1"


class IdentityError(ValueError):
    """A signing key or roster file that cannot be used (the message names the file)."""


def _encode(*fields: bytes | str | int) -> bytes:
    """Each field as its type, its length and its bytes: an injective encoding of the tuple."""
    out = bytearray()
    for value in fields:
        if isinstance(value, int):
            kind, data = b"i", str(value).encode("ascii")
        elif isinstance(value, str):
            kind, data = b"s", value.encode("utf-8")
        else:
            kind, data = b"b", bytes(value)
        out += kind + len(data).to_bytes(8, "big") + data
    return bytes(out)


def key_statement(
    job: str, round_: int, node_id: int, org: str, pk1: bytes, pk2: bytes, request: bytes
) -> bytes:
    """What an organisation signs for its SecAgg+ public keys of one round: with the job, round,
    node id, its name, and the digest of the round's whole request (:func:`request_digest`), so
    that every organisation that accepts the same signed keys was asked the same thing."""
    return _encode(_KEYS, job, round_, node_id, org, pk1, pk2, request)


def survivors_statement(transcript: bytes, survivors: Iterable[int]) -> bytes:
    """What a surviving organisation signs in the consistency stage: the set it was told, bound to
    the round's signed keys (:func:`keys_transcript`), so no signature outlives its run."""
    return _encode(_SURVIVORS, transcript, *sorted(survivors))


def request_digest(request: Mapping[str, object]) -> bytes:
    """SHA-256 of a round's request (a flat ConfigRecord: str, int, float, bool, bytes values)."""
    fields: list[bytes | str | int] = []
    for key in sorted(request):
        fields += [key, *_typed(request[key])]
    return hashlib.sha256(_encode(*fields)).digest()


def _typed(value: object) -> tuple[str, bytes | str]:
    """A request value as (kind, text), the same for a number whatever its Python or numpy type."""
    if isinstance(value, bool):
        return "bool", repr(value)
    if isinstance(value, numbers.Integral):
        return "int", str(int(value))
    if isinstance(value, numbers.Real):
        return "float", repr(float(value))
    if isinstance(value, (bytes, str)):
        return type(value).__name__, value
    return "other", repr(value)


@dataclass(frozen=True)
class SignedKeys:
    """One node's SecAgg+ public keys of one round, with the roster name and signature."""

    node_id: int
    org: str
    pk1: bytes
    pk2: bytes
    signature: bytes


def keys_transcript(job: str, round_: int, keys: Sequence[SignedKeys]) -> bytes:
    """SHA-256 of the round's whole signed key list (fresh and random for each honest organisation)."""
    transcript = hashlib.sha256(_encode(_ORDER, job, round_))
    for k in sorted(keys, key=lambda k: k.node_id):
        transcript.update(_encode(k.node_id, k.org, k.pk1, k.pk2, k.signature))
    return transcript.digest()


def public_order(job: str, round_: int, keys: Sequence[SignedKeys]) -> list[int]:
    """The nodes' cyclic order for the round's neighbourhoods, from public data only: a hash of
    the signed key list orders the node ids, so every organisation computes the same order."""
    seed = keys_transcript(job, round_, keys)
    return sorted((k.node_id for k in keys), key=lambda nid: hashlib.sha256(seed + _encode(nid)).digest())


@functools.lru_cache(maxsize=1 << 14)
def _verified(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key`` (raw)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Roster:
    """The federation's public signing keys, by organisation name (raw 32-byte Ed25519 keys)."""

    keys: Mapping[str, bytes]

    def verify(self, org: str, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``org``'s signature of ``message`` (False for unknown names)."""
        raw = self.keys.get(org)
        return raw is not None and _verified(raw, message, signature)

    def fingerprint(self) -> str:
        """SHA-256 of the roster (names and keys): what an organisation pinned, in short."""
        return hashlib.sha256(_encode(*(x for name in sorted(self.keys) for x in (name, self.keys[name])))).hexdigest()

    def dumps(self) -> str:
        """The roster as TOML (``[organisations]`` name = base64 public key)."""
        lines = ["# fedsynth federation roster: each organisation's Ed25519 public key (base64)", "[organisations]"]
        lines += [f'"{name}" = "{base64.b64encode(self.keys[name]).decode()}"' for name in sorted(self.keys)]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "Roster":
        try:
            table = tomllib.loads(Path(path).read_text(encoding="utf-8"))["organisations"]
            keys = {str(name): base64.b64decode(str(key), validate=True) for name, key in table.items()}
        except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as exc:
            raise IdentityError(f"roster {path}: not a fedsynth roster ([organisations] name = base64 key): {exc}") from None
        bad = [name for name, key in keys.items() if len(key) != 32]
        if bad or not keys:
            raise IdentityError(f"roster {path}: an Ed25519 public key is 32 bytes; wrong for {', '.join(bad) or 'all'}")
        return cls(keys)


@dataclass(frozen=True)
class Identity:
    """An organisation's name, its private signing key (raw 32 bytes) and the roster it pinned."""

    name: str
    private_key: bytes = field(repr=False)
    roster: Roster

    def __post_init__(self) -> None:
        public = self._key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if self.roster.keys.get(self.name) != public:
            raise IdentityError(f"organisation {self.name}: its signing key is not the roster's key for {self.name}")

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private_key)

    def sign(self, message: bytes) -> bytes:
        return self._key().sign(message)

    @classmethod
    def load(cls, name: str, key_path: str | Path, roster_path: str | Path) -> "Identity":
        """An organisation's identity from its PEM (PKCS#8) signing key and the roster file."""
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise IdentityError(f"signing key {key_path}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"signing key {key_path}: not an Ed25519 key")
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(name, raw, Roster.load(roster_path))


def private_key_pem(private_key: bytes) -> bytes:
    """A raw Ed25519 private key as unencrypted PKCS#8 PEM (what :meth:`Identity.load` reads)."""
    key = Ed25519PrivateKey.from_private_bytes(private_key)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_federation(names: Iterable[str]) -> dict[str, Identity]:
    """Fresh signing keys for ``names`` and their common roster (a simulation's, or a deployment's)."""
    private = {
        name: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        for name in names
    }
    roster = Roster({
        name: Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        for name, raw in private.items()
    })
    return {name: Identity(name, raw, roster) for name, raw in private.items()}


def simulated_federation(num_parties: int) -> dict[str, Identity]:
    """Identities of a simulation's organisations ``party-0`` ... (``client.app.org_name``)."""
    return new_federation(f"party-{i}" for i in range(num_parties))


def write_federation(folder: Path, names: Iterable[str]) -> Path:
    """Fresh signing keys for ``names`` as ``<name>.signing.pem`` (mode 0600) and their
    ``roster.toml`` in ``folder``; returns the roster's path."""
    folder.mkdir(parents=True, exist_ok=True)
    identities = new_federation(names)
    for name, identity in identities.items():
        key = folder / f"{name}.signing.pem"
        key.touch(mode=0o600)
        key.write_bytes(private_key_pem(identity.private_key))
    roster = folder / "roster.toml"
    roster.write_text(next(iter(identities.values())).roster.dumps(), encoding="utf-8")
    return roster
