"""The fields authenticated SecAgg+ adds to Flower 1.41's SecAgg+ messages (``client.secagg``
checks them at the organisation, ``server.secure_sum`` fills them in at the coordinator)."""

#: The consistency stage, between the masked vectors and the unmasking.
CONSISTENCY = "fedsynth.consistency"
#: Setup: the job, round, noise threshold and request digest the keys are signed for.
JOB, ROUND, T, DIGEST = "fedsynth.job", "fedsynth.round", "fedsynth.t", "fedsynth.request"
#: A reply's signer (roster name) and signature.
ORG, SIGNATURE = "fedsynth.org", "fedsynth.signature"
#: Share keys: every node's signed keys, as parallel lists.
KEY_NODES, KEY_ORGS, KEY_PK1, KEY_PK2, KEY_SIGNATURES = (
    "fedsynth.keys.nodes",
    "fedsynth.keys.orgs",
    "fedsynth.keys.pk1",
    "fedsynth.keys.pk2",
    "fedsynth.keys.signatures",
)
#: Consistency and unmask: the survivor set, and who signed it with which signature.
SURVIVORS, SIGNERS, SIGNATURES = "fedsynth.survivors", "fedsynth.signers", "fedsynth.signatures"
