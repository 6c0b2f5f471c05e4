"""Whether KubeVirt's own state vouches for a running launcher or hotplug pod (`virtdev audit`).

/validate grants a release's exceptions only when KubeVirt's controller asks for the pod
(`request.userInfo.username`, which the API server vouches for). A running pod does not say
who created it, and its labels and ownerReferences are written by whoever did. What KubeVirt
writes that tenants cannot is a VirtualMachineInstance's status (sources at
github.com/kubevirt/kubevirt, `path@tag:lines`):

- virt-controller records in `status.activePods` (pod uid -> node) every pod of the VMI's
  namespace that carries the `kubevirt.io` label (its pod informer:
  pkg/controller/virtinformers.go@v1.9.0-rc.2:584-594) and whose controlling ownerReference
  carries the VMI's uid (pkg/virt-controller/watch/vmi/lifecycle.go@v1.9.0-rc.2:1030-1049;
  `IsControlledBy` compares uids:
  vendor/k8s.io/apimachinery/pkg/apis/meta/v1/controller_ref.go@v1.9.0-rc.2:24-31), and has
  done so since v0.29 (staging/src/kubevirt.io/client-go/api/v1/types.go@v0.29.0:184).
- For hotplugged volumes it names the attachment pod it works with in
  `status.volumeStatus[].hotplugVolume.attachPodName` (and `attachPodUID` once the pod is
  ready): a pod whose controlling ownerReference is the launcher pod
  (pkg/virt-controller/watch/vmi/storage.go@v1.9.0-rc.2:158-165,244-249,
  pkg/controller/controller.go@v1.9.0-rc.2:474-488,
  pkg/virt-controller/watch/vmi/volume-hotplug.go@v1.9.0-rc.2:52-69).
- Who else may write that status: the VMI has no status subresource
  (pkg/virt-operator/resource/generate/components/crds.go@v1.9.0-rc.2:149-185; the VM's has
  one: 210-211), and the `kubevirt.io:edit` role may update and patch VMIs
  (pkg/virt-operator/resource/generate/rbac/cluster.go@v1.9.0-rc.2:509-521). virt-api's
  mutating webhook is what keeps the status KubeVirt's: an UPDATE from anyone but KubeVirt's
  service accounts gets the old status back, and a CREATE gets a fresh one
  (pkg/virt-api/webhooks/mutating-webhook/mutators/vmi-mutator.go@v1.9.0-rc.2:139-153;
  since v0.33: vmi-mutator.go@v0.33.0:122-135), for CREATE and UPDATE, failurePolicy Fail
  (pkg/virt-operator/resource/generate/components/webhooks.go@v1.9.0-rc.2:175,218-242). The
  validating VMI update admitter does not guard the status: it keeps the spec and the reserved
  labels to KubeVirt's service accounts
  (pkg/virt-api/webhooks/validating-webhook/admitters/vmi-update-admitter.go@v1.9.0-rc.2:101-124).

So a launcher is KubeVirt's when its controlling ownerReference names a VMI of its own namespace
(an owner is always in its dependent's namespace) by name and uid, and that VMI's
`status.activePods` lists the launcher's uid; a hotplug pod when its controlling ownerReference
is a pod that a VMI of its namespace lists so, and that VMI names it in its volume status.

What this cannot tell: virt-controller counts any pod with the `kubevirt.io` label that names the
VMI's uid as its controller, whoever created it: it does not know either. Someone who may create
pods in a VM's namespace and reads the VMI's uid can get a pod of theirs counted. The vouching
catches a pod with no such owner, one naming a VMI that does not exist, lives in another
namespace or has another uid, and one KubeVirt has not counted. With KubeVirt before v0.33
whoever may update a VMI could write its status; before v0.29 no launcher is vouched for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtdev import catalogue
from webhook.rules.policy import LauncherPolicy

KUBEVIRT_GROUP = "kubevirt.io"
VMI_KIND = "VirtualMachineInstance"


@dataclass(frozen=True, slots=True)
class Instance:
    """What the audit keeps of one VMI: what virt-controller wrote of its pods."""

    namespace: str
    name: str
    uid: str
    #: The keys of `status.activePods`: the uids of the pods KubeVirt counts as the VMI's.
    active_pods: frozenset[str] = frozenset()
    #: `status.volumeStatus[].hotplugVolume`: (attachPodName, attachPodUID or "" before ready).
    attachment_pods: frozenset[tuple[str, str]] = frozenset()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_instance(vmi: Any) -> Instance | None:
    """One listed VMI reduced to what vouching needs; None for what is not one."""
    if not isinstance(vmi, dict):
        return None
    metadata = vmi.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace, name, uid = (_text(metadata.get(key)) for key in ("namespace", "name", "uid"))
    if not (namespace and name and uid):
        return None
    status = vmi.get("status")
    status = status if isinstance(status, dict) else {}
    active = status.get("activePods")
    active_pods = [k for k in active if isinstance(k, str)] if isinstance(active, dict) else []
    attachments: set[tuple[str, str]] = set()
    volumes = status.get("volumeStatus")
    for volume in volumes if isinstance(volumes, list) else ():
        hotplug = volume.get("hotplugVolume") if isinstance(volume, dict) else None
        if isinstance(hotplug, dict) and _text(hotplug.get("attachPodName")):
            attachments.add((hotplug["attachPodName"], _text(hotplug.get("attachPodUID"))))
    return Instance(namespace, name, uid, frozenset(active_pods), frozenset(attachments))


@dataclass
class Index:
    """The VMIs of the namespaces audited, by name and by the pods they count."""

    #: Why the VMIs could not be read ("" when they were): then nothing is vouched for.
    unreadable: str = ""
    _by_name: dict[tuple[str, str], Instance] = field(default_factory=dict)
    _by_active_pod: dict[tuple[str, str], Instance] = field(default_factory=dict)

    def add(self, instance: Instance) -> None:
        self._by_name[(instance.namespace, instance.name)] = instance
        for uid in instance.active_pods:
            self._by_active_pod[(instance.namespace, uid)] = instance

    def __len__(self) -> int:
        return len(self._by_name)

    def named(self, namespace: str, name: str) -> Instance | None:
        return self._by_name.get((namespace, name))

    def counting(self, namespace: str, pod_uid: str) -> Instance | None:
        """The VMI of `namespace` whose `status.activePods` lists this pod uid."""
        return self._by_active_pod.get((namespace, pod_uid))


@dataclass(frozen=True, slots=True)
class Vouching:
    """Whether KubeVirt's state vouches for a pod, and what says so (or what is missing)."""

    vouched: bool
    why: str


def controller_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's controlling ownerReference (Kubernetes allows one), if any."""
    references = (pod.get("metadata") or {}).get("ownerReferences")
    for reference in references if isinstance(references, list) else ():
        if isinstance(reference, dict) and reference.get("controller") is True:
            return reference
    return None


def _group(api_version: Any) -> str:
    return _text(api_version).rpartition("/")[0]


def vouch(pod: dict[str, Any], index: Index, policy: LauncherPolicy) -> Vouching | None:
    """Whether KubeVirt's state vouches for a launcher- or hotplug-labelled pod; None for any
    other pod (nothing to vouch for: it gets no exceptions anyway)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    launcher = policy.is_launcher(pod)
    hotplug = labels.get(policy.label_key) == catalogue.HOTPLUG_LABEL_VALUE
    if not (launcher or hotplug):
        return None
    if index.unreadable:
        return Vouching(False, f"VirtualMachineInstances not read ({index.unreadable})")
    metadata = pod.get("metadata") or {}
    namespace, name, uid = (_text(metadata.get(key)) for key in ("namespace", "name", "uid"))
    owner = controller_of(pod)
    if launcher:
        return _vouch_launcher(owner, namespace, uid, index)
    return _vouch_hotplug(owner, namespace, name, uid, index)


def _vouch_launcher(
    owner: dict[str, Any] | None, namespace: str, uid: str, index: Index
) -> Vouching:
    # Pods created by releases before v1 name kubevirt.io/v1alpha3: any version of the group.
    is_vmi = owner is not None and owner.get("kind") == VMI_KIND
    if owner is None or not is_vmi or _group(owner.get("apiVersion")) != KUBEVIRT_GROUP:
        return Vouching(False, "no controlling ownerReference to a VirtualMachineInstance")
    where = f"{namespace}/{_text(owner.get('name'))}"
    vmi = index.named(namespace, _text(owner.get("name")))
    if vmi is None:
        return Vouching(False, f"its controller, VMI {where}, does not exist")
    if vmi.uid != _text(owner.get("uid")):
        return Vouching(False, f"its controlling ownerReference has another uid than VMI {where}")
    if not uid or uid not in vmi.active_pods:
        return Vouching(False, f"VMI {where} does not list it in status.activePods")
    return Vouching(True, f"VMI {where} lists it in status.activePods")


def _vouch_hotplug(
    owner: dict[str, Any] | None, namespace: str, name: str, uid: str, index: Index
) -> Vouching:
    if owner is None or owner.get("kind") != "Pod" or owner.get("apiVersion") != "v1":
        return Vouching(False, "no controlling ownerReference to a launcher pod")
    launcher = _text(owner.get("name"))
    vmi = index.counting(namespace, _text(owner.get("uid")))
    if vmi is None:
        return Vouching(
            False, f"no VMI of {namespace} lists its owner {launcher} in status.activePods"
        )
    where = f"{namespace}/{vmi.name}"
    if not any(n == name and u in ("", uid) for n, u in vmi.attachment_pods):
        return Vouching(False, f"VMI {where} does not name it in status.volumeStatus")
    return Vouching(
        True, f"VMI {where} lists its owner {launcher} in status.activePods and it in volumeStatus"
    )
