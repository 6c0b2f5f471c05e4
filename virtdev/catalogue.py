"""The vocabulary shared by the agent, the webhook, the manifests and the docs.

Every fact that two parts of virtdev must agree on lives here once: which devices exist, the
extended-resource names the kubelet and the scheduler know them by, the device nodes behind
them, how a virt-launcher pod is recognised and which capabilities it needs. The agent
advertises every device the webhook injects (and vhost-net, which KubeVirt requests itself)
because both read this module; the manifest consistency tests compare the YAML against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESOURCE_DOMAIN = "devices.kubevirt.io"


@dataclass(frozen=True, slots=True)
class Device:
    """A host device node that launcher pods consume through the device plugin API."""

    name: str
    path: str
    #: Whether the webhook makes launcher pods request it (`DEFAULT_DEVICES`). The agent serves
    #: every device of `AGENT_DEVICES` whatever this says.
    default: bool = True
    #: The extended-resource name: what pods request and the kubelet advertises. Stored, not a
    #: property: every launcher admission reads it.
    resource: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", f"{RESOURCE_DOMAIN}/{self.name}")


DEVICES: dict[str, Device] = {
    device.name: device
    for device in (
        Device("kvm", "/dev/kvm"),
        Device("tun", "/dev/net/tun"),
        # Never injected by the webhook: KubeVirt's render requests it itself, for virtio NICs
        # without emulation (pkg/virt-controller/services/renderresources.go@v1.9.0:466-477).
        Device("vhost-net", "/dev/vhost-net", default=False),
    )
}

#: What the webhook makes a launcher request when it requests no device itself.
DEFAULT_DEVICES: tuple[str, ...] = tuple(d.name for d in DEVICES.values() if d.default)
#: What the agent serves by default: virt-handler's permanent device plugins, the hypervisor
#: device, tun and vhost-net (pkg/virt-handler/device-manager/device_controller.go@v1.9.0:111-123),
#: each registered whether or not its node exists, its health following the node
#: (device_controller.go@v1.9.0:484-491, generic_device.go@v1.9.0:284-338). A superset of
#: DEFAULT_DEVICES, so a launcher never asks for a resource no node offers.
AGENT_DEVICES: tuple[str, ...] = ("kvm", "tun", "vhost-net")
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
#: KubeVirt's hotplug attachment pods (not launchers) carry `kubevirt.io=hotplug-disk`.
HOTPLUG_LABEL_VALUE = "hotplug-disk"
#: The label KubeVirt sets on every launcher to its VMI's uid (template.go@v0.20.0:793): the
#: per-VM container-disk directory on the host is named after it (template.go@v0.20.0:751-757).
CREATED_BY_LABEL = "kubevirt.io/created-by"
#: Who may create launcher and hotplug pods with their release's exceptions: the requesters the
#: API server vouches for in `request.userInfo.username`, never what a pod says of itself.
#: KubeVirt's pods are all created by virt-controller, under the service account
#: `kubevirt-controller` (serviceaccountnames.go@v1.9.0-rc.2:4, the only account of KubeVirt's
#: whose role may create pods: rbac/controller.go@v1.9.0-rc.2:199-207) in the namespace KubeVirt
#: is installed in (`kubevirt`; `openshift-cnv` on OpenShift).
KUBEVIRT_CONTROLLERS: tuple[str, ...] = ("system:serviceaccount:kubevirt:kubevirt-controller",)
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
#: Devices advertised per resource: how many launcher pods on a node may hold one. virt-handler's
#: `--max-devices` default, 1000 since v0.44 (cmd/virt-handler/virt-handler.go@v1.9.0:107-108,
#: :772-776); it was 110, the kubelet's default `maxPods`, until v0.43
#: (virt-handler.go@v0.43.0:101) and was raised for nodes that admit more pods (kubevirt PR
#: #6098, commit 0c201fd). 110 would leave pods Pending on kubelets with `maxPods` above it.
DEFAULT_DEVICE_COUNT = 1000
#: The DeviceSpec permissions in the Allocate answers, chosen as virt-handler chooses them
#: (pkg/virt-handler/vm.go@v1.9.0:233-243): `rw` where the node runs cgroup v1, `rwm` on cgroup
#: v2. The kubelet hands them to the runtime unchanged (kubernetes
#: pkg/kubelet/cm/devicemanager/pod_devices.go, deviceRunContainerOptions), which turns them into
#: the container's device rule. On cgroup v2 that rule is an eBPF filter, and the filter runc
#: built before 1.0.0-rc94 (libcontainer/cgroups/ebpf/devicefilter/devicefilter.go@v1.0.0-rc93:
#: 114-135; fixed by runc PR #2796) and crun before 0.19 (crun PR #613) denies `access(2)` with
#: F_OK, which asks for neither read nor write, unless the rule is `rwm`, for which they skip
#: the access check. virtqemud (libvirtd) probes the nodes so and fails at VM start (KubeVirt
#: commit 5ab08c2, v0.40). The `m` adds only mknod(2) of the same device, and only for a
#: process with CAP_MKNOD, which non-root launchers lack. cgroup v1's device controller lets an
#: access that asks for nothing pass any rule for the device, so `rw` is enough there.
DEVICE_PERMISSIONS_CGROUP_V1 = "rw"
DEVICE_PERMISSIONS_CGROUP_V2 = "rwm"

#: Ports: HTTPS admission, and the plain-HTTP probe/metrics ports of webhook and agent.
WEBHOOK_PORT = 8443
WEBHOOK_METRICS_PORT = 8080
AGENT_METRICS_PORT = 8081
#: Paths the API server calls.
MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
GUARD_PATH = "/guard"
#: Namespaces labelled so have every pod judged against Pod Security baseline by /guard.
GUARD_LABEL_KEY = "virtdev.io/guard"
GUARD_LABEL_VALUE = "baseline"

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


#: Pauses after each failed try, the last one repeated: KubeVirt's device plugins restart so
#: (pkg/virt-handler/device-manager/device_controller.go@v1.9.0:45), and so do the agent's
#: plugins and the webhook's watch of nodes.
RESTART_BACKOFF_SECONDS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
