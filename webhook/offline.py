"""`virtdev mutate` and `virtdev validate`: the webhook's rules on a file, without a cluster.

Like `kyverno apply` or `gator test`: FILE is a Pod or an AdmissionReview, in YAML or JSON, or
`-` for standard input. The answer is computed by the same functions /mutate and /validate call.
Exit codes: 0 allowed, 1 denied, 2 bad input.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any, TextIO

import jsonpatch
import orjson
import yaml

from webhook import review
from webhook.admission import mutate_review, validate_review
from webhook.policy import LauncherPolicy
from webhook.schema import BadInput

ALLOWED, DENIED, BAD_INPUT = 0, 1, 2


def load(path: str, stdin: TextIO = sys.stdin) -> tuple[Any, bool]:
    """The document and whether it was YAML (answer in the same format)."""
    try:
        text = stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as error:
        raise BadInput(path, error.strerror or str(error)) from None
    try:
        return orjson.loads(text), False
    except orjson.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text), True
    except yaml.YAMLError as error:
        raise BadInput(path, f"neither JSON nor YAML: {error}") from None


def _as_json(document: Any) -> bytes:
    """YAML allows what JSON does not (`1: x`, dates); the webhook only ever sees JSON."""
    try:
        return orjson.dumps(document)
    except TypeError as error:
        raise BadInput("$", f"not representable as JSON: {error}") from None


def as_request(document: Any) -> review.Request:
    """A Pod becomes the CREATE review the API server would send; a review is read as is."""
    if isinstance(document, dict) and document.get("kind") == "AdmissionReview":
        return review.parse(_as_json(document))
    if not isinstance(document, dict) or document.get("kind", "Pod") != "Pod":
        raise BadInput("$.kind", "expected a Pod or an AdmissionReview")
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    synthetic = {
        "apiVersion": review.API_VERSIONS[0],
        "kind": "AdmissionReview",
        "request": {
            "uid": "offline",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": (metadata or {}).get("namespace") or "",
            "object": document,
        },
    }
    return review.parse(_as_json(synthetic))


def dump(data: Any, as_yaml: bool, out: TextIO) -> None:
    if as_yaml:
        yaml.safe_dump(data, out, sort_keys=False)
    else:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def run_mutate(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        policy = LauncherPolicy.from_args(args)
        document, as_yaml = load(args.file)
        request = as_request(document)
        answer = mutate_review(request, policy)
    except (BadInput, ValueError) as error:
        print(f"virtdev mutate: {error}", file=err)
        return BAD_INPUT
    for warning in answer.warnings:
        print(f"warning: {warning}", file=err)
    if answer.verdict == "skipped":
        print("note: not a launcher pod CREATE: /mutate leaves it unchanged", file=err)
    if args.patch:
        dump(answer.patch, as_yaml, out)
    else:
        obj = copy.deepcopy(request.object)
        dump(jsonpatch.apply_patch(obj, answer.patch) if answer.patch else obj, as_yaml, out)
    return ALLOWED if answer.allowed else DENIED


def run_validate(
    args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    try:
        policy = LauncherPolicy.from_args(args)
        document, _ = load(args.file)
        answer = validate_review(as_request(document), policy)
    except (BadInput, ValueError) as error:
        print(f"virtdev validate: {error}", file=err)
        return BAD_INPUT
    for warning in answer.warnings:
        print(f"warning: {warning}", file=err)
    if answer.allowed:
        print(
            "allowed" + (" (not a launcher pod)" if answer.verdict == "skipped" else ""), file=out
        )
        return ALLOWED
    print(f"denied: {answer.message}", file=out)
    return DENIED
