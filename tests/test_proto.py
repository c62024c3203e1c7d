"""The committed generated code in authz_ledger/_proto matches proto/ (run proto/generate.sh after editing)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from tests.conftest import ROOT


def test_generated_descriptors_equal_a_fresh_compile_of_proto(tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    protos = sorted(p.relative_to(ROOT / "proto").as_posix() for p in (ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--descriptor_set_out={out}", *protos],
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert fresh.file, "no .proto files compiled"
    for file in fresh.file:
        _drop_json_names(file.message_type)  # protoc's Python plugin embeds descriptors without them
        module = "authz_ledger._proto." + file.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        committed = descriptor_pb2.FileDescriptorProto.FromString(
            importlib.import_module(module).DESCRIPTOR.serialized_pb
        )
        assert committed == file, f"{module} is stale: run proto/generate.sh"


def _drop_json_names(messages: object) -> None:
    for message in messages:  # type: ignore[attr-defined]
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)
