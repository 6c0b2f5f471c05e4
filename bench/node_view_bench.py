"""The node view at cluster scale: /mutate with the view against /mutate without, same run.

For each cluster size (100, 1,000, 5,000 and 15,000 nodes by default) the API stand-in of the
tests (tests/kube_standin.py, in this process, on the load core) serves Nodes shaped like real
ones, ~10 KB each: 15 labels (KubeVirt's among them), 6 annotations, 4 conditions with
messages, 40 images, nodeInfo, addresses, and devices.kubevirt.io/kvm, tun and vhost-net at
1,000 each as virt-handler advertises them (cmd/virt-handler/virt-handler.go@v1.4.0:106,
pkg/virt-handler/device-manager/device_controller.go@v1.4.0:105-117); a few are cordoned,
NotReady, tainted or without kvm, as in a real cluster. Two `virtdev webhook` processes run on
the same core: one watching the nodes (`--kubeconfig`, `--no-kvm-policy warn`), one without a
cluster. wrk (16 connections, on the other core) POSTs a launcher review carrying KubeVirt's
node selector (`kubevirt.io/schedulable: "true"`,
pkg/virt-controller/services/nodeselectorrenderer.go@v1.4.0:32) and the default NoExecute
tolerations, so every request is decided against the view.

Rounds alternate between the two webhooks (which goes first alternates too) and the ratios are
the medians of the per-round ratios: this machine is shared and noisy. Then the same while 100
node updates a second stream in (during the view's rounds only, so the baseline is not slowed
by the view's thread): every update a new heartbeat, one in ten also flipping Ready or kvm's
allocatable. After the stream the view must show the cluster as it is (the feasible-node gauge
equals what the per-node decision says for the final state), within a bound.

Also per size: time from process start to the first sync, VmRSS of both processes, the
server's CPU time per request (steadier than requests/s here), and in-process costs: a decision
from the index and node by node (the reference), the paths where no node fits (ruled out by the
selector; by devices), and applying one watch event. At the sizes of `--instructions-at` (1,000
and 5,000) both webhooks also run under valgrind (callgrind) answering 200 and 600 reviews:
the difference is instructions per request, which no other job on the machine can move.

Targets at 5,000 nodes: throughput >= 0.9x without a view (static) and >= 0.8x during the
stream; p99 <= 2x; RSS <= no-view + 64 MiB; first sync <= 20 s; no-fit summary <= 2 ms.
Exit 0 when met, 1 when missed, 2 when the bench could not run.

    .venv/bin/python bench/node_view_bench.py --json nodes.json
    .venv/bin/python bench/node_view_bench.py --sizes 100,1000 --rounds 3 --duration 3
    .venv/bin/python bench/node_view_bench.py --plot nodes.json docs/img/node-view.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

from bench.harness import (
    CPU_MODEL,
    FEASIBLE_GAUGE,
    KVM,
    PATCHED,
    SCHEDULABLE,
    TUN,
    BenchError,
    Load,
    Server,
    alternate,
    api_server,
    assert_patches,
    cores,
    finish,
    in_workdir,
    instructions,
    machine,
    make_material,
    medians,
    missed,
    missed_note,
    per_call_us,
    per_request,
    post,
    pyplot,
    realistic_node,
    rss_kib,
    sample,
    verdict,
    wait_for,
    wait_synced,
    webhook,
    wrk,
)
from certs.store import Material
from tests.kube_standin import StandIn
from tests.support import webhook_command

SIZES = (100, 1_000, 5_000, 15_000)
CONNECTIONS = 16
UPDATES_PER_SECOND = 100
TARGET_STATIC = 0.9
TARGET_STREAM = 0.8
TARGET_P99 = 2.0
TARGET_RSS_MIB = 64
TARGET_SYNC_S = 20
TARGET_NO_FIT_MS = 2
TARGET_SIZE = 5_000
CONVERGE_TIMEOUT = 15.0
#: Instructions per request of the webhook without a view, counted at the first size asked.
PLAIN_COUNT: dict[str, float] = {}

# --- the cluster ---------------------------------------------------------------------------


def review_body(path: Path) -> Path:
    """The launcher review with what KubeVirt puts on every launcher pod that the filters read."""
    document = json.loads(PATCHED.read_bytes())
    spec = document["request"]["object"]["spec"]
    spec["nodeSelector"] = {SCHEDULABLE: "true", CPU_MODEL: "true"}
    spec["tolerations"] = [
        {"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}
        for taint in ("not-ready", "unreachable")
    ]  # fmt: skip
    path.write_text(json.dumps(document))
    return path


class Cluster:
    """The nodes in the stand-in, and what the bench last wrote of each (to check the view)."""

    def __init__(self, stand_in: StandIn) -> None:
        self.stand_in = stand_in
        self.state: dict[int, tuple[bool | None, str | None, int]] = {}

    def grow(self, size: int) -> None:
        for index in range(len(self.state), size):
            self.stand_in.put_object(realistic_node(index))
            self.state[index] = (None, None, 0)
        self.stand_in.compact()  # no history of the set-up: watches start from now

    def update(self, rng: random.Random) -> None:
        """One node update: a new heartbeat, and one in ten times Ready or kvm flipped."""
        index = rng.randrange(len(self.state))
        ready, kvm, beat = self.state[index]
        if rng.random() < 0.1:
            if rng.random() < 0.5:
                ready = not (ready if ready is not None else index % 97 != 13)
            else:
                kvm = "0" if (kvm or ("0" if index % 20 == 7 else "1000")) != "0" else "1000"
        self.state[index] = (ready, kvm, beat + 1)
        self.stand_in.replace_object(realistic_node(index, ready=ready, kvm=kvm, beat=beat + 1))

    def nodes(self) -> Iterator[dict[str, Any]]:
        for index, (ready, kvm, beat) in self.state.items():
            yield realistic_node(index, ready=ready, kvm=kvm, beat=beat)


@contextlib.contextmanager
def streaming(cluster: Cluster, rate: float, counter: list[int]) -> Iterator[None]:
    """Node updates at `rate` a second, paced by the clock, until the block ends."""
    stop = threading.Event()
    rng = random.Random(len(cluster.state))

    def run() -> None:
        started, sent = time.monotonic(), 0
        while not stop.is_set():
            due = started + sent / rate
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            cluster.update(rng)
            sent += 1
            counter[0] += 1

    thread = threading.Thread(target=run, name="node-updates", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


# --- in-process costs -----------------------------------------------------------------------


def cost_us(function: Callable[[], object]) -> float:
    """µs per call, timed over a quarter of what autorange picks: a decision node by node at
    15,000 nodes takes milliseconds."""
    return per_call_us(function, repeats=5, share=4)


def in_process(cluster: Cluster, review: Path) -> dict[str, float]:
    import orjson

    from webhook.nodes.feasibility import decide, verdict
    from webhook.nodes.index import NodeIndex

    nodes = list(cluster.nodes())
    pod = json.loads(review.read_bytes())["request"]["object"]
    wanted = {KVM: 1, TUN: 1}
    started = time.perf_counter()
    index = NodeIndex()
    for node in nodes:
        index.put(node)
    build_s = time.perf_counter() - started
    nowhere = {**pod, "spec": {**pod["spec"], "nodeSelector": {SCHEDULABLE: "false"}}}
    for the_pod, requests in ((pod, wanted), (nowhere, wanted), (pod, {KVM: 5000, TUN: 1})):
        expected = decide(the_pod, nodes, requests=requests, no_kvm_policy="deny")
        if index.decide(the_pod, requests=requests, no_kvm_policy="deny") != expected:
            raise BenchError("the index and the per-node decision disagree")
    sample_index = len(nodes) // 2
    beat = realistic_node(sample_index, beat=1)
    flip = realistic_node(sample_index, kvm="0", beat=2)
    line = json.dumps({"type": "MODIFIED", "object": beat}).encode()

    def event(node: dict[str, Any]) -> Callable[[], None]:
        def apply() -> None:
            index.put(node)
            index.put(nodes[sample_index])  # and back, so every call changes the same

        return apply

    def computed(the_pod: dict[str, Any], requests: dict[str, int]) -> Callable[[], object]:
        """A decision worked out from the index, not remembered: what a new question costs."""

        def decide_now() -> object:
            fit = index.fit(the_pod, requests)
            return verdict(fit, the_pod, no_kvm_policy="deny", kvm_injected=True, emulated=int)

        return decide_now

    reference_repeats = 1 if len(nodes) > 5000 else 3
    return {
        "index_build_s": build_s,
        "decide_remembered_us": cost_us(lambda: index.decide(pod, requests=wanted)),
        "decide_index_us": cost_us(computed(pod, wanted)),
        "decide_per_node_us": min(
            timeit.repeat(
                lambda: decide(pod, nodes, requests=wanted), number=1, repeat=reference_repeats
            )
        )
        * 1e6,  # fmt: skip
        "no_fit_selector_us": cost_us(computed(nowhere, wanted)),
        "no_fit_devices_us": cost_us(computed(pod, {KVM: 5000, TUN: 1})),
        "event_heartbeat_us": cost_us(event(beat)) / 2,
        "event_fact_change_us": cost_us(event(flip)) / 2,
        "event_json_parse_us": cost_us(lambda: orjson.loads(line)),
    }


# --- instructions per request, counted by valgrind: what the noise cannot move ----------------


def counted(
    workdir: Path,
    material: Material,
    review: Path,
    flags: list[str],
    what: str,
    n: int,
    synced: Callable[[], Callable[[], bool]] | None = None,
) -> float:
    """Instructions per request of a `virtdev webhook` process (with `flags`) that synced, then
    answered reviews over one keep-alive connection: n and 3n of them, start-up cancelled out.
    `synced()`, made before each process starts, says from outside when it synced (the
    stand-in sees its watch)."""

    def command(port: int, metrics_port: int) -> list[str]:
        tls = (material.tls_cert, material.tls_key)
        return webhook_command(port, metrics_port, *flags, tls=tls)

    def count(requests: int) -> int:
        return instructions(
            command, what=what, path="/mutate", body=review.read_bytes(), requests=requests,
            work=workdir, ca_cert=material.ca_cert, synced=synced() if synced else None,
        )  # fmt: skip

    return per_request(count, n)[2]


def new_watch(stand_in: StandIn) -> Callable[[], bool]:
    """True once a watch of nodes is requested after now: the view has listed, it is synced."""

    def watches() -> int:
        return sum(
            1 for r in list(stand_in.requests) if r.resource == "nodes" and "watch=" in r.query
        )

    before = watches()
    return lambda: watches() > before


# --- the run ----------------------------------------------------------------------------------


def expected_feasible(cluster: Cluster, review: Path) -> int:
    """What the per-node decision says of the current state: the gauge the view must reach."""
    from webhook.admission import mutate_review_decided
    from webhook.nodes.feasibility import NodeSnapshot
    from webhook.rules.policy import LauncherPolicy
    from webhook.serving.review import parse

    snapshot = NodeSnapshot(nodes=tuple(cluster.nodes()), synced=True)
    _, decision = mutate_review_decided(
        parse(review.read_bytes()), LauncherPolicy(), nodes=snapshot
    )
    assert decision is not None
    return decision.feasible


def rounds(
    args: argparse.Namespace,
    servers: dict[str, Server],
    review: Path,
    load_cpu: str | None,
    during_view: Callable[[], contextlib.AbstractContextManager[None]],
) -> list[dict[str, Load]]:
    """The view's webhook and the plain one loaded alternately, `during_view` around the view's
    loads, with the server's CPU time per answered request: steadier than req/s on a shared
    machine (the view's thread, applying the stream's events, is counted in it too)."""

    def load(name: str, _: int) -> Load:
        with during_view() if name == "view" else contextlib.nullcontext():
            done = wrk(
                f"{servers[name].url}/mutate", connections=args.connections,
                seconds=args.duration, cpu=load_cpu, bodies=[review], what=name,
                pid=servers[name].pid,
            )  # fmt: skip
        if done.failed:
            raise BenchError(f"{name}: {done.failed} failed requests")
        return done

    return list(alternate(["view", "plain"], args.rounds, load))


def one_size(
    args: argparse.Namespace,
    cluster: Cluster,
    size: int,
    workdir: Path,
    material: Material,
    kubeconfig: list[str],
) -> dict[str, Any]:
    server_cpu, load_cpu = cores()
    review = review_body(workdir / "review.json")
    cluster.grow(size)
    spawned = time.monotonic()
    watching = [*kubeconfig, "--no-kvm-policy", "warn"]
    with (
        webhook(workdir, material, cpu=server_cpu, flags=watching) as view,
        webhook(workdir, material, cpu=server_cpu) as plain,
    ):
        wait_synced(view, 120)
        first_sync_s = time.monotonic() - spawned  # process start (imports included) to synced
        servers = {"view": view, "plain": plain}
        for server in servers.values():
            assert_patches(server, material.ca_cert, review.read_bytes())
        expected = expected_feasible(cluster, review)
        feasible = sample(view.metrics(), FEASIBLE_GAUGE)
        if feasible != expected:
            raise BenchError(f"the view counts {feasible} feasible nodes, not {expected}")
        for server in servers.values():  # warm-up
            wrk(f"{server.url}/mutate", connections=args.connections, seconds=2, cpu=load_cpu,
                bodies=[review], what="warm-up")  # fmt: skip
        static = rounds(args, servers, review, load_cpu, contextlib.nullcontext)
        rss = {name: rss_kib(server.pid) for name, server in servers.items()}
        updates = [0]
        stream = rounds(
            args, servers, review, load_cpu, lambda: streaming(cluster, args.updates, updates)
        )
        # The view must show the cluster as it now is, within a bound.
        expected = expected_feasible(cluster, review)

        def converged() -> bool:
            post(view.port, "/mutate", review.read_bytes(), material.ca_cert)
            return sample(view.metrics(), FEASIBLE_GAUGE) == expected

        converge_s = wait_for(converged, "the view to show the final state", CONVERGE_TIMEOUT)
        rss_after = {name: rss_kib(server.pid) for name, server in servers.items()}
        known = sample(view.metrics(), "virtdev_webhook_nodes_known")
    if known != size:
        raise BenchError(f"the view knows {known} nodes, not {size}")
    os.sched_setaffinity(0, {int(server_cpu or 0)})
    costs = in_process(cluster, review)
    os.sched_setaffinity(0, {int(load_cpu or 0)})
    counts: dict[str, float] = {}
    if size in args.instructions_at:
        if "plain" not in PLAIN_COUNT:  # the same whatever the cluster: counted once
            PLAIN_COUNT["plain"] = counted(workdir, material, review, [], "plain", 200)
        view_count = counted(
            workdir, material, review, watching, "view", 200, lambda: new_watch(cluster.stand_in)
        )
        counts = {
            "instructions_view": round(view_count),
            "instructions_plain": round(PLAIN_COUNT["plain"]),
            "instructions_ratio": round(view_count / PLAIN_COUNT["plain"], 3),
        }
    return {
        "nodes": size,
        "node_json_bytes": len(json.dumps(realistic_node(1))),
        "first_sync_s": round(first_sync_s, 2),
        "static": medians(static, "view", "plain"),
        "stream": {**medians(stream, "view", "plain"), "updates": updates[0],
                   "updates_per_s": round(updates[0] / (args.rounds * args.duration), 1)},
        "rss_mib": {name: round(kib / 1024, 1) for name, kib in rss.items()},
        "rss_after_stream_mib": {name: round(kib / 1024, 1) for name, kib in rss_after.items()},
        "rss_extra_mib": round((max(rss["view"], rss_after["view"]) - rss["plain"]) / 1024, 1),
        "converged_after_stream_s": round(converge_s, 2),
        "feasible_nodes": expected,
        **counts,
        **{key: round(value, 4 if key.endswith("_s") else 1) for key, value in costs.items()},
        "loads": {
            "static": [{k: v.brief() for k, v in d.items()} for d in static],
            "stream": [{k: v.brief() for k, v in d.items()} for d in stream],
        },
    }  # fmt: skip


def checks(results: list[dict[str, Any]]) -> dict[str, bool]:
    at = next((r for r in results if r["nodes"] == TARGET_SIZE), None)
    if at is None:
        return {}
    return {
        f"static >= {TARGET_STATIC}x at {TARGET_SIZE}": at["static"]["rps_ratio"] >= TARGET_STATIC,
        f"stream >= {TARGET_STREAM}x at {TARGET_SIZE}": at["stream"]["rps_ratio"] >= TARGET_STREAM,
        f"p99 <= {TARGET_P99}x at {TARGET_SIZE}": max(
            at["static"]["p99_ratio"], at["stream"]["p99_ratio"]
        )
        <= TARGET_P99,
        f"rss <= +{TARGET_RSS_MIB} MiB at {TARGET_SIZE}": at["rss_extra_mib"] <= TARGET_RSS_MIB,
        f"first sync <= {TARGET_SYNC_S} s at {TARGET_SIZE}": at["first_sync_s"] <= TARGET_SYNC_S,
        f"no-fit summary <= {TARGET_NO_FIT_MS} ms at {TARGET_SIZE}": max(
            at["no_fit_selector_us"], at["no_fit_devices_us"]
        )
        <= TARGET_NO_FIT_MS * 1000,
    }


def line(result: dict[str, Any]) -> str:
    s, t = result["static"], result["stream"]
    return (
        f"{result['nodes']:>6} nodes: static {s['view_rps']:.0f} vs {s['plain_rps']:.0f} rps ="
        f" {s['rps_ratio']:.2f}x, p99 {s['view_p99_ms']:.1f} vs {s['plain_p99_ms']:.1f} ms ="
        f" {s['p99_ratio']:.2f}x, CPU/request {s['view_cpu_us']:.0f} vs {s['plain_cpu_us']:.0f} us"
        f" = {s['cpu_ratio']:.2f}x | stream ({t['updates_per_s']:.0f}/s) {t['rps_ratio']:.2f}x,"
        f" p99 {t['p99_ratio']:.2f}x, CPU {t['cpu_ratio']:.2f}x"
        f" | RSS +{result['rss_extra_mib']:.0f} MiB | first sync"
        f" {result['first_sync_s']:.1f} s | decide {result['decide_index_us']:.0f} us"
        f" (remembered {result['decide_remembered_us']:.1f} us)"
        f" (per node: {result['decide_per_node_us']:.0f} us), no fit"
        f" {max(result['no_fit_selector_us'], result['no_fit_devices_us']):.0f} us | event"
        f" {result['event_heartbeat_us']:.0f}/{result['event_fact_change_us']:.0f} us"
        f" (+{result['event_json_parse_us']:.0f} us JSON)"
        + (
            f" | instructions/request {result['instructions_view']:.0f} vs"
            f" {result['instructions_plain']:.0f} = {result['instructions_ratio']:.3f}x"
            if "instructions_ratio" in result
            else ""
        )
    )


def measure(args: argparse.Namespace, workdir: Path) -> tuple[bool, dict[str, Any]]:
    _, load_cpu = cores()
    os.sched_setaffinity(0, {int(load_cpu or 0)})  # the stand-in's threads beside wrk
    material = make_material(workdir / "certs")
    results = []
    with api_server(workdir, bookmark_seconds=5) as api:
        cluster = Cluster(api.stand_in)
        for size in args.sizes:
            result = one_size(args, cluster, size, workdir, material, api.flags)
            print(line(result), flush=True)
            results.append(result)
    met = checks(results)
    return all(met.values()), {
        "machine": machine(),
        "rounds": args.rounds,
        "seconds_per_round": args.duration,
        "connections": args.connections,
        "updates_per_second": args.updates,
        "sizes": results,
        "checks": met,
    }


def plot(source: Path, target: Path) -> None:
    plt = pyplot()

    data = json.loads(source.read_text())["sizes"]
    sizes = [r["nodes"] for r in data]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(sizes, [r["static"]["rps_ratio"] for r in data], "o-", label="static")
    left.plot(sizes, [r["stream"]["rps_ratio"] for r in data], "s-", label="100 updates/s")
    left.axhline(TARGET_STATIC, color="grey", linestyle=":", label="targets (0.9x, 0.8x)")
    left.axhline(TARGET_STREAM, color="grey", linestyle=":")
    left.set_xscale("log")
    left.set_ylim(0, 1.2)
    left.set_xlabel("nodes")
    left.set_ylabel("/mutate req/s, view / no view")
    left.set_title("Throughput against the no-view webhook (median of rounds)")
    left.legend(loc="lower left")
    right.plot(sizes, [r["decide_per_node_us"] for r in data], "o-", label="per node (before)")
    right.plot(sizes, [r["decide_index_us"] for r in data], "s-", label="index: a pod fits")
    right.plot(
        sizes,
        [max(r["no_fit_selector_us"], r["no_fit_devices_us"]) for r in data],
        "^-",
        label="index: nothing fits (summary)",
    )
    right.plot(sizes, [r["event_fact_change_us"] for r in data], "v-", label="index: one event")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("nodes")
    right.set_ylabel("µs, in-process")
    right.set_title("Cost of one decision, one watch event")
    right.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(target, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--rounds", type=int, default=9, help="alternations per case (median)")
    parser.add_argument("--duration", type=float, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--updates", type=float, default=UPDATES_PER_SECOND)
    parser.add_argument(
        "--instructions-at",
        default="1000,5000",
        help="sizes at which instructions per request are also counted under valgrind ('' none)",
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--plot", nargs=2, type=Path, metavar=("JSON", "PNG"), help="only plot a JSON result"
    )
    args = parser.parse_args(argv)
    if args.plot:
        plot(*args.plot)
        return 0
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.instructions_at = {int(size) for size in args.instructions_at.split(",") if size}
    if args.instructions_at and shutil.which("valgrind") is None:
        print("node_view_bench: ERROR valgrind not found (or --instructions-at '')", flush=True)
        return 2
    outcome = in_workdir("node_view_bench", lambda workdir: measure(args, workdir))
    if outcome is None:
        return 2
    ok, results = outcome
    return finish(
        ok,
        results,
        args.json,
        verdict("node_view_bench", ok)
        + missed_note(missed(results["checks"]))
        + f" load1={results['machine']['loadavg_1m']:.2f}",
    )


if __name__ == "__main__":
    sys.exit(main())
