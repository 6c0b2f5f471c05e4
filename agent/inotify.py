"""inotify for asyncio: the kernel wakes the event loop, nothing polls.

A thin layer over `inotify_simple` (a ctypes wrapper, no thread): the inotify descriptor is
registered with `loop.add_reader`, events are collected as they arrive and handed out in
batches. Callers treat a batch as "something changed here" and then look at the filesystem
(stat), so coalesced or overflowing event queues never hide a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from inotify_simple import INotify, flags

#: A directory entry appeared, vanished, was renamed or changed its metadata.
ENTRY_CHANGES = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.ATTRIB
#: An entry appeared under a name.
APPEARED = flags.CREATE | flags.MOVED_TO
#: The watched directory itself went away (its watch is then gone too).
SELF_CHANGES = flags.DELETE_SELF | flags.MOVE_SELF
#: What the directory's own entry ('') carries when it is gone and its watch with it.
GONE = SELF_CHANGES | flags.IGNORED


class Watch:
    """One inotify instance; use as a context manager inside a running event loop."""

    def __init__(self) -> None:
        self._inotify = INotify(nonblocking=True)
        self._loop = asyncio.get_running_loop()
        self._changes: dict[str, int] = {}
        self._arrived = asyncio.Event()
        self._loop.add_reader(self._inotify.fileno(), self._read)

    def add(self, path: str, mask: int = ENTRY_CHANGES | SELF_CHANGES) -> int:
        """Watch a directory; raises OSError when it does not exist."""
        return int(self._inotify.add_watch(path, mask))

    def remove(self, descriptor: int) -> None:
        """Stop watching; a watch the kernel already dropped (directory gone) is fine."""
        with contextlib.suppress(OSError):
            self._inotify.rm_watch(descriptor)

    def _read(self) -> None:
        events = self._inotify.read(timeout=0)
        for event in events:
            self._changes[event.name] = self._changes.get(event.name, 0) | event.mask
        if events:
            self._arrived.set()

    def drain(self) -> dict[str, int]:
        """Take what has happened so far without waiting (see `changes`)."""
        self._read()
        changes, self._changes = self._changes, {}
        self._arrived.clear()
        return changes

    async def changes(self, timeout: float | None = None) -> dict[str, int]:
        """Wait for events: entry name ('' for the directory itself) -> the flags seen for it.

        An empty result means the timeout passed without any event.
        """
        if not self._arrived.is_set() and timeout is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: it may eat a cancellation
                    await self._arrived.wait()
        else:
            await self._arrived.wait()
        return self.drain()

    def close(self) -> None:
        self._loop.remove_reader(self._inotify.fileno())
        self._inotify.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
