"""A coordinator that lies, talking to real fedsynth ClientApps in this process.

Each organisation is the real ClientApp (``client.app.build_client_app``: ``public_errors``, the
guard, ``client.secagg.secagg_guard`` and Flower's own ``secaggplus_mod``) with its own node
context; :class:`Federation` hands it whatever messages a test crafts, stage by stage, and turns
an exception into the error reply real Flower would deliver. Nothing of the ClientApp is mocked:
only the transport is in-process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, MessageType, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

from fedsynth.common.identity import (
    Identity,
    SignedKeys,
    key_statement,
    keys_transcript,
    public_order,
    request_digest,
    survivors_statement,
)
from fedsynth.common.secagg_graph import flower_neighbourhoods
from fedsynth.common.secagg_wire import (
    CONSISTENCY, DIGEST, JOB, KEY_NODES, KEY_ORGS, KEY_PK1, KEY_PK2, KEY_SIGNATURES, ORG, ROUND, SIGNATURE, SIGNATURES,
    SIGNERS, SURVIVORS, T,
)
from fedsynth.common.secure_sum import MAX_WEIGHT

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # messages from "the SuperLink"


@dataclass
class Federation:
    """``n`` real ClientApps (node ids 101, 102, ...) and the contexts that keep their state."""

    app: Any
    n: int
    contexts: dict[int, Context] = field(init=False)

    def __post_init__(self) -> None:
        self.contexts = {
            101 + i: Context(run_id=1, node_id=101 + i, node_config={"partition-id": i}, state=RecordDict(), run_config={})
            for i in range(self.n)
        }

    @property
    def nodes(self) -> list[int]:
        return sorted(self.contexts)

    def send(self, node: int, configs: dict[str, Any], content: RecordDict | None = None) -> dict[str, Any] | str:
        """One message to ``node``: its SecAgg+ reply fields, or the error text Flower would relay."""
        content = content or RecordDict()
        content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(configs)
        message = Message(content, node, MessageType.TRAIN, group_id="1")
        try:
            reply = self.app(message, self.contexts[node])
        except Exception as exc:  # noqa: BLE001 (real Flower relays the text of whatever was raised)
            return str(exc)
        return dict(reply.content.config_records[RECORD_KEY_CONFIGS])


def setup_configs(n: int, k: int, s: int, request: dict, clipping: float, target: int, mod: int) -> dict:
    return {
        Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: k, Key.THRESHOLD: s,
        Key.CLIPPING_RANGE: clipping, Key.TARGET_RANGE: target, Key.MOD_RANGE: mod, Key.MAX_WEIGHT: float(MAX_WEIGHT),
        JOB: request["job"], ROUND: request["round"], T: request["sum.min_survivors"], DIGEST: request_digest(request),
    }


def signed_keys(replies: dict[int, dict]) -> list[SignedKeys]:
    """The signed keys in setup replies, as the coordinator relays them."""
    return [SignedKeys(nid, r[ORG], r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2], r[SIGNATURE]) for nid, r in sorted(replies.items())]


def forge(identity: Identity, request: dict, node: int, pk1: bytes, pk2: bytes) -> SignedKeys:
    """Keys signed by a colluding organisation's own key (all a coordinator with colluders can sign)."""
    statement = key_statement(request["job"], request["round"], node, identity.name, pk1, pk2, request_digest(request))
    return SignedKeys(node, identity.name, pk1, pk2, identity.sign(statement))


def share_keys_configs(keys: list[SignedKeys], offered: dict[int, tuple[bytes, bytes]]) -> dict:
    return {
        Key.STAGE: Stage.SHARE_KEYS,
        KEY_NODES: [k.node_id for k in keys], KEY_ORGS: [k.org for k in keys], KEY_PK1: [k.pk1 for k in keys],
        KEY_PK2: [k.pk2 for k in keys], KEY_SIGNATURES: [k.signature for k in keys],
        **{str(nid): [pk1, pk2] for nid, (pk1, pk2) in offered.items()},
    }


def public_neighbours(job: str, round_: int, keys: list[SignedKeys], k: int) -> dict[int, set[int]]:
    return flower_neighbourhoods(public_order(job, round_, keys), k)


def masked_content(request: dict, arrays: list[np.ndarray]) -> RecordDict:
    return compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(arrays), request), keep_input=True)


def masked_configs(ciphertexts: list[tuple[int, bytes]]) -> dict:
    return {Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.CIPHERTEXT_LIST: [c for _, c in ciphertexts],
            Key.SOURCE_LIST: [src for src, _ in ciphertexts]}


def consistency_configs(survivors: list[int]) -> dict:
    return {Key.STAGE: CONSISTENCY, SURVIVORS: sorted(survivors)}


def unmask_configs(survivors: list[int], signatures: dict[int, bytes], active: list[int], dead: list[int]) -> dict:
    return {Key.STAGE: Stage.UNMASK, SURVIVORS: sorted(survivors), SIGNERS: list(signatures),
            SIGNATURES: list(signatures.values()), Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead}


def sign_survivors(identity: Identity, keys: list[SignedKeys], request: dict, survivors: list[int]) -> bytes:
    """A colluding organisation's signature on any set the coordinator likes, in this run."""
    return identity.sign(survivors_statement(keys_transcript(request["job"], request["round"], keys), survivors))
