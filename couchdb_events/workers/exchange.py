"""One message to one worker process, by the worker's mode, to the run's outcome.

* ``stream``: the line is written; that is the outcome (``delivered``).
* ``reply``: the line is written and the first JSON line on stdout is the answer.
* ``once``: the line is written, stdin closed, and the exit status is the outcome.

A ``timeout`` covers the whole exchange: past it the process group is killed. A run that ends
because the daemon is stopping is ``interrupted``: its record stays open for the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..model.message import Message, Outcome
from ..model.workers import Mode
from .launch import describe_exit
from .process import WorkerProcess
from .states import ProcessState

INTERRUPTED = "interrupted"  # the daemon stopped before the run could end


def answer_outcome(value: Any) -> Outcome:
    """A worker's answer: an object with a truthy ``error`` means the run failed."""
    if isinstance(value, dict) and value.get("error"):
        reason = value.get("reason")
        error = f"{value['error']}: {reason}" if reason else str(value["error"])
        return Outcome("failed", value, error)
    return Outcome("succeeded", value)


def with_stderr(error: str, proc: WorkerProcess) -> str:
    if not proc.stderr_tail:
        return error
    return f"{error}; stderr: " + " | ".join(proc.stderr_tail)


def _with_tails(outcome: Outcome, proc: WorkerProcess) -> Outcome:
    if proc.run_stdout or proc.run_stderr:
        return replace(outcome, stdout=tuple(proc.run_stdout), stderr=tuple(proc.run_stderr))
    return outcome


async def exchange(
    proc: WorkerProcess, message: Message, grace: float, stopping: Callable[[], bool]
) -> Outcome | None:
    """Run ``message`` on ``proc``; None when nothing could be written (the pipe is closed).

    ``grace``: between SIGTERM and SIGKILL on a timeout. ``stopping``: whether the daemon is
    stopping, asked when the run ends.
    """
    mode = proc.spec.mode
    answer = proc.expect_answer() if mode is not Mode.STREAM else None
    proc.begin(message.id if mode is not Mode.STREAM else None)
    if not await proc.send(message.line()):
        proc.end()
        return None
    proc.handled += 1
    message.started()
    if answer is None:
        proc.end()
        return Outcome("delivered")
    if mode is Mode.ONCE:
        proc.close_stdin()
    # A once worker is done when it exits; a reply worker when it answers (or dies).
    ends: set[asyncio.Future[Any]] = {proc.exited} if mode is Mode.ONCE else {answer, proc.exited}
    done, _pending = await asyncio.wait(
        ends, timeout=proc.spec.timeout, return_when="FIRST_COMPLETED"
    )
    if not done:
        error = f"{proc} did not finish within {proc.spec.timeout:g} s (timeout); killed"
        await proc.kill(grace)
        outcome = Outcome("timeout", None, with_stderr(error, proc))
    elif mode is Mode.ONCE:
        returncode = await proc.exited
        value = answer.result() if answer.done() else None
        if returncode == 0:
            outcome = answer_outcome(value)
        else:
            error = f"{proc} ended with {describe_exit(returncode)}"
            outcome = Outcome("failed", value, with_stderr(error, proc))
    elif answer.done():
        outcome = answer_outcome(answer.result())
    else:
        error = f"{proc} ended with {describe_exit(proc.returncode)} before answering"
        outcome = Outcome("failed", None, with_stderr(error, proc))
    proc.end()
    if outcome.state == "failed" and stopping():
        outcome = replace(outcome, state=INTERRUPTED)  # stopped by us: run it next time
    if proc.alive and outcome.state != "timeout":
        proc.state = ProcessState.IDLE
    return _with_tails(outcome, proc)
