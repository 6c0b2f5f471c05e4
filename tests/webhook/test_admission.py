"""Read once, decide once: the rules decide from the `Launcher` value, never back in the reader.

`webhook.admission` reads each pod of a review once (`webhook.rules.launcher`) and hands the
value to the rules. These tests trace every Python call one review makes (`sys.setprofile`) and
fail if the deciding modules (`mutation`, `validation`) call into the launcher module: a rule
that needs a fact about the pod must find it in the value, worked out as the pod was read.
They run every fixture review and every KubeVirt render, as KubeVirt's controller and as a
tenant, through /mutate, /validate and /guard.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import orjson
import pytest
import yaml

from tests.webhook.conftest import FIXTURE_NAMES, RENDERS, load_fixture
from webhook.admission import Request, guard_review, mutate_review, validate_review
from webhook.rules.policy import LauncherPolicy
from webhook.serving import review
from webhook.serving.review import as_request

POLICY = LauncherPolicy()
CONTROLLER = POLICY.controller
TENANT = "system:serviceaccount:tenant:builder"
READER = "webhook.rules.launcher"
DECIDERS = ("webhook.rules.mutation", "webhook.rules.validation")
ENDPOINTS: dict[str, Callable[[Request, LauncherPolicy], Any]] = {
    "mutate": mutate_review,
    "validate": validate_review,
    "guard": guard_review,
}
RENDER_NAMES = sorted(path.name for path in RENDERS.glob("*.yaml"))


@contextmanager
def calls() -> Iterator[list[tuple[str, str, str]]]:
    """Every Python call made inside the block, as (caller's module, callee's module, name)."""
    seen: list[tuple[str, str, str]] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_back is not None:
            caller = str(frame.f_back.f_globals.get("__name__", ""))
            callee = str(frame.f_globals.get("__name__", ""))
            seen.append((caller, callee, frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def back_in_the_reader(request: Request, endpoint: str) -> list[str]:
    """The calls a deciding module made into the launcher module while answering."""
    with calls() as seen:
        ENDPOINTS[endpoint](request, POLICY)
    return [
        f"{caller} -> {callee}.{name}"
        for caller, callee, name in seen
        if caller in DECIDERS and callee == READER
    ]


def as_requested(name: str, username: str) -> Request:
    """A fixture review (`*.json`) or a KubeVirt render (`*.yaml`), as `username` sends it."""
    if name.endswith(".yaml"):
        pod = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
        return as_request(pod, username)
    body = load_fixture(name)
    body["request"]["userInfo"] = {"username": username}
    return review.parse(orjson.dumps(body))


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("username", [CONTROLLER, TENANT])
@pytest.mark.parametrize("name", [*FIXTURE_NAMES, *RENDER_NAMES])
def test_every_review_is_decided_from_the_value(name: str, username: str, endpoint: str) -> None:
    assert back_in_the_reader(as_requested(name, username), endpoint) == []


def test_the_check_catches_a_rule_that_asks_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a mutation that asks the launcher module for a fact is caught."""
    from webhook import admission
    from webhook.rules import mutation

    # A stand-in for mutation.mutate that runs as mutation's own code (its module's globals)
    # and asks the release to describe itself, a method of the launcher module.
    scope = dict(vars(mutation), real=mutation.mutate)
    source = "def asking(found, policy, **kw):\n    found.release.describe()\n"
    source += "    return real(found, policy, **kw)\n"
    exec(source, scope)
    monkeypatch.setattr(admission, "mutate", scope["asking"])
    request = as_requested("v1-launcher-2018-privileged.json", CONTROLLER)
    assert back_in_the_reader(request, "mutate") == [f"{DECIDERS[0]} -> {READER}.describe"]
