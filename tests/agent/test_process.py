"""The real `virtdev agent` process: flags, clear errors, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.helpers import SERVED, all_have
from tests.agent.kubelet import WAIT, TestKubelet
from tests.support import heavy_imports

pytestmark = pytest.mark.slow

AGENT = [sys.executable, "-m", "virtdev.cli", "agent"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_stops_the_agent_cleanly(
    plugin_dir: Path, host_root: Path, kubelet: TestKubelet, signum: signal.Signals
) -> None:
    process = await asyncio.create_subprocess_exec(
        *AGENT,
        f"--device-plugin-dir={plugin_dir}",
        f"--host-root={host_root}",
        "--device-count=4",
        "--metrics-port=0",
        "--log-format=json",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for device in SERVED:
            await kubelet.wait_for_devices(device.resource, all_have("Healthy"))
        endpoints = list(kubelet.endpoints.values())
        assert len(endpoints) == len(SERVED)
        process.send_signal(signum)
        async with asyncio.timeout(WAIT):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    for endpoint in endpoints:
        async with asyncio.timeout(WAIT):
            await endpoint.stream_ended.wait()
        assert endpoint.lists[-1] == [], "an empty list is the last word at shutdown"
    assert os.listdir(plugin_dir) == ["kubelet.sock"]
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    assert any(line["msg"] == "registered with the kubelet" for line in lines)
    assert any(line.get("signal") == signum.name for line in lines)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--devices=kvm,gpu"], "unknown device(s) gpu: known devices are kvm, tun, vhost-net"),
        (["--devices="], "name at least one device"),
        (["--device-count=0"], "must be between 1 and"),
        (["--device-count=many"], "not a whole number"),
        (["--metrics-port=70000"], "must be between 0 and 65535"),
        (["--device-plugin-dir=/nonexistent/dp"], "/nonexistent/dp is not a directory"),
        (["--device-plugin-dir=/", "--host-root=/nonexistent/host"], "is not a directory"),
        (["--log-format=xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_flags_are_clear_errors(flags: list[str], message: str) -> None:
    result = subprocess.run([*AGENT, *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_metrics_port_in_use_is_a_clear_error(plugin_dir: Path, host_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *AGENT,
                f"--device-plugin-dir={plugin_dir}",
                f"--host-root={host_root}",
                f"--metrics-port={port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"--metrics-port: cannot listen on 0.0.0.0:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(plugin_dir) == []


def test_flags_can_come_from_the_config_file(
    tmp_path: Path, plugin_dir: Path, host_root: Path
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"device-plugin-dir: {plugin_dir}\ndevice-count: 0\n")
    result = subprocess.run(
        [*AGENT, f"--config={config}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "key 'device-count': must be between 1 and" in result.stderr


def test_the_agent_does_not_import_the_webhooks_libraries() -> None:
    heavy = {"fastapi", "uvicorn", "kubernetes", "cryptography", "starlette", "pydantic"}
    statements = "import virtdev.cli as c; c.build_parser(); import agent.app"
    assert heavy_imports(statements, heavy) == []
