"""Worker code on disk: one directory per worker revision, written atomically.

``<work_dir>/workers/<worker>/<rev>/`` holds the attachments of that revision (the process's
working directory); ``<work_dir>/data/<worker>/`` is the worker's own, kept across revisions.
A revision is written into a temporary sibling directory first and renamed into place, so a
process never sees half of a revision. Attachment names were checked when the document was read
(``model.workers.unsafe_attachment_name``); they are checked again here before anything is
written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

from .. import logs
from ..errors import DocumentError
from ..model.workers import WorkerSpec, unsafe_attachment_name
from .environments import Environments

log = logs.get("deploy")

Fetch = Callable[[WorkerSpec], Mapping[str, bytes]]


def _segment(name: str) -> str:
    safe = quote(name, safe="")
    return "%2E" + safe[1:] if safe.startswith(".") else safe


class Deployer:
    """Puts worker revisions on disk, once each, and removes revisions no longer used."""

    def __init__(self, work_dir: Path, fetch: Fetch) -> None:
        self.root = work_dir / "workers"
        self.data_root = work_dir / "data"
        self._fetch = fetch
        self._pending: dict[tuple[str, str], asyncio.Future[Path]] = {}
        # What the revisions' dependency files ask for (``environments``), once the supervisor
        # has given it the workers' base environment.
        self.environments: Environments | None = None

    def directory(self, spec: WorkerSpec) -> Path:
        return self.root / _segment(spec.name) / _segment(spec.rev)

    def data_directory(self, name: str) -> Path:
        """A folder the worker may keep files in across revisions (``COUCHDB_EVENTS_DATA_DIR``)."""
        path = self.data_root / _segment(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def ensure(self, spec: WorkerSpec) -> Path:
        """The revision's directory, fetched and written if it is not there yet."""
        target = self.directory(spec)
        if target.is_dir():
            return target
        key = (spec.name, spec.rev)
        pending = self._pending.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(None, self._deploy, spec, target)
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    def _deploy(self, spec: WorkerSpec, target: Path) -> Path:
        files = self._fetch(spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".deploy-", dir=target.parent))
        try:
            for name, data in files.items():
                why = unsafe_attachment_name(name)
                if why:
                    raise DocumentError(f"worker {spec.name!r}: attachment name {name!r} {why}")
                path = (staging / name).resolve()
                if not path.is_relative_to(staging.resolve()):
                    raise DocumentError(f"worker {spec.name!r}: attachment {name!r} escapes")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            os.chmod(staging, 0o755)  # noqa: S103 - code, readable like any installed program
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another deployer won the race with the same content.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info(
            "deployed worker %s rev %s (%d files) to %s", spec.name, spec.rev, len(files), target
        )
        return target

    def prune(self, name: str, keep: set[str]) -> None:
        """Remove the revision directories of worker ``name`` other than ``keep``."""
        folder = self.root / _segment(name)
        if not folder.is_dir():
            return
        kept = {_segment(rev) for rev in keep}
        for entry in folder.iterdir():
            if entry.name not in kept and not entry.name.startswith(".deploy-"):
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry)
