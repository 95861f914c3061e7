"""Wall time of one SecAgg+ noisy-sum round relative to a plain, insecure Flower sum.

For each number of simulated clients and each SecAgg+ graph (one Flower simulation each, run in
a child process so it can be time-boxed) and each vector size, the coordinator runs, inside the
same simulation and after a warm-up pair of rounds (Ray start-up and first imports excluded):

* secure: ``Federation.noisy_sum`` with a Skellam spec and a (fresh) ledger -- one real
  authenticated SecAgg+ round (setup with signed keys, key sharing checked against the roster and
  the public order, masked vectors, consistency stage, unmasking), exactly as a fedsynth job;
* plain: the same clients compute the same vector plus the same noise share and send it in
  the clear in one ``grid.send_and_receive`` round trip; the coordinator sums the replies.

Graphs (``common.secagg_graph``): ``sparse`` is what fedsynth chooses (complete below 20
clients, else neighbourhoods of 2(n - t) + 3 that no placement of the dropout fraction's n - t
dropouts and as many colluders breaks), ``complete`` every client sharing with every other one (run up to
``--complete-max`` clients: it grows as n^2). ``t = n - max(1, round(dropout_fraction * n))``.

Secure and plain rounds alternate (their order flips every repetition) and the table gives the
median of each over the repetitions, and their ratio. A configuration that does not finish
within its time box is reported as such instead of a number.

    python benchmarks/secure_sum_overhead.py [--clients 20,50,100,200] [--dims 1000] [--reps 3]
        [--graphs sparse,complete] [--complete-max 50] [--dropout-fraction 0.05]
        [--budget 600] [--cpus-per-client 0.5]

Timings depend on the machine (cores, Ray actors per core): compare ratios on one machine.
Never part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

WORKER_TAG = "FEDSYNTH_BENCH_TAG"


# ---------------------------------------------------------------- child: one simulation


def survivors_needed(n: int, dropout_fraction: float) -> int:
    """The benchmark's t: n minus the tolerated dropouts (at least one)."""
    return max(2, n - max(1, round(dropout_fraction * n)))


def worker(n: int, graph: str, t: int, dims: list[int], reps: int, budget: float, cpus: float, out: Path) -> None:
    """Run one simulation with ``n`` clients on ``graph``; write results to ``out`` after every round pair."""
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

    from fedsynth.client.app import build_client_app, noise_rng
    from fedsynth.common.accounting import Ledger
    from fedsynth.common.identity import simulated_federation
    from fedsynth.common.noise import skellam_mu_for_sigma
    from fedsynth.common.secagg_graph import choose_graph
    from fedsynth.common.secure_sum import NoisySumSpec, noisy_share, secure_ranges
    from fedsynth.server.secure_sum import Federation
    from fedsynth.simulations.engine import run_in_simulation

    started = time.monotonic()
    deadline = started + budget
    neighbours = n if graph == "complete" else None
    chosen = choose_graph(n, t, neighbours)
    specs = {d: NoisySumSpec(dim=d, mu=skellam_mu_for_sigma(8.0), min_survivors=t, max_abs=30_000) for d in dims}
    results: dict = {"n": n, "t": t, "k": chosen.num_shares, "s": chosen.threshold, "cpus_per_client": cpus, "dims": {}}

    def save() -> None:
        results["elapsed_s"] = time.monotonic() - started
        out.write_text(json.dumps(results))

    class Party:
        """A client whose vector is a fixed function of (party, round): counts below max_abs."""

        guard = None

        def __init__(self, context: Context) -> None:
            self.party = int(context.node_config["partition-id"])
            self.name = f"party-{self.party}"

        def contribute(self, request, _arrays, _rng):  # noqa: ANN001
            rng = np.random.default_rng([self.party, int(request["round"]), 99])
            return rng.integers(0, 30_000, int(request["sum.dim"]))

        def check(self, _request) -> None:  # noqa: ANN001
            pass

    client_app = build_client_app(Party, fixed_seed=0, identities=simulated_federation(n))
    stage_seconds = time_stages()

    @client_app.evaluate()
    def plain(msg: Message, context: Context) -> Message:
        """The insecure baseline: the same vector and noise share as a secure round, in the clear."""
        request = dict(msg.content["config"])
        spec = NoisySumSpec.from_config(request)
        party = Party(context)
        rng = noise_rng(context, int(request["round"]), 0)
        share = noisy_share(party.contribute(request, [], rng), spec, secure_ranges(spec, n), rng)
        return Message(RecordDict({"share": ArrayRecord({"share": Array(share)})}), reply_to=msg)

    def job(grid, context):  # noqa: ANN001, ANN202
        tmp = out.parent / f"ledgers-{n}"  # inside the parent's temporary directory
        tmp.mkdir(exist_ok=True)
        counter = iter(range(10**9))

        def secure(spec: NoisySumSpec) -> float:
            fed.ledger = Ledger(tmp / f"ledger-{next(counter)}.jsonl", cap_epsilon=1e9, delta=1e-6)
            stage_seconds.clear()
            start = time.perf_counter()
            res = fed.noisy_sum(spec, {}, phase="bench", mechanism="noisy sum")
            elapsed = time.perf_counter() - start
            assert len(res.survivors) == n, res.survivors
            results.setdefault("stages", {}).setdefault(str(spec.dim), []).append(dict(stage_seconds))
            return elapsed

        plain_round = [1000]  # plain rounds get their own round numbers (noise seeds)

        def plain_sum(spec: NoisySumSpec) -> float:
            plain_round[0] += 1
            config = ConfigRecord({**spec.to_config(), "round": plain_round[0], "num_clients": n})
            start = time.perf_counter()
            node_ids = sorted(grid.get_node_ids())
            replies = list(grid.send_and_receive(
                [Message(RecordDict({"config": config}), nid, "evaluate") for nid in node_ids]
            ))
            total = np.zeros(spec.dim, dtype=np.int64)
            for reply in replies:
                total += np.rint(reply.content["share"]["share"].numpy()).astype(np.int64)
            elapsed = time.perf_counter() - start
            assert len(replies) == n and not any(r.has_error() for r in replies)
            return elapsed

        with Federation(grid, context, num_clients=n, ledger=None, neighbours=neighbours) as fed:
            warm = specs[min(dims)]
            results["warmup_s"] = [secure(warm), plain_sum(warm)]
            results["stages"] = {}  # the warm-up's are not part of the table
            save()
            for d in dims:
                row = results["dims"].setdefault(str(d), {"secure": [], "plain": []})
                while len(row["secure"]) < reps:
                    pair = [row["secure"][-1] + row["plain"][-1]] if row["secure"] else []
                    if pair and time.monotonic() + pair[0] > deadline:
                        row["cut"] = f"time box: {len(row['secure'])} of {reps} repetitions fitted"
                        break
                    order = [("secure", secure), ("plain", plain_sum)]
                    for key, fn in order if len(row["secure"]) % 2 == 0 else order[::-1]:
                        row[key].append(fn(specs[d]))
                    save()
        results["done"] = True
        save()

    run_in_simulation(job, client_app, n, cpus_per_party=cpus)


def time_stages() -> dict[str, float]:
    """Seconds of each SecAgg+ stage of the latest secure round (the workflow's stages, timed)."""
    from fedsynth.server import secure_sum

    seconds: dict[str, float] = {}
    workflow = secure_sum._TrackedSecAggPlus
    for stage in ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage"):
        def timed(self, grid, context, state, _stage=getattr(workflow, stage), _name=stage):  # noqa: ANN001, ANN202
            start = time.perf_counter()
            try:
                return _stage(self, grid, context, state)
            finally:
                seconds[_name.removesuffix("_stage")] = time.perf_counter() - start

        setattr(workflow, stage, timed)
    return seconds


# ---------------------------------------------------------------- parent: time boxes, table


def tagged_processes(tag: str) -> set[int]:
    """Live processes (this worker and everything Ray started for it) carrying ``tag``."""
    found = set()
    needle = f"{WORKER_TAG}={tag}".encode()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.add(int(entry.name))
        except OSError:
            continue
    return found


def run_worker(n: int, graph: str, args: argparse.Namespace, folder: Path) -> tuple[dict | None, str]:
    """One time-boxed child simulation; returns its (possibly partial) results and a status."""
    out, log = folder / f"clients-{n}-{graph}.json", folder / f"clients-{n}-{graph}.log"
    tag = uuid.uuid4().hex
    cmd = [sys.executable, __file__, "--worker", str(n), "--graph", graph,
           "--dropout-fraction", str(args.dropout_fraction), "--dims", args.dims, "--reps", str(args.reps),
           "--budget", str(args.budget), "--cpus-per-client", str(args.cpus_per_client), "--out", str(out)]
    env = {**os.environ, WORKER_TAG: tag, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    status = "ok"
    try:
        # the worker stops starting rounds at the budget; the grace covers Ray start-up
        # and one round that began just before the budget ran out
        proc.wait(timeout=args.budget + args.grace)
        if proc.returncode != 0:
            status = f"worker failed (exit {proc.returncode}; log: {log})"
    except subprocess.TimeoutExpired:
        status = f"time box of {args.budget + args.grace:.0f} s exceeded"
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 30  # Ray's helpers leave after their driver; then force
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in tagged_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    results = json.loads(out.read_text()) if out.exists() else None
    return results, status


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="20,50,100,200", help="comma-separated numbers of simulated clients")
    parser.add_argument("--dims", default="1000", help="comma-separated vector sizes")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each (secure, plain) pair")
    parser.add_argument("--graphs", default="sparse,complete", help="SecAgg+ graphs to compare: sparse, complete")
    parser.add_argument("--complete-max", type=int, default=50, help="largest number of clients for the complete graph")
    parser.add_argument("--dropout-fraction", type=float, default=0.05,
                        help="t = n - max(1, round(fraction * n)): the dropouts (and colluders) the graph tolerates")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds of rounds per client count (no new round starts after it)")
    parser.add_argument("--grace", type=float, default=240.0,
                        help="extra seconds (start-up, a last round) before the worker is killed")
    parser.add_argument("--cpus-per-client", type=float, default=0.5,
                        help="Ray CPUs per simulated client (0.5 on 2 cores: 4 clients run at once)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dims = sorted(int(float(d)) for d in args.dims.split(","))
    if args.worker is not None:
        t = survivors_needed(args.worker, args.dropout_fraction)
        worker(args.worker, args.graph, t, dims, args.reps, args.budget, args.cpus_per_client, args.out)
        return

    from importlib.metadata import version

    print(f"secure (SecAgg+ noisy sum) vs plain Flower sum; flwr {version('flwr')}, "
          f"{os.cpu_count()} CPUs, {args.cpus_per_client} Ray CPUs per client, median of up to "
          f"{args.reps} reps after warm-up, time box {args.budget:.0f}+{args.grace:.0f} s per client count\n")
    header = (f"{'clients':>7} {'t':>4} {'graph':>9} {'k':>4} {'s':>3} {'dim':>7} {'reps':>4} {'plain s':>8} "
              f"{'secure s':>9} {'secure/plain':>12}  note")
    print(header)
    print("-" * len(header))
    graphs = [g.strip() for g in args.graphs.split(",")]
    with tempfile.TemporaryDirectory(prefix="secure-sum-overhead-") as tmp:
        for n in (int(c) for c in args.clients.split(",")):
            t = survivors_needed(n, args.dropout_fraction)
            for graph in graphs:
                if graph == "complete" and n > args.complete_max:
                    print(f"{n:>7} {t:>4} {graph:>9} {n:>4} {t:>3} {'':>7} {'':>4} {'-':>8} {'-':>9} {'-':>12}  "
                          f"not run: the complete graph is capped at {args.complete_max} clients (O(n^2))")
                    continue
                started = time.monotonic()
                results, status = run_worker(n, graph, args, Path(tmp))
                wall = time.monotonic() - started
                k, s = (results or {}).get("k", "?"), (results or {}).get("s", "?")
                for d in dims:
                    row = (results or {}).get("dims", {}).get(str(d), {})
                    reps = min(len(row.get("secure", [])), len(row.get("plain", [])))
                    lead = f"{n:>7} {t:>4} {graph:>9} {k:>4} {s:>3} {d:>7} {reps:>4}"
                    if reps == 0:
                        reason = status if status != "ok" else "no repetition fitted the time box"
                        print(f"{lead} {'-':>8} {'-':>9} {'-':>12}  infeasible here: {reason}")
                        continue
                    plain, secure = median(row["plain"][:reps]), median(row["secure"][:reps])
                    note = row.get("cut", "" if status == "ok" else status)
                    print(f"{lead} {plain:>8.2f} {secure:>9.2f} {secure / plain:>11.1f}x  {note}")
                    stages = (results or {}).get("stages", {}).get(str(d), [])
                    if stages:
                        split = ", ".join(f"{k} {median([r[k] for r in stages]):.2f}" for k in stages[0])
                        print(f"{'':>7} secure round by stage (median s): {split}")
                print(f"{'':>7} ({graph} graph, {n} clients: {wall:.0f} s wall in all, incl. Ray start-up and warm-up)",
                      flush=True)


if __name__ == "__main__":
    main()
