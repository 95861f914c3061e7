"""``fedsynth job ...``: the operator's client of the coordinator service's gRPC API.

A thin layer over the generated stub (``fedsynth.protos.coordinator_pb2_grpc``): submit a
job, show it (a summary an operator reads, or ``--json``), follow its events, fetch its release,
read the federation's ledger. TLS by default (``--root-certificates``); ``--insecure`` for
loopback trials. A channel that cannot connect because one side speaks TLS and the other does not
is told so (:func:`tls_mismatch`, exit 2) rather than left at gRPC's "Socket closed".
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from ..protos import coordinator_pb2 as pb
from ..protos import coordinator_pb2_grpc as pb_grpc
from .jobspec import JOB_OPTIONS, add_arguments, given

TERMINAL = (pb.SUCCEEDED, pb.FAILED)


def channel(address: str, root_certificates: Path | None) -> grpc.Channel:
    """A channel to the coordinator: TLS with ``root_certificates``, else insecure."""
    if root_certificates is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates.read_bytes()))


def write_release(chunks: Iterable[pb.ReleaseChunk], out: Path) -> list[Path]:
    """Write streamed release files into ``out`` (each file appears only when complete)."""
    out.mkdir(parents=True, exist_ok=True)
    written, open_files = [], {}
    for chunk in chunks:
        name = Path(chunk.file).name  # never outside ``out``
        part = out / f".{name}.part"
        handle = open_files.get(name) or open_files.setdefault(name, open(part, "wb"))
        handle.write(chunk.data)
        if chunk.last:
            handle.close()
            del open_files[name]
            part.replace(out / name)
            written.append(out / name)
    for name, handle in open_files.items():
        handle.close()
        (out / f".{name}.part").unlink()
        raise RuntimeError(f"the stream ended before {name} was complete")
    return written


def _connection_options() -> argparse.ArgumentParser:
    """``--coordinator`` and its security, accepted by every ``fedsynth job`` subcommand."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--coordinator", required=True, help="the coordinator service's HOST:PORT")
    security = parser.add_mutually_exclusive_group(required=True)
    security.add_argument("--root-certificates", type=Path, help="CA certificate of the coordinator's TLS")
    security.add_argument("--insecure", action="store_true", help="no TLS (loopback trials only)")
    return parser


def add_job_commands(parser: argparse.ArgumentParser) -> None:
    connection = _connection_options()
    sub = parser.add_subparsers(dest="job_command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[connection])

    submit = command("submit", "queue a job; prints its id (options left out: the coordinator's defaults)")
    submit.add_argument("--schema", type=Path, required=True, help="the job's public schema (YAML or JSON)")
    add_arguments(submit, JOB_OPTIONS)
    status = command("status", "show a job: state, round, survivors, epsilon spent of planned")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the job as JSON (for scripts)")
    command("events", "follow a job's progress until it ends").add_argument("job_id")
    fetch = command("fetch", "download a finished job's release")
    fetch.add_argument("job_id")
    fetch.add_argument("--out", type=Path, required=True)
    command("list", "list every job")
    command("ledger", "print the federation's ledger and its epsilon")


def run_job_command(args: argparse.Namespace) -> int:
    with channel(args.coordinator, None if args.insecure else args.root_certificates) as chan:
        stub = pb_grpc.CoordinatorStub(chan)
        try:
            return _COMMANDS[args.job_command](stub, args)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                mismatch = tls_mismatch(args.coordinator, wants_tls=not args.insecure)
                if mismatch:
                    print(f"error: {mismatch}", file=sys.stderr)
                    return 2
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1


def speaks_tls(address: str, timeout_s: float = 5.0) -> bool | None:
    """Whether the service at ``address`` completes a TLS handshake (None: nothing answers).

    The handshake checks no certificate: it only tells TLS from plaintext, to explain a failed
    connection; the gRPC channel itself verifies the certificate.
    """
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
            try:
                with context.wrap_socket(sock, server_hostname=host.strip("[]") or None):
                    return True
            except (ssl.SSLError, OSError):
                return False
    except (OSError, ValueError):
        return None


def tls_mismatch(address: str, wants_tls: bool) -> str | None:
    """A message when the service at ``address`` speaks TLS and the channel does not, or the reverse."""
    speaks = speaks_tls(address)
    if speaks is None or speaks == wants_tls:
        return None
    if speaks:
        return (f"TLS mismatch: the coordinator at {address} speaks TLS but --insecure was given; connect with "
                "--root-certificates CA.crt (the CA that signed its certificate)")
    return (f"TLS mismatch: the coordinator at {address} does not speak TLS (its config says insecure = true) but "
            "--root-certificates was given; connect with --insecure, or give the service a certificate")


def job_spec(schema: str, values: Mapping[str, Any]) -> pb.JobSpec:
    """The JobSpec of a job: its schema's text and its options (by name; None = the default)."""
    return pb.JobSpec(schema=schema, **{o.proto: values[o.name] for o in JOB_OPTIONS if values.get(o.name) is not None})


def submit(stub: pb_grpc.CoordinatorStub, spec: pb.JobSpec) -> pb.Job:
    """Queue a job; ``grpc.RpcError`` INVALID_ARGUMENT or FAILED_PRECONDITION when it is refused."""
    return stub.SubmitJob(pb.SubmitJobRequest(spec=spec))


def follow(stub: pb_grpc.CoordinatorStub, job_id: str, progress: Callable[[pb.JobEvent], None]) -> pb.Job:
    """Pass each progress event of a job to ``progress`` until the job ends; return the ended job."""
    for event in stub.StreamEvents(pb.StreamEventsRequest(job_id=job_id)):
        progress(event)
    return stub.GetJob(pb.GetJobRequest(job_id=job_id))


def fetch(stub: pb_grpc.CoordinatorStub, job_id: str, out: Path) -> list[Path]:
    """Download a finished job's release into ``out``."""
    return write_release(stub.FetchRelease(pb.FetchReleaseRequest(job_id=job_id)), out)


def _submit(stub: pb_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    values = given(args, JOB_OPTIONS)
    print(submit(stub, job_spec(args.schema.read_text(encoding="utf-8"), values)).job_id)
    return 0


def _print(message) -> None:  # noqa: ANN001 (any protobuf message)
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _status(stub: pb_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    job = stub.GetJob(pb.GetJobRequest(job_id=args.job_id))
    if args.json:
        job.spec.schema = f"<{len(job.spec.schema)} characters>"
        _print(job)
    else:
        print(summary(job))
    return 0


def summary(job: pb.Job) -> str:
    """``fedsynth job status``: the job in a few lines an operator reads at a glance."""
    state = pb.JobState.Name(job.state)
    run = f", Flower run {job.flower_run_id}" if job.flower_run_id else ""
    lines = [f"job {job.job_id}: {state}{run}", f"  created {job.created}, updated {job.updated}"]
    if job.round:
        lines.append(f"  round     {job.round} ({job.phase}), survivors {', '.join(job.survivors) or 'none'} "
                     f"({len(job.survivors)})")
    spent = f"{job.epsilon_spent:.4f}" if job.state != pb.QUEUED else "nothing yet"
    lines.append(f"  epsilon   {spent} spent of {job.epsilon_planned:.4f} planned")
    if job.last_event:
        lines.append(f"  latest    {job.last_event}")
    if job.error:
        lines.append(f"  error     {job.error}")
    if job.release_files:
        lines.append(f"  release   {len(job.release_files)} files: fedsynth job fetch {job.job_id} --out DIR")
    return "\n".join(lines)


def print_event(event: pb.JobEvent) -> None:
    print(f"{event.time}  {pb.JobState.Name(event.state):<9}  {event.message}", flush=True)


def _events(stub: pb_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    return 0 if follow(stub, args.job_id, print_event).state == pb.SUCCEEDED else 1


def _fetch(stub: pb_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    for path in fetch(stub, args.job_id, args.out):
        print(path)
    return 0


def _list(stub: pb_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    for job in stub.ListJobs(pb.ListJobsRequest()).jobs:
        print(f"{job.job_id}  {pb.JobState.Name(job.state):<9}  planned {job.epsilon_planned:.4f}  {job.created}")
    return 0


def _ledger(stub: pb_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    ledger = stub.GetLedger(pb.GetLedgerRequest())
    for e in ledger.entries:
        print(f"{e.seq:>5}  {e.time}  {e.phase:<10}  {e.mechanism}")
    print(f"epsilon {ledger.epsilon:.4f} ({ledger.method}) of cap {ledger.cap:g} at delta {ledger.delta:g}")
    return 0


_COMMANDS = {"submit": _submit, "status": _status, "events": _events, "fetch": _fetch, "list": _list, "ledger": _ledger}
