"""The health of one device node, kept current by inotify for the agent's whole life.

Watch first, then look: the watch on the node's directory is in place before the node is
stat'ed, so a node that vanishes or comes back between the two is still seen. The directory
itself may be missing (no `/dev/net` before the tun module loads); then the nearest existing
ancestor is watched until it appears.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from agent.devices import UNHEALTHY, Health, node_health
from agent.inotify import Watch

log = logging.getLogger(__name__)


class HealthState:
    """The current health and a way to wait for the next change (for ListAndWatch streams)."""

    def __init__(self, value: Health = UNHEALTHY) -> None:
        self.value: Health = value
        self._changed = asyncio.Event()

    def set(self, value: Health) -> bool:
        """Record a health value; True when it differs from the previous one."""
        if value == self.value:
            return False
        self.value = value
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def changed(self) -> asyncio.Event:
        """An event set at the next change: take it *before* reading `value`."""
        return self._changed


def nearest_directory(path: str) -> str:
    """The node's directory, or its closest ancestor that exists."""
    directory = os.path.dirname(path)
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        directory = os.path.dirname(directory)
    return directory


async def watch_health(
    path: str,
    state: HealthState,
    *,
    on_change: Callable[[Health], None] = lambda _health: None,
) -> None:
    """Keep `state` equal to the health of the node at `path` until cancelled; `on_change`
    hears the first health seen and every change after it."""
    with Watch() as watch:
        watched: tuple[str, int] | None = None
        first = True
        while True:
            directory = nearest_directory(path)
            if watched is None or watched[0] != directory:
                if watched is not None:
                    watch.remove(watched[1])
                try:
                    watched = (directory, watch.add(directory))
                except OSError as error:
                    watched = None
                    if not os.path.isdir(directory):
                        continue  # removed between the check and the watch: look again
                    # Present but not watchable (permissions, inotify limits): report what a
                    # stat says and try again shortly rather than spin or give up.
                    log.warning(
                        "cannot watch device directory; retrying",
                        extra={"directory": directory, "error": str(error)},
                    )
                    if state.set(node_health(path)):
                        on_change(state.value)
                    await asyncio.sleep(1.0)
                    continue
            health = node_health(path)
            if state.set(health) or first:
                on_change(health)  # the first look is reported too: "missing at start" matters
            first = False
            await watch.changes()
