"""The committed stubs are what scripts/gen_protos.sh makes, and the wire facts hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.v1beta1 import api_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        [str(ROOT / "scripts/gen_protos.sh"), str(tmp_path)], check=True, env=env, cwd=ROOT
    )
    for name in GENERATED:
        fresh = (tmp_path / name).read_bytes()
        committed = (ROOT / "agent/v1beta1" / name).read_bytes()
        assert fresh == committed, f"{name} drifted: run scripts/gen_protos.sh and commit"


def test_package_and_method_names_are_the_kubelets() -> None:
    file = api_pb2.DESCRIPTOR
    assert file.package == "v1beta1"
    plugin = file.services_by_name["DevicePlugin"]
    assert [m.name for m in plugin.methods] == [
        "GetDevicePluginOptions",
        "ListAndWatch",
        "GetPreferredAllocation",
        "Allocate",
        "PreStartContainer",
    ]
    assert plugin.methods_by_name["ListAndWatch"].server_streaming
    assert file.services_by_name["Registration"].methods_by_name["Register"].full_name == (
        "v1beta1.Registration.Register"
    )


def test_field_numbers_are_the_kubelets() -> None:
    def numbers(message: str) -> dict[str, int]:
        fields = api_pb2.DESCRIPTOR.message_types_by_name[message].fields
        return {f.name: f.number for f in fields}

    assert numbers("RegisterRequest") == {
        "version": 1,
        "endpoint": 2,
        "resource_name": 3,
        "options": 4,
    }
    assert numbers("Device") == {"ID": 1, "health": 2, "topology": 3}
    assert numbers("ContainerPreferredAllocationRequest") == {
        "available_deviceIDs": 1,
        "must_include_deviceIDs": 2,
        "allocation_size": 3,
    }
    assert numbers("ContainerAllocateResponse") == {
        "envs": 1,
        "mounts": 2,
        "devices": 3,
        "annotations": 4,
        "cdi_devices": 5,
    }
    assert numbers("DeviceSpec") == {"container_path": 1, "host_path": 2, "permissions": 3}
    assert numbers("DevicePluginOptions") == {
        "pre_start_required": 1,
        "get_preferred_allocation_available": 2,
    }


def test_the_pins_agree_with_the_generated_code() -> None:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        re.split(r"[<>=!~ ]", spec, maxsplit=1)[0]: spec
        for spec in [*project["dependencies"], *project["optional-dependencies"]["test"]]
    }
    grpc_stub = (ROOT / "agent/v1beta1/api_pb2_grpc.py").read_text()
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_stub)
    message_stub = (ROOT / "agent/v1beta1/api_pb2.py").read_text()
    protobuf_version = re.search(r"# Protobuf Python Version: ([\d.]+)", message_stub)
    assert grpc_version and protobuf_version
    assert pins["grpcio-tools"] == f"grpcio-tools=={grpc_version[1]}"
    assert pins["grpcio"].startswith(f"grpcio>={grpc_version[1]},")
    major = protobuf_version[1].split(".")[0]
    assert pins["protobuf"] == f"protobuf>={protobuf_version[1]},<{int(major) + 1}"
