"""Regenerate the checked-in gRPC code from ``coordinator.proto``.

Run ``python -m fedsynth.protos.generate`` after editing the proto (needs the ``test`` extra's
pinned ``grpcio-tools``); ``tests/test_protos.py`` fails while the checked-in code is stale.
The proto is compiled as ``fedsynth/protos/coordinator.proto`` so that the generated modules
import each other as ``fedsynth.protos``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "coordinator.proto"
GENERATED = ("coordinator_pb2.py", "coordinator_pb2.pyi", "coordinator_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Compile the proto into ``out``; return the generated files."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "fedsynth" / "protos"
        package.mkdir(parents=True)
        shutil.copyfile(HERE / PROTO, package / PROTO)
        code = protoc.main(
            ["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
             f"fedsynth/protos/{PROTO}"]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {code})")
        out.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copyfile(package / name, out / name)) for name in GENERATED]


if __name__ == "__main__":
    for path in generate(HERE):
        print(f"wrote {path}")
