"""The Grafana dashboard's queries over a real run, drawn: docs/img/observability.png.

Grafana cannot run here, Prometheus can (Debian's `prometheus`). This starts, on loopback:
the tests' API stand-in with three nodes (two with kvm), the real `virtdev webhook` over TLS
watching them (`--no-kvm-policy warn`), two real `virtdev agent`s ("node-a" on this host's /dev,
which has kvm and tun but no vhost-net; "node-b" on mknod'ed nodes), each with the tests'
kubelet, and Prometheus scraping them every 5 s with the component's PrometheusRule loaded
(its spec, as tests/manifests/test_monitoring.py extracts it). wrk with the bench's Lua script
(bench/webhook_reviews.lua) then POSTs reviews in three phases:

1. steady: /mutate (the load bench's mix, 16 connections), /validate (launchers of several
   eras, half of them refused, 4 connections), /guard (a privileged debug pod, 2 connections);
2. surge: /mutate at 128 connections, the rest as before;
3. trouble: steady load again, and the API stand-in goes away (the node view falls out of
   sync), node-b loses /dev/kvm and its kubelet restarts (the agent registers again).

Then every query of manifests/components/prometheus/dashboard.json is asked of Prometheus's
HTTP API over the run (Grafana's `$__rate_interval` as 20s: four scrapes) and drawn one panel
per dashboard panel, with the alerts Prometheus raised. Bounded: every phase has a fixed
length and every wait a timeout. Needs root (mknod), wrk, prometheus and matplotlib (the
`bench` extra). Exit 0 when drawn, 2 when the run could not be made.

    .venv/bin/python bench/observability_run.py
    .venv/bin/python bench/observability_run.py --phase-seconds 60 --out /tmp/o.png --json o.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

import yaml

from bench.harness import (
    FIXTURES,
    MIX,
    REPO,
    BackgroundLoad,
    BenchError,
    api_server,
    cores,
    in_workdir,
    make_material,
    pyplot,
    webhook,
    wrk_background,
)
from tests import support
from tests.agent.helpers import make_node
from tests.agent.kubelet import TestKubelet
from tests.kube_standin import node_object

COMPONENT = REPO / "manifests" / "components" / "prometheus"
SCRAPE_SECONDS = 5
RATE_INTERVAL = "20s"  # Grafana's $__rate_interval at a 5 s scrape: four scrapes
VALIDATE_MIX = (
    "v1-launcher-2018-privileged.json",  # refused: privileged (profile <=v0.6)
    "v1-launcher-current-nonroot.json",  # allowed
    "v1-launcher-host-network.json",  # refused: host namespaces, privileged
    "v1-launcher-emulation.json",  # allowed
    "v1-launcher-netraw-sysnice.json",  # refused: capabilities (profile v0.30)
    "v1-ephemeral-debug-update.json",  # refused: privileged debug container
)
GUARD_MIX = ("v1-non-launcher-pod.json",)
NODE_DEVICES = ("dev/kvm", "dev/net/tun", "dev/vhost-net")
#: Grafana's `{{label}}` in a legend.
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def rules_file(directory: Path) -> Path:
    """The PrometheusRule's spec, as a rules file Prometheus reads."""
    rule = yaml.safe_load((COMPONENT / "prometheus-rule.yaml").read_text(encoding="utf-8"))
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False), encoding="utf-8")
    return path


def dashboard_panels() -> list[dict[str, Any]]:
    """The dashboard's panels that query, in order (rows left out)."""
    dashboard = json.loads((COMPONENT / "dashboard.json").read_text(encoding="utf-8"))
    return [panel for panel in dashboard["panels"] if panel.get("targets")]


# --- the pieces ---------------------------------------------------------------------------------


class Loop:
    """An asyncio loop in a thread, for the tests' kubelets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kubelets", daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Agent:
    node: str
    kubelet: TestKubelet
    process: subprocess.Popen[bytes]
    metrics_port: int
    host_root: Path


@contextlib.contextmanager
def agent(loop: Loop, workdir: Path, node: str, host_root: Path | None) -> Iterator[Agent]:
    """`virtdev agent` with a test kubelet; `host_root` None: fresh mknod'ed device nodes."""
    plugin_dir = workdir / node / "device-plugins"
    plugin_dir.mkdir(parents=True)
    if host_root is None:
        host_root = workdir / node / "host"
        for relative in NODE_DEVICES:
            make_node(host_root, relative)
    kubelet = TestKubelet(str(plugin_dir))
    loop.run(kubelet.start())
    (port,) = support.free_ports(1)
    command = [
        *support.VIRTDEV, "agent", f"--device-plugin-dir={plugin_dir}",
        f"--host-root={host_root}", f"--metrics-port={port}", "--log-format=json",
    ]  # fmt: skip
    with (workdir / f"agent-{node}.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        try:
            support.until_ready(process, lambda: support.readyz(port), f"agent {node}", 60)
        except support.NotStarted as error:
            raise BenchError(str(error)) from None
        yield Agent(node, kubelet, process, port, host_root)
    finally:
        support.stop(process, timeout=15)
        loop.run(kubelet.stop())


@contextlib.contextmanager
def prometheus(
    workdir: Path, *, webhook_port: int, agents: list[Agent], rules: Path
) -> Iterator[str]:
    """Prometheus on loopback scraping the webhook and the agents; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise BenchError("prometheus not found: apt-get install prometheus")
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "virtdev-webhook",  # the ServiceMonitor's job: the Service's name
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{webhook_port}"],
                        "labels": {"namespace": "virtdev", "pod": "virtdev-webhook-0"},
                    }
                ],
            },
            {
                "job_name": "virtdev-agent",  # the PodMonitor's job and node label
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{a.metrics_port}"],
                        "labels": {"namespace": "virtdev", "node": a.node},
                    }
                    for a in agents
                ],
            },
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    (port,) = support.free_ports(1)
    url = f"http://127.0.0.1:{port}"
    command = [
        binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2h",
    ]  # fmt: skip
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                    return bool(answer.status == 200)
            return False

        try:
            support.until_ready(process, ready, "prometheus", 60)
        except support.NotStarted as error:
            tail = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"{error}\n{tail}") from None
        yield url
    finally:
        support.stop(process, timeout=15)


def api(url: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=30) as answer:
        body = json.loads(answer.read())
    if body.get("status") != "success":
        raise BenchError(f"prometheus {path} {params}: {body}")
    return body["data"]


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Phases:
    seconds: float
    cpu: str | None
    url: str
    loads: list[BackgroundLoad]

    def start(self, what: str, mutate_connections: int) -> None:
        for path, bodies, connections in (
            ("/mutate", MIX, mutate_connections),
            ("/validate", VALIDATE_MIX, 4),
            ("/guard", GUARD_MIX, 2),
        ):
            self.loads.append(
                wrk_background(
                    f"{self.url}{path}",
                    connections=connections,
                    seconds=self.seconds,
                    cpu=self.cpu,
                    bodies=[FIXTURES / name for name in bodies],
                    what=f"{what} {path}",
                )
            )

    def finish(self) -> list[dict[str, Any]]:
        done = [load.result(timeout=self.seconds + 60) for load in self.loads[-3:]]
        return [
            {"what": load.what, **d.brief()} for load, d in zip(self.loads[-3:], done, strict=True)
        ]


def run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    server_cpu, load_cpu = cores()
    material = make_material(workdir / "certs")
    rules = rules_file(workdir)
    loop = Loop()
    results: dict[str, Any] = {"phase_seconds": args.phase_seconds, "phases": []}
    with contextlib.ExitStack() as stack:
        cluster = contextlib.ExitStack()
        stack.callback(cluster.close)
        nodes = [
            node_object(name, kvm=kvm, tun="1000")
            for name, kvm in (("node-a", "1000"), ("node-b", "1000"), ("node-c", None))
        ]
        kube = cluster.enter_context(api_server(workdir, nodes))
        watching = [*kube.flags, "--no-kvm-policy", "warn"]
        hook = stack.enter_context(webhook(workdir, material, cpu=server_cpu, flags=watching))
        node_a = stack.enter_context(agent(loop, workdir, "node-a", Path("/")))
        node_b = stack.enter_context(agent(loop, workdir, "node-b", None))
        assert hook.metrics_port is not None
        url = stack.enter_context(
            prometheus(
                workdir, webhook_port=hook.metrics_port, agents=[node_a, node_b], rules=rules
            )
        )
        started = time.time()
        events: dict[str, float] = {}
        time.sleep(2 * SCRAPE_SECONDS)  # a few scrapes at rest
        phases = Phases(args.phase_seconds, load_cpu, hook.url, [])
        for name, connections in (("steady", 16), ("surge", 128), ("trouble", 16)):
            events[name] = time.time() - started
            phases.start(name, connections)
            if name == "trouble":
                time.sleep(args.phase_seconds / 6)
                cluster.close()  # the API server goes away: the view falls out of sync
                events["API server gone"] = time.time() - started
                time.sleep(args.phase_seconds / 6)
                (node_b.host_root / "dev" / "kvm").unlink()
                events["node-b: /dev/kvm gone"] = time.time() - started
                time.sleep(args.phase_seconds / 6)
                loop.run(node_b.kubelet.restart())
                events["node-b: kubelet restart"] = time.time() - started
            results["phases"].append({"phase": name, "loads": phases.finish()})
        time.sleep(2 * SCRAPE_SECONDS)
        ended = time.time()
        results["window"] = [started, ended]
        results["events"] = events
        results["panels"] = query_panels(url, started, ended)
        alerts = api(
            url, "query_range", query="ALERTS", start=str(started), end=str(ended), step="5"
        )
        results["alerts"] = sorted(
            {
                (m["metric"]["alertname"], m["metric"]["alertstate"], m["metric"].get("node", ""))
                for m in alerts["result"]
            }
        )
        results["webhook_metrics_sample"] = [
            line for line in hook.metrics().splitlines() if line.startswith("virtdev_webhook_req")
        ][:12]
    loop.close()
    return results


def legend_of(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend: each `{{label}}` replaced by the series' value of it."""
    return LEGEND_LABEL.sub(lambda match: labels.get(match[1], ""), template)


def query_panels(url: str, start: float, end: float) -> list[dict[str, Any]]:
    """Each dashboard panel: its title, unit and, per target, the series Prometheus returns."""
    panels = []
    for panel in dashboard_panels():
        series, empty = [], []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            data = api(url, "query_range", query=expr, start=str(start), end=str(end), step="5")
            if not data["result"]:
                empty.append(expr.split("{")[0].split("(")[-1])
            for result in data["result"]:
                legend = legend_of(target.get("legendFormat") or expr, result["metric"])
                points = [(float(t) - start, float(v)) for t, v in result["values"]]
                series.append({"legend": legend, "points": points})
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        panels.append({"title": panel["title"], "unit": unit, "series": series, "empty": empty})
    return panels


# --- the picture --------------------------------------------------------------------------------


def plot(results: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    panels = results["panels"]
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 4.2 * rows), squeeze=False)
    events = results["events"]
    #: Which panels show which of the trouble phase's events.
    marks = {
        "Node view": "API server gone",
        "Scheduling decisions per second by outcome": "API server gone",
        "Healthy devices per node": "node-b: /dev/kvm gone",
        "Registered with the kubelet per node": "node-b: kubelet restart",
    }
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.axis("off")
            continue
        panel = panels[index]
        for series in panel["series"]:
            xs = [t / 60 for t, _ in series["points"]]
            ys = [v for _, v in series["points"]]
            if panel["unit"] == "s" and "time left" in panel["title"]:
                ys = [v / 86400 for v in ys]
            ax.plot(xs, ys, label=series["legend"][:48], linewidth=1.2)
        if panel["unit"] == "s" and "latency" in panel["title"]:
            ax.set_yscale("log")
            ax.axhline(1.0, color="red", linestyle="--", linewidth=1, label="1 s (alert line)")
            ax.set_ylabel("seconds")
        elif "time left" in panel["title"]:
            ax.axhline(7, color="red", linestyle="--", linewidth=1, label="7 days (alert line)")
            ax.set_ylabel("days")
        elif panel["unit"] == "reqps":
            ax.set_ylabel("per second")
        for name in ("surge", "trouble"):
            ax.axvline(events[name] / 60, color="grey", linestyle=":", linewidth=0.8)
        if panel["title"] in marks:
            event = marks[panel["title"]]
            ax.axvline(events[event] / 60, color="black", linestyle="-.", linewidth=0.9)
            ax.annotate(event, (events[event] / 60, 0.5), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, ha="right", va="center")  # fmt: skip
        if panel["empty"]:
            ax.text(0.99, 0.02, "no series here: " + ", ".join(panel["empty"]),
                    ha="right", va="bottom", transform=ax.transAxes, fontsize=7)  # fmt: skip
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.grid(alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=6.5, loc="upper left", ncol=1 + (len(panel["series"]) > 6))
    states: dict[str, set[str]] = {"firing": set(), "pending": set()}
    for name, state, node in results["alerts"]:
        states[state].add(f"{name} {node}".strip())
    firing = ", ".join(sorted(states["firing"])) or "none"
    pending = ", ".join(sorted(states["pending"] - states["firing"])) or "none"
    figure.suptitle(
        "virtdev dashboard queries: real webhook and agents under wrk, Prometheus "
        f"{SCRAPE_SECONDS} s scrapes, phases steady | surge | trouble\n"
        f"alerts firing: {firing}; pending only: {pending}",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "observability.png")
    parser.add_argument("--json", type=Path, help="write every figure and series here")
    args = parser.parse_args()
    results = in_workdir("observability_run", lambda workdir: run(workdir, args))
    if results is None:
        return 2
    plot(results, args.out)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    summary = {
        phase["phase"]: {load["what"].split()[-1]: round(load["rps"]) for load in phase["loads"]}
        for phase in results["phases"]
    }
    print(f"observability_run: drew {args.out}; rps {summary}; alerts {results['alerts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
