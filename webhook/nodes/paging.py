"""Read a Kubernetes list in pages (`limit` and `continue`), one parsed page at a time.

kube-apiserver serves a list without `resourceVersion` from etcd, in pages when asked; every
page carries the resourceVersion of the first, and `metadata.continue` while objects remain.
client-go's pager reads 500 objects a page (kubernetes
staging/src/k8s.io/client-go/tools/pager/pager.go@04791b49:31-34, `defaultPageSize`). Reading
page by page, and reducing each page to what is kept before the next is fetched, keeps the
memory of listing 5,000 ~10 KB Nodes at one page, not 50 MB of JSON and its parse. A token
that expired between pages (410 Expired) fails the list: callers list again from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson


def pages(
    list_call: Callable[..., Any],
    *,
    limit: int,
    request_timeout: tuple[float, float] | None = None,
    **params: Any,
) -> Iterator[dict[str, Any]]:
    """Each page of a list call of the `kubernetes` client (`core.list_node`, ...), parsed.

    The previous page is let go before the next is fetched: callers should not keep it.
    """
    token: str | None = None
    while True:
        extra: dict[str, Any] = {"_request_timeout": request_timeout} if request_timeout else {}
        response = list_call(
            limit=limit, _continue=token, _preload_content=False, **extra, **params
        )
        try:
            page: dict[str, Any] = orjson.loads(response.data)
        finally:
            response.release_conn()
        token = (page.get("metadata") or {}).get("continue") or None
        yield page
        del page
        if token is None:
            return
