"""Unix sockets in the device plugin directory: which answer, which are stale.

A socket file is stale only when connecting to it is refused: its server is gone. One that
accepts a connection belongs to a live process (another agent, KubeVirt's virt-handler) and is
never replaced; gRPC itself would unlink it silently when binding, so the check comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat

#: Connecting to a local socket takes microseconds; a full backlog must not hang the agent.
CONNECT_TIMEOUT = 1.0


class SocketInUse(RuntimeError):
    """A live process serves the socket the agent wanted to serve on."""


async def answers(path: str, *, timeout: float = CONNECT_TIMEOUT) -> bool:
    """False only when there is no socket or connecting is refused (its server is gone).

    A busy server (full backlog, slow accept) or one we may not reach counts as alive: the
    cautious answer, since a live socket must never be replaced.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for may swallow a cancellation.
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, path)
    except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
        return False
    except (TimeoutError, OSError):
        return True
    finally:
        sock.close()
    return True


def inode(path: str) -> int | None:
    """The inode of a file, or None when there is none: tells our socket from a new one."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


async def clear_stale(path: str) -> bool:
    """Remove a stale socket at `path`; True when one was removed.

    Raises SocketInUse when a live server answers there, and OSError when the path is
    something other than a socket (the agent never deletes a file it does not understand).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "exists and is not a socket; not removing it", path)
    if await answers(path):
        raise SocketInUse(f"{path} is served by another live process; not replacing it")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True
