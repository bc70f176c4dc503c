"""Starting one worker process: a new process object (its output goes to the log), its
revision's code on disk, its environment, the spawn, and why it could not start. A start that
failed because CouchDB is away is not the worker's fault: it is to be tried again shortly
(``StartFailure.retry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import logs
from ..errors import DocumentError, StoreError
from ..model.workers import WorkerSpec
from .building import BuildError
from .deploy import Deployer
from .launch import StartError
from .process import WorkerProcess
from .recycling import recycle_after

log = logs.get("pool")  # told as the pool's, whose process it is


@dataclass(frozen=True)
class StartFailure:
    error: str
    retry: bool = False  # CouchDB is away: keep the queue and try again shortly


def new_process(spec: WorkerSpec) -> WorkerProcess:
    """A process of ``spec``, not spawned yet, its stdout and stderr lines logged."""
    proc = WorkerProcess(spec, _stdout_line, _stderr_line)
    proc.recycle_after = recycle_after(spec)
    return proc


def _stdout_line(proc: WorkerProcess, line: bytes) -> None:
    log.info("%s: %s", proc, line.decode("utf-8", "replace").rstrip())


def _stderr_line(proc: WorkerProcess, line: bytes) -> None:
    log.info("%s stderr: %s", proc, line.decode("utf-8", "replace").rstrip())


def process_environment(
    base: Mapping[str, str], spec: WorkerSpec, data_dir: Path
) -> dict[str, str]:
    """A process's environment: the workers' base, the document's ``env``, and its marks."""
    return {
        **base,
        **spec.env,
        "COUCHDB_EVENTS_WORKER": spec.name,
        "COUCHDB_EVENTS_DATA_DIR": str(data_dir),
    }


async def start_process(
    proc: WorkerProcess, deployer: Deployer, env: Mapping[str, str]
) -> StartFailure | None:
    """Deploy ``proc``'s revision, build its environment (``deployer.environments``) and spawn
    it; why it could not start, or None. A failed build is the worker's fault: not retried."""
    name = proc.spec.name
    try:
        cwd = await deployer.ensure(proc.spec)
        if deployer.environments is not None:
            proc.spec = await deployer.environments.ensure(proc.spec, cwd)
        data_dir = deployer.data_directory(name)
        await proc.spawn(cwd, process_environment(env, proc.spec, data_dir))
    except (StartError, DocumentError, BuildError) as exc:
        return StartFailure(str(exc))
    except StoreError as exc:
        return StartFailure(f"cannot fetch the code of worker {name!r}, retrying: {exc}", True)
    except Exception as exc:  # pragma: no cover - unexpected, but never kill the loop
        log.exception("starting %s failed", proc)
        return StartFailure(f"cannot start worker {name!r}: {exc}")
    return None
