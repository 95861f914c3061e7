"""A coordinator that lies, against real ClientApps: forged keys, a chosen graph, inconsistent
survivor sets, partial sums, replays (issue 20, attacks 2, 3, 4 and 7).

Every organisation is the real ClientApp with its guard and Flower's ``secaggplus_mod``
(``tests/inprocess.py`` delivers the coordinator's crafted messages in this process). The
coordinator here holds the signing keys of the colluding organisations, never an honest one's.
Each attack must be refused with a fixed code before the share or vector it aims at leaves, or
leave nothing the coordinator could unmask with fewer than ``t`` vectors.
"""

from dataclasses import replace

import numpy as np
import pytest
from flwr.common.secure_aggregation.secaggplus_constants import Key
from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes

from fedsynth.cli import bundled
from fedsynth.client.app import build_client_app
from fedsynth.client.guard import Guard, GuardPolicy
from fedsynth.client.organisation import Organisation
from fedsynth.common.identity import key_statement, request_digest, simulated_federation
from fedsynth.common.marginals import cells, cliques_to_json
from fedsynth.common.schema import load_schema
from fedsynth.common.secagg_graph import choose_graph
from fedsynth.common.secagg_wire import SIGNATURE
from fedsynth.common.secure_sum import NoisySumSpec, secure_ranges
from inprocess import (
    Federation,
    consistency_configs,
    forge,
    masked_configs,
    masked_content,
    public_neighbours,
    setup_configs,
    share_keys_configs,
    sign_survivors,
    signed_keys,
    unmask_configs,
)

SCHEMA = load_schema(bundled("adult.schema.yaml"))
TABLE = SCHEMA.read_csv(bundled("adult.csv")).iloc[:600].reset_index(drop=True)
CLIQUES = [("sex",)]
JOB = "job-1"


class Round:
    """One SecAgg+ round over ``n`` real ClientApps with noise threshold ``t``, driven by hand."""

    def __init__(self, tmp_path, n: int, t: int, colluders: int = 0, round_: int = 1, table=TABLE,
                 roster: int | None = None) -> None:
        self.n, self.t, self.round = n, t, round_
        self.identities = simulated_federation(roster or n)
        self.colluding = {f"party-{i}" for i in range(n - colluders, n)}

        def make_org(context):
            i = int(context.node_config["partition-id"])
            name = f"party-{i}"
            policy = GuardPolicy(tmp_path / f"{name}.jsonl", epsilon_cap=50.0, delta=1e-6, min_noise_multiplier=0.1,
                                 min_survivors=2)
            part = table.iloc[i::n].reset_index(drop=True)
            return Organisation(name, lambda _s: part, accepts=SCHEMA, guard=Guard(name, policy), cap_seed=i)

        self.fed = Federation(build_client_app(make_org, fixed_seed=3, identities=self.identities), n)
        self.graph = choose_graph(n, t)
        self.spec = NoisySumSpec(dim=sum(cells(SCHEMA.domain(), c) for c in CLIQUES), mu=200.0, min_survivors=t,
                                 max_abs=10**6).against_collusion(n)
        self.name = {nid: f"party-{i}" for i, nid in enumerate(self.fed.nodes)}

    @property
    def honest(self) -> list[int]:
        return [nid for nid in self.fed.nodes if self.name[nid] not in self.colluding]

    def identity(self, nid: int):
        assert self.name[nid] in self.colluding, "the coordinator holds colluders' keys only"
        return self.identities[self.name[nid]]

    def request(self) -> dict:
        return {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": cliques_to_json(CLIQUES),
                "job": JOB, "round": self.round, "num_clients": self.n, **self.spec.to_config(),
                **self.graph.to_config()}

    def setup(self, request_for=None) -> dict[int, dict]:
        """Setup at every node, for the round's request (or ``request_for(node)``)."""
        ranges = secure_ranges(self.spec, self.n)

        def configs(nid):
            request = request_for(nid) if request_for else self.request()
            return setup_configs(self.n, self.graph.num_shares, self.graph.threshold, request,
                                 float(ranges.clipping_range), ranges.quantization_range, ranges.modulus_range)

        return {nid: self.fed.send(nid, configs(nid)) for nid in self.fed.nodes}

    def share_keys(self, keys, offered_for) -> dict[int, dict | str]:
        return {nid: self.fed.send(nid, share_keys_configs(keys, offered_for(nid))) for nid in self.fed.nodes}

    def honest_to_masked(self):
        """Setup, share keys and masked vectors as an honest coordinator runs them."""
        keys = self.keys = signed_keys(self.setup())
        by_node = {k.node_id: k for k in keys}
        neighbours = public_neighbours(JOB, self.round, keys, self.graph.num_shares)
        shares = self.share_keys(keys, lambda nid: {j: (by_node[j].pk1, by_node[j].pk2) for j in neighbours[nid]})
        inbox = {nid: [] for nid in self.fed.nodes}
        for src, reply in shares.items():
            for dst, ciphertext in zip(reply[Key.DESTINATION_LIST], reply[Key.CIPHERTEXT_LIST]):
                inbox[dst].append((src, ciphertext))
        masked = {nid: self.fed.send(nid, masked_configs(inbox[nid]), masked_content(self.request(), []))
                  for nid in self.fed.nodes}
        assert all(isinstance(m, dict) and Key.MASKED_PARAMETERS in m for m in masked.values()), masked
        return keys, neighbours


def refused(reply, rule: str) -> bool:
    return isinstance(reply, str) and f"refused (rule {rule};" in reply


def test_an_honest_round_passes_every_check(tmp_path):
    r = Round(tmp_path, n=4, t=3)
    _, neighbours = r.honest_to_masked()
    survivors = r.fed.nodes
    signatures = {nid: r.fed.send(nid, consistency_configs(survivors))[SIGNATURE] for nid in survivors}
    for nid in survivors:
        reply = r.fed.send(nid, unmask_configs(survivors, signatures, sorted(neighbours[nid]), []))
        assert isinstance(reply, dict) and len(reply[Key.SHARE_LIST]) == len(neighbours[nid]), reply


def test_keys_the_coordinator_substitutes_are_refused_before_any_share_is_encrypted(tmp_path):
    r = Round(tmp_path, n=4, t=3, colluders=1)
    keys = signed_keys(r.setup())
    victim, colluder = r.honest[0], r.fed.nodes[-1]
    mine = {nid: (public_key_to_bytes(generate_key_pairs()[1]), public_key_to_bytes(generate_key_pairs()[1]))
            for nid in r.fed.nodes if nid != victim}
    attacks = {
        # its own keys under the honest organisations' names and their old signatures
        "unsigned": [k if k.node_id == victim else k.__class__(k.node_id, k.org, *mine[k.node_id], k.signature)
                     for k in keys],
        # its own keys, signed by the one colluding organisation under every other name
        "colluder-signs-all": [k if k.node_id == victim else forge(r.identity(colluder), r.request(), k.node_id,
                                                                   *mine[k.node_id]) for k in keys],
        # the honest organisations' real keys, but signed for another round
        "replayed": [k if k.node_id in (victim, colluder) else k.__class__(
            k.node_id, k.org, k.pk1, k.pk2,
            r.identities[k.org].sign(key_statement(JOB, 0, k.node_id, k.org, k.pk1, k.pk2, request_digest(r.request()))))
            for k in keys],
        # fewer than t signed keys: the victim and one colluder
        "too-few": [k for k in keys if k.node_id in (victim, colluder)],
    }
    for name, forged in attacks.items():
        by_node = {k.node_id: k for k in forged}
        offered = {nid: (k.pk1, k.pk2) for nid, k in by_node.items()}
        reply = r.fed.send(victim, share_keys_configs(forged, offered))
        assert refused(reply, "secagg-signature"), (name, reply)


def test_a_neighbourhood_the_coordinator_chose_is_refused(tmp_path):
    r = Round(tmp_path, n=20, t=19)  # sparse: k = 5
    assert not r.graph.complete
    keys = signed_keys(r.setup())
    by_node = {k.node_id: k for k in keys}
    neighbours = public_neighbours(JOB, 1, keys, r.graph.num_shares)
    victim = r.fed.nodes[0]
    others = [nid for nid in r.fed.nodes if nid not in neighbours[victim]][: r.graph.num_shares - 1]
    chosen = {victim: (by_node[victim].pk1, by_node[victim].pk2), **{j: (by_node[j].pk1, by_node[j].pk2) for j in others}}
    assert refused(r.fed.send(victim, share_keys_configs(keys, chosen)), "secagg-graph")
    public = {j: (by_node[j].pk1, by_node[j].pk2) for j in neighbours[victim]}
    assert isinstance(r.fed.send(victim, share_keys_configs(keys, public)), dict)  # the public one passes


def test_a_request_for_another_job_round_or_threshold_is_refused_before_the_vector(tmp_path):
    for change in ({"job": "other"}, {"round": 2}, {"sum.min_survivors": 4}):
        r = Round(tmp_path / str(change), n=4, t=3)
        keys = signed_keys(r.setup())
        by_node = {k.node_id: k for k in keys}
        neighbours = public_neighbours(JOB, 1, keys, r.graph.num_shares)
        r.share_keys(keys, lambda nid: {j: (by_node[j].pk1, by_node[j].pk2) for j in neighbours[nid]})
        nid = r.fed.nodes[0]
        reply = r.fed.send(nid, masked_configs([]), masked_content({**r.request(), **change}, []))
        assert refused(reply, "secagg-round"), (change, reply)


def test_inconsistent_survivor_sets_never_reach_t_signatures_twice(tmp_path):
    # n = 10, t = 7: three colluders; split the honest seven between two survivor sets
    r = Round(tmp_path, n=10, t=7, colluders=3)
    _, neighbours = r.honest_to_masked()
    colluders = [nid for nid in r.fed.nodes if nid not in r.honest]
    first, second = r.honest[:4], r.honest[4:]
    sets = {"first": sorted(first + colluders), "second": sorted(second + colluders + first[:1])}
    signatures = {name: {c: sign_survivors(r.identity(c), r.keys, r.request(), s) for c in colluders}
                  for name, s in sets.items()}
    for name, group in (("first", first), ("second", second)):
        for nid in group:
            signatures[name][nid] = r.fed.send(nid, consistency_configs(sets[name]))[SIGNATURE]
    # an honest node that signed the first set signs no other
    assert refused(r.fed.send(first[0], consistency_configs(sets["second"])), "secagg-consistency")
    revealed = {}
    for name, group in (("first", first), ("second", second)):
        for nid in group:
            members = set(sets[name])
            revealed[nid] = r.fed.send(nid, unmask_configs(
                sets[name], signatures[name], sorted(neighbours[nid] & members), sorted(neighbours[nid] - members)))
    assert all(isinstance(revealed[nid], dict) for nid in first)  # 4 + 3 = 7 = t signatures
    assert all(refused(revealed[nid], "secagg-consistency") for nid in second)  # 3 + 3 < t: nothing revealed
    # the only set any honest node revealed for holds t vectors
    assert len(sets["first"]) >= r.t


def test_a_survivor_set_below_t_or_an_unmask_for_another_set_is_refused(tmp_path):
    r = Round(tmp_path, n=20, t=17, colluders=3)  # sparse: k = 9, s = 5
    _, neighbours = r.honest_to_masked()
    victim = r.honest[0]
    # attack 3: declare dead the nodes flanking a run round the victim
    run = sorted(neighbours[victim])
    assert refused(r.fed.send(victim, consistency_configs(run)), "secagg-consistency")
    survivors = r.fed.nodes
    signatures = {nid: r.fed.send(nid, consistency_configs(survivors))[SIGNATURE] for nid in r.honest}
    # unmask naming the run instead of the set it signed, with the signatures of the whole set
    reply = r.fed.send(victim, unmask_configs(run, signatures, sorted(neighbours[victim]), []))
    assert refused(reply, "secagg-consistency")
    # the set it signed, but listing a surviving neighbour as dead to get its key share
    alive = sorted(neighbours[victim])
    reply = r.fed.send(victim, unmask_configs(survivors, signatures, alive[1:], alive[:1]))
    assert refused(reply, "secagg-unmask")
    # the signed set with the signatures of too few organisations
    few = dict(list(signatures.items())[: r.t - 1])
    assert refused(r.fed.send(victim, unmask_configs(survivors, few, alive, [])), "secagg-consistency")


def test_the_noise_of_2t_minus_n_honest_shares_is_the_planned_noise():
    planned = NoisySumSpec(dim=3, mu=50.0, min_survivors=7, max_abs=10)
    sized = planned.against_collusion(10)
    assert sized.honest_mu(10) == pytest.approx(planned.mu)  # 4 honest of 7 survivors carry mu
    assert sized.mu_of_survivors(7) == pytest.approx(50.0 * 7 / 4)
    assert planned.against_collusion(7).mu == planned.mu  # t = n: nobody may collude
    with pytest.raises(ValueError, match="need 2n/3 < t <= n"):
        planned.against_collusion(14)
    assert np.isfinite(sized.mu_share)


def test_what_leaves_besides_the_masked_vector_is_the_same_for_neighbouring_tables(tmp_path):
    """Every refusal of the new stages, and which fields every other reply carries, for D and D'."""

    def transcript(table, folder) -> list:
        r = Round(folder, n=4, t=3, colluders=1, table=table)
        keys, neighbours = r.honest_to_masked()
        victim, colluder = r.honest[0], r.fed.nodes[-1]
        out = [r.fed.send(victim, share_keys_configs(keys[:1], {}))]  # keys after the masked stage, too few
        survivors = r.fed.nodes
        out.append(r.fed.send(victim, consistency_configs(survivors[1:])))  # a set without itself
        signatures = {nid: r.fed.send(nid, consistency_configs(survivors))[SIGNATURE] for nid in r.honest}
        signatures[colluder] = sign_survivors(r.identity(colluder), r.keys, r.request(), survivors)
        out.append(r.fed.send(victim, unmask_configs(survivors[:3], signatures, [], [])))  # another set
        ok = r.fed.send(victim, unmask_configs(survivors, signatures, sorted(neighbours[victim]), []))
        out.append(sorted(ok))  # the field names of the reply that reveals shares
        return out

    neighbour = TABLE.drop(index=5).reset_index(drop=True)  # one row fewer (every party's rows differ)
    first, second = transcript(TABLE, tmp_path / "d"), transcript(neighbour, tmp_path / "d-prime")
    assert first == second
    assert all(isinstance(x, str) and "refused (rule secagg-" in x for x in first[:3]), first


def test_a_node_masks_with_its_whole_neighbourhood_or_not_at_all(tmp_path):
    # review attack: forward the victim only a colluder's and one honest neighbour's key shares,
    # then declare that neighbour dead and strip the victim's vector with the rest
    r = Round(tmp_path, n=20, t=19, colluders=1)  # sparse, k = 5
    keys = signed_keys(r.setup())
    by_node = {k.node_id: k for k in keys}
    neighbours = public_neighbours(JOB, 1, keys, r.graph.num_shares)
    shares = r.share_keys(keys, lambda nid: {j: (by_node[j].pk1, by_node[j].pk2) for j in neighbours[nid]})
    victim = r.honest[0]
    inbox = [(src, c) for src, reply in shares.items()
             for dst, c in zip(reply[Key.DESTINATION_LIST], reply[Key.CIPHERTEXT_LIST]) if dst == victim]
    assert len(inbox) == r.graph.num_shares - 1
    reply = r.fed.send(victim, masked_configs(inbox[:2]), masked_content(r.request(), []))
    assert refused(reply, "secagg-graph")
    assert isinstance(r.fed.send(victim, masked_configs(inbox), masked_content(r.request(), [])), dict)


def test_survivor_signatures_do_not_outlive_their_run_nor_precede_the_masked_vector(tmp_path):
    # review attack: collect survivor-set signatures in runs that stop before any vector, then replay them
    r = Round(tmp_path, n=10, t=7, colluders=3)
    keys = signed_keys(r.setup())
    by_node = {k.node_id: k for k in keys}
    neighbours = public_neighbours(JOB, 1, keys, r.graph.num_shares)
    r.share_keys(keys, lambda nid: {j: (by_node[j].pk1, by_node[j].pk2) for j in neighbours[nid]})
    survivors = r.fed.nodes
    assert all(refused(r.fed.send(nid, consistency_configs(survivors)), "secagg-consistency") for nid in r.honest)
    first_keys, _ = r.honest_to_masked()  # a fresh setup of the same job and round: a new run
    old = {nid: sign_survivors(r.identities[r.name[nid]], first_keys, r.request(), survivors) for nid in r.fed.nodes}
    _, neighbours = r.honest_to_masked()  # and another
    for nid in r.honest:
        r.fed.send(nid, consistency_configs(survivors))
    victim = r.honest[0]
    replayed = r.fed.send(victim, unmask_configs(survivors, old, sorted(neighbours[victim]), []))
    assert refused(replayed, "secagg-consistency")  # signatures of another run count for nothing


def test_organisations_asked_for_different_noise_in_one_sum_refuse_each_others_keys(tmp_path):
    # review attack: tell one organisation mu = 2000 and the others mu = 50, in one round
    r = Round(tmp_path, n=4, t=3)
    target = r.fed.nodes[0]
    louder = {**r.request(), **replace(r.spec, mu=40 * r.spec.mu).to_config()}
    keys = signed_keys(r.setup(lambda nid: louder if nid == target else r.request()))
    by_node = {k.node_id: k for k in keys}
    neighbours = public_neighbours(JOB, 1, keys, r.graph.num_shares)
    replies = r.share_keys(keys, lambda nid: {j: (by_node[j].pk1, by_node[j].pk2) for j in neighbours[nid]})
    assert all(refused(reply, "secagg-signature") for reply in replies.values())


def test_a_round_over_part_of_the_roster_is_refused(tmp_path):
    r = Round(tmp_path, n=4, t=3, roster=6)  # the organisations pinned a roster of six
    keys = signed_keys(r.setup())
    assert all(refused(r.fed.send(nid, share_keys_configs(keys, {})), "secagg-roster") for nid in r.fed.nodes)
