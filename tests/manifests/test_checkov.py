"""checkov over every rendered kustomization and the Dockerfile: no failed check.

checkov runs once for the module (it is slow): over a directory holding one file per rendered
kustomization and a copy of the Dockerfile. A check may be skipped only by a
`checkov.io/skipN` annotation (manifests) or a `# checkov:skip=` comment (Dockerfile) that
gives a reason, and only if it is listed in ALLOWED_SKIPS below, so that a new skip is a
reviewed change to this file. Privileged containers can never be skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.manifests.tools import REPO, run, tool

#: check id -> why it may be skipped (the reason itself is in the skip annotation).
ALLOWED_SKIPS = {
    "CKV_K8S_43": "image digests are set at release, not in the source tree",
    "CKV_K8S_23": "the agent runs as uid 0 for the kubelet's root-owned socket directory",
    "CKV_K8S_40": "same uid 0 for the agent; on OpenShift, uids come from the namespace range",
    "CKV_K8S_155": "certs ensure patches caBundle of virtdev's own configurations, by name",
    "CKV_DOCKER_2": "Kubernetes ignores HEALTHCHECK; the manifests define probes",
}
#: Privileged containers and what amounts to them: never skipped.
NEVER_SKIPPED = {
    "CKV_K8S_16",  # Container should not be privileged
    "CKV_K8S_2",  # privileged containers (PodSecurityPolicy)
    "CKV_K8S_20",  # allowPrivilegeEscalation
    "CKV_K8S_17",  # hostPID
    "CKV_K8S_18",  # hostIPC
    "CKV_K8S_19",  # hostNetwork
    "CKV_K8S_39",  # CAP_SYS_ADMIN
}


@pytest.fixture(scope="module")
def checkov_reports(
    rendered_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """check type ("kubernetes", "dockerfile") -> checkov's JSON report."""
    directory = tmp_path_factory.mktemp("checkov")
    for path in rendered_files.values():
        shutil.copy(path, directory / path.name)
    shutil.copy(REPO / "Dockerfile", directory / "Dockerfile")
    done = run(
        [
            tool("checkov"),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
            # Nothing from the vendor's platform: no network, and the same checks every run.
            "--skip-download",
        ],
        timeout=900,
    )
    # 0: all passed, 1: some failed. Anything else, or no JSON, is checkov itself failing.
    try:
        parsed = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not produce a JSON report:\n{done.describe()}", pytrace=False)
    assert done.returncode in (0, 1), f"checkov failed to run:\n{done.describe()}"
    reports = parsed if isinstance(parsed, list) else [parsed]
    return {report["check_type"]: report for report in reports}


@pytest.mark.parametrize("check_type", ["kubernetes", "dockerfile"])
def test_checkov_scanned_the_files(
    check_type: str, checkov_reports: dict[str, dict[str, Any]], rendered_files: dict[str, Path]
) -> None:
    assert check_type in checkov_reports, f"no {check_type} report: {sorted(checkov_reports)}"
    summary = checkov_reports[check_type]["summary"]
    assert summary["parsing_errors"] == 0, f"checkov could not parse: {summary}"
    # Every rendered kustomization holds at least the Namespace or a Secret; one per file at least.
    minimum = len(rendered_files) if check_type == "kubernetes" else 1
    assert summary["resource_count"] >= minimum, summary
    assert summary["passed"] > 0, summary


@pytest.mark.parametrize("check_type", ["kubernetes", "dockerfile"])
def test_checkov_finds_no_failed_check(
    check_type: str, checkov_reports: dict[str, dict[str, Any]]
) -> None:
    failed = checkov_reports[check_type]["results"]["failed_checks"]
    lines = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} in {c['file_path']}" for c in failed
    ]
    assert not lines, "checkov failed checks:\n" + "\n".join(lines)


@pytest.mark.parametrize("check_type", ["kubernetes", "dockerfile"])
def test_checkov_skips_are_listed_reasoned_and_never_for_privileges(
    check_type: str, checkov_reports: dict[str, dict[str, Any]]
) -> None:
    problems = []
    for skipped in checkov_reports[check_type]["results"]["skipped_checks"]:
        check_id = skipped["check_id"]
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        where = f"{check_id} on {skipped['resource']} in {skipped['file_path']}"
        if check_id in NEVER_SKIPPED:
            problems.append(f"{where}: privileges may never be skipped")
        elif check_id not in ALLOWED_SKIPS:
            problems.append(f"{where}: not in ALLOWED_SKIPS (add it there with a reason)")
        if len(reason.split()) < 5:
            problems.append(f"{where}: the skip gives no real reason ({reason!r})")
    assert not problems, "\n".join(problems)
