"""A worker's pool with real processes: what a failed worker says, and how often."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from couchdb_events.errors import HTTPError
from couchdb_events.model.message import Message, Outcome
from couchdb_events.model.workers import Mode, WorkerSpec
from couchdb_events.workers import states
from couchdb_events.workers.deploy import Deployer
from couchdb_events.workers.pool import Pool
from couchdb_events.workers.states import MAX_YOUNG_DEATHS, PoolState

CRASHES_PY = b"import sys\nsys.exit(3)\n"


def test_a_failed_worker_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(states, "BACKOFF_FIRST", 0.01)  # five young deaths in a moment
    spec = WorkerSpec(
        "crasher", "1-a", delegate="w.py", type="python",
        argv=(sys.executable, "w.py"), mode=Mode.REPLY,
    )  # fmt: skip

    async def main() -> tuple[Pool, list[Outcome]]:
        loop = asyncio.get_running_loop()
        deployer = Deployer(tmp_path, lambda _spec: {"w.py": CRASHES_PY})
        pool = Pool(spec, deployer, {"PATH": os.environ["PATH"]}, stop_timeout=1.0)
        messages = [
            Message(f"m{i}", "boom", "crasher", {}, {}, outcome=loop.create_future())
            for i in range(MAX_YOUNG_DEATHS * 2)  # more than the processes that die: some wait
        ]
        for message in messages:
            pool.submit(message)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(m.outcome for m in messages if m.outcome is not None)), 30
        )
        await pool.close()
        return pool, outcomes

    pool, outcomes = asyncio.run(main())
    assert pool.state is PoolState.FAILED
    cause = pool.last_error
    assert cause is not None
    pattern = (
        r"worker crasher\[\d+\] ended with exit status 3( before answering)?"
        rf" \(died young {MAX_YOUNG_DEATHS} times in a row\)"
    )
    assert re.fullmatch(pattern, cause), cause
    reason = f"worker 'crasher' failed: {cause}"
    waited = [o for o in outcomes if o.error and o.error.startswith("worker 'crasher' failed")]
    assert waited, outcomes  # those still queued when it failed
    assert all((o.state, o.error) == ("failed", reason) for o in waited)
    with pytest.raises(HTTPError) as refused:
        pool.check()
    assert (refused.value.status, refused.value.error) == (503, "worker_failed")
    assert refused.value.reason == reason
    assert pool.snapshot()["last_error"] == cause  # as /_events/_status shows it
