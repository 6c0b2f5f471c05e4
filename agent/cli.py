"""Run the node agent: a kubelet device plugin (v1beta1) for /dev/kvm, /dev/net/tun and
/dev/vhost-net, as virt-handler serves them.

For each device it serves virtdev-<name>.sock in the kubelet's device-plugin directory,
registers devices.kubevirt.io/<name> with the kubelet, advertises --device-count interchangeable
devices whose health follows the device node (watched with inotify; a node the host lacks is
advertised Unhealthy, as virt-handler does), and serves again after every kubelet restart.
Allocate answers with the node read-write, `rwm` on cgroup v2 nodes (virt-handler's rule).
Where KubeVirt's own plugin (kubevirt-<name>.sock) answers, it stands down unless --take-over
is given. Probes and metrics: plain HTTP on --metrics-port (/healthz, /readyz, /metrics).
SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse

from virtdev import catalogue
from virtdev.config import add_config_flag, add_devices_flag, add_log_format_flag, port_or_zero


def _count(text: str) -> int:
    from agent.devices import MAX_DEVICE_COUNT  # light: stdlib and the catalogue only

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_DEVICE_COUNT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_DEVICE_COUNT}, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    kubelet = parser.add_argument_group("kubelet")
    kubelet.add_argument(
        "--device-plugin-dir",
        default=catalogue.DEVICE_PLUGIN_DIR,
        metavar="DIR",
        help="the kubelet's device-plugin directory, where kubelet.sock lives "
        f"(default: {catalogue.DEVICE_PLUGIN_DIR}; k3s and others move it)",
    )
    kubelet.add_argument(
        "--take-over",
        action="store_true",
        help="register even where KubeVirt's own device plugin (kubevirt-<name>.sock) answers; "
        "without it the agent stands down for that resource",
    )
    devices = parser.add_argument_group("devices")
    add_devices_flag(
        devices,
        help_text="devices to advertise (virt-handler's permanent set by default)",
        default=catalogue.AGENT_DEVICES,
    )
    devices.add_argument(
        "--host-root",
        default="/",
        metavar="DIR",
        help="where the host's filesystem is mounted: device nodes are looked for at "
        "<host-root>/dev/...; the kubelet is still given /dev/... (default: /)",
    )
    devices.add_argument(
        "--device-count",
        type=_count,
        default=catalogue.DEFAULT_DEVICE_COUNT,
        metavar="N",
        help="devices advertised per resource, i.e. pods per node that may use it "
        f"(default: {catalogue.DEFAULT_DEVICE_COUNT}, virt-handler's --max-devices)",
    )
    probes = parser.add_argument_group("probes and metrics")
    probes.add_argument(
        "--metrics-port",
        type=port_or_zero,
        default=catalogue.AGENT_METRICS_PORT,
        metavar="PORT",
        help="plain-HTTP port for /healthz, /readyz and /metrics "
        f"(default: {catalogue.AGENT_METRICS_PORT}); 0 picks a free port",
    )
    add_log_format_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from agent.app import StartError, main
    from agent.settings import AgentSettings
    from virtdev import logs

    logs.setup(args.log_format, args.log_level)
    try:
        devices = catalogue.resolve_devices(args.devices)
    except ValueError as error:
        raise SystemExit(f"virtdev agent: --devices: {error}") from None
    if not devices:
        raise SystemExit("virtdev agent: --devices: name at least one device")
    for flag, path in (
        ("--device-plugin-dir", args.device_plugin_dir),
        ("--host-root", args.host_root),
    ):
        if not os.path.isdir(path):
            raise SystemExit(f"virtdev agent: {flag}: {path} is not a directory")
    settings = AgentSettings(
        plugin_dir=args.device_plugin_dir,
        host_root=args.host_root,
        devices=devices,
        device_count=args.device_count,
        metrics_port=args.metrics_port,
        take_over=args.take_over,
    )
    try:
        return asyncio.run(main(settings))
    except StartError as error:
        raise SystemExit(f"virtdev agent: {error}") from None
