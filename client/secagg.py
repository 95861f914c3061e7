"""The organisation's side of authenticated SecAgg+: signed keys, a public graph, a consistency stage.

Flower 1.41's SecAgg+ (``secaggplus_mod``) is the semi-honest protocol: it takes the public keys,
the graph and the unmask lists the coordinator sends. :func:`secagg_guard` is a mod placed in
front of it that turns it into the malicious-coordinator variant of Bell et al. (CCS 2020), with
the organisation's signing identity and the roster it pinned (``common.identity``):

* **setup**: the coordinator names the job, the round, the noise threshold ``t`` and the digest
  of the round's whole request; the organisation signs its fresh key pair together with them, its
  node id and its name.
* **share keys** (before any secret is shared): it requires a round over the whole roster
  (``n`` = the roster's size) and the list of every node's signed keys, checks every signature
  against the roster and its own request digest (each name at most once, its own keys unchanged,
  between ``t`` and ``n`` nodes), recomputes the public neighbour order from that list
  (``common.identity.public_order``) and accepts exactly its own neighbourhood's keys, no other.
* **masked vector**: the round's request must hash to the digest it signed, and every other
  member of its neighbourhood must have sent it key shares: it masks with its whole neighbourhood
  or not at all (a coordinator that withheld some would otherwise strip its vector with the rest).
* **consistency** (a stage of its own, after its masked vector left): it signs the survivor set
  ``S`` it is told, bound to the round's signed keys, once per round, if ``S`` holds itself and at
  least ``t`` signed nodes.
* **unmask** (before any share is revealed): it requires ``S`` to be the set it signed and at
  least ``t`` valid signatures of distinct roster members in ``S`` on it, and reveals seed shares
  only for neighbours in ``S`` and key shares only for neighbours outside it.

Every refusal is a fixed code with public parameters (``client.organisation.refusal``). Why this
keeps the guard's accounting against a coordinator that lies: ``common.secagg_graph`` (no
placement of dead and colluding organisations breaks the graph) and ``common.identity`` (with
``3t > 2n``, ``n - t`` colluders cannot get two survivor sets signed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.compat.common import recorddict_compat as compat

from .guard import GuardRefused, verify_unmask
from .organisation import refusal
from ..common.identity import (
    Identity,
    SignedKeys,
    key_statement,
    keys_transcript,
    public_order,
    request_digest,
    survivors_statement,
)
from ..common.secagg_graph import flower_neighbourhoods
from ..common.secagg_wire import (
    CONSISTENCY,
    DIGEST,
    JOB,
    KEY_NODES,
    KEY_ORGS,
    KEY_PK1,
    KEY_PK2,
    KEY_SIGNATURES,
    ORG,
    ROUND,
    SIGNATURE,
    SIGNATURES,
    SIGNERS,
    SURVIVORS,
    T,
)

#: This mod's own state in the node's context.
STATE = "fedsynth.secagg"

#: The identity a node speaks with (None: it has none and takes part in no SecAgg+ round).
IdentityOf = Callable[[Context], Identity | None]


def secagg_guard(identity_of: IdentityOf) -> Mod:
    """A mod for in front of ``secaggplus_mod``: authenticated keys, public graph, consistency."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
        if msg.metadata.message_type != MessageType.TRAIN or configs is None:
            return call_next(msg, context)
        identity = identity_of(context)
        if identity is None:
            raise GuardRefused(refusal("organisation", "secagg-identity", "no signing key and roster configured"))
        stage = configs.get(Key.STAGE)
        if stage == Stage.SETUP:
            return _setup(identity, msg, context, call_next)
        state = _state(context)
        if stage == Stage.SHARE_KEYS:
            _check_keys(identity, msg, configs, context, state)
        elif stage == Stage.COLLECT_MASKED_VECTORS:
            _check_request(identity, msg, configs, state)
            reply = call_next(msg, context)
            _save(context, {**state, "masked": True})
            return reply
        elif stage == CONSISTENCY:
            return _sign_survivors(identity, msg, configs, context, state)
        elif stage == Stage.UNMASK:
            _check_unmask(identity, configs, context, state)
        return call_next(msg, context)

    return mod


def _refused(identity: Identity, rule: str, why: str) -> GuardRefused:
    return GuardRefused(refusal(identity.name, rule, why))


def _state(context: Context) -> dict[str, Any]:
    return dict(context.state.config_records.get(STATE, {}))


def _save(context: Context, state: Mapping[str, Any]) -> None:
    context.state.config_records[STATE] = ConfigRecord(dict(state))


def _setup(identity: Identity, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Sign the fresh key pair with the job, round and node id the coordinator names."""
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    try:
        job, round_, t, digest = str(configs.pop(JOB)), int(configs.pop(ROUND)), int(configs.pop(T)), bytes(configs.pop(DIGEST))
    except KeyError:
        raise _refused(identity, "secagg-setup", "a setup must name the job, round, t and request it is for") from None
    reply = call_next(msg, context)
    if not reply.has_content():
        return reply
    node = msg.metadata.dst_node_id
    keys = reply.content.config_records[RECORD_KEY_CONFIGS]
    pk1, pk2 = bytes(keys[Key.PUBLIC_KEY_1]), bytes(keys[Key.PUBLIC_KEY_2])
    keys[ORG] = identity.name
    keys[SIGNATURE] = identity.sign(key_statement(job, round_, node, identity.name, pk1, pk2, digest))
    _save(context, {"job": job, "round": round_, "t": t, "digest": digest, "node": node, "pk1": pk1, "pk2": pk2})
    return reply


def signed_keys_from(configs: Mapping[str, Any]) -> list[SignedKeys]:
    """The signed key list a share-keys message carries (empty when it carries none)."""
    columns = [list(configs.get(key, [])) for key in (KEY_NODES, KEY_ORGS, KEY_PK1, KEY_PK2, KEY_SIGNATURES)]
    if len({len(c) for c in columns}) != 1:
        return []
    return [SignedKeys(int(n), str(o), bytes(a), bytes(b), bytes(s)) for n, o, a, b, s in zip(*columns)]


def _check_keys(identity: Identity, msg: Message, configs: ConfigRecord, context: Context, state: dict) -> None:
    """Every key signed by a distinct roster member; exactly the public neighbourhood's keys."""
    if "job" not in state:
        raise _refused(identity, "secagg-setup", "keys offered before a signed setup")
    signed = signed_keys_from(configs)
    for key in (KEY_NODES, KEY_ORGS, KEY_PK1, KEY_PK2, KEY_SIGNATURES):
        configs.pop(key, None)
    flower = dict(context.state.config_records[RECORD_KEY_STATE])
    n, t, job, round_ = int(flower["sample_num"]), int(state["t"]), str(state["job"]), int(state["round"])
    if n != len(identity.roster.keys):
        raise _refused(identity, "secagg-roster", f"a round over n={n} organisations; the roster has {len(identity.roster.keys)}")
    if not t <= len(signed) <= n:
        raise _refused(identity, "secagg-signature", f"{len(signed)} signed keys; a round needs t={t} to n={n}")
    if len({k.node_id for k in signed}) != len(signed) or len({k.org for k in signed}) != len(signed):
        raise _refused(identity, "secagg-signature", "a node id or an organisation appears twice among the signed keys")
    bad = [k.org for k in signed if not identity.roster.verify(
        k.org, key_statement(job, round_, k.node_id, k.org, k.pk1, k.pk2, state["digest"]), k.signature)]
    if bad:
        raise _refused(identity, "secagg-signature", f"keys that no roster member signed for this round: {', '.join(sorted(bad)[:5])}")
    own = next((k for k in signed if k.node_id == state["node"]), None)
    if own is None or (own.org, own.pk1, own.pk2) != (identity.name, state["pk1"], state["pk2"]):
        raise _refused(identity, "secagg-signature", "its own keys are missing or altered in the signed list")
    neighbours = flower_neighbourhoods(public_order(job, round_, signed), int(flower["share_num"]))[own.node_id]
    expected = {str(k.node_id): [k.pk1, k.pk2] for k in signed if k.node_id in neighbours}
    offered = {key: [bytes(v) for v in value] for key, value in configs.items() if key != Key.STAGE}
    if offered != expected:
        raise _refused(identity, "secagg-graph", "the keys offered are not its neighbourhood in the public order")
    _save(context, {**state, "signed_nodes": [k.node_id for k in signed], "signed_orgs": [k.org for k in signed],
                    "neighbours": sorted(neighbours), "transcript": keys_transcript(job, round_, signed)})


def _check_request(identity: Identity, msg: Message, configs: ConfigRecord, state: dict) -> None:
    """The masked vector is for the request this node signed its keys for, masked with every
    other member of its neighbourhood."""
    request = compat.recorddict_to_fitins(msg.content, keep_input=True).config
    claimed = (str(request.get("job")), int(request.get("round", -1)), int(request.get("sum.min_survivors", -1)))
    if "neighbours" not in state or claimed != (state["job"], state["round"], state["t"]):
        raise _refused(identity, "secagg-round", "the request is not the job, round and t its keys were signed for")
    if request_digest(request) != state["digest"]:
        raise _refused(identity, "secagg-round", "the request is not the one its keys were signed for")
    sources = [int(n) for n in configs.get(Key.SOURCE_LIST, [])]
    if len(set(sources)) != len(sources) or set(sources) != set(state["neighbours"]) - {state["node"]}:
        raise _refused(identity, "secagg-graph", "key shares must come from exactly its other neighbours")


def _sign_survivors(identity: Identity, msg: Message, configs: ConfigRecord, context: Context, state: dict) -> Message:
    """Sign the survivor set, once per round, if it holds this node and at least ``t`` signed nodes."""
    survivors = sorted(int(n) for n in configs.get(SURVIVORS, []))
    signed = set(state.get("signed_nodes", []))
    if not state.get("masked") or state["node"] not in survivors or not set(survivors) <= signed:
        raise _refused(identity, "secagg-consistency", "a survivor set must hold this node and only signed nodes")
    if len(set(survivors)) != len(survivors) or len(survivors) < state["t"]:
        raise _refused(identity, "secagg-consistency", f"a survivor set needs t={state['t']} distinct nodes")
    if "survivors" in state and list(state["survivors"]) != survivors:
        raise _refused(identity, "secagg-consistency", "it already signed another survivor set this round")
    _save(context, {**state, "survivors": survivors})
    signature = identity.sign(survivors_statement(state["transcript"], survivors))
    return Message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({SIGNATURE: signature})}), reply_to=msg)


def _check_unmask(identity: Identity, configs: ConfigRecord, context: Context, state: dict) -> None:
    """Reveal only for the set it signed, signed by ``t`` roster members in it, lists to match."""
    survivors = sorted(int(n) for n in configs.pop(SURVIVORS, []))
    signers, signatures = list(configs.pop(SIGNERS, [])), list(configs.pop(SIGNATURES, []))
    if "survivors" not in state or survivors != list(state["survivors"]):
        raise _refused(identity, "secagg-consistency", "the unmask names a survivor set other than the one it signed")
    orgs, members = dict(zip(state["signed_nodes"], state["signed_orgs"])), set(survivors)
    statement = survivors_statement(state["transcript"], survivors)
    valid = {orgs[int(n)] for n, sig in zip(signers, signatures)
             if int(n) in members and int(n) in orgs and identity.roster.verify(orgs[int(n)], statement, bytes(sig))}
    if len(valid) < state["t"]:
        raise _refused(identity, "secagg-consistency",
                       f"{len(valid)} valid signatures on the survivor set; it needs t={state['t']}")
    neighbours = set(state["neighbours"])
    active, dead = list(configs[Key.ACTIVE_NODE_ID_LIST]), list(configs[Key.DEAD_NODE_ID_LIST])
    if not set(active) <= neighbours & members or not set(dead) <= neighbours - members:
        raise _refused(identity, "secagg-unmask", "active nodes must be survivors and dead ones not, all neighbours")
    flower = dict(context.state.config_records.get(RECORD_KEY_STATE, {}))
    verify_unmask(identity.name, active, dead, int(flower.get("threshold", 0)))
