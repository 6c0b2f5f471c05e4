"""JSON and YAML documents from files people hand to virtdev, read with bounded time and memory.

`virtdev validate`, `mutate` and the kubeconfig loader read what a user pipes in, which may come
from anywhere. Three limits keep a small input from taking the machine:

- **size**: at most `MAX_INPUT_BYTES` are read (more is refused, not truncated);
- **alias expansion**: a YAML alias is a reference, so 671 bytes of nested anchors describe a
  tree of billions of nodes that anything walking it (JSON encoding, the rules) expands. The
  YAML is composed here from libyaml's event stream, counting each node as often as it would be
  expanded, and refused with kubectl's own rule (`allowed_alias_ratio`, below) before any of it
  is expanded;
- **nesting depth**: deeper than `MAX_DEPTH` is refused, for JSON and YAML alike, before any
  recursive code (the YAML constructor, the JSON encoder, the rules) sees it. A pod is about 15
  levels deep, `kubectl get pods -o yaml` (a List, managedFields included) about 20.

Errors are `DocumentError`, one line naming the line and column where YAML went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_INPUT_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 100

# gopkg.in/yaml.v2 decode.go (`allowedAliasRatio`), the YAML library under sigs.k8s.io/yaml and
# so under kubectl and the API server: once more than 100 nodes came from aliases and more than
# 400,000 were decoded, at most 99% of them may come from aliases, scaling down to 10% at
# 4,000,000 ("document contains excessive aliasing").
_ALIAS_RATIO_LOW = 400_000
_ALIAS_RATIO_HIGH = 4_000_000
_ALIAS_MINIMUM = 100

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


class DocumentError(ValueError):
    """The input cannot be read as documents; the message says why, in one line."""


def allowed_alias_ratio(decoded: int) -> float:
    """kubectl's share of decoded nodes that may come from alias expansion."""
    if decoded <= _ALIAS_RATIO_LOW:
        return 0.99
    if decoded >= _ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _ALIAS_RATIO_LOW) / (_ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW)


def read_bounded(path: str, stdin: BinaryIO | None, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of `path` (`-`: `stdin`, when one is given), refusing more than `limit`."""
    try:
        if path == "-" and stdin is not None:
            data = stdin.read(limit + 1)
        else:
            with open(path, "rb") as file:
                data = file.read(limit + 1)
    except OSError as error:
        raise DocumentError(error.strerror or str(error)) from None
    if len(data) > limit:
        raise DocumentError(f"larger than {limit // (1024 * 1024)} MiB")
    return data


def load_documents(data: bytes) -> tuple[list[Any], bool]:
    """Every document in `data` (JSON, or a YAML stream) and whether it was YAML.

    Empty YAML documents (a stray `---`) are left out.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):  # orjson stops at 1024 levels
            raise DocumentError(f"nested deeper than {MAX_DEPTH} levels") from None
        # not JSON: YAML, which JSON is too
    else:
        check_depth(document)
        return [document], False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DocumentError(f"neither JSON nor YAML: not UTF-8 at byte {error.start}") from None
    return [d for d in yaml_documents(text) if d is not None], True


def read_yaml_file(path: str, limit: int) -> list[Any]:
    """The documents of a file a person writes in YAML (a config file, a kubeconfig), read
    within `limit`; what cannot be read is a DocumentError saying "not valid YAML"."""
    try:
        documents, _ = load_documents(read_bounded(path, None, limit))
    except DocumentError as error:
        raise DocumentError(str(error).replace("neither JSON nor YAML", "not valid YAML")) from None
    return documents


def check_depth(document: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a value nested deeper than `limit` (iteratively: any depth is safe to check)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise DocumentError(f"nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def yaml_documents(text: str, *, max_depth: int = MAX_DEPTH) -> list[Any]:
    """The documents of a YAML stream, as `yaml.safe_load_all` would give them, within limits."""
    loader = _Loader(text)
    try:
        return [loader.construct_document(node) for node in _compose(loader, max_depth)]
    except yaml.MarkedYAMLError as error:
        raise DocumentError(f"neither JSON nor YAML: {_one_line(error)}") from None
    except yaml.YAMLError as error:
        raise DocumentError(f"neither JSON nor YAML: {error}".replace("\n", " ")) from None
    finally:
        loader.dispose()


def _one_line(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(filter(None, (error.context, error.problem)))
    return where + (what or "malformed")


class _Frame:
    """A sequence or mapping being composed: its node, expanded size, height, anchor, key."""

    __slots__ = ("anchor", "height", "key", "node", "size")

    def __init__(self, node: Node, anchor: str | None) -> None:
        self.node = node
        self.anchor = anchor
        self.size = 1
        self.height = 1
        self.key: Node | None = None


def _compose(loader: Any, max_depth: int) -> Iterator[Node]:
    """yaml's Composer, without recursion, counting expansion and depth as it goes."""
    loader.get_event()  # StreamStart
    while not loader.check_event(yaml.StreamEndEvent):
        loader.get_event()  # DocumentStart
        yield _compose_document(loader, max_depth)
        loader.get_event()  # DocumentEnd
    loader.get_event()


def _compose_document(loader: Any, max_depth: int) -> Node:
    anchors: dict[str, tuple[Node, int, int]] = {}  # anchor: node, expanded size, height
    stack: list[_Frame] = []
    decoded = aliased = 0
    while True:
        event: Any = loader.get_event()
        # Compared by class, not isinstance(): libyaml's marks are typed apart from yaml's, and
        # narrowing `event` would make every mark a type error.
        kind_of = type(event)
        if kind_of is yaml.AliasEvent:
            if event.anchor not in anchors:
                open_anchor = any(frame.anchor == event.anchor for frame in stack)
                problem = "an alias inside its own anchor" if open_anchor else "an undefined alias"
                raise yaml.composer.ComposerError(
                    None, None, f"{problem} *{event.anchor}", event.start_mark
                )
            node, size, height = anchors[event.anchor]
            aliased += size
        elif kind_of is yaml.ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(ScalarNode, event.value, event.implicit)
            node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
            size = height = 1
        elif kind_of in (yaml.SequenceStartEvent, yaml.MappingStartEvent):
            if len(stack) >= max_depth:
                raise DocumentError(
                    f"nested deeper than {max_depth} levels (line {event.start_mark.line + 1})"
                )
            kind = SequenceNode if kind_of is yaml.SequenceStartEvent else MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(kind, None, event.implicit)
            node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
            stack.append(_Frame(node, event.anchor))
            decoded += 1
            continue
        elif kind_of in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
            frame = stack.pop()
            frame.node.end_mark = event.end_mark
            node, size, height = frame.node, frame.size, frame.height
            if frame.anchor is not None:
                anchors[frame.anchor] = (node, size, height)
            if not stack:
                return node
            _add(stack[-1], node, size, height)
            continue
        else:  # pragma: no cover - libyaml only emits the events above inside a document
            raise DocumentError(f"unexpected YAML event {type(event).__name__}")
        anchor = getattr(event, "anchor", None)
        if kind_of is yaml.ScalarEvent:
            decoded += 1
            if anchor is not None:
                anchors[anchor] = (node, 1, 1)
        else:
            decoded += size
            if len(stack) + height > max_depth:
                raise DocumentError(
                    f"nested deeper than {max_depth} levels through alias *{event.anchor}"
                )
            if aliased > _ALIAS_MINIMUM and decoded > _ALIAS_RATIO_LOW:
                if aliased / decoded > allowed_alias_ratio(decoded):
                    raise DocumentError(
                        f"excessive YAML aliasing (alias *{event.anchor} at line "
                        f"{event.start_mark.line + 1} expands to {size} nodes): refused, "
                        "as kubectl refuses it"
                    )
        if not stack:
            return node
        _add(stack[-1], node, size, height)


def _add(frame: _Frame, child: Node, size: int, height: int) -> None:
    frame.size += size
    frame.height = max(frame.height, height + 1)
    if isinstance(frame.node, SequenceNode):
        frame.node.value.append(child)
    elif frame.key is None:
        frame.key = child
    else:
        frame.node.value.append((frame.key, child))
        frame.key = None
