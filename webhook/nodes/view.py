"""The webhook's live view of the nodes: list, then watch, kept in an immutable snapshot.

A reflector as client-go's, small: list the nodes, watch from the list's resourceVersion with
bookmarks (so the resourceVersion to resume from stays fresh), resume the watch from the last
resourceVersion seen when it ends or the connection breaks, list again when the API server
answers 410 Gone (as HTTP 410 or as an ERROR event in the stream), and back off 1, 2, 5, 10 s
while the API server cannot be reached.

The blocking `kubernetes` client runs in a thread of its own, never on the event loop; requests
read `snapshot`, a frozen object replaced whole on every change, so an admission call never
waits for the cluster and never sees half an update. While the view is not in sync (before the
first list, or after a failure until a watch is running again) the snapshot says so, and /mutate
patches launcher pods as usual.

Sized for large clusters: the nodes live in a `NodeIndex` (webhook.nodes.index), updated in
place per watch event (no re-sort or copy of the others) and asked in constant time per
admission. The list is read in pages of `LIST_PAGE_SIZE` (`limit`/`continue`, as client-go's
pager does), each page reduced to what the filters read before the next is fetched, into a new
index swapped in whole once complete; watch events are parsed one line at a time. With
`--node-selector` only the matching nodes are listed and watched.

Which cluster: `--kubeconfig FILE` when given, else the in-cluster service account when
`KUBERNETES_SERVICE_HOST` is set, else none: a webhook run on a laptop never picks up a
`~/.kube/config` it was not told about. RBAC: nodes get/list/watch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import orjson

from virtdev import catalogue, kube
from webhook.nodes.feasibility import NodeSnapshot, node_name
from webhook.nodes.index import NodeIndex
from webhook.nodes.paging import pages

# The name it had before the layers: operators filter the JSON logs' `logger` field by it.
log = logging.getLogger("virtdev.webhook.node_view")

BACKOFF_SECONDS = catalogue.RESTART_BACKOFF_SECONDS
#: client-go's reflector watches for 5-10 minutes before starting a new watch.
WATCH_SECONDS = 300
CONNECT_TIMEOUT_SECONDS = 5
LIST_TIMEOUT_SECONDS = 30
#: client-go's pager asks for 500 objects a page (webhook.nodes.paging). A page of realistic Nodes
#: (~10 KB each) parses to ~25 MB of Python objects: 100 keeps the peak small, and 50 requests
#: list 5,000 nodes.
LIST_PAGE_SIZE = 100


class Gone(Exception):
    """410: the resourceVersion to resume from is too old; list again."""


class WatchError(Exception):
    """An ERROR event other than 410 in the watch stream."""


def cluster_source(kubeconfig: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """Where the Kubernetes configuration comes from: a kubeconfig, in-cluster, or nowhere."""
    source = kube.webhook_source(kubeconfig, environ=environ)
    return None if source is None else kube.describe(source)


def core_api(kubeconfig: str | None) -> Any:
    """A CoreV1Api for `--kubeconfig` or the in-cluster service account (imports the client)."""
    from kubernetes import client

    source = kube.webhook_source(kubeconfig)
    if source is None:
        raise kube.KubeConfigError("no cluster configured (no --kubeconfig, not in a pod)")
    return client.CoreV1Api(kube.api_client(kube.load(source)))


def _lines(response: Any) -> Iterator[bytes]:
    """The JSON lines of a watch response as they arrive (one event per line)."""
    buffer = b""
    for chunk in response.stream(4096, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class ViewGauges(Protocol):
    """Where the view says how it stands (`webhook.serving.metrics.WebhookMetrics` is one): a
    protocol, so that the scheduler's view never imports the server that exposes it."""

    @property
    def nodes_synced(self) -> _Gauge: ...

    @property
    def nodes_known(self) -> _Gauge: ...


class NodeView:
    """List/watch of nodes in a thread; `snapshot` is always a complete, immutable view."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        metrics: ViewGauges | None = None,
        watch_seconds: int = WATCH_SECONDS,
        backoff: Sequence[float] = BACKOFF_SECONDS,
        label_selector: str = "",
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._connect = connect
        self._metrics = metrics
        self._watch_seconds = watch_seconds
        self._backoff = tuple(backoff)
        self._label_selector = label_selector
        self._page_size = page_size
        self._index = NodeIndex()
        self._snapshot = NodeSnapshot(index=self._index)
        self._stopping = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self._last_problem = ""
        #: When the current watch was established (monotonic), None while there is none.
        self._watching_since: float | None = None

    @property
    def snapshot(self) -> NodeSnapshot:
        return self._snapshot

    def current(self) -> NodeSnapshot:
        """For `create_app(nodes=...)`: the snapshot at this instant."""
        return self._snapshot

    async def run(self) -> None:
        """The app's background task: runs until cancelled, then stops the thread promptly."""
        thread = threading.Thread(target=self.run_blocking, name="node-view", daemon=True)
        thread.start()
        try:
            await asyncio.Future()
        finally:
            self.stop()
            for _ in range(40):  # at most 2 s: the thread is a daemon, shutdown never hangs on it
                if not thread.is_alive():
                    break
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks a read in the view's thread (urllib3 ≥ 2.3)
            except Exception:  # best effort on the way out
                log.debug("closing the watch response failed", exc_info=True)

    def run_blocking(self) -> None:
        """List, watch, relist on 410, reconnect with backoff; returns once stopped."""
        core: Any = None
        since: str | None = None
        failures = 0
        while not self._stopping.is_set():
            self._watching_since = None
            try:
                if core is None:
                    core = self._connect()
                if since is None:
                    since = self._list(core)
                started = time.monotonic()
                since, events = self._watch(core, since)
                failures = 0
                if not events and time.monotonic() - started < 1:
                    # A watch that ends at once, empty, again and again must not spin.
                    self._stopping.wait(self._backoff[0])
            except Gone as gone:
                log.info("node watch expired (410 Gone): listing nodes again: %s", gone)
                since = None
            except Exception as error:  # any failure: out of sync, back off, retry
                if self._stopping.is_set():
                    break
                self._publish(synced=False)
                since_watch = self._watching_since
                if since_watch is not None and time.monotonic() - since_watch >= self._backoff[-1]:
                    failures = 0  # a watch healthy for a while broke: a new trouble, not a series
                delay = self._backoff[min(failures, len(self._backoff) - 1)]
                failures += 1
                problem = f"{type(error).__name__}: {error}"[:300]
                level = logging.DEBUG if problem == self._last_problem else logging.WARNING
                self._last_problem = problem
                log.log(
                    level,
                    "node view out of sync, retrying in %ss: %s",
                    delay,
                    problem,
                    extra={"failures": failures},
                )
                self._stopping.wait(delay)
        self._publish(synced=False)

    def _list(self, core: Any) -> str:
        """List every node page by page into a new index; swap it in once complete."""
        index = NodeIndex()
        since = ""
        count = 0
        for page in pages(
            core.list_node,
            limit=self._page_size,
            request_timeout=(CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS),
            label_selector=self._label_selector or None,
        ):
            for item in page.get("items") or ():
                index.put(item)
            # Every page of one list carries the resourceVersion of its snapshot: the first's.
            since = since or str((page.get("metadata") or {}).get("resourceVersion") or "")
            count += 1
            del page  # garbage before the next page is fetched
        self._index = index
        self._publish(synced=True, resource_version=since)
        if self._last_problem or since:
            log.info(
                "node view synced: %d nodes",
                len(index),
                extra={"rv": since, "pages": count},
            )
        self._last_problem = ""
        return since

    def _watch(self, core: Any, since: str) -> tuple[str, int]:
        """Follow one watch to its end; the resourceVersion to resume from, and events seen."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = core.list_node(
                watch=True,
                resource_version=since,
                label_selector=self._label_selector or None,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_seconds,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, self._watch_seconds + 15),
            )
        except ApiException as error:
            if error.status == 410:
                raise Gone(error.reason) from None
            raise
        with self._lock:
            self._response = response
        if self._stopping.is_set():
            response.shutdown()
        try:
            if not self._snapshot.synced:
                log.info("node view back in sync: watching from resourceVersion %s", since)
                self._last_problem = ""
            self._publish(synced=True, resource_version=since)
            self._watching_since = time.monotonic()
            events = 0
            for line in _lines(response):
                if self._stopping.is_set():
                    break
                since = self._apply(orjson.loads(line), since)
                events += 1
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return since, events

    def _apply(self, event: Mapping[str, Any], since: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(str(obj.get("message") or "too old resource version"))
            raise WatchError(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or since)
        if kind == "BOOKMARK":
            return version
        # The index is changed in place, under its lock: requests never see half an event.
        if kind == "DELETED":
            self._index.remove(node_name(obj))
        elif kind in ("ADDED", "MODIFIED"):
            self._index.put(obj)
        self._publish(synced=True, resource_version=version)
        return version

    def _publish(self, *, synced: bool, resource_version: str | None = None) -> None:
        """Swap in a new snapshot: one attribute assignment, atomic for every reader. Constant
        cost: the snapshot refers to the index, it does not copy it."""
        version = self._snapshot.resource_version if resource_version is None else resource_version
        self._snapshot = NodeSnapshot(synced=synced, resource_version=version, index=self._index)
        if self._metrics is not None:
            self._metrics.nodes_synced.set(1 if synced else 0)
            self._metrics.nodes_known.set(len(self._index))
