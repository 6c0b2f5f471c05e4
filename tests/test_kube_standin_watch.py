"""The stand-in's list and watch, through the real `kubernetes` client as the node view uses it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tests.kube_standin import StandIn

#: The client's APIs as the tests call them: with plain dicts for bodies (the JSON the stand-in
#: reads, which the client sends as they are), which its models' annotations do not allow.
Core = Any


def a_node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


@pytest.fixture
def core(stand_in_client: client.ApiClient) -> Core:
    return client.CoreV1Api(stand_in_client)


def events(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON lines of a watch response, as they arrive."""
    buffer = b""
    for chunk in response.stream(1024, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def list_nodes(core: Core, **kwargs: Any) -> dict[str, Any]:
    response = core.list_node(_preload_content=False, **kwargs)
    return json.loads(response.data)  # type: ignore[no-any-return]


def test_a_list_carries_the_resource_version_a_watch_continues_from(
    stand_in: StandIn, core: Core
) -> None:
    stand_in.put_object(a_node("a"))
    listed = list_nodes(core)
    assert [n["metadata"]["name"] for n in listed["items"]] == ["a"]
    since = listed["metadata"]["resourceVersion"]
    stand_in.put_object(a_node("b"))
    changed = stand_in.get_object("v1", "nodes", "", "a")
    changed["metadata"]["labels"] = {"kvm": "yes"}
    stand_in.replace_object(changed)
    stand_in.delete_object(a_node("b"))
    response = core.list_node(
        watch=True, resource_version=since, timeout_seconds=1, _preload_content=False
    )
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events(response)]
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_a_watch_from_zero_starts_with_what_exists(stand_in: StandIn, core: Core) -> None:
    stand_in.put_object(a_node("a"))
    response = core.list_node(watch=True, timeout_seconds=1, _preload_content=False)
    assert [e["type"] for e in events(response)] == ["ADDED"]


def test_bookmarks_carry_the_current_resource_version(stand_in: StandIn, core: Core) -> None:
    stand_in.bookmark_seconds = 0.05
    stand_in.put_object(a_node("a"))
    since = list_nodes(core)["metadata"]["resourceVersion"]
    stand_in.put_object(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "d"}}
    )
    response = core.list_node(
        watch=True,
        resource_version=since,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _preload_content=False,
    )
    first = next(events(response))
    response.release_conn()
    assert first["type"] == "BOOKMARK"
    assert first["object"]["kind"] == "Node"
    assert int(first["object"]["metadata"]["resourceVersion"]) == int(since) + 1


def test_a_watch_from_an_expired_resource_version_gets_410_in_the_stream(
    stand_in: StandIn, core: Core
) -> None:
    stand_in.put_object(a_node("a"))
    since = list_nodes(core)["metadata"]["resourceVersion"]
    stand_in.put_object(a_node("b"))
    stand_in.compact()
    response = core.list_node(
        watch=True, resource_version=since, timeout_seconds=5, _preload_content=False
    )
    assert response.status == 200
    (error,) = list(events(response))
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410
    assert error["object"]["reason"] == "Expired"
    # From the resourceVersion of a fresh list, the watch works again.
    again = list_nodes(core)["metadata"]["resourceVersion"]
    response = core.list_node(
        watch=True, resource_version=again, timeout_seconds=1, _preload_content=False
    )
    assert list(events(response)) == []


def test_a_watch_from_an_expired_resource_version_can_get_http_410(
    stand_in: StandIn, core: Core
) -> None:
    stand_in.gone_as_http = True
    stand_in.put_object(a_node("a"))
    stand_in.put_object(a_node("b"))
    stand_in.compact()
    with pytest.raises(ApiException) as raised:
        core.list_node(watch=True, resource_version="1", _preload_content=False)
    assert raised.value.status == 410


def test_dropped_watches_end_without_a_clean_end_of_stream(stand_in: StandIn, core: Core) -> None:
    since = list_nodes(core)["metadata"]["resourceVersion"]
    response = core.list_node(
        watch=True, resource_version=since, timeout_seconds=30, _preload_content=False
    )
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            list(events(response))
            outcome.append(None)
        except (HTTPError, OSError) as error:
            outcome.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    assert _wait_for(lambda: stand_in.open_watches == 1)
    assert stand_in.drop_watches() == 1
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert outcome and outcome[0] is not None, "a cut stream must not look like a clean end"
    assert _wait_for(lambda: stand_in.open_watches == 0)


def test_selectors_filter_lists(stand_in: StandIn, core: Core) -> None:
    for name, phase, node in (
        ("p1", "Running", "a"),
        ("p2", "Succeeded", "a"),
        ("p3", "Running", "b"),
    ):
        stand_in.put_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "vms", "labels": {"app": name}},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": phase},
            }
        )
    running = core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=a,status.phase!=Succeeded,status.phase!=Failed"
    )
    assert [p.metadata.name for p in running.items] == ["p1"]
    assert [
        p.metadata.name for p in core.list_namespaced_pod("vms", label_selector="app=p3").items
    ] == ["p3"]
    assert [
        p.metadata.name for p in core.list_namespaced_pod("vms", label_selector="app!=p3").items
    ] == ["p1", "p2"]


def test_the_certs_behaviour_is_unchanged_by_events(stand_in: StandIn, core: Core) -> None:
    created = stand_in.put_object(a_node("a"))
    stale = dict(created)
    stand_in.replace_object(created)
    with pytest.raises(ApiException) as raised:
        core.replace_node("a", stale)
    assert raised.value.status == 409


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_list_in_pages_gives_every_object_once_at_the_first_pages_resource_version(
    stand_in: StandIn, core: client.CoreV1Api
) -> None:
    for index in range(5):
        stand_in.put_object(a_node(f"n{index}"))
    first = list_nodes(core, limit=2)
    assert [item["metadata"]["name"] for item in first["items"]] == ["n0", "n1"]
    since, token = first["metadata"]["resourceVersion"], first["metadata"]["continue"]
    stand_in.put_object(a_node("n5"))  # written between pages: the list's version does not move
    names = [item["metadata"]["name"] for item in first["items"]]
    while token:
        page = list_nodes(core, limit=2, _continue=token)
        assert page["metadata"]["resourceVersion"] == since
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue")
    assert names == [f"n{index}" for index in range(6)]
    assert "continue" not in list_nodes(core)["metadata"]


def test_a_continue_token_older_than_a_compaction_is_410_expired(
    stand_in: StandIn, core: client.CoreV1Api
) -> None:
    for index in range(3):
        stand_in.put_object(a_node(f"n{index}"))
    token = list_nodes(core, limit=1)["metadata"]["continue"]
    stand_in.put_object(a_node("n3"))
    stand_in.compact()
    with pytest.raises(ApiException) as raised:
        list_nodes(core, limit=1, _continue=token)
    assert raised.value.status == 410
    assert json.loads(raised.value.body or "{}")["reason"] == "Expired"
    with pytest.raises(ApiException) as bad:
        list_nodes(core, limit=1, _continue="not-a-token")
    assert bad.value.status == 400


def test_a_selecting_watch_sees_objects_enter_and_leave_the_selection(
    stand_in: StandIn, core: client.CoreV1Api
) -> None:
    stand_in.put_object(a_node("n0", virt="yes"))
    stand_in.put_object(a_node("n1"))
    since = list_nodes(core)["metadata"]["resourceVersion"]
    response: Any = core.list_node(  # with _preload_content=False: urllib3's response
        watch=True,
        resource_version=since,
        label_selector="virt=yes",
        timeout_seconds=5,
        _preload_content=False,
    )
    leaving = stand_in.get_object("v1", "nodes", "", "n0")
    leaving["metadata"]["labels"] = {}
    stand_in.replace_object(leaving)
    entering = stand_in.get_object("v1", "nodes", "", "n1")
    entering["metadata"]["labels"] = {"virt": "yes"}
    stand_in.replace_object(entering)
    stand_in.replace_object(stand_in.get_object("v1", "nodes", "", "n1"))
    stream = events(response)
    seen = [next(stream) for _ in range(3)]
    response.close()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [
        ("DELETED", "n0"),
        ("ADDED", "n1"),
        ("MODIFIED", "n1"),
    ]
    deleted = seen[0]["object"]["metadata"]
    assert deleted["labels"] == {"virt": "yes"}  # its content before it stopped matching
    assert int(deleted["resourceVersion"]) > int(since)
