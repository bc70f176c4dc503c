"""``ChangesTriggers``: one ``Follower`` (``changes.py``) running per event with a changes
trigger, started, restarted and stopped as the events database changes (looked at every
``TICK`` seconds, like schedules). A follower being replaced finishes first, so that two never
fire the same trigger's changes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..model.sources import ChangesTrigger
from .changes import Follower
from .holding import Context

log = logs.get("changes")

TICK = 0.5  # seconds between looks at the registry
STOP_WAIT = 2.0  # seconds a stopping follower may take to finish its batch
RESTART_DELAY = 5.0  # seconds before a follower that failed is started again


@dataclass
class ChangesTriggers:
    """Keeps one ``Follower`` running per event with a changes trigger."""

    ctx: Context
    followers: dict[str, Follower] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _stopping: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def _wanted(self) -> dict[str, ChangesTrigger]:
        return {
            event_id: spec.changes
            for event_id, spec in self.ctx.registry.events.items()
            if spec.changes is not None and not spec.disabled and not spec.error
        }

    async def run(self) -> None:
        while True:
            self.sync()
            await asyncio.sleep(TICK)

    def sync(self) -> None:
        """Start, restart and stop followers to match the events now loaded."""
        wanted = self._wanted()
        for event_id, follower in list(self.followers.items()):
            if wanted.get(event_id) != follower.trigger:
                del self.followers[event_id]
                task = self._tasks.pop(event_id)
                self._stopping[event_id] = asyncio.create_task(self._end(follower, task))
        for event_id, trigger in wanted.items():
            if event_id in self.followers or event_id in self._stopping:
                continue  # a follower stopping first gives back the lease and its checkpoint
            follower = Follower(event_id, trigger, self.ctx)
            self.followers[event_id] = follower
            self._tasks[event_id] = asyncio.create_task(self._follow(follower))

    async def _follow(self, follower: Follower) -> None:
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one trigger's bug stop the others: start it again
            log.exception("changes trigger of event %s failed; starting it again in %g s",
                          follower.event_id, RESTART_DELAY)  # fmt: skip
            follower.state = "failed"
            follower.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(RESTART_DELAY)  # shown in status meanwhile
            if self.followers.get(follower.event_id) is follower:  # not replaced meanwhile
                del self.followers[follower.event_id]
                del self._tasks[follower.event_id]

    async def _end(self, follower: Follower, task: asyncio.Task[None]) -> None:
        try:
            await follower.stop()
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
            if not done:
                task.cancel()
                await asyncio.wait({task})
            log.info("changes trigger of event %s stopped", follower.event_id)
        finally:
            self._stopping.pop(follower.event_id, None)

    async def close(self) -> None:
        """Stop every follower (each finishes its batch first, up to ``STOP_WAIT``)."""
        for event_id, follower in list(self.followers.items()):
            task = self._tasks.pop(event_id)
            self._stopping[event_id] = asyncio.create_task(self._end(follower, task))
        self.followers.clear()
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for event_id, trigger in sorted(self._wanted().items()):
            follower = self.followers.get(event_id)
            out[event_id] = (
                follower.status() if follower else {"db": trigger.db, "state": "starting"}
            )
        return out
