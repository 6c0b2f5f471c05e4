"""The manifests say what the code says: virtdev.catalogue is the single source of truth.

Resource names, the launcher selector, ports, paths, the device-plugin directory and the
webhook's object names are compared with the catalogue in the base and in every overlay; the
workloads' args and the shared config file are parsed by the real `virtdev` command line.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import virtdev
from tests.manifests.k8s import arg_value, container_port, find, find_all, ref, workloads
from tests.manifests.tools import REPO, kustomizations
from virtdev import catalogue, cli

Objects = list[dict[str, Any]]
APPLIED = [name for name in kustomizations() if name != "create-once"]
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
CONFIG_PATH = "/etc/virtdev/config/config.yaml"


def _container(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    obj = find(objects, kind, name)
    (_, spec), *_ = workloads([obj])
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1, f"{ref(obj)}: expected one container"
    return containers[0]


@pytest.mark.parametrize("kustomization", APPLIED)
def test_every_namespaced_object_is_in_virtdevs_namespace(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "SecurityContextConstraints",
        "CustomResourceDefinition",
        *WEBHOOK_KINDS,
    }
    wrong = [
        ref(o)
        for o in rendered[kustomization]
        if o["kind"] not in cluster_scoped and o["metadata"].get("namespace") != catalogue.NAMESPACE
    ]
    assert not wrong, f"not in namespace {catalogue.NAMESPACE}: {wrong}"
    find(rendered[kustomization], "Namespace", catalogue.NAMESPACE)


@pytest.mark.parametrize("kustomization", APPLIED)
def test_webhook_configurations_call_the_catalogues_service_paths_and_names(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    objects = rendered[kustomization]
    service = find(objects, "Service", catalogue.WEBHOOK_SERVICE)
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    for kind, name, paths in (
        ("MutatingWebhookConfiguration", catalogue.MUTATING_CONFIGURATION, [catalogue.MUTATE_PATH]),
        (
            "ValidatingWebhookConfiguration",
            catalogue.VALIDATING_CONFIGURATION,
            [catalogue.VALIDATE_PATH, catalogue.GUARD_PATH],
        ),
    ):
        configuration = find(objects, kind, name)
        assert len(configuration["webhooks"]) == len(paths)
        for webhook, path in zip(configuration["webhooks"], paths, strict=True):
            assert webhook["clientConfig"] == {
                "service": {
                    "namespace": catalogue.NAMESPACE,
                    "name": catalogue.WEBHOOK_SERVICE,
                    "path": path,
                    "port": https["port"],
                }
            }, f"{kind}: clientConfig must name the Service only, and carry no caBundle"
        webhook = configuration["webhooks"][0]
        assert webhook["objectSelector"] == {
            "matchLabels": {catalogue.LAUNCHER_LABEL_KEY: catalogue.LAUNCHER_LABEL_VALUE}
        }
        assert webhook["namespaceSelector"] == {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", catalogue.NAMESPACE],
                }
            ]
        }


@pytest.mark.parametrize("kustomization", APPLIED)
def test_webhook_configurations_carry_the_policies_of_the_issue(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    objects = rendered[kustomization]
    (mutate,) = find(objects, "MutatingWebhookConfiguration", "virtdev")["webhooks"]
    validate, guard = find(objects, "ValidatingWebhookConfiguration", "virtdev")["webhooks"]
    for webhook in (mutate, validate, guard):
        assert "caBundle" not in webhook["clientConfig"], "a re-apply would wipe the injected CA"
        assert webhook["sideEffects"] == "None"
        assert webhook["timeoutSeconds"] <= 3
        assert webhook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert mutate["failurePolicy"] == "Ignore"
    assert mutate["reinvocationPolicy"] == "IfNeeded"
    assert mutate["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert validate["failurePolicy"] == "Fail"
    assert validate["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["pods", "pods/ephemeralcontainers"],
            "scope": "Namespaced",
        }
    ]


@pytest.mark.parametrize("kustomization", APPLIED)
def test_webhook_deployment_ports_probes_and_service_match_the_catalogue(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    objects = rendered[kustomization]
    deployment = find(objects, "Deployment", "virtdev-webhook")
    container = _container(objects, "Deployment", "virtdev-webhook")
    args = container["args"]
    assert args[0] == "webhook"
    assert container_port(container, "https") == catalogue.WEBHOOK_PORT
    assert container_port(container, "metrics") == catalogue.WEBHOOK_METRICS_PORT
    assert arg_value(args, "--port") == str(catalogue.WEBHOOK_PORT)
    assert arg_value(args, "--metrics-port") == str(catalogue.WEBHOOK_METRICS_PORT)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert deployment["spec"]["replicas"] >= 2

    service = find(objects, "Service", catalogue.WEBHOOK_SERVICE)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "Service selects no webhook pod"
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert targets == {"https": "https", "metrics": "metrics"}

    budget = find(objects, "PodDisruptionBudget", "virtdev-webhook")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"], "drains would block"

    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == catalogue.TLS_SECRET
    assert sorted(item["key"] for item in volumes["tls"]["secret"]["items"]) == [
        "tls.crt",
        "tls.key",
    ], "the webhook must mount the serving pair only, never the CA's key"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert arg_value(args, "--tls-cert") == f"{mounts['tls']}/tls.crt"
    assert arg_value(args, "--tls-key") == f"{mounts['tls']}/tls.key"


@pytest.mark.parametrize("kustomization", APPLIED)
def test_agent_uses_the_device_plugin_directory_and_host_dev(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    objects = rendered[kustomization]
    daemonset = find(objects, "DaemonSet", "virtdev-agent")
    container = _container(objects, "DaemonSet", "virtdev-agent")
    args = container["args"]
    assert args[0] == "agent"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}

    assert arg_value(args, "--device-plugin-dir") == catalogue.DEVICE_PLUGIN_DIR
    assert mounts["device-plugins"]["mountPath"] == catalogue.DEVICE_PLUGIN_DIR
    assert not mounts["device-plugins"].get("readOnly"), "the agent creates its sockets there"
    host_dir = volumes["device-plugins"]["hostPath"]["path"]
    if kustomization in ("base", "overlays/cert-manager", "overlays/openshift"):
        assert host_dir == catalogue.DEVICE_PLUGIN_DIR
    assert host_dir.endswith("/device-plugins"), host_dir

    host_root = arg_value(args, "--host-root")
    assert host_root == "/host"
    assert mounts["host-dev"]["mountPath"] == f"{host_root}/dev"
    assert mounts["host-dev"]["readOnly"] is True
    assert volumes["host-dev"]["hostPath"]["path"] == "/dev"

    assert container_port(container, "metrics") == catalogue.AGENT_METRICS_PORT
    assert arg_value(args, "--metrics-port") == str(catalogue.AGENT_METRICS_PORT)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize("kustomization", ["overlays/k0s", "overlays/microk8s"])
def test_kubelet_directory_overlays_move_only_the_host_side(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    base = find(rendered["base"], "DaemonSet", "virtdev-agent")
    moved = find(rendered[kustomization], "DaemonSet", "virtdev-agent")
    volumes = {v["name"]: v for v in moved["spec"]["template"]["spec"]["volumes"]}
    assert volumes["device-plugins"]["hostPath"]["path"] != catalogue.DEVICE_PLUGIN_DIR
    volumes["device-plugins"]["hostPath"]["path"] = catalogue.DEVICE_PLUGIN_DIR
    assert moved == base, f"{kustomization} changes more than the kubelet directory's host path"


#: The port the API server's endpoints listen on, per distribution (what a CNI enforcing
#: NetworkPolicy sees after the `kubernetes` Service address is translated).
API_SERVER_PORTS = {
    "base": 6443,
    "overlays/k0s": 6443,
    "overlays/microk8s": 16443,
    "overlays/policy-reports": 6443,
}


@pytest.mark.parametrize(("kustomization", "port"), API_SERVER_PORTS.items())
def test_pods_that_call_the_api_server_may_reach_its_port(
    kustomization: str, port: int, rendered: dict[str, Objects]
) -> None:
    policies = {p["metadata"]["name"] for p in find_all(rendered[kustomization], "NetworkPolicy")}
    for name in ("virtdev-webhook", "virtdev-certs", *({"virtdev-audit"} & policies)):
        policy = find(rendered[kustomization], "NetworkPolicy", name)
        allowed = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {443, port} <= allowed, f"{kustomization}: {name} cannot reach the API server"


def _shared_config(objects: Objects) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", "virtdev-config")
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return loaded


def test_shared_config_states_the_catalogues_count_and_selector(
    rendered: dict[str, Objects],
) -> None:
    config = _shared_config(rendered["base"])
    assert config["launcher-selector"] == catalogue.LAUNCHER_SELECTOR
    assert config["device-count"] == catalogue.DEFAULT_DEVICE_COUNT == 1000


def test_shared_config_leaves_each_commands_devices_to_the_catalogue(
    rendered: dict[str, Objects],
) -> None:
    """One `devices` key would set the webhook's injected list and the agent's served list
    alike; they differ (the agent also serves vhost-net, which KubeVirt requests itself)."""
    assert "devices" not in _shared_config(rendered["base"])
    assert set(catalogue.DEFAULT_DEVICES) < set(catalogue.AGENT_DEVICES)


#: Who creates KubeVirt's pods, per kustomization: virt-controller's service account in the
#: namespace KubeVirt is installed in (`openshift-cnv` for OpenShift Virtualization).
OPENSHIFT_CONTROLLER = "system:serviceaccount:openshift-cnv:kubevirt-controller"
KUBEVIRT_CONTROLLERS = {name: list(catalogue.KUBEVIRT_CONTROLLERS) for name in APPLIED} | {
    "overlays/openshift": [OPENSHIFT_CONTROLLER]
}

#: The one form of matchConditions expression the manifests use: a list of quoted usernames.
_QUOTED = r"'[^'\\]*'"
_USERNAME_IN = re.compile(rf"request\.userInfo\.username in \[({_QUOTED}(?:, {_QUOTED})*)\]")


def _usernames(expression: str) -> list[str]:
    """The usernames of `request.userInfo.username in ['a', 'b']`; anything else fails."""
    match = _USERNAME_IN.fullmatch(expression)
    assert match, f"not of the form request.userInfo.username in ['USER', ...]: {expression!r}"
    return [quoted[1:-1] for quoted in re.findall(_QUOTED, match[1])]


def test_the_username_reader_reads_only_the_expected_form() -> None:
    assert _usernames("request.userInfo.username in ['a:b', 'c']") == ["a:b", "c"]
    for other in (
        "request.userInfo.username in ['a'] || true",
        "request.userInfo.username == 'a'",
        "request.userInfo.username in ['a\\'', 'b']",
    ):
        with pytest.raises(AssertionError):
            _usernames(other)


@pytest.mark.parametrize("kustomization", APPLIED)
def test_shared_config_names_kubevirts_controller(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    config = _shared_config(rendered[kustomization])
    assert config["kubevirt-controllers"] == KUBEVIRT_CONTROLLERS[kustomization]


@pytest.mark.parametrize("kustomization", APPLIED)
def test_only_kubevirts_controller_reaches_mutate_and_everyone_reaches_validate(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    """/mutate's matchConditions name exactly the config's users; /validate and /guard have
    none: they must see a tenant's launcher-labelled pod to judge it by baseline."""
    objects = rendered[kustomization]
    (mutate,) = find(objects, "MutatingWebhookConfiguration", "virtdev")["webhooks"]
    (condition,) = mutate["matchConditions"]
    assert _usernames(condition["expression"]) == _shared_config(objects)["kubevirt-controllers"]
    for webhook in find(objects, "ValidatingWebhookConfiguration", "virtdev")["webhooks"]:
        assert "matchConditions" not in webhook, f"{webhook['name']} would miss forged pods"


def test_openshifts_config_is_bases_but_for_the_controller(rendered: dict[str, Objects]) -> None:
    """The overlay replaces the config document whole (a patch cannot edit inside it)."""
    base = _shared_config(rendered["base"])
    openshift = _shared_config(rendered["overlays/openshift"])
    assert openshift == base | {"kubevirt-controllers": [OPENSHIFT_CONTROLLER]}


def _parse(argv: list[str]) -> tuple[Any, str]:
    """virtdev's own parser on argv; (namespace or None, what it printed on error)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return cli.parse(argv), ""
        except SystemExit:
            return None, stderr.getvalue()


@pytest.mark.parametrize("kustomization", APPLIED)
@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "virtdev-webhook"), ("DaemonSet", "virtdev-agent")]
)
def test_the_virtdev_cli_accepts_the_workloads_args_and_the_shared_config(
    kustomization: str, kind: str, name: str, rendered: dict[str, Objects], tmp_path: Path
) -> None:
    objects = rendered[kustomization]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(_shared_config(objects)), encoding="utf-8")
    args = _container(objects, kind, name)["args"]
    assert arg_value(args, "--config") == CONFIG_PATH
    argv = [f"--config={config_file}" if a == f"--config={CONFIG_PATH}" else a for a in args]
    parsed, error = _parse(argv)
    assert parsed is not None, f"virtdev {' '.join(args)} is refused:\n{error}"
    # The agent serves every device the webhook may inject, and vhost-net.
    expected = catalogue.DEFAULT_DEVICES if kind == "Deployment" else catalogue.AGENT_DEVICES
    assert list(parsed.devices) == list(expected)
    if kind == "DaemonSet":
        assert parsed.device_count == catalogue.DEFAULT_DEVICE_COUNT
    if kind == "Deployment":
        assert parsed.launcher_selector == catalogue.LAUNCHER_SELECTOR
        assert parsed.log_format == "json"
        assert parsed.no_kvm_policy == "warn"
        assert parsed.kubevirt_controllers == KUBEVIRT_CONTROLLERS[kustomization]


#: Variants where something other than virtdev's Job keeps the certificate.
NO_BOOTSTRAP = ("overlays/cert-manager", "overlays/static-certs")


@pytest.mark.parametrize("kustomization", [k for k in APPLIED if k not in NO_BOOTSTRAP])
def test_certificate_bootstrap_targets_the_catalogues_objects(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    objects = rendered[kustomization]
    job = find(objects, "Job", "virtdev-certs-ensure")
    cronjob = find(objects, "CronJob", "virtdev-certs-renew")
    assert job["spec"]["template"] == cronjob["spec"]["jobTemplate"]["spec"]["template"], (
        "the install Job and the renewal CronJob must run the same pod"
    )
    args = _container(objects, "Job", "virtdev-certs-ensure")["args"]
    assert args[:2] == ["certs", "ensure"]
    parsed, error = _parse(args)
    assert parsed is not None, f"virtdev {' '.join(args)} is refused:\n{error}"
    assert arg_value(args, "--service") == catalogue.WEBHOOK_SERVICE
    assert arg_value(args, "--secret") == catalogue.TLS_SECRET
    assert arg_value(args, "--mutating-webhook-configuration") == catalogue.MUTATING_CONFIGURATION
    assert (
        arg_value(args, "--validating-webhook-configuration") == catalogue.VALIDATING_CONFIGURATION
    )
    assert arg_value(args, "--namespace") == "$(POD_NAMESPACE)"

    role = find(objects, "Role", "virtdev-certs")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [catalogue.TLS_SECRET],
            "verbs": ["get", "update"],
        }
    ]
    cluster_role = find(objects, "ClusterRole", "virtdev-certs")
    names = sorted({catalogue.MUTATING_CONFIGURATION, catalogue.VALIDATING_CONFIGURATION})
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": names,
            "verbs": ["get", "patch"],
        }
    ]


def test_the_secret_created_once_is_the_one_the_webhook_mounts(
    rendered: dict[str, Objects],
) -> None:
    (secret,) = rendered["create-once"]
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == catalogue.TLS_SECRET
    assert secret["metadata"]["namespace"] == catalogue.NAMESPACE
    assert secret["type"] == "kubernetes.io/tls"
    assert not any(find_all(rendered[k], "Secret") for k in APPLIED), (
        "a Secret in an applied kustomization would be reset by every `kubectl apply`"
    )


def test_cert_manager_issues_for_the_service_and_injects_into_both_configurations(
    rendered: dict[str, Objects],
) -> None:
    objects = rendered["overlays/cert-manager"]
    certificate = find(objects, "Certificate", "virtdev-webhook")
    assert certificate["spec"]["secretName"] == catalogue.TLS_SECRET
    service = f"{catalogue.WEBHOOK_SERVICE}.{catalogue.NAMESPACE}.svc"
    assert service in certificate["spec"]["dnsNames"]
    for kind in WEBHOOK_KINDS:
        annotations = find(objects, kind, "virtdev")["metadata"]["annotations"]
        assert (
            annotations["cert-manager.io/inject-ca-from"]
            == f"{catalogue.NAMESPACE}/virtdev-webhook"
        )
    leftovers = [ref(o) for o in objects if "certs" in o["metadata"]["name"]]
    assert not leftovers, f"the bootstrap is still there: {leftovers}"


@pytest.mark.parametrize("kustomization", APPLIED)
def test_every_image_is_this_releases(kustomization: str, rendered: dict[str, Objects]) -> None:
    images = {
        container["image"]
        for _, spec in workloads(rendered[kustomization])
        for container in spec["containers"]
    }
    assert images == {f"ghcr.io/virtdev/virtdev:{virtdev.__version__}"}


def test_docs_name_every_overlay() -> None:
    install = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    missing = [k for k in kustomizations() if f"manifests/{k}" not in install]
    assert not missing, f"docs/install.md does not mention: {missing}"


@pytest.mark.parametrize("kustomization", APPLIED)
def test_the_guard_webhook_selects_opted_in_namespaces_and_every_pod_but_launchers(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    objects = rendered[kustomization]
    # Its clientConfig (path /guard) is checked with the others' above.
    validate, guard = find(objects, "ValidatingWebhookConfiguration", "virtdev")["webhooks"]
    assert guard["name"] != validate["name"]
    assert guard["failurePolicy"] == "Fail"
    assert guard["namespaceSelector"] == {
        "matchLabels": {catalogue.GUARD_LABEL_KEY: catalogue.GUARD_LABEL_VALUE},
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", catalogue.NAMESPACE],
            }
        ],
    }
    # Launchers are the first webhook's; NotIn also selects pods without the label.
    assert guard["objectSelector"] == {
        "matchExpressions": [
            {
                "key": catalogue.LAUNCHER_LABEL_KEY,
                "operator": "NotIn",
                "values": [catalogue.LAUNCHER_LABEL_VALUE],
            }
        ]
    }
    assert guard["rules"] == validate["rules"]
