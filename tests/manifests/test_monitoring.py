"""The Prometheus component (manifests/components/prometheus): its alerts fire when they should
and stay quiet otherwise, every query of its Grafana dashboard parses, every alert names its
runbook in docs/observability.md, and both ask only for metrics virtdev exposes.

promtool reads plain rules files, not Kubernetes objects: the PrometheusRule's `spec` is written
to a temporary rules.yaml beside a copy of prometheus-rule-test.yaml (`promtool test rules`),
and each dashboard query becomes one recording rule of a generated file (`promtool check
rules`). promtool is Debian's `prometheus` package (scripts/setup-tools.sh). Without it those
tests skip, except under CI (CI=true), where a missing promtool fails: a skipped alert test
looks exactly like a passed one in a summary line. `make check` runs every test here whose name
lacks "rendered" (those need kubectl); the whole suite runs them all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.custom_kinds import CUSTOM_KINDS, check
from tests.manifests.k8s import find
from tests.manifests.tools import MANIFESTS, REPO, run

Objects = list[dict[str, Any]]
COMPONENT = MANIFESTS / "components" / "prometheus"
OVERLAY = "overlays/prometheus"
RUNBOOK = REPO / "docs" / "observability.md"
#: Where each alert's runbook is, in the virtdev source it was installed from (the project
#: names no canonical URL; an admin who hosts the docs may add a `runbook_url` by a patch).
RUNBOOK_SECTION = "docs/observability.md#"
#: Grafana's built-in variables, as a duration PromQL accepts (their values do not matter to
#: the parser); any other `$` in a query is a variable the dashboard does not define.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1h"}
#: Where the metrics are defined: every virtdev_* name a query asks for is declared there.
SOURCES = ("webhook", "agent", "certs", "virtdev")
#: What kube-state-metrics and Prometheus itself provide (the webhook's readiness, `up`).
FOREIGN_METRICS = {"kube_deployment_status_replicas_available", "kube_deployment_spec_replicas"}


def promtool() -> str:
    """promtool ($PROMTOOL or on PATH); a skip where it is absent, a failure under CI."""
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if found and os.access(found, os.X_OK):
        return found
    message = "promtool not found: apt-get install prometheus (scripts/setup-tools.sh does)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the alert tests", pytrace=False)
    pytest.skip(message)


def prometheus_rule() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (COMPONENT / "prometheus-rule.yaml").read_text(encoding="utf-8")
    )
    return loaded


def alerts() -> list[dict[str, Any]]:
    return [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((COMPONENT / "dashboard.json").read_text(encoding="utf-8"))
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel id and refId, PromQL with Grafana's variables replaced) for every target."""
    panels = dashboard()["panels"]
    panels = panels + [inner for panel in panels for inner in panel.get("panels", [])]
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"panel_{panel['id']}_{target['refId']}", expr))
    return queries


def write_rules(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation gone, spaces as dashes."""
    return {
        re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
        for match in re.finditer(r"^#{1,6} (.+)$", markdown, re.MULTILINE)
    }


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_accepts_the_alerting_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules.yaml", prometheus_rule()["spec"])
    done = run([promtool(), "check", "rules", str(rules)], timeout=60)
    assert done.returncode == 0, done.describe()
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout, done.describe()


def test_promtool_unit_tests_fire_each_alert_and_keep_it_quiet(tmp_path: Path) -> None:
    write_rules(tmp_path / "rules.yaml", prometheus_rule()["spec"])
    tests = shutil.copy(COMPONENT / "prometheus-rule-test.yaml", tmp_path)
    done = run([promtool(), "test", "rules", str(tests)], timeout=120)
    assert done.returncode == 0, done.describe()
    assert "SUCCESS" in done.stdout, done.describe()


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries()
    leftover = [(where, expr) for where, expr in queries if "$" in expr]
    assert not leftover, f"queries with variables the dashboard does not define: {leftover}"
    rules = write_rules(
        tmp_path / "dashboard.yaml",
        {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {"record": f"virtdev_dashboard:{where}", "expr": expr}
                        for where, expr in queries
                    ],
                }
            ]
        },
    )
    done = run([promtool(), "check", "rules", str(rules)], timeout=60)
    assert done.returncode == 0, done.describe()
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout, done.describe()


# --- what the rules and the dashboard say -------------------------------------------------------


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    tests = yaml.safe_load((COMPONENT / "prometheus-rule-test.yaml").read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for expected in case["alert_rule_test"]:
            (fires if expected.get("exp_alerts") else quiet).add(expected["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names == fires, f"alerts never seen firing: {sorted(names - fires)}"
    assert names == quiet, f"alerts never seen quiet: {sorted(names - quiet)}"


def test_every_alert_names_its_runbook_section_and_a_severity() -> None:
    anchors = heading_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for rule in alerts():
        name = rule["alert"]
        section = rule["annotations"]["runbook"]
        assert section == RUNBOOK_SECTION + name.lower(), f"{name}: runbook {section}"
        assert name.lower() in anchors, f"{name}: no section '{name}' in {RUNBOOK.name}"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_queries_ask_only_for_metrics_virtdev_exposes() -> None:
    """Every virtdev_* name in the alerts and the dashboard is declared in the code (a Counter's
    `_total`, a histogram's `_bucket` are what Prometheus adds), so a rename fails here."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for package in SOURCES
        for path in (REPO / package).rglob("*.py")
    )
    texts = [rule["expr"] for rule in alerts()] + [expr for _, expr in dashboard_queries()]
    used = {name for text in texts for name in re.findall(r"\b(virtdev_\w+|kube_\w+)", text)}
    unknown = []
    for name in sorted(used):
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        if name in FOREIGN_METRICS or f'"{base}"' in source or f'"{name}"' in source:
            continue
        unknown.append(name)
    assert not unknown, f"metrics no code declares: {unknown}"


def test_the_webhook_alerts_select_the_service_monitors_job() -> None:
    """The ServiceMonitor's job is its Service's name; the PodMonitor sets virtdev-agent."""
    jobs = set()
    for rule in alerts():
        jobs |= set(re.findall(r'job="([^"]+)"', rule["expr"]))
    assert jobs == {"virtdev-webhook", "virtdev-agent"}, jobs


def test_the_field_checker_knows_the_operators_kinds_strictly() -> None:
    """custom_kinds.py holds the Prometheus Operator's fields: a typo, a duration Prometheus
    would not parse or an action it does not know fails (test_schemas checks the objects)."""
    monitor = yaml.safe_load((COMPONENT / "pod-monitor.yaml").read_text(encoding="utf-8"))
    assert check(monitor, CUSTOM_KINDS[("monitoring.coreos.com/v1", "PodMonitor")]) == []
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    endpoint |= {"interval": "30 s", "scrapeInterval": "30s"}
    endpoint["relabelings"][0]["action"] = "rename"
    problems = check(monitor, CUSTOM_KINDS[("monitoring.coreos.com/v1", "PodMonitor")])
    assert any(".podMetricsEndpoints[0].scrapeInterval: unknown field" in p for p in problems)
    assert any("podMetricsEndpoints[0].interval: '30 s' does not match" in p for p in problems)
    assert any("relabelings[0].action: 'rename' is not one of" in p for p in problems)
    rule = prometheus_rule()
    rule["spec"]["groups"][0]["rules"][0]["for"] = "2 minutes"
    del rule["spec"]["groups"][1]["name"]
    problems = check(rule, CUSTOM_KINDS[("monitoring.coreos.com/v1", "PrometheusRule")])
    assert any(p.startswith(".spec.groups[0].rules[0].for: '2 minutes'") for p in problems)
    assert ".spec.groups[1].name: required" in problems, problems


# --- the rendered overlay -----------------------------------------------------------------------


def test_rendered_overlay_ships_the_dashboard_as_the_sidecars_config_map(
    rendered: dict[str, Objects],
) -> None:
    config_map = find(rendered[OVERLAY], "ConfigMap", "virtdev-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "virtdev"
    text = (COMPONENT / "dashboard.json").read_text(encoding="utf-8")
    assert config_map["data"] == {"virtdev.json": text}


def test_rendered_monitors_select_the_workloads_and_their_metrics_ports(
    rendered: dict[str, Objects],
) -> None:
    objects = rendered[OVERLAY]
    service = find(objects, "Service", "virtdev-webhook")
    monitor = find(objects, "ServiceMonitor", "virtdev-webhook")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"} <= ports

    daemonset = find(objects, "DaemonSet", "virtdev-agent")
    pod_monitor = find(objects, "PodMonitor", "virtdev-agent")
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {
        port["name"]
        for container in daemonset["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    endpoints = pod_monitor["spec"]["podMetricsEndpoints"]
    assert {e["port"] for e in endpoints} == {"metrics"} <= container_ports
    for kind, name in (("ServiceMonitor", "virtdev-webhook"), ("PodMonitor", "virtdev-agent")):
        namespaces = find(objects, kind, name)["spec"]["namespaceSelector"]["matchNames"]
        assert namespaces == [daemonset["metadata"]["namespace"]], (kind, namespaces)
