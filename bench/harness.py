"""What two or more benches need, written once: the servers, the load, the figures.

Each bench in bench/ answers one question (its docstring says which, and how to run it); this
module holds the set-up they share:

- the real `virtdev webhook` process, started and stopped by tests/support.py (the one place
  that spells its command line), and the floor every ratio is measured against,
  bench/floor_app.py (the bare ASGI endpoint on the same server stack and TLS);
- certificates made with the project's own code; the API server stand-in of the tests
  (tests/kube_standin.py) serving N nodes, and Nodes shaped like real ones;
- wrk with bench/webhook_reviews.lua, its summary line parsed; servers loaded alternately, and
  medians of the per-round ratios;
- instructions counted by valgrind (callgrind), with start-up cancelled out;
- the device plugins of the agent benches (the agent, the floor plugin, their device nodes);
- the bench's end: the checks, the one summary line, the JSON figures and the exit status (0
  met, 1 missed, 2 the bench could not run).

The benches run as scripts (`python bench/NAME.py`): each puts the checkout on sys.path, then
imports this module as `bench.harness`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tests import support
from virtdev import catalogue

if TYPE_CHECKING:
    from certs import pki
    from certs.store import Material
    from tests.agent.kubelet import TestKubelet
    from tests.kube_standin import StandIn

T = TypeVar("T")

REPO = support.REPO
FIXTURES = REPO / "tests" / "fixtures"
#: The review every single-review load POSTs: a 2018 privileged launcher, patched by /mutate.
PATCHED = FIXTURES / "v1-launcher-2018-privileged.json"
#: The mix the load benches POST round robin: three launchers patched, one pod not ours.
MIX = (
    "v1-launcher-2018-privileged.json",
    "v1-launcher-current-nonroot.json",
    "v1-launcher-netraw-sysnice.json",
    "v1-non-launcher-pod.json",
)
LUA = Path(__file__).resolve().parent / "webhook_reviews.lua"
FLOOR_APP = Path(__file__).resolve().parent / "floor_app.py"


#: The request headers of a review.
JSON = {"Content-Type": "application/json"}


class BenchError(RuntimeError):
    """The bench itself could not run (exit 2), as opposed to a missed target (exit 1)."""


# --- the bench's frame: a work directory, the checks, the summary line --------------------------


def in_workdir(name: str, run: Callable[[Path], T], *, needs_wrk: bool = True) -> T | None:
    """`run` in a fresh temporary directory, removed afterwards. None, after the one line
    `NAME: ERROR …` the bench exits 2 with, when wrk is missing or the bench could not run."""
    if needs_wrk and shutil.which("wrk") is None:
        print(f"{name}: ERROR wrk not found", flush=True)
        return None
    workdir = Path(tempfile.mkdtemp(prefix=f"{name.replace('_', '-')}-"))
    try:
        return run(workdir)
    except (BenchError, OSError, subprocess.SubprocessError) as error:
        print(f"{name}: ERROR {error}", flush=True)
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def all_checks_met(results: dict[str, Any]) -> bool:
    """Every check of every scenario in `results` (the scenarios are the dicts among them)."""
    return not missed_in(results)


def missed_in(results: dict[str, Any]) -> list[str]:
    """`scenario: check` for every check missed by a scenario of `results`."""
    return [
        f"{name}: {check}"
        for name, result in results.items()
        if isinstance(result, dict)
        for check, met in result.get("checks", {}).items()
        if not met
    ]


def missed(checks: dict[str, bool]) -> list[str]:
    return [name for name, met in checks.items() if not met]


def verdict(name: str, ok: bool) -> str:
    """How every summary line starts: `NAME: PASS` or `NAME: FAIL`."""
    return f"{name}: {'PASS' if ok else 'FAIL'}"


def missed_note(names: list[str]) -> str:
    """How a summary line ends when a target was missed (nothing when none was)."""
    return f" missed: {'; '.join(names)}" if names else ""


def finish(ok: bool, results: dict[str, Any], json_path: Path | None, summary: str) -> int:
    """Write every figure to `json_path` when asked, print the summary line: exit 0 or 1."""
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(summary, flush=True)
    return 0 if ok else 1


def pyplot() -> Any:
    """matplotlib's pyplot drawing into files (the `bench` extra), for the benches that plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the machine, the cores, the processes --------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_1m": os.getloadavg()[0],
    }


def cores() -> tuple[str | None, str | None]:
    """(server core, load core): different cores when there are two and taskset exists."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return "0", "1"
    return None, None


def pinned(cpu: str | None, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else list(command)


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS, in KiB)."""
    return support.status_kib(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_call_us(function: Callable[[], object], *, repeats: int = 7, share: int = 1) -> float:
    """µs per call, the fastest of `repeats` timings of 1/`share` of what timeit's autorange
    picks (a share keeps slow calls short); the minimum is the figure least disturbed by other
    processes on a shared machine."""
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    number = max(1, number // share)
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> float:
    """Seconds until `condition` held, checking every 50 ms; BenchError after `timeout`."""
    started = time.monotonic()
    try:
        support.eventually(condition, what, timeout=timeout, interval=0.05)
    except AssertionError:
        raise BenchError(f"timed out after {timeout}s waiting for {what}") from None
    return time.monotonic() - started


# --- certificates ---------------------------------------------------------------------------


def make_material(directory: Path) -> Material:
    """A CA and a serving certificate for 127.0.0.1, made with the project's own code."""
    from certs.store import ensure_material

    return ensure_material(directory, dns_names=("localhost",), ip_addresses=("127.0.0.1",))


def ca_of(material: Material) -> pki.KeyPair:
    """The CA of `material`, to issue more serving pairs with."""
    from certs import pki

    key = pki.load_key(material.ca_key.read_bytes())
    assert key is not None
    return pki.KeyPair(pki.load_certs(material.ca_cert.read_bytes())[0], key)


def new_leaf(ca: pki.KeyPair) -> pki.KeyPair:
    """A new serving pair for 127.0.0.1 from `ca` (a rotation's next certificate)."""
    from certs import pki

    return pki.issue_leaf(
        ca,
        dns_names=("localhost",),
        ip_addresses=pki.parse_ips(["127.0.0.1"]),
        now=datetime.now(UTC),
        days=30,
    )


def serving_pair(tls: Material | tuple[Path, Path]) -> tuple[Path, Path]:
    """What a server serves: `make_material`'s pair, or a certificate and key of its own (a
    rotating volume's)."""
    return tls if isinstance(tls, tuple) else (tls.tls_cert, tls.tls_key)


# --- the servers: `virtdev webhook` and the floor ---------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics(self) -> str:
        assert self.metrics_port is not None, f"{self.name} has no probe port"
        return support.metrics_text(self.metrics_port)


def sample(metrics: str, name: str) -> float:
    """One sample of Prometheus text (name with its labels, as exposed); 0 when absent."""
    value = support.sample(metrics, name)
    return 0.0 if value is None else value


@contextlib.contextmanager
def webhook(
    workdir: Path,
    tls: Material | tuple[Path, Path],
    *,
    cpu: str | None = None,
    flags: Sequence[str] = (),
    prefix: Sequence[str] = (),
    log: Path | None = None,
) -> Iterator[Server]:
    """`virtdev webhook` as deployed (JSON logs at info), ready once /readyz answers 200
    (tests/support.py starts and stops it); `prefix` runs it, after the pinning to `cpu`."""
    try:
        started = support.start_webhook(
            workdir, *flags, tls=serving_pair(tls), prefix=[*pinned(cpu, ()), *prefix], log=log
        )
    except support.NotStarted as error:
        raise BenchError(str(error)) from None
    try:
        yield Server("webhook", started.process, started.port, started.metrics_port, started.log)
    finally:
        started.stop()


def floor_command(port: int, tls: Material | tuple[Path, Path], *flags: str) -> list[str]:
    """bench/floor_app.py on `port` with the webhook's certificate and key."""
    cert, key = serving_pair(tls)
    return [
        sys.executable, str(FLOOR_APP), "--port", str(port),
        "--tls-cert", str(cert), "--tls-key", str(key), *flags,
    ]  # fmt: skip


@contextlib.contextmanager
def floor(
    workdir: Path,
    tls: Material | tuple[Path, Path],
    *,
    cpu: str | None = None,
    flags: Sequence[str] = (),
) -> Iterator[Server]:
    """bench/floor_app.py: the bare ASGI endpoint on the same stack, ready once it says so
    (its ready line; with --log-line its admission lines follow in the same log)."""
    port = support.free_port()
    log = workdir / f"floor-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            pinned(cpu, floor_command(port, tls, *flags)),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def ready() -> bool:
        return "floor ready" in log.read_text(errors="replace")

    try:
        support.until_ready(process, ready, "floor", support.STARTUP_SECONDS)
    except support.NotStarted as error:
        support.stop(process, timeout=15)
        raise BenchError(str(error)) from None
    try:
        yield Server("floor", process, port, None, log)
    finally:
        support.stop(process, timeout=15)


def post(port: int, path: str, body: bytes, ca_cert: Path) -> tuple[int, dict[str, Any]]:
    """One review over a fresh verified HTTPS connection: (status, decoded JSON body)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", path, body, JSON)
        response = connection.getresponse()
        answer: dict[str, Any] = json.loads(response.read())
        return response.status, answer
    finally:
        connection.close()


def assert_patches(server: Server, ca_cert: Path, body: bytes | None = None) -> None:
    """The server really answers /mutate with a patch for the review (a floor would not)."""
    body = PATCHED.read_bytes() if body is None else body
    status, answer = post(server.port, "/mutate", body, ca_cert)
    response = answer.get("response", {})
    if (
        status != 200
        or response.get("patchType") != "JSONPatch"
        or response.get("uid") != json.loads(body)["request"]["uid"]
    ):
        raise BenchError(f"{server.name}: /mutate answered {status} {answer}")


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """POST the fixture to /mutate over a fresh connection verified with `context` (it must be
    patched): the serial of the certificate the server presented."""
    from cryptography import x509

    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", "/mutate", PATCHED.read_bytes(), JSON)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or b'"patchType":"JSONPatch"' not in body:
            raise BenchError(f"verified client got {response.status} {body[:200]!r}")
        assert connection.sock is not None
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        connection.close()


# --- the API server stand-in and its nodes ------------------------------------------------------

KVM, TUN, VHOST = (f"devices.kubevirt.io/{d}" for d in ("kvm", "tun", "vhost-net"))
SCHEDULABLE = "kubevirt.io/schedulable"
CPU_MODEL = "cpu-model.node.kubevirt.io/Skylake-Server-IBRS"
FEASIBLE_GAUGE = "virtdev_webhook_feasible_nodes"
SYNCED_GAUGE = "virtdev_webhook_node_view_synced"


@dataclass
class ApiServer:
    """The stand-in, running, and a kubeconfig for it."""

    stand_in: StandIn
    kubeconfig: str

    @property
    def flags(self) -> list[str]:
        """What `virtdev webhook` is given to watch the nodes here."""
        return ["--kubeconfig", self.kubeconfig]


@contextlib.contextmanager
def api_server(
    workdir: Path, nodes: Iterable[dict[str, Any]] = (), *, bookmark_seconds: float = 0.5
) -> Iterator[ApiServer]:
    """The tests' API stand-in in this process, serving `nodes`; its history starts after them
    (compacted: no watch replays the set-up)."""
    from tests.kube_standin import StandIn, write_kubeconfig

    stand_in = StandIn()
    stand_in.bookmark_seconds = bookmark_seconds
    with stand_in.running():
        for node in nodes:
            stand_in.put_object(node)
        stand_in.compact()
        yield ApiServer(stand_in, write_kubeconfig(workdir / "kubeconfig", stand_in.url))


def wait_synced(server: Server, timeout: float = 20) -> float:
    """Seconds until the webhook's node view says it is in sync."""

    def synced() -> bool:
        return sample(server.metrics(), SYNCED_GAUGE) == 1

    return wait_for(synced, "the view to sync", timeout)


def _hex(seed: int, length: int) -> str:
    return (f"{seed * 2654435761 % 2**64:016x}" * (length // 16 + 1))[:length]


IMAGES = [
    (
        [
            f"quay.io/kubevirt/component-{i:02d}@sha256:{_hex(i + 1, 64)}",
            f"quay.io/kubevirt/component-{i:02d}:v1.4.{i % 7}",
        ],
        50_000_000 + i * 1_234_567,
    )
    for i in range(40)
]


def realistic_node(
    index: int, *, ready: bool | None = None, kvm: str | None = None, beat: int = 0
) -> dict[str, Any]:
    """A Node as a kubelet and virt-handler leave it, ~10 KB of JSON. Every 50th is cordoned,
    every 97th NotReady, every 25th tainted NoSchedule, every 20th without a usable kvm."""
    name = f"worker-{index:05d}.virt.example.com"
    zone = "eu-west-1" + "abc"[index % 3]
    ready = (index % 97 != 13) if ready is None else ready
    kvm = ("0" if index % 20 == 7 else "1000") if kvm is None else kvm
    stamp = f"2026-11-28T00:{beat // 60 % 60:02d}:{beat % 60:02d}Z"
    ip = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
    devices = {KVM: "1000", TUN: "1000", VHOST: "1000"}
    resources = {
        "cpu": "96",
        "ephemeral-storage": "936104940Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "394857268Ki",
        "pods": "250",
    }
    condition_text = {
        "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        "Ready": ("KubeletReady", "kubelet is posting ready status. AppArmor enabled"),
    }
    conditions = [
        {
            "type": kind,
            "status": ("True" if ready else "Unknown")
            if kind == "Ready"
            else ("False" if ready else "Unknown"),
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": "2026-11-01T08:00:00Z",
            "reason": reason,
            "message": message,
        }
        for kind, (reason, message) in condition_text.items()
    ]
    spec: dict[str, Any] = {
        "podCIDR": f"10.244.{index % 256}.0/24",
        "podCIDRs": [f"10.244.{index % 256}.0/24"],
        "providerID": f"aws:///{zone}/i-{_hex(index + 7, 17)}",
        "taints": [{"key": "node-role.kubernetes.io/infra", "effect": "NoSchedule"}]
        if index % 25 == 3
        else [],
    }
    if index % 50 == 11:
        spec["unschedulable"] = True
        spec["taints"].append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/worker": "",
                "node.kubernetes.io/instance-type": "m5.metal",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": zone,
                SCHEDULABLE: "true",
                CPU_MODEL: "true",
                "cpu-vendor.node.kubevirt.io/Intel": "true",
                "host-model-cpu.node.kubevirt.io/Skylake-Server-IBRS": "true",
                "scheduling.node.kubevirt.io/tsc-frequency-2500000000": "true",
                "kubevirt.io/ksm-enabled": "false",
            },
            "annotations": {
                "kubevirt.io/heartbeat": stamp,
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": json.dumps(
                    {"ebs.csi.aws.com": "i-" + _hex(index, 17)}
                ),
                "projectcalico.org/IPv4Address": f"{ip}/20",
                "kubevirt.io/node-labeller-version": "v1.4.0",
            },
        },
        "spec": spec,
        "status": {
            "capacity": {**resources, **devices},
            "allocatable": {**resources, "cpu": "95500m", **devices, KVM: kvm},
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
                {
                    "type": "InternalDNS",
                    "address": f"ip-{ip.replace('.', '-')}.eu-west-1.compute.internal",
                },
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": _hex(index + 3, 32),
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.112-124.190.amzn2023.x86_64",
                "kubeProxyVersion": "v1.31.2",
                "kubeletVersion": "v1.31.2",
                "machineID": _hex(index + 5, 32),
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.6.20241031",
                "systemUUID": _hex(index + 9, 32),
            },
            "images": [{"names": names, "sizeBytes": size} for names, size in IMAGES],
        },
    }


# --- wrk ----------------------------------------------------------------------------------------

BENCH_LINE = re.compile(
    r"BENCH requests=(\d+) duration_us=(\d+) connect=(\d+) read=(\d+) write=(\d+) status=(\d+) "
    r"timeout=(\d+) p50_us=(\d+) p90_us=(\d+) p99_us=(\d+) max_us=(\d+)"
)


@dataclass
class Load:
    requests: int
    seconds: float
    connect: int
    read: int
    write: int
    status: int
    timeout: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    #: CPU time the server process used per answered request (user + system, from /proc), when
    #: wrk was given its pid (0 when not).
    cpu_us: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def failed(self) -> int:
        """Requests without a 2xx answer: socket errors and non-2xx statuses."""
        return self.socket_errors + self.status

    def brief(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 1), "failed": self.failed}


def wrk_command(url: str, *, connections: int, seconds: float, cpu: str | None) -> list[str]:
    """One wrk thread (its core is the load's), a 5 s timeout, whole seconds."""
    duration = f"-d{max(1, math.ceil(seconds))}s"
    return pinned(
        cpu, ["wrk", "-t1", f"-c{connections}", duration, "--timeout=5s", "-s", str(LUA), url]
    )


def wrk_env(bodies: Sequence[Path] | None = None, *, close: bool = False) -> dict[str, str]:
    """What bench/webhook_reviews.lua reads: the reviews (default the MIX) and whether every
    request is made on a fresh connection."""
    files = bodies if bodies is not None else [FIXTURES / name for name in MIX]
    return {**os.environ, "BENCH_BODIES": ":".join(map(str, files)), "BENCH_CLOSE": "1" * close}


def parse_wrk(stdout: str, what: str) -> Load:
    match = BENCH_LINE.search(stdout)
    if match is None:
        raise BenchError(f"wrk ({what}) printed no summary:\n{stdout[-2000:]}")
    n = [int(value) for value in match.groups()]
    return Load(
        requests=n[0], seconds=n[1] / 1e6, connect=n[2], read=n[3], write=n[4], status=n[5],
        timeout=n[6], p50_ms=n[7] / 1000, p90_ms=n[8] / 1000, p99_ms=n[9] / 1000,
        max_ms=n[10] / 1000,
    )  # fmt: skip


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    cpu: str | None,
    bodies: Sequence[Path] | None = None,
    close: bool = False,
    what: str = "",
    pid: int | None = None,
) -> Load:
    """Run wrk to the end and parse its summary line; wrk's own text goes to stderr. With the
    server's `pid`, also its CPU time per answered request."""
    command = wrk_command(url, connections=connections, seconds=seconds, cpu=cpu)
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    result = subprocess.run(
        command,
        env=wrk_env(bodies, close=close),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    cpu_after = cpu_seconds(pid) if pid is not None else 0.0
    print(result.stdout, file=sys.stderr, end="")
    if result.returncode != 0:
        raise BenchError(f"wrk ({what}) exited {result.returncode}: {result.stderr[-1000:]}")
    load = parse_wrk(result.stdout, what)
    if pid is not None:
        load.cpu_us = (cpu_after - cpu_before) / max(load.requests, 1) * 1e6
    return load


@dataclass
class BackgroundLoad:
    """wrk running while something else happens (a rotation, a SIGTERM, a dropped watch);
    as a context manager, killed on the way out if it is still running."""

    process: subprocess.Popen[str]
    what: str

    def result(self, timeout: float) -> Load:
        stdout, stderr = self.process.communicate(timeout=timeout)
        print(stdout, file=sys.stderr, end="")
        if self.process.returncode != 0:
            raise BenchError(f"wrk ({self.what}) exited {self.process.returncode}: {stderr}")
        return parse_wrk(stdout, self.what)

    def __enter__(self) -> BackgroundLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wrk_background(
    url: str,
    *,
    connections: int,
    seconds: float,
    cpu: str | None,
    close: bool = False,
    bodies: Sequence[Path] | None = None,
    what: str = "",
) -> BackgroundLoad:
    command = wrk_command(url, connections=connections, seconds=seconds, cpu=cpu)
    process = subprocess.Popen(
        command,
        env=wrk_env(bodies, close=close),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return BackgroundLoad(process, what)


def ratio(value: float, floor_value: float) -> float:
    return round(value / floor_value, 3) if floor_value else math.nan


def alternate(
    names: Sequence[str], rounds: int, load: Callable[[str, int], Load]
) -> Iterator[dict[str, Load]]:
    """`rounds` rounds, each loading every server once (`load(name, round)`), each server going
    first in turn: what the machine does meanwhile falls on all of them alike."""
    for number in range(rounds):
        turn = number % len(names)
        yield {name: load(name, number) for name in [*names[turn:], *names[:turn]]}


def medians(rounds: Sequence[dict[str, Load]], subject: str, baseline: str) -> dict[str, float]:
    """Throughput, p99 and CPU per request of `subject` and `baseline` over alternated rounds
    (medians), and their ratios as medians of the per-round ratios: a shared machine slows both
    servers of a round alike, and the ratio of one round cancels that out."""

    def median(figure: Callable[[Load, Load], float]) -> float:
        return statistics.median(figure(r[subject], r[baseline]) for r in rounds)

    return {
        f"{subject}_rps": median(lambda s, _: s.rps),
        f"{baseline}_rps": median(lambda _, b: b.rps),
        "rps_ratio": median(lambda s, b: s.rps / b.rps),
        f"{subject}_p99_ms": median(lambda s, _: s.p99_ms),
        f"{baseline}_p99_ms": median(lambda _, b: b.p99_ms),
        "p99_ratio": median(lambda s, b: s.p99_ms / b.p99_ms),
        f"{subject}_cpu_us": median(lambda s, _: s.cpu_us),
        f"{baseline}_cpu_us": median(lambda _, b: b.cpu_us),
        "cpu_ratio": median(lambda s, b: b.cpu_us / s.cpu_us),
    }


# --- instructions, counted by valgrind: what no other job on the machine can move ---------------

#: Python under valgrind starts about 50x slower: the webhook takes tens of seconds.
VALGRIND_STARTUP_SECONDS = 600.0
#: A fixed hash seed: dict layouts, hence instruction counts, are then the same each run.
CALLGRIND_ENV = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
TOTALS = re.compile(rb"^totals: (\d+)", re.MULTILINE)


def callgrind(out: Path, command: Sequence[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]


def total(out: Path) -> int:
    """The instructions callgrind counted, from its output file."""
    match = TOTALS.search(out.read_bytes())
    if match is None:
        raise BenchError(f"no totals line in {out}")
    return int(match[1])


def per_request(count: Callable[[int], int], n: int) -> tuple[int, int, float]:
    """`count` at n and at 3n (requests, runs): both totals and the difference per extra one,
    with start-up, imports and warm-up cancelled out."""
    few, many = count(n), count(3 * n)
    return few, many, (many - few) / (2 * n)


def connect(
    port: int, context: ssl.SSLContext, process: subprocess.Popen[bytes]
) -> http.client.HTTPSConnection:
    """A connection to a server starting under valgrind, once it accepts one."""
    deadline = time.monotonic() + VALGRIND_STARTUP_SECONDS
    while True:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=120)
        try:
            connection.connect()
            return connection
        except OSError:
            connection.close()
        if process.poll() is not None:
            raise BenchError(f"exited with {process.returncode} before it answered")
        if time.monotonic() > deadline:
            raise BenchError(f"no answer on port {port} within {VALGRIND_STARTUP_SECONDS:.0f} s")
        time.sleep(0.2)  # polling interval of the connection attempt above


def post_allowed(
    connection: http.client.HTTPSConnection, path: str, body: bytes, requests: int, what: str
) -> None:
    """POST `body` to `path` `requests` times over `connection`; every answer must allow."""
    for _ in range(requests):
        connection.request("POST", path, body, JSON)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200 or b'"allowed":true' not in answer:
            raise BenchError(f"{what} answered {response.status}: {answer[:200]!r}")


def instructions(
    command: Callable[[int, int], list[str]],
    *,
    what: str,
    path: str,
    body: bytes,
    requests: int,
    work: Path,
    ca_cert: Path,
    synced: Callable[[], bool] | None = None,
) -> int:
    """Total instructions of one server process under callgrind (`command` given its port and
    probe port) that answered `requests` reviews over one keep-alive connection, then exited
    on SIGTERM. `synced`, made before the process starts, says from outside when its node view
    synced: polling /metrics would add instructions of its own to the count."""
    port, metrics_port = support.free_ports(2)
    out = work / f"callgrind.{what}.{requests}"
    with (work / f"callgrind.{what}.{requests}.log").open("wb") as log:
        process = subprocess.Popen(
            callgrind(out, command(port, metrics_port)), cwd=REPO, env=CALLGRIND_ENV,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(ca_cert))
        connection = connect(port, context, process)
        if synced is not None:
            # Connected again once synced: a connection idle through the sync (30 s at 1,000
            # nodes under valgrind) would have been closed at the server's --head-timeout.
            connection.close()
            wait_for(synced, f"{what} to sync under valgrind", VALGRIND_STARTUP_SECONDS)
            connection = connect(port, context, process)
        post_allowed(connection, path, body, requests, what)
        connection.close()
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the SIGTERM it handled (the floor); `virtdev webhook` exits 0.
        if process.wait(timeout=VALGRIND_STARTUP_SECONDS) not in (0, -signal.SIGTERM):
            raise BenchError(f"{what} exited with {process.returncode} after SIGTERM")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return total(out)


# --- the device plugins: `virtdev agent` and bench/floor_plugin.py ------------------------------

#: What the agent serves with its defaults (kvm, tun, vhost-net), and the floor too.
DEVICES = catalogue.resolve_devices(catalogue.AGENT_DEVICES)
RESOURCES = tuple(device.resource for device in DEVICES)
DEVICE_NODES = tuple(device.path.lstrip("/") for device in DEVICES)
#: Devices per resource, the agent's default; the floor is given the same.
DEVICE_COUNT = catalogue.DEFAULT_DEVICE_COUNT
#: The bench and its kubelet on one core, the plugin measured on the other.
BENCH_CPU, PLUGIN_CPU = 0, 1


def plugin_subjects(*agent_flags: str) -> dict[str, list[str]]:
    """The two plugins measured, as commands ({dir}/{host} filled in by `plugin_argv`): the
    floor, and `virtdev agent` launched as in production."""
    floor_plugin = str(Path(__file__).resolve().parent / "floor_plugin.py")
    return {
        "floor": [sys.executable, floor_plugin, "{dir}", "{host}", str(DEVICE_COUNT)],
        "agent": [
            *support.VIRTDEV, "agent", "--device-plugin-dir={dir}", "--host-root={host}",
            "--metrics-port=0", *agent_flags,
        ],
    }  # fmt: skip


def plugin_argv(command: Sequence[str], plugin_dir: Path, host: Path) -> list[str]:
    return [part.format(dir=plugin_dir, host=host) for part in command]


def plugin_host(work: Path) -> tuple[Path, Path]:
    """(device-plugin directory, host root with real kvm, tun and vhost-net nodes) in `work`."""
    from tests.agent.helpers import make_node

    plugin_dir, host = work / "dp", work / "host"
    plugin_dir.mkdir(parents=True)
    for node in DEVICE_NODES:
        make_node(host, node)
    return plugin_dir, host


async def registered(kubelet: TestKubelet) -> None:
    """Until every resource is registered with `kubelet` and listed healthy."""
    for resource in RESOURCES:
        await kubelet.wait_registered(resource)
        await kubelet.wait_for_devices(resource, healthy)


def bytecode_env(prefix: Path) -> dict[str, str]:
    """Both plugins load compiled bytecode, as from an installed image, whatever
    PYTHONDONTWRITEBYTECODE says here: compiling sources at start leaves garbage in the heap
    that a deployed agent does not carry. The bytecode goes to a private directory (filled by
    a warm-up start of each plugin), not into the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def healthy(devices: list[tuple[str, str]]) -> bool:
    return bool(devices) and all(h == "Healthy" for _, h in devices)


def unhealthy(devices: list[tuple[str, str]]) -> bool:
    return bool(devices) and all(h == "Unhealthy" for _, h in devices)


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank: of 100 values the 99th, of 20 or fewer the largest."""
    return sorted(values)[max(0, math.ceil(len(values) * 0.99) - 1)]
