"""`virtdev mutate` and `virtdev validate` run as real commands, as a user would run them.

Each test starts the CLI in a subprocess (`python -m virtdev.cli`), so argument parsing, the
config file, reading files or standard input, the exit code and what goes to stdout and stderr
are all exercised together. Exit codes: 0 allowed, 1 denied, 2 bad input.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from tests.webhook.conftest import FIXTURES, load_fixture

KVM, TUN = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"
PRIVILEGED_2018 = FIXTURES / "v1-launcher-2018-privileged.json"
CURRENT_NONROOT = FIXTURES / "v1-launcher-current-nonroot.json"
ALLOWED, DENIED, BAD_INPUT = 0, 1, 2


def display(fixture: Path) -> str:
    """`NAMESPACE/NAME` as `virtdev validate` names the fixture's pod (a CREATE: generateName)."""
    request = load_fixture(fixture.name)["request"]
    return f"{request['namespace']}/{request['object']['metadata']['generateName']}"


def virtdev(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtdev.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pod_of(fixture: Path) -> dict[str, Any]:
    obj: dict[str, Any] = load_fixture(fixture.name)["request"]["object"]
    return obj


def write_pod_yaml(tmp_path: Path, pod: dict[str, Any], name: str = "pod.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(pod, sort_keys=False), encoding="utf-8")
    return path


#: KubeVirt v0.6 renders the registry-disk container first, compute second.
COMPUTE = 1


def assert_unprivileged_compute(pod: dict[str, Any]) -> None:
    compute = pod["spec"]["containers"][COMPUTE]
    assert compute["name"] == "compute"
    for section in ("limits", "requests"):
        assert compute["resources"][section][KVM] == "1"
        assert compute["resources"][section][TUN] == "1"
    assert compute["securityContext"]["privileged"] is False
    assert compute["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]


# --- virtdev mutate -------------------------------------------------------------------------


def test_mutate_prints_the_patched_pod_of_a_review_file_as_json() -> None:
    result = virtdev("mutate", PRIVILEGED_2018)
    assert result.returncode == ALLOWED, result.stderr
    pod = orjson.loads(result.stdout)
    assert_unprivileged_compute(pod)
    original = pod_of(PRIVILEGED_2018)
    assert pod["metadata"] == original["metadata"]
    assert pod["spec"]["containers"][COMPUTE]["resources"]["requests"]["memory"] == "1173393408"
    assert pod["spec"]["containers"][COMPUTE]["securityContext"]["runAsUser"] == 0
    assert "warning: compute: privileged: true removed" in result.stderr


def test_mutate_patch_prints_the_json_patch_that_applies_to_the_object() -> None:
    result = virtdev("mutate", "--patch", PRIVILEGED_2018)
    assert result.returncode == ALLOWED, result.stderr
    patch = orjson.loads(result.stdout)
    assert isinstance(patch, list) and patch
    assert {"op": "replace", "path": "/spec/containers/1/securityContext/privileged"} in [
        {"op": op["op"], "path": op["path"]} for op in patch
    ]
    patched = jsonpatch.apply_patch(pod_of(PRIVILEGED_2018), patch)
    assert_unprivileged_compute(patched)


def test_mutate_reads_a_yaml_pod_and_answers_in_yaml(tmp_path: Path) -> None:
    path = write_pod_yaml(tmp_path, pod_of(PRIVILEGED_2018))
    result = virtdev("mutate", path)
    assert result.returncode == ALLOWED, result.stderr
    assert not result.stdout.lstrip().startswith("{"), "a YAML input gets a YAML answer"
    pod = yaml.safe_load(result.stdout)
    assert_unprivileged_compute(pod)


def test_mutate_patch_of_a_yaml_pod_is_yaml(tmp_path: Path) -> None:
    path = write_pod_yaml(tmp_path, pod_of(PRIVILEGED_2018))
    result = virtdev("mutate", "--patch", path)
    assert result.returncode == ALLOWED, result.stderr
    patch = yaml.safe_load(result.stdout)
    assert_unprivileged_compute(jsonpatch.apply_patch(pod_of(PRIVILEGED_2018), patch))


def test_mutate_reads_standard_input_given_as_dash() -> None:
    pod = pod_of(PRIVILEGED_2018)
    result = virtdev("mutate", "--patch", "-", stdin=orjson.dumps(pod).decode())
    assert result.returncode == ALLOWED, result.stderr
    assert_unprivileged_compute(jsonpatch.apply_patch(pod, orjson.loads(result.stdout)))


def test_mutate_of_a_yaml_pod_on_standard_input() -> None:
    pod = pod_of(PRIVILEGED_2018)
    result = virtdev("mutate", "-", stdin=yaml.safe_dump(pod))
    assert result.returncode == ALLOWED, result.stderr
    assert_unprivileged_compute(yaml.safe_load(result.stdout))


def test_mutate_of_an_already_unprivileged_pod_is_an_empty_patch(tmp_path: Path) -> None:
    patched = orjson.loads(virtdev("mutate", PRIVILEGED_2018).stdout)
    path = tmp_path / "patched.json"
    path.write_bytes(orjson.dumps(patched))
    result = virtdev("mutate", "--patch", path)
    assert result.returncode == ALLOWED, result.stderr
    assert orjson.loads(result.stdout) == []


def test_mutate_leaves_a_non_launcher_pod_unchanged_and_says_so() -> None:
    fixture = FIXTURES / "v1-non-launcher-pod.json"
    result = virtdev("mutate", fixture)
    assert result.returncode == ALLOWED, result.stderr
    assert orjson.loads(result.stdout) == pod_of(fixture)
    assert "not a launcher pod" in result.stderr


def test_mutate_emulation_flag_withholds_kvm(tmp_path: Path) -> None:
    result = virtdev("mutate", "--emulation", PRIVILEGED_2018)
    assert result.returncode == ALLOWED, result.stderr
    compute = orjson.loads(result.stdout)["spec"]["containers"][COMPUTE]
    assert compute["resources"]["limits"] == {TUN: "1"}
    assert KVM not in compute["resources"]["requests"]


# --- virtdev validate -----------------------------------------------------------------------


def test_validate_denies_a_privileged_launcher_with_exit_1_and_the_field_path() -> None:
    result = virtdev("validate", PRIVILEGED_2018)
    assert result.returncode == DENIED
    assert result.stdout.startswith(f"{display(PRIVILEGED_2018)}: denied: ")
    assert "spec.containers[1].securityContext.privileged: true" in result.stdout
    assert result.stdout.count("\n") == 1, "one line per object"


def test_validate_allows_the_mutated_pod_with_exit_0(tmp_path: Path) -> None:
    mutated = virtdev("mutate", PRIVILEGED_2018)
    assert mutated.returncode == ALLOWED
    path = tmp_path / "mutated.json"
    path.write_text(mutated.stdout, encoding="utf-8")
    result = virtdev("validate", path)
    assert result.returncode == ALLOWED, result.stdout + result.stderr
    assert result.stdout.strip() == f"{display(PRIVILEGED_2018)}: allowed"


def test_validate_reads_yaml_from_standard_input() -> None:
    result = virtdev("validate", "-", stdin=yaml.safe_dump(pod_of(PRIVILEGED_2018)))
    assert result.returncode == DENIED
    assert "spec.containers[1].securityContext.privileged" in result.stdout


def test_validate_says_a_non_launcher_pod_is_not_its_business() -> None:
    result = virtdev("validate", FIXTURES / "v1-non-launcher-pod.json")
    assert result.returncode == ALLOWED
    assert result.stdout.strip() == "default/node-debugger: allowed (not a launcher pod)"


def test_validate_allows_the_current_launcher_as_kubevirt_renders_it() -> None:
    result = virtdev("validate", CURRENT_NONROOT)
    assert result.returncode == ALLOWED, result.stdout + result.stderr
    assert result.stdout.strip() == f"{display(CURRENT_NONROOT)}: allowed"


def test_an_explicit_older_release_judges_by_its_profile() -> None:
    # SYS_PTRACE is v0.53 - v0.58's; the fixture's v1.6 image would refuse it under auto.
    review = load_fixture(CURRENT_NONROOT.name)
    compute = review["request"]["object"]["spec"]["containers"][0]
    compute["securityContext"]["capabilities"]["add"].append("SYS_PTRACE")
    stdin = orjson.dumps(review).decode()
    denied = virtdev("validate", "-", stdin=stdin)
    assert denied.returncode == DENIED
    assert "capabilities.add[1]: SYS_PTRACE" in denied.stdout
    allowed = virtdev("validate", "--kubevirt-version", "v0.55", "-", stdin=stdin)
    assert allowed.returncode == ALLOWED, allowed.stdout


def test_a_flag_overrides_the_config_file(tmp_path: Path) -> None:
    review = load_fixture(CURRENT_NONROOT.name)
    compute = review["request"]["object"]["spec"]["containers"][0]
    compute["securityContext"]["capabilities"]["add"].append("SYS_PTRACE")
    config = tmp_path / "virtdev.yaml"
    config.write_text("permitted-capabilities: [SYS_PTRACE]\n", encoding="utf-8")
    stdin = orjson.dumps(review).decode()
    assert virtdev("validate", "--config", config, "-", stdin=stdin).returncode == ALLOWED
    result = virtdev(
        "validate", "--config", config, "--permitted-capabilities", "NET_RAW", "-", stdin=stdin
    )
    assert result.returncode == DENIED
    assert "SYS_PTRACE (beyond Pod Security baseline" in result.stdout


def test_config_file_applies_to_mutate_as_well(tmp_path: Path) -> None:
    config = tmp_path / "virtdev.yaml"
    config.write_text("emulation: true\n", encoding="utf-8")
    result = virtdev("mutate", "--config", config, PRIVILEGED_2018)
    assert result.returncode == ALLOWED, result.stderr
    compute = orjson.loads(result.stdout)["spec"]["containers"][COMPUTE]
    assert compute["resources"]["limits"] == {TUN: "1"}


def test_an_unknown_config_key_is_an_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "virtdev.yaml"
    config.write_text("permitted-capabilitys: [NET_ADMIN]\n", encoding="utf-8")
    result = virtdev("validate", "--config", config, CURRENT_NONROOT)
    assert result.returncode == BAD_INPUT
    assert "permitted-capabilitys" in result.stderr


# --- bad input: exit 2 with a message naming what is wrong ---------------------------------


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_malformed_input_exits_2_with_a_message(command: str) -> None:
    result = virtdev(command, "-", stdin="{ not: [json")
    assert result.returncode == BAD_INPUT
    assert result.stdout == ""
    assert result.stderr.startswith(f"virtdev {command}: -: neither JSON nor YAML")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_missing_file_exits_2_naming_it(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = virtdev(command, missing)
    assert result.returncode == BAD_INPUT
    assert result.stderr.startswith(f"virtdev {command}: {missing}: ")
    assert "No such file" in result.stderr


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_document_that_is_not_a_pod_exits_2(command: str) -> None:
    result = virtdev(command, "-", stdin="- a list\n- not a pod\n")
    assert result.returncode == BAD_INPUT
    assert "$.kind: expected a Pod or an AdmissionReview" in result.stderr


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_wrongly_typed_field_exits_2_with_its_json_path(command: str) -> None:
    review = load_fixture(PRIVILEGED_2018.name)
    review["request"]["object"]["spec"]["containers"][1]["securityContext"]["privileged"] = "yes"
    result = virtdev(command, "-", stdin=orjson.dumps(review).decode())
    assert result.returncode == BAD_INPUT
    assert (
        "$.request.object.spec.containers[1].securityContext.privileged: "
        "expected a boolean, got a string"
    ) in result.stderr


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_review_with_a_bad_uid_exits_2(command: str) -> None:
    review = load_fixture(PRIVILEGED_2018.name)
    review["request"]["uid"] = ""
    result = virtdev(command, "-", stdin=orjson.dumps(review).decode())
    assert result.returncode == BAD_INPUT
    assert "$.request.uid: must not be empty" in result.stderr


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_null_capability_is_bad_input_not_a_crash(command: str) -> None:
    """`capabilities.add: [null]` is not a pod the API server would send: exit 2, no traceback.

    Once an AttributeError in `policy.normalise_capability` (and a 500 from the webhook).
    """
    pod = copy.deepcopy(pod_of(PRIVILEGED_2018))
    pod["spec"]["containers"][1]["securityContext"]["capabilities"] = {"add": [None]}
    result = virtdev(command, "-", stdin=orjson.dumps(pod).decode())
    assert "Traceback" not in result.stderr
    assert result.returncode == BAD_INPUT
    assert "$.request.object.spec.containers[1].securityContext.capabilities.add[0]" in (
        result.stderr
    )


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_yaml_key_that_is_not_a_string_is_bad_input_not_a_crash(command: str) -> None:
    """YAML 1.1 reads `on:` as the boolean true; such a key cannot be JSON: exit 2, no traceback.

    Once a `TypeError: Dict key must be str` from `orjson.dumps` in `offline.as_request`,
    whose traceback exited 1, the code for "denied".
    """
    text = (
        "kind: Pod\n"
        "metadata:\n"
        "  labels: {kubevirt.io: virt-launcher}\n"
        "  annotations:\n"
        "    on: 'x'\n"
        "spec:\n"
        "  containers: [{name: compute}]\n"
    )
    result = virtdev(command, "-", stdin=text)
    assert "Traceback" not in result.stderr
    assert result.returncode == BAD_INPUT


# --- several objects: multi-document YAML, a v1 List, standard input ------------------------


def named(pod: dict[str, Any], name: str, namespace: str = "vms") -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"].pop("generateName", None)
    pod["metadata"].update(name=name, namespace=namespace)
    return pod


def escalated(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod every policy refuses: it shares the node's process namespace."""
    pod = copy.deepcopy(pod)
    pod["spec"]["hostPID"] = True
    return pod


def kubectl_list(*pods: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl get pods -o yaml|json` prints."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": pods}


def test_validate_gives_one_line_per_object_of_a_multi_document_stream() -> None:
    mutated = orjson.loads(virtdev("mutate", PRIVILEGED_2018).stdout)
    stream = yaml.safe_dump_all(
        [named(pod_of(PRIVILEGED_2018), "bad"), None, named(mutated, "good", "prod")]
    )
    result = virtdev("validate", "-", stdin=stream)
    assert result.returncode == DENIED, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("vms/bad: denied: spec.containers[")
    assert "securityContext.privileged" in lines[0]
    assert lines[1:] == ["prod/good: allowed"]


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
def test_validate_reads_what_kubectl_get_pods_prints(as_json: bool) -> None:
    mutated = orjson.loads(virtdev("mutate", PRIVILEGED_2018).stdout)
    listed = kubectl_list(
        named(mutated, "a"), named(escalated(mutated), "b"), named(mutated, "c", "other")
    )
    text = orjson.dumps(listed).decode() if as_json else yaml.safe_dump(listed)
    result = virtdev("validate", "-", stdin=text)
    assert result.returncode == DENIED
    lines = result.stdout.splitlines()
    assert lines[0] == "vms/a: allowed"
    assert lines[1].startswith("vms/b: denied: spec.hostPID")
    assert lines[2] == "other/c: allowed"


def test_validate_of_allowed_objects_only_exits_0() -> None:
    mutated = orjson.loads(virtdev("mutate", PRIVILEGED_2018).stdout)
    result = virtdev("validate", "-", stdin=yaml.safe_dump(kubectl_list(named(mutated, "a"))))
    assert (result.returncode, result.stdout) == (ALLOWED, "vms/a: allowed\n")


def test_a_bad_object_in_a_list_is_named_and_exits_2_after_the_others() -> None:
    broken = named(pod_of(PRIVILEGED_2018), "broken")
    broken["spec"]["containers"][0].setdefault("securityContext", {})["privileged"] = "yes"
    listed = kubectl_list(named(pod_of(PRIVILEGED_2018), "bad"), broken)
    result = virtdev("validate", "-", stdin=yaml.safe_dump(listed))
    assert result.returncode == BAD_INPUT
    assert result.stdout.startswith("vms/bad: denied:")
    assert result.stderr.startswith("virtdev validate: -: $.items[1]: $.request.object.spec")
    assert "Traceback" not in result.stderr


def test_a_list_without_items_is_bad_input() -> None:
    result = virtdev("validate", "-", stdin="kind: List\nitems: {}\n")
    assert result.returncode == BAD_INPUT
    assert "$.items: a List needs a list of items" in result.stderr


def test_mutate_prints_several_objects_as_a_yaml_stream() -> None:
    listed = kubectl_list(named(pod_of(PRIVILEGED_2018), "a"), named(pod_of(PRIVILEGED_2018), "b"))
    result = virtdev("mutate", "-", stdin=orjson.dumps(listed).decode())
    assert result.returncode == ALLOWED, result.stderr
    pods = list(yaml.safe_load_all(result.stdout))
    assert [p["metadata"]["name"] for p in pods] == ["a", "b"]
    for pod in pods:
        assert_unprivileged_compute(pod)
    assert "warning: vms/a: compute: privileged: true removed" in result.stderr


def test_mutate_patch_of_several_objects_is_refused() -> None:
    stream = yaml.safe_dump_all([pod_of(PRIVILEGED_2018), pod_of(PRIVILEGED_2018)])
    result = virtdev("mutate", "--patch", "-", stdin=stream)
    assert result.returncode == BAD_INPUT
    assert result.stdout == ""
    assert result.stderr.startswith("virtdev mutate: --patch: - holds 2 objects")


# --- --enforcement warn ---------------------------------------------------------------------


def test_validate_under_warn_enforcement_admits_and_names_the_violations() -> None:
    result = virtdev("validate", "--enforcement", "warn", PRIVILEGED_2018)
    assert result.returncode == ALLOWED
    name = display(PRIVILEGED_2018)
    assert result.stdout.startswith(f"{name}: warned: spec.containers[")
    assert "securityContext.privileged" in result.stdout
    assert f"warning: {name}: virtdev would deny: spec.containers[" in result.stderr


def test_enforcement_is_a_config_key(tmp_path: Path) -> None:
    config = tmp_path / "virtdev.yaml"
    config.write_text("enforcement: warn\n", encoding="utf-8")
    assert virtdev("validate", "--config", config, PRIVILEGED_2018).returncode == ALLOWED
    config.write_text("enforcement: audit\n", encoding="utf-8")
    result = virtdev("validate", "--config", config, PRIVILEGED_2018)
    assert result.returncode == BAD_INPUT
    assert "'audit' is not one of deny, warn" in result.stderr


# --- hostile input: bounded time and memory, one line, exit 2 --------------------------------

#: Billion laughs: 9 levels of 9 aliases each, 9**9 (387 million) strings once expanded.
ALIAS_BOMB = "\n".join(
    [
        "apiVersion: v1",
        "kind: Pod",
        "metadata: {name: bomb, namespace: vms, labels: {kubevirt.io: virt-launcher}}",
        'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)),
        "spec: {containers: [{name: compute, args: *a8}]}",
        "",
    ]
)

#: The issue's bound (issue 13): the bomb is refused within this much resident memory.
MAX_RSS_BYTES = 100 * 1024 * 1024


#: Runs argv and prints its exit code and peak RSS (kB). A child forked from pytest would count
#: pytest's own resident pages (hundreds of MiB into the suite) until it execs; forked from
#: this small process instead, its peak is its own.
#: The child is also capped (CPU seconds, address space) so that an unbounded reader fails the
#: test instead of running on, orphaned, after the timeout.
_MEASURE = """
import os, resource, subprocess, sys
def cap():
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, preexec_fn=cap)
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
print(child.returncode, usage.ru_maxrss)
"""


def virtdev_measured(*args: str, stdin: str) -> tuple[int, str, int]:
    """Exit code, stderr and peak resident bytes of one `virtdev` run."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "virtdev.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,  # an unbounded reader fails, never hangs
        check=True,
    )
    code, peak_kb = result.stdout.split()
    return int(code), result.stderr, int(peak_kb) * 1024  # Linux: ru_maxrss in kilobytes


@pytest.mark.parametrize("command", ["mutate", "validate"])
def test_a_yaml_alias_bomb_is_refused_at_once_in_little_memory(command: str) -> None:
    assert len(ALIAS_BOMB) < 700
    code, err, peak = virtdev_measured(command, "-", stdin=ALIAS_BOMB)
    assert code == BAD_INPUT, err
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert err.startswith(f"virtdev {command}: -: excessive YAML aliasing")
    assert peak < MAX_RSS_BYTES, f"peak RSS {peak / 2**20:.1f} MiB"


def test_aliases_within_reason_are_read_as_kubectl_reads_them() -> None:
    pod = pod_of(PRIVILEGED_2018)
    pod["spec"]["nodeSelector"] = pod["metadata"]["labels"]  # one object twice: an alias
    text = yaml.safe_dump(pod)
    assert "&id001" in text and "*id001" in text
    result = virtdev("mutate", "-", stdin=text)
    assert result.returncode == ALLOWED, result.stderr
    mutated = yaml.safe_load(result.stdout)
    assert mutated["spec"]["nodeSelector"] == pod["metadata"]["labels"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &a [*a]\n", "line 1, column 8: an alias inside its own anchor *a"),
        ("a: *nope\n", "an undefined alias *nope"),
    ],
)
def test_recursive_and_undefined_aliases_are_bad_input(text: str, problem: str) -> None:
    result = virtdev("validate", "-", stdin=text)
    assert result.returncode == BAD_INPUT
    assert problem in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["mutate", "validate"])
@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,  # past orjson's own limit
        '{"a":' * 500 + "1" + "}" * 500,  # within orjson's, past ours
        "a:\n" + "".join(" " * i + "- \n" for i in range(1, 300)),  # YAML blocks
    ],
    ids=["json-5000", "json-500", "yaml-300"],
)
def test_deep_nesting_is_bad_input_in_one_line(command: str, text: str) -> None:
    result = virtdev(command, "-", stdin=text)
    assert result.returncode == BAD_INPUT, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "nested deeper than 100 levels" in result.stderr


def test_input_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    from virtdev.documents import MAX_INPUT_BYTES

    big = tmp_path / "big.yaml"
    with big.open("wb") as file:
        file.truncate(MAX_INPUT_BYTES + 1)
    result = virtdev("validate", big)
    assert result.returncode == BAD_INPUT
    assert result.stderr == f"virtdev validate: {big}: larger than 32 MiB\n"
