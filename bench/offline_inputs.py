"""Hostile files given to `virtdev validate`: time and peak memory against a normal file.

Each case runs `virtdev validate -` as its own process (as a user would), with the input on
standard input, and reads the process's own rusage (`os.wait4`): wall time and peak resident
memory. The baseline is the same command on an ordinary launcher pod (the 2018 fixture as
YAML), measured in the same run; every figure is also printed as a ratio to it.

Cases: the 671-byte YAML alias bomb of issue 13 (nine levels of nine aliases: 387 million
strings once expanded), JSON nested 5,000 and 500 levels deep, YAML nested 300 levels deep, and
a `kubectl get pods -o yaml`-sized List (1,000 launcher pods, a legitimate large input).
Targets (issue 13): the bomb exits 2 within 1 s in under 100 MiB; deep nesting exits 2 with one
line and no traceback. Exit 0 when met, 1 when missed. A few seconds; no network.

    .venv/bin/python bench/offline_inputs.py
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout

from bench.harness import PATCHED, REPO
from tests.support import VIRTDEV

REPEAT = 5
MIB = 1024 * 1024


def alias_bomb() -> str:
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata: {name: bomb, namespace: vms, labels: {kubevirt.io: virt-launcher}}",
        'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)),
        "spec: {containers: [{name: compute, args: *a8}]}",
    ]
    return "\n".join(lines) + "\n"


def run(text: str) -> tuple[int, float, int, str]:
    """Exit code, seconds, peak RSS bytes and stderr of one `virtdev validate -`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*VIRTDEV, "validate", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(text.encode())
    process.stdin.close()
    err = process.stderr.read().decode()
    process.stderr.close()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, seconds, usage.ru_maxrss * 1024, err


def best(text: str) -> tuple[int, float, int, str]:
    """The fastest of REPEAT runs (the machine is shared), and the largest peak memory."""
    runs = [run(text) for _ in range(REPEAT)]
    code, seconds, _, err = min(runs, key=lambda r: r[1])
    return code, seconds, max(r[2] for r in runs), err


def main() -> int:
    pod = json.loads(PATCHED.read_text())["request"]["object"]
    many = []
    for i in range(1000):
        item = copy.deepcopy(pod)
        item["metadata"].pop("generateName", None)
        item["metadata"]["name"] = f"vm-{i}"
        many.append(item)
    cases = {
        "alias bomb (YAML)": alias_bomb(),
        "JSON 5,000 deep": "[" * 5000 + "]" * 5000,
        "JSON 500 deep": '{"a":' * 500 + "1" + "}" * 500,
        "YAML 300 deep": "a:\n" + "".join(" " * i + "- \n" for i in range(1, 300)),
        "List of 1,000 pods (YAML)": yaml.safe_dump({"kind": "List", "items": many}),
    }
    base_code, base_seconds, base_rss, _ = best(yaml.safe_dump(pod))
    print(
        f"baseline: one launcher pod (YAML): exit {base_code}, {base_seconds * 1000:.0f} ms, "
        f"{base_rss / MIB:.1f} MiB peak RSS"
    )
    met = True
    for name, text in cases.items():
        code, seconds, rss, err = best(text)
        lines = err.strip().splitlines()
        print(
            f"{name:27} {len(text):>9,} bytes: exit {code}, {seconds * 1000:5.0f} ms "
            f"({seconds / base_seconds:.2f}x), {rss / MIB:5.1f} MiB ({rss / base_rss:.2f}x)"
            + (f": {lines[-1][:90]}" if code == 2 and lines else "")
        )
        if name.startswith("List"):
            met &= code == 1  # the privileged pods are denied
            continue
        met &= code == 2 and len(lines) == 1 and "Traceback" not in err
        if name.startswith("alias"):
            met &= seconds < 1.0 and rss < 100 * MIB
    print("targets met" if met else "TARGET MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
