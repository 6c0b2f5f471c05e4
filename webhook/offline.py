"""`virtdev mutate` and `virtdev validate`: the webhook's rules on files, without a cluster.

Like `kyverno apply` or `gator test`: FILE holds Pods or AdmissionReviews, in JSON or YAML — one
object, a multi-document YAML stream, or a `v1 List` as `kubectl get pods -o yaml|json` prints
it — or is `-` for standard input. Each answer is computed by the same functions /mutate and
/validate call. Input is read within the limits of `virtdev.documents` (size, YAML aliases,
nesting depth). Exit codes: 0 allowed, 1 denied, 2 bad input.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

import jsonpatch
import orjson
import yaml

from virtdev.documents import DocumentError, load_documents, read_bounded
from webhook.admission import Request, mutate_review, validate_review
from webhook.options import ALLOWED, BAD_INPUT, DENIED
from webhook.rules.answer import verdict_line
from webhook.rules.enforcement import enforce
from webhook.rules.policy import LauncherPolicy
from webhook.rules.shapes import BadInput
from webhook.serving.review import as_request

#: `kubectl get pods -o yaml` prints a `List`; the API server's own answer is a `PodList`.
LIST_KINDS = ("List", "PodList")
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class Entry:
    """One object of the input, and where it is (for messages when there are several)."""

    where: str
    document: Any


def load(path: str, stdin: BinaryIO | None = None) -> tuple[list[Any], bool]:
    """The documents in `path` and whether they were YAML (a single one is answered alike)."""
    try:
        return load_documents(read_bounded(path, stdin or sys.stdin.buffer))
    except DocumentError as error:
        raise BadInput(path, str(error)) from None


def entries(documents: list[Any]) -> list[Entry]:
    """The objects to judge: each document, a List's items in its place."""
    found: list[Entry] = []
    for number, document in enumerate(documents, 1):
        where = f"document {number}" if len(documents) > 1 else "$"
        if isinstance(document, dict) and document.get("kind") in LIST_KINDS:
            items = document.get("items")
            if not isinstance(items, list):
                raise BadInput(f"{where}.items", f"a {document['kind']} needs a list of items")
            found.extend(Entry(f"{where}.items[{i}]", item) for i, item in enumerate(items))
        else:
            found.append(Entry(where, document))
    return found


def requester(args: argparse.Namespace, policy: LauncherPolicy) -> str:
    """Who creates the bare Pods of the input: `--as`, or KubeVirt's controller."""
    name = getattr(args, "requester", None)
    return name if isinstance(name, str) else policy.controller


def name_of(request: Request, entry: Entry) -> str:
    """`NAMESPACE/NAME` as the answer lines start, or the object's place when it has no name."""
    return request.display_name or entry.where


def dump(data: Any, as_yaml: bool, out: TextIO) -> None:
    if as_yaml:
        yaml.dump(data, out, Dumper=_Dumper, sort_keys=False)
    else:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _bad(command: str, path: str, entry: Entry | None, error: Exception, err: TextIO) -> None:
    where = f"{entry.where}: " if entry is not None and entry.where != "$" else ""
    print(f"virtdev {command}: {path}: {where}{error}", file=err)


def run_mutate(
    args: argparse.Namespace,
    policy: LauncherPolicy,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        documents, as_yaml = load(args.file)
        found = entries(documents)
    except (BadInput, ValueError) as error:
        print(f"virtdev mutate: {error}", file=err)
        return BAD_INPUT
    if args.patch and len(found) != 1:
        print(
            f"virtdev mutate: --patch: {args.file} holds {len(found)} objects; a patch "
            "applies to one (give a single object, or leave out --patch)",
            file=err,
        )
        return BAD_INPUT
    results: list[Any] = []
    status = ALLOWED
    for entry in found:
        try:
            request = as_request(entry.document, requester(args, policy))
            answer = mutate_review(request, policy)
        except (BadInput, ValueError) as error:
            _bad("mutate", args.file, entry, error, err)
            return BAD_INPUT
        prefix = f"{name_of(request, entry)}: " if len(found) > 1 else ""
        for warning in answer.warnings:
            print(f"warning: {prefix}{warning}", file=err)
        if answer.other_requester:
            print(
                f"note: {prefix}created by {answer.other_requester}, not by KubeVirt's "
                "controller: /mutate leaves "
                "it unchanged, /validate judges it by Pod Security baseline",
                file=err,
            )
        elif answer.verdict == "skipped":
            print(f"note: {prefix}not a launcher pod CREATE: /mutate leaves it unchanged", file=err)
        if not answer.allowed:
            status = DENIED
        if args.patch:
            results.append(answer.patch)
        else:
            obj = copy.deepcopy(request.object)
            results.append(jsonpatch.apply_patch(obj, answer.patch) if answer.patch else obj)
    if len(results) == 1:
        dump(results[0], as_yaml, out)
    else:  # several objects: a YAML stream, as `kubectl apply -f -` takes it
        yaml.dump_all(results, out, Dumper=_Dumper, sort_keys=False)
    return status


def run_validate(
    args: argparse.Namespace,
    policy: LauncherPolicy,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        documents, _ = load(args.file)
        found = entries(documents)
    except (BadInput, ValueError) as error:
        print(f"virtdev validate: {error}", file=err)
        return BAD_INPUT
    denied = bad = False
    for entry in found:
        try:
            request = as_request(entry.document, requester(args, policy))
            answer = enforce(validate_review(request, policy), args.enforcement)
        except (BadInput, ValueError) as error:
            _bad("validate", args.file, entry, error, err)
            bad = True
            continue
        name = name_of(request, entry)
        for warning in answer.warnings:
            print(f"warning: {name}: {warning}", file=err)
        if not answer.allowed and answer.other_requester:
            print(f"note: {name}: judged by {answer.audit_annotations['profile']}", file=err)
        print(verdict_line(name, answer), file=out)
        denied = denied or not answer.allowed
    return BAD_INPUT if bad else DENIED if denied else ALLOWED
