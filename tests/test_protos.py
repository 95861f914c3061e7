"""The checked-in gRPC code is what the pinned grpcio-tools makes of ``protos/coordinator.proto``."""

from pathlib import Path

from fedsynth.protos.generate import GENERATED, HERE, generate


def test_generated_code_is_current(tmp_path):
    fresh = generate(tmp_path)
    assert [p.name for p in fresh] == list(GENERATED)
    for path in fresh:
        checked_in = HERE / path.name
        assert checked_in.read_bytes() == path.read_bytes(), (
            f"{checked_in} is stale: run `python -m fedsynth.protos.generate` and commit the result"
        )


def test_the_stub_speaks_the_proto():
    import grpc

    from fedsynth.protos import coordinator_pb2, coordinator_pb2_grpc

    methods = {m.name for m in coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].methods}
    assert methods == {"SubmitJob", "GetJob", "ListJobs", "StreamEvents", "FetchRelease", "GetLedger"}
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        assert all(callable(getattr(stub, m)) for m in methods)
    assert Path(coordinator_pb2.__file__).parent == HERE
