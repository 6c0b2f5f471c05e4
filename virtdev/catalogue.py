"""The vocabulary shared by the agent, the webhook, the manifests and the docs.

Every fact that two parts of virtdev must agree on lives here once: which devices exist, the
extended-resource names the kubelet and the scheduler know them by, the device nodes behind
them, how a virt-launcher pod is recognised and which capabilities it needs. The agent
advertises exactly what the webhook injects because both read this module; the manifest
consistency tests compare the YAML against it.
"""

from __future__ import annotations

from dataclasses import dataclass

RESOURCE_DOMAIN = "devices.kubevirt.io"


@dataclass(frozen=True, slots=True)
class Device:
    """A host device node that launcher pods consume through the device plugin API."""

    name: str
    path: str
    permissions: str = "rw"
    default: bool = True

    @property
    def resource(self) -> str:
        """The extended-resource name: what pods request and the kubelet advertises."""
        return f"{RESOURCE_DOMAIN}/{self.name}"


DEVICES: dict[str, Device] = {
    device.name: device
    for device in (
        Device("kvm", "/dev/kvm"),
        Device("tun", "/dev/net/tun"),
        # Known, but off by default: KubeVirt only requests it when a VM asks for vhost-net.
        Device("vhost-net", "/dev/vhost-net", default=False),
    )
}

DEFAULT_DEVICES: tuple[str, ...] = tuple(d.name for d in DEVICES.values() if d.default)
#: The device that needs hardware virtualisation; software-emulated launchers go without it.
ACCELERATOR = "kvm"
#: Hypervisor devices KubeVirt requests itself (`mshv` with `--hypervisor mshv`): a launcher that
#: requests one of them was rendered by a device-plugin-aware KubeVirt and keeps its requests.
HYPERVISOR_RESOURCES: frozenset[str] = frozenset(
    f"{RESOURCE_DOMAIN}/{name}" for name in ("kvm", "mshv")
)

#: How KubeVirt labels every virt-launcher pod.
LAUNCHER_LABEL_KEY = "kubevirt.io"
LAUNCHER_LABEL_VALUE = "virt-launcher"
LAUNCHER_SELECTOR = f"{LAUNCHER_LABEL_KEY}={LAUNCHER_LABEL_VALUE}"
#: A launcher that is the target of a live migration carries this label.
MIGRATION_JOB_LABEL = "kubevirt.io/migrationJobUID"

#: The container that runs libvirt and QEMU in a launcher pod.
COMPUTE_CONTAINER = "compute"
#: The one capability virtdev itself grants compute: where it removes `privileged`, libvirt
#: still configures the VM's tap devices (what KubeVirt v0.7 rendered in its place).
NET_ADMIN = "NET_ADMIN"
#: Arguments with which KubeVirt renders a launcher that runs QEMU without KVM.
EMULATION_ARGS: tuple[str, ...] = ("--allow-emulation", "--use-emulation")

#: The kubelet's device-plugin directory and the socket names in it.
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
DEVICE_PLUGIN_VERSION = "v1beta1"
#: The kubelet's default pod limit per node: one device per possible pod.
DEFAULT_DEVICE_COUNT = 110

#: Ports: HTTPS admission, and the plain-HTTP probe/metrics ports of webhook and agent.
WEBHOOK_PORT = 8443
WEBHOOK_METRICS_PORT = 8080
AGENT_METRICS_PORT = 8081
#: Paths the API server calls.
MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"

#: The webhook's Kubernetes objects: the manifests create them, `virtdev certs ensure` fills them.
NAMESPACE = "virtdev"
WEBHOOK_SERVICE = "virtdev-webhook"
TLS_SECRET = "virtdev-webhook-tls"
MUTATING_CONFIGURATION = "virtdev"
VALIDATING_CONFIGURATION = "virtdev"


def plugin_socket(device: str) -> str:
    """The bare file name of virtdev's plugin socket for a device."""
    return f"virtdev-{device}.sock"


def kubevirt_socket(device: str) -> str:
    """The socket virt-handler serves the same resource from, when KubeVirt runs its own plugins."""
    return f"kubevirt-{device}.sock"


def resolve_devices(names: list[str] | tuple[str, ...]) -> tuple[Device, ...]:
    """Look up device names from the command line or config; unknown names are a clear error."""
    unknown = [name for name in names if name not in DEVICES]
    if unknown:
        known = ", ".join(DEVICES)
        raise ValueError(f"unknown device(s) {', '.join(unknown)}: known devices are {known}")
    return tuple(DEVICES[name] for name in dict.fromkeys(names))
