"""The same job as a simulation and as a real loopback deployment, in one run (issue 22).

Runs ``fedsynth simulate`` and ``fedsynth deploy local`` with the same options (by default the
bundled Adult sample, 3 organisations, every job option at its default; extra job options after
``--``, e.g. ``-- --labels generator --rounds 2``), one after the other, each as a child
process (wall time, and the CPU time of every process it started, also those that outlive their
parent, such as Ray's workers and the warm SuperExecs: ``process_cpu.py``), and prints both, the deployment's wall time over the simulation's (target: at
most 1.5), and each run's CPU busy share of the wall time on this machine's cores.

The deployment runs everything a real federation runs (SuperLink with TLS and node
authentication, coordinator service, one daemon per organisation, the job through the
coordinator's API); the simulation runs the organisations in Flower's simulation engine.
Compare on one quiet machine only: other work on the machine slows the deployment (more
processes) more than the simulation.

    python benchmarks/deploy_vs_simulation.py [--out DIR] [--ports 29092,27000,29094] [-- JOB OPTIONS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from process_cpu import adopt_orphans, children_cpu_s, reap_orphans

FEDSYNTH = Path(sys.executable).with_name("fedsynth")


@dataclass(frozen=True)
class Timed:
    name: str
    wall_s: float
    cpu_s: float
    code: int


def timed(name: str, command: list[str], log: Path) -> Timed:
    """Run ``command`` to its end (output to ``log``); its wall time and the CPU time of every
    process it started (those that outlived their parent too: ``process_cpu.py``)."""
    cpu_before = children_cpu_s()
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc.wait()
        wall = time.monotonic() - started
    reap_orphans()
    return Timed(name, wall, children_cpu_s() - cpu_before, proc.returncode)


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    job = args_list[args_list.index("--") + 1:] if "--" in args_list else []
    own = args_list[: args_list.index("--")] if "--" in args_list else args_list
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="a new folder for both runs (default: a temporary one)")
    parser.add_argument("--ports", default="29092,27000,29094",
                        help="SuperLink, coordinator and first node port of the deployment (default: %(default)s)")
    args = parser.parse_args(own)
    adopt_orphans()
    root = args.out or Path(tempfile.mkdtemp(prefix="deploy-vs-sim-"))
    root.mkdir(parents=True, exist_ok=True)
    link, api, node = args.ports.split(",")

    runs = [
        timed("simulation", [str(FEDSYNTH), "simulate", "--out", str(root / "simulation"), *job],
              root / "simulation.log"),
        timed("deployment", [str(FEDSYNTH), "deploy", "local", "--out", str(root / "deployment"),
                             "--superlink-port", link, "--coordinator-port", api, "--first-node-port", node, *job],
              root / "deployment.log"),
    ]
    cores = os.cpu_count() or 1
    print(f"same job both ways: fedsynth simulate / deploy local {' '.join(job) or '(default options)'}; "
          f"{cores} cores; logs in {root}")
    print(f"{'run':<12}{'wall s':>9}{'CPU s':>9}{'CPU busy':>10}  exit")
    for r in runs:
        print(f"{r.name:<12}{r.wall_s:>9.1f}{r.cpu_s:>9.1f}{r.cpu_s / (r.wall_s * cores):>10.0%}  {r.code}")
    simulation, deployment = runs
    print(f"deployment / simulation wall time: {deployment.wall_s / simulation.wall_s:.2f}x (target: at most 1.5x)")
    return 0 if all(r.code == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
