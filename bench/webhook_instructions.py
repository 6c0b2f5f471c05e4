"""Instructions per /mutate request against the floor's, counted by valgrind: noise-free.

`webhook_bench.py` measures requests/s and CPU time, which other jobs on a shared machine move
by up to 1.3x between consecutive runs. This counts what the processes execute instead:
each server — the real `virtdev webhook` and `bench/floor_app.py`, as in `webhook_bench.py` —
runs under `valgrind --tool=callgrind` (user-space instructions, whole process) and answers the
same fixture review over one keep-alive HTTPS connection, once `--requests` times and once
three times as many. The difference between the two totals, divided by the difference in
requests, is the cost of one request with start-up, imports and warm-up cancelled out.

With equal instructions per cycle, requests/s would be the inverse ratio, so `webhook_bench.py`'s
target (/mutate >= 0.8x the floor's requests/s) reads here as /mutate <= 1.25x the floor's
instructions per request. Valgrind's CPU is simulated (no cache misses counted), so this is a
proxy, printed beside the budget it leaves; it is repeatable to a few hundred instructions.
Exit 0 when the proxy is within 1.25x, 1 when not, 2 when the bench could not run.

`--breakdown` also counts, the same way but in-process, what each step of /mutate costs on the
fixture: parsing the review (beyond the `orjson.loads` the floor does too), the shape checks,
the rules, the answer, the log line and the metrics.

    .venv/bin/python bench/webhook_instructions.py                 # 300 and 900 requests
    .venv/bin/python bench/webhook_instructions.py --breakdown --json counts.json
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

from bench.harness import (
    CALLGRIND_ENV,
    PATCHED,
    REPO,
    BenchError,
    callgrind,
    floor_command,
    instructions,
    make_material,
    per_request,
    total,
)
from certs.store import Material
from tests.support import webhook_command

#: /mutate within 1.25x the floor's instructions is the proxy of >= 0.8x its requests/s.
INSTRUCTIONS_TARGET = 1.25


@dataclass(frozen=True)
class Server:
    name: str
    path: str
    #: Its command line, given its port and probe port.
    command: Callable[[int, int], list[str]]


def server_instructions(server: Server, work: Path, material: Material, requests: int) -> int:
    """Total instructions of the server's process that answered `requests` fixture reviews."""
    return instructions(
        server.command, what=server.name, path=server.path, body=PATCHED.read_bytes(),
        requests=requests, work=work, ca_cert=material.ca_cert,
    )  # fmt: skip


#: Each step of /mutate as a statement run `n` times, after SETUP; "loads" is what the floor
#: does too, so it is subtracted from "parse".
SETUP = """
import logging, os, orjson
from virtdev import logs
from webhook.serving import review
from webhook.rules import shapes
from webhook.admission import as_pod, mutate_review
from webhook.rules.launcher import read_launcher
from webhook.serving.metrics import AdmissionStats
from webhook.rules.mutation import mutate
from webhook.rules.policy import LauncherPolicy
body = open("tests/fixtures/v1-launcher-2018-privileged.json", "rb").read()
policy, stats = LauncherPolicy(), AdmissionStats()
request = review.parse(body)
pod = request.object
answer = mutate_review(request, policy)
logs.setup("json", stream=open(os.devnull, "w"))
log = logging.getLogger("virtdev.webhook")
fields = {"endpoint": "mutate", "uid": request.uid, "pod": request.display_name,
          "operation": "CREATE", "verdict": "patched", "patch_ops": 6, "duration_ms": 0.123}
"""
STEPS = {
    "loads": "orjson.loads(body)",
    "parse": "review.parse(body)",
    "shape checks": "shapes.check(pod['metadata'], shapes.METADATA, '$'); as_pod(pod, 'Pod', '$')",
    "rules": "mutate(read_launcher(pod, policy), policy)",
    "answer": "orjson.dumps(review.render(request, answer))",
    "log line": "logs.hot(log, 'admission patched', dict(fields))",
    "metrics": "stats.observe('mutate', 'patched', 0.00123, 5)",
}


def step_instructions(statement: str, n: int, work: Path) -> float:
    """Instructions per run of `statement`: the difference of n and 3n runs, divided by 2n."""

    def count(runs: int) -> int:
        out = work / f"callgrind.step.{runs}"
        code = f"{SETUP}\nfor _ in range({runs}):\n    {statement}\n"
        subprocess.run(
            callgrind(out, [sys.executable, "-c", code]),
            cwd=REPO,
            env=CALLGRIND_ENV,
            capture_output=True,
            check=True,
        )
        return total(out)

    return per_request(count, n)[2]


def breakdown(work: Path, n: int = 2000) -> dict[str, float]:
    steps = {name: step_instructions(statement, n, work) for name, statement in STEPS.items()}
    steps["parse"] -= steps.pop("loads")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="the smaller run (default 500)")
    parser.add_argument("--json", metavar="FILE", help="also write the counts as JSON")
    parser.add_argument("--breakdown", action="store_true", help="also count each step")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("webhook instructions: valgrind not found", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="virtdev-instructions-"))
    material = make_material(work / "certs")

    def floor(port: int, metrics_port: int) -> list[str]:
        return floor_command(port, material)

    def mutate(port: int, metrics_port: int) -> list[str]:
        return webhook_command(port, metrics_port, tls=(material.tls_cert, material.tls_key))

    servers = (Server("floor", "/", floor), Server("mutate", "/mutate", mutate))
    small, large = args.requests, 3 * args.requests
    per_request_of: dict[str, float] = {}
    try:
        for server in servers:
            count = functools.partial(server_instructions, server, work, material)
            few, many, per_request_of[server.name] = per_request(count, small)
            print(
                f"{server.name}: {few:,} instructions for {small} requests, "
                f"{many:,} for {large}: {per_request_of[server.name]:,.0f} per request",
                flush=True,
            )
        steps = breakdown(work) if args.breakdown else {}
        for name, step in steps.items():
            print(f"  {name}: {step:,.0f} per request", flush=True)
    except (BenchError, OSError, subprocess.SubprocessError) as error:
        print(f"webhook instructions: {error} (logs in {work})", file=sys.stderr)
        return 2
    ratio = per_request_of["mutate"] / per_request_of["floor"]
    budget = per_request_of["floor"] * (INSTRUCTIONS_TARGET - 1)
    added = per_request_of["mutate"] - per_request_of["floor"]
    met = ratio <= INSTRUCTIONS_TARGET
    if args.json:
        figures = {
            "requests": [small, large],
            "per_request": per_request_of,
            "ratio": ratio,
            "steps": steps,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"webhook instructions: /mutate {per_request_of['mutate']:,.0f} vs floor "
        f"{per_request_of['floor']:,.0f} per request = {ratio:.2f}x (proxy target <= "
        f"{INSTRUCTIONS_TARGET}x, i.e. >= 0.8x the requests/s); virtdev adds {added:,.0f}, the "
        f"target leaves {budget:,.0f}: {'PASS' if met else 'FAIL'}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
