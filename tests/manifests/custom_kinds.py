"""Field checks for the custom kinds kubernetes-validate has no schema for.

kubernetes-validate knows only Kubernetes' built-in kinds and merely warns about others. The
few custom kinds the overlays use are listed here with the fields their projects publish in
their CRDs (cert-manager v1: deploy/crds/cert-manager.io_{certificates,issuers}.yaml; OpenShift:
security/v1 SecurityContextConstraints; Prometheus Operator v0.93.0:
example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors,
prometheusrules}.yaml), as far as these manifests use them, and checked
strictly: an unknown field, a wrong type or a missing required field fails. Any other kind
without a schema is a failure (see test_schemas.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Schema = Any  # a Python type, a Fields, a ListOf, a MapOf, a OneOf or a Matches


@dataclass(frozen=True)
class Fields:
    """An object with exactly these optional fields (and these required ones)."""

    fields: dict[str, Schema]
    required: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ListOf:
    item: Schema


@dataclass(frozen=True)
class MapOf:
    value: Schema


@dataclass(frozen=True)
class OneOf:
    """A string the CRD enumerates (`enum`)."""

    values: frozenset[str]


@dataclass(frozen=True)
class Matches:
    """A string the CRD constrains by `pattern` (matched as the API server does: anywhere,
    so the patterns carry their own anchors)."""

    pattern: str


def check(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Every way `value` departs from `schema`, as `path: problem` lines."""
    where = path or "."
    if isinstance(schema, Fields):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        problems = [
            f"{path}.{key}: unknown field (known: {', '.join(sorted(schema.fields))})"
            for key in value
            if key not in schema.fields
        ]
        problems += [f"{path}.{key}: required" for key in sorted(schema.required - set(value))]
        for key, item in value.items():
            if key in schema.fields:
                problems += check(item, schema.fields[key], f"{path}.{key}")
        return problems
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in check(item, schema.item, f"{path}[{i}]")]
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return [f"{where}: expected a map, got {type(value).__name__}"]
        return [p for k, item in value.items() for p in check(item, schema.value, f"{path}.{k}")]
    if isinstance(schema, OneOf):
        if value not in schema.values:
            return [f"{where}: {value!r} is not one of {sorted(schema.values)}"]
        return []
    if isinstance(schema, Matches):
        if not isinstance(value, str) or re.search(schema.pattern, value) is None:
            return [f"{where}: {value!r} does not match {schema.pattern}"]
        return []
    types = schema if isinstance(schema, tuple) else (schema,)
    expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
    if isinstance(value, bool) and bool not in types:
        return [f"{where}: expected {expected}, got bool"]
    if not isinstance(value, types):
        return [f"{where}: expected {expected}, got {type(value).__name__}"]
    return []


def nullable(schema: type) -> Schema:
    """A field the published schema marks `nullable: true`."""
    return (schema, type(None))


_METADATA = Fields(
    {
        "name": str,
        "namespace": str,
        "labels": MapOf(str),
        "annotations": MapOf(str),
    },
    required=frozenset({"name"}),
)

_ISSUER_REF = Fields({"group": str, "kind": str, "name": str}, required=frozenset({"name"}))

_CERTIFICATE_SPEC = Fields(
    {
        "additionalOutputFormats": ListOf(Fields({"type": str}, frozenset({"type"}))),
        "commonName": str,
        "dnsNames": ListOf(str),
        "duration": str,
        "emailAddresses": ListOf(str),
        "encodeUsagesInRequest": bool,
        "ipAddresses": ListOf(str),
        "isCA": bool,
        "issuerRef": _ISSUER_REF,
        "keystores": dict,
        "literalSubject": str,
        "nameConstraints": dict,
        "otherNames": ListOf(Fields({"oid": str, "utf8Value": str})),
        "privateKey": Fields(
            {"algorithm": str, "encoding": str, "rotationPolicy": str, "size": int}
        ),
        "renewBefore": str,
        "renewBeforePercentage": int,
        "revisionHistoryLimit": int,
        "secretName": str,
        "secretTemplate": Fields({"annotations": MapOf(str), "labels": MapOf(str)}),
        "signatureAlgorithm": str,
        "subject": dict,
        "uris": ListOf(str),
        "usages": ListOf(str),
    },
    required=frozenset({"issuerRef", "secretName"}),
)

#: The values cert-manager's CRD enumerates for these fields.
CERTIFICATE_ENUMS: dict[str, set[Any]] = {
    "privateKey.algorithm": {"RSA", "ECDSA", "Ed25519"},
    "privateKey.encoding": {"PKCS1", "PKCS8"},
    "privateKey.rotationPolicy": {"Never", "Always"},
    "usages": {
        "signing", "digital signature", "content commitment", "key encipherment",
        "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
        "decipher only", "any", "server auth", "client auth", "code signing",
        "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
        "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
    },
}  # fmt: skip

_ISSUER_SPEC = Fields(
    {
        "selfSigned": Fields({"crlDistributionPoints": ListOf(str)}),
        "ca": Fields(
            {
                "secretName": str,
                "crlDistributionPoints": ListOf(str),
                "issuingCertificateURLs": ListOf(str),
                "ocspServers": ListOf(str),
            },
            required=frozenset({"secretName"}),
        ),
        "acme": dict,
        "vault": dict,
        "venafi": dict,
    }
)


def _top(spec: Schema) -> Fields:
    return Fields(
        {"apiVersion": str, "kind": str, "metadata": _METADATA, "spec": spec},
        required=frozenset({"apiVersion", "kind", "metadata", "spec"}),
    )


_STRATEGY_RANGES = ListOf(Fields({"min": int, "max": int}))

_SCC = Fields(
    {
        "apiVersion": str,
        "kind": str,
        "metadata": _METADATA,
        "priority": nullable(int),
        "allowPrivilegedContainer": bool,
        "allowPrivilegeEscalation": nullable(bool),
        "defaultAllowPrivilegeEscalation": nullable(bool),
        "allowHostDirVolumePlugin": bool,
        "allowHostIPC": bool,
        "allowHostNetwork": bool,
        "allowHostPID": bool,
        "allowHostPorts": bool,
        "allowedCapabilities": nullable(list),
        "defaultAddCapabilities": nullable(list),
        "requiredDropCapabilities": nullable(list),
        "allowedFlexVolumes": nullable(list),
        "allowedUnsafeSysctls": nullable(list),
        "forbiddenSysctls": nullable(list),
        "readOnlyRootFilesystem": bool,
        "runAsUser": Fields({"type": str, "uid": int, "uidRangeMin": int, "uidRangeMax": int}),
        "seLinuxContext": Fields(
            {
                "type": str,
                "seLinuxOptions": Fields({"user": str, "role": str, "type": str, "level": str}),
            }
        ),
        "fsGroup": Fields({"type": str, "ranges": _STRATEGY_RANGES}),
        "supplementalGroups": Fields({"type": str, "ranges": _STRATEGY_RANGES}),
        "seccompProfiles": nullable(list),
        "users": nullable(list),
        "groups": nullable(list),
        "volumes": nullable(list),
        "userNamespaceLevel": str,
    },
    required=frozenset(
        {
            "allowHostDirVolumePlugin",
            "allowHostIPC",
            "allowHostNetwork",
            "allowHostPID",
            "allowHostPorts",
            "allowPrivilegedContainer",
            "allowedCapabilities",
            "defaultAddCapabilities",
            "priority",
            "readOnlyRootFilesystem",
            "requiredDropCapabilities",
            "volumes",
        }
    ),
)

#: The Prometheus Operator's duration pattern (monitoring.coreos.com/v1 `Duration`).
_DURATION = Matches(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)

_LABEL_SELECTOR = Fields(
    {
        "matchLabels": MapOf(str),
        "matchExpressions": ListOf(
            Fields(
                {"key": str, "operator": str, "values": ListOf(str)},
                required=frozenset({"key", "operator"}),
            )
        ),
    }
)

#: The relabeling actions the CRD enumerates, in both spellings it accepts.
_RELABEL_ACTIONS = frozenset({
    "replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap",
    "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase",
    "uppercase", "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual",
})  # fmt: skip

_RELABEL_CONFIG = Fields(
    {
        "action": OneOf(_RELABEL_ACTIONS),
        "modulus": int,
        "regex": str,
        "replacement": str,
        "separator": str,
        "sourceLabels": ListOf(str),
        "targetLabel": str,
    }
)

#: The fields of a scrape endpoint these manifests may use (ServiceMonitor `endpoints[]`,
#: PodMonitor `podMetricsEndpoints[]`); authentication and TLS are left out: the metrics ports
#: are plain HTTP and carry no secrets.
_SCRAPE_ENDPOINT: dict[str, Schema] = {
    "port": str,
    "targetPort": (int, str),
    "path": str,
    "scheme": OneOf(frozenset({"http", "https", "HTTP", "HTTPS"})),
    "interval": _DURATION,
    "scrapeTimeout": _DURATION,
    "honorLabels": bool,
    "honorTimestamps": bool,
    "params": MapOf(ListOf(str)),
    "relabelings": ListOf(_RELABEL_CONFIG),
    "metricRelabelings": ListOf(_RELABEL_CONFIG),
}

_MONITOR_SPEC: dict[str, Schema] = {
    "selector": _LABEL_SELECTOR,
    "namespaceSelector": Fields({"any": bool, "matchNames": ListOf(str)}),
    "jobLabel": str,
    "podTargetLabels": ListOf(str),
    "sampleLimit": int,
    "targetLimit": int,
}

_SERVICE_MONITOR_SPEC = Fields(
    {**_MONITOR_SPEC, "endpoints": ListOf(Fields(_SCRAPE_ENDPOINT)), "targetLabels": ListOf(str)},
    # v0.93 requires only the selector; older operators (0.82) the endpoints too.
    required=frozenset({"selector", "endpoints"}),
)

_POD_MONITOR_SPEC = Fields(
    {
        **_MONITOR_SPEC,
        "podMetricsEndpoints": ListOf(Fields({**_SCRAPE_ENDPOINT, "portNumber": int})),
    },
    required=frozenset({"selector"}),
)

_PROMETHEUS_RULE_SPEC = Fields(
    {
        "groups": ListOf(
            Fields(
                {
                    "name": str,
                    "interval": _DURATION,
                    "limit": int,
                    "labels": MapOf(str),
                    "partial_response_strategy": str,
                    "query_offset": _DURATION,
                    "rules": ListOf(
                        Fields(
                            {
                                "alert": str,
                                "record": str,
                                "expr": (str, int),
                                "for": _DURATION,
                                "keep_firing_for": _DURATION,
                                "labels": MapOf(str),
                                "annotations": MapOf(str),
                            },
                            required=frozenset({"expr"}),
                        )
                    ),
                },
                required=frozenset({"name"}),
            )
        )
    }
)

#: (apiVersion, kind) -> schema. The only kinds allowed without a kubernetes-validate schema.
CUSTOM_KINDS: dict[tuple[str, str], Fields] = {
    ("cert-manager.io/v1", "Certificate"): _top(_CERTIFICATE_SPEC),
    ("cert-manager.io/v1", "Issuer"): _top(_ISSUER_SPEC),
    ("cert-manager.io/v1", "ClusterIssuer"): _top(_ISSUER_SPEC),
    ("security.openshift.io/v1", "SecurityContextConstraints"): _SCC,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _top(_SERVICE_MONITOR_SPEC),
    ("monitoring.coreos.com/v1", "PodMonitor"): _top(_POD_MONITOR_SPEC),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _top(_PROMETHEUS_RULE_SPEC),
}


def enum_problems(certificate: dict[str, Any]) -> list[str]:
    """Values outside the enumerations of cert-manager's Certificate CRD."""
    spec = certificate.get("spec", {})
    problems = []
    for dotted, allowed in CERTIFICATE_ENUMS.items():
        value: Any = spec
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = value if isinstance(value, list) else [] if value is None else [value]
        problems += [
            f".spec.{dotted}: {v!r} is not one of {sorted(allowed)}"
            for v in values
            if v not in allowed
        ]
    return problems
