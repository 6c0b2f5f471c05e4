"""The `virtdev` command's own promises, through real processes: flags spelled out, one-line
usage errors (exit 2), one-line start-up failures (exit 1), and a quiet exit on a closed pipe."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from tests.support import free_port, heavy_imports
from tests.webhook.conftest import load_fixture
from virtdev.cli import CLOSED_PIPE, main, program_name


def virtdev(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtdev.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["webhook", "--tls-cer", "x"], "virtdev webhook: --tls-cer: no such flag"),
        (["agent", "--metrics-por", "1"], "virtdev agent: --metrics-por: no such flag"),
        (["webhook", "--port", "70000"], "virtdev webhook: --port: must be between 1 and 65535"),
        (["webhook", "--port", "0"], "virtdev webhook: --port: must be between 1 and 65535, got 0"),
        (["webhook", "--metrics-port", "-1"], "virtdev webhook: --metrics-port: must be between 0"),
        (["webhook", "--port", "https"], "virtdev webhook: --port: not a port number: 'https'"),
        (["validate", "--enforcement", "audit", "-"], "virtdev validate: --enforcement: invalid"),
        (["capacity", "extra"], "virtdev capacity: unexpected 'extra'"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: list[str], line: str) -> None:
    result = virtdev(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(line)
    assert result.stderr.count("\n") == 1
    assert result.stderr.rstrip().endswith(f"(see virtdev {args[0]} --help)")


def test_a_port_out_of_range_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "virtdev.yaml"
    config.write_text("port: 70000\n", encoding="utf-8")
    result = virtdev("webhook", "--config", config)
    assert result.returncode == 2
    assert "key 'port': must be between 1 and 65535, got 70000" in result.stderr


def test_run_as_a_kubectl_plugin_it_says_so() -> None:
    assert program_name("/usr/local/bin/kubectl-virtdev") == "kubectl virtdev"
    assert program_name("/venv/bin/virtdev") == "virtdev"


def test_the_kubectl_plugin_is_installed_beside_virtdev() -> None:
    plugin = Path(sys.executable).parent / "kubectl-virtdev"
    assert plugin.exists(), "pip install -e . makes the console scripts"
    result = subprocess.run(
        [plugin, "audit", "--output", "yaml"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("kubectl virtdev audit: ")


# --- a port in use: one line naming HOST:PORT and the reason, exit 1 --------------------------


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_a_port_in_use_is_one_line_and_exit_1(flag: str, taken: int, tmp_path: Path) -> None:
    other = "--metrics-port" if flag == "--port" else "--port"
    result = virtdev(
        "webhook",
        "--host",
        "127.0.0.1",
        flag,
        str(taken),
        other,
        str(free_port()),
        "--dev-certs-dir",
        tmp_path / "certs",
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert (
        last
        == f"virtdev webhook: {flag}: cannot listen on 127.0.0.1:{taken}: address already in use"
    )
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stdout


# --- a closed pipe --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`virtdev mutate pods.yaml | head -1`: no BrokenPipeError traceback, not exit 1 (denied)."""
    pod = load_fixture("v1-launcher-2018-privileged.json")["request"]["object"]
    items = [{**pod, "metadata": {**pod["metadata"], "name": f"p{i}"}} for i in range(300)]
    path = tmp_path / "pods.json"
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    with subprocess.Popen(
        [sys.executable, "-m", "virtdev.cli", "mutate", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # as `head -1` exits: the output is far larger than a pipe holds
        err = process.stderr.read().decode()
        assert process.wait(timeout=60) == CLOSED_PIPE
    assert first.startswith(b"apiVersion") or first.startswith(b"metadata")
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert "Exception ignored" not in err


def test_the_whole_output_is_written_when_the_reader_keeps_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = load_fixture("v1-launcher-2018-privileged.json")["request"]["object"]
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod), encoding="utf-8")
    assert main(["mutate", str(path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["metadata"] == pod["metadata"]


def test_building_the_parser_stays_light() -> None:
    """Every command, the agent on every node included, builds the whole parser: the commands
    added here (audit, the kube flags) must not pull in the client or the document readers."""
    heavy = {"kubernetes", "orjson", "yaml", "jsonpatch", "fastapi", "urllib3"}
    assert heavy_imports("import virtdev.cli as c; c.build_parser()", heavy) == []
