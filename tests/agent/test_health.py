"""Device-node health on inotify, without servers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.devices import HEALTHY, UNHEALTHY, Health
from agent.health import HealthState, nearest_directory, watch_health
from tests.agent.helpers import make_node
from tests.agent.kubelet import WAIT


def test_the_nearest_existing_directory_is_watched(tmp_path: Path) -> None:
    assert nearest_directory(str(tmp_path / "dev/net/tun")) == str(tmp_path)
    (tmp_path / "dev/net").mkdir(parents=True)
    assert nearest_directory(str(tmp_path / "dev/net/tun")) == str(tmp_path / "dev/net")


async def test_a_change_sets_the_event_taken_before_it() -> None:
    state = HealthState()
    before = state.changed()
    assert not state.set(UNHEALTHY)  # no change, no wake-up
    assert not before.is_set()
    assert state.set(HEALTHY)
    assert before.is_set() and not state.changed().is_set()


async def test_watch_reports_the_first_look_and_every_change(tmp_path: Path) -> None:
    node = tmp_path / "dev/net/tun"
    state = HealthState()
    seen: list[Health] = []
    arrived = asyncio.Event()

    def record(health: Health) -> None:
        seen.append(health)
        arrived.set()

    async def next_report() -> Health:
        async with asyncio.timeout(WAIT):
            await arrived.wait()
        arrived.clear()
        return seen[-1]

    task = asyncio.create_task(watch_health(str(node), state, on_change=record))
    try:
        assert await next_report() == UNHEALTHY  # missing, and its directory too
        make_node(tmp_path, "dev/net/tun")
        assert await next_report() == HEALTHY
        node.unlink()
        assert await next_report() == UNHEALTHY
        node.write_text("a plain file is no device")
        node.unlink()
        node.parent.rmdir()
        make_node(tmp_path, "dev/net/tun")
        assert await next_report() == HEALTHY
        assert state.value == HEALTHY
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == [UNHEALTHY, HEALTHY, UNHEALTHY, HEALTHY]
