"""Flags and the --config file: the same names, flags winning, typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtdev import catalogue
from virtdev.cli import parse


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "virtdev.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_come_from_the_catalogue() -> None:
    args = parse(["webhook"])
    assert args.devices == list(catalogue.DEFAULT_DEVICES)
    assert args.port == catalogue.WEBHOOK_PORT
    assert args.metrics_port == catalogue.WEBHOOK_METRICS_PORT
    assert args.permitted_capabilities == []
    assert args.kubevirt_version == "auto"
    assert args.launcher_selector == "kubevirt.io=virt-launcher"
    agent = parse(["agent"])
    assert agent.devices == list(catalogue.AGENT_DEVICES)
    assert agent.device_count == catalogue.DEFAULT_DEVICE_COUNT


def test_config_keys_mirror_flags_and_flags_win(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "permitted-capabilities: [NET_ADMIN, net_bind_service]\n"
        "max-body-bytes: 1024\n"
        "emulation: true\n"
        "port: 9443\n",
    )
    args = parse(["webhook", "--config", config, "--port", "10443"])
    assert args.permitted_capabilities == ["NET_ADMIN", "NET_BIND_SERVICE"]
    assert args.max_body_bytes == 1024
    assert args.emulation is True
    assert args.port == 10443


def test_one_file_serves_webhook_and_agent(tmp_path: Path) -> None:
    """Keys of another virtdev command are ignored, so one ConfigMap can hold both."""
    config = write(tmp_path, "devices: kvm,tun,vhost-net\ndevice-count: 50\nlog-format: json\n")
    args = parse(["mutate", "--config", config, "pod.yaml"])
    assert args.devices == ["kvm", "tun", "vhost-net"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max-body-byte: 10\n", "unknown key 'max-body-byte'"),
        ("port: many\n", "key 'port': not a port number: 'many'"),
        ("port: 0\n", "key 'port': must be between 1 and 65535, got 0"),
        ("emulation: yes please\n", "key 'emulation': expected true or false"),
        ("log-format: xml\n", "'xml' is not one of text, json"),
        ("- a\n- b\n", "must be a mapping"),
        ("port: [\n", "not valid YAML"),
        ("devices: {kvm: 1}\n", "expected a scalar or a list"),
    ],
)
def test_bad_config_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = write(tmp_path, text)
    with pytest.raises(SystemExit) as exit_info:
        parse(["webhook", "--config", config])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, "one line"


def test_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["webhook", "--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in capsys.readouterr().err


def test_empty_config_file_changes_nothing(tmp_path: Path) -> None:
    assert parse(["webhook", "--config", write(tmp_path, "")]).port == catalogue.WEBHOOK_PORT


def test_device_catalogue_is_consistent() -> None:
    assert catalogue.DEFAULT_DEVICES == ("kvm", "tun")
    assert catalogue.DEVICES["kvm"].resource == "devices.kubevirt.io/kvm"
    assert catalogue.DEVICES["tun"].path == "/dev/net/tun"
    assert catalogue.DEVICES["vhost-net"].default is False
    # The agent serves what virt-handler serves: every catalogued device, the webhook's among them.
    assert catalogue.AGENT_DEVICES == tuple(catalogue.DEVICES) == ("kvm", "tun", "vhost-net")
    assert catalogue.plugin_socket("kvm") == "virtdev-kvm.sock"
    with pytest.raises(ValueError, match="unknown device"):
        catalogue.resolve_devices(["kvm", "gpu"])
