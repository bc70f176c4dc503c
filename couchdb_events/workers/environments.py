"""Workers with dependencies: an environment built from a revision's ``requirements.txt``
(python types) or ``package.json`` and ``package-lock.json`` (node types).

An environment lives in ``<work_dir>/envs/<kind>-<hash>/``, the hash over the dependency files'
bytes and the interpreter's version: every revision and worker with the same content shares it,
and a restarted daemon finds it again. Its ``ready`` marker is written last; a directory
without one is half built and is built again. One build per hash at a time: concurrent starts
await the same build. Python: a virtualenv, whose interpreter then runs the worker. Node: an
``npm ci`` (``npm install`` without a lock), dev dependencies left out, and a ``node_modules``
link in the revision's directory so ``require()`` finds it. Environments no current revision
used for ``MAX_AGE`` are removed by ``sweep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import logs
from ..config import Config
from ..model.workers import WorkerSpec
from .building import BuildError, build_environment, directory_size, fresh_directory, run_tool

log = logs.get("environments")

READY = "ready"  # written last, with the build's time and size
USED = "used"  # touched whenever a process starts with the environment
MAX_AGE = 24 * 3600.0  # seconds an environment no current revision uses is kept
SWEEP_EVERY = 4 * 3600.0  # seconds between sweeps
VERSION_TIMEOUT = 60.0  # seconds ``python3 --version`` may take, at least (a slow shim)
PYTHON_FILES = ("requirements.txt",)
NODE_FILES = ("package.json", "package-lock.json")


@dataclass
class Environment:
    kind: str  # python or node
    hash: str
    path: Path
    state: str = "building"  # building, ready, failed
    build_seconds: float | None = None
    size_bytes: int | None = None
    error: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hash": self.hash[:12],
            "state": self.state,
            "build_seconds": self.build_seconds,
            "size_bytes": self.size_bytes,
            "error": self.error,
        }


def kind_of(spec: WorkerSpec) -> str | None:
    """``python``, ``node`` or None: which environment ``spec``'s attachments ask for."""
    if not spec.argv:
        return None
    program = Path(spec.argv[0]).name
    if program.startswith("python") and "requirements.txt" in spec.attachments:
        return "python"
    if program in ("node", "nodejs") and "package.json" in spec.attachments:
        return "node"
    return None


class Environments:
    """The environments under ``<work_dir>/envs``, built on demand for worker revisions."""

    def __init__(self, config: Config, base_env: Mapping[str, str]) -> None:
        self.root = config.work_dir / "envs"
        self.cache_dir = config.build_cache_dir or config.work_dir / "cache"  # set by Config
        self.timeout = config.build_timeout
        self.pip_args = tuple(config.pip_args)
        self.npm_args = tuple(config.npm_args)
        self._base = dict(base_env)
        self._builds: dict[str, asyncio.Future[Environment]] = {}
        self._known: dict[str, Environment] = {}  # by hash
        self._current: dict[str, str] = {}  # worker name -> hash of its latest revision
        self._versions: dict[str, str] = {}  # interpreter -> its --version
        self.builds = 0  # builds started by this daemon (for tests and the log)
        self._swept = 0.0

    def describe(self, spec: WorkerSpec) -> dict[str, Any] | None:
        """The status of ``spec``'s worker's environment, or None when it needs none (or none
        was asked for yet)."""
        env_hash = self._current.get(spec.name)
        if kind_of(spec) is None or env_hash is None:
            return None
        env = self._known.get(env_hash)
        return env.status() if env is not None else None

    async def ensure(self, spec: WorkerSpec, cwd: Path) -> WorkerSpec:
        """``spec`` as its processes run with their environment, built first if needed (its
        revision's code is in ``cwd``); ``BuildError`` when the build failed."""
        kind = kind_of(spec)
        if kind is None:
            return spec
        files = {
            name: (cwd / name).read_bytes()
            for name in (PYTHON_FILES if kind == "python" else NODE_FILES)
            if name in spec.attachments
        }
        interpreter = self._which(spec.argv[0])
        version = await self._version(interpreter)
        digest = hashlib.sha256(f"{kind}\0{version}\0".encode())
        for name, data in sorted(files.items()):
            digest.update(f"{name}\0{len(data)}\0".encode() + data)
        env_hash = digest.hexdigest()
        self._current[spec.name] = env_hash
        env = await self._get(kind, env_hash, interpreter, files)
        with contextlib.suppress(OSError):
            (env.path / USED).touch()
        if kind == "python":
            return replace(spec, argv=(str(env.path / "bin" / "python"), *spec.argv[1:]))
        link, target = cwd / "node_modules", env.path / "node_modules"
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()  # an environment of an earlier interpreter, perhaps removed
        if not link.exists() and not link.is_symlink():
            with contextlib.suppress(FileExistsError):
                link.symlink_to(target, target_is_directory=True)
        return spec

    async def _get(
        self, kind: str, env_hash: str, interpreter: str, files: Mapping[str, bytes]
    ) -> Environment:
        known = self._known.get(env_hash)
        if known is not None and known.state == "ready" and (known.path / READY).is_file():
            return known
        build = self._builds.get(env_hash)
        if build is None:
            loop = asyncio.get_running_loop()
            build = loop.create_task(self._build(kind, env_hash, interpreter, files))
            self._builds[env_hash] = build
            build.add_done_callback(lambda _f: self._builds.pop(env_hash, None))
        try:
            return await asyncio.shield(build)
        except asyncio.CancelledError:
            if build.cancelled():  # ``close``: the daemon stops
                raise BuildError("the build was stopped: couchdb-events is stopping") from None
            raise

    async def close(self) -> None:
        """Stop the builds under way, their tools' process groups killed."""
        builds = list(self._builds.values())
        for build in builds:
            build.cancel()
        await asyncio.gather(*builds, return_exceptions=True)

    async def _build(
        self, kind: str, env_hash: str, interpreter: str, files: Mapping[str, bytes]
    ) -> Environment:
        path = self.root / f"{kind}-{env_hash}"
        env = Environment(kind, env_hash, path)
        ready = _read_ready(path)
        if ready is not None:  # built by an earlier daemon
            env.state, env.build_seconds, env.size_bytes = "ready", *ready
            self._known[env_hash] = env
            return env
        self._known[env_hash] = env
        self.builds += 1
        started = time.monotonic()
        try:
            await asyncio.to_thread(fresh_directory, path, files)
            tool_env = build_environment(self._base, self.cache_dir, kind)
            steps = self._steps(kind, interpreter, path)
            names = ", ".join(step for step, _argv, _cwd in steps)
            log.info("building %s environment %s (%s)", kind, path.name, names)
            deadline = asyncio.get_running_loop().time() + self.timeout  # for the whole build
            for step, argv, cwd in steps:
                await run_tool(argv, cwd, tool_env, self.timeout, step, deadline)
            env.build_seconds = round(time.monotonic() - started, 3)
            env.size_bytes = await asyncio.to_thread(directory_size, path)
            marker = {"build_seconds": env.build_seconds, "size_bytes": env.size_bytes}
            (path / READY).write_text(json.dumps(marker))
        except BuildError as exc:
            env.state, env.error = "failed", f"{kind} environment {path.name[:19]}: {exc}"
            log.warning("%s", env.error)
            raise BuildError(env.error) from None
        except OSError as exc:
            env.state, env.error = "failed", f"{kind} environment {path.name[:19]}: {exc}"
            raise BuildError(env.error) from None
        env.state = "ready"
        log.info("built %s in %.1f s (%d bytes)", path.name, env.build_seconds, env.size_bytes)
        return env

    def _steps(
        self, kind: str, interpreter: str, path: Path
    ) -> list[tuple[str, tuple[str, ...], Path]]:
        if kind == "python":
            requirements = path / "requirements.txt"
            pip: tuple[str, ...] = (str(path / "bin" / "python"), "-m", "pip", "install")
            pip += ("--disable-pip-version-check", "-r", str(requirements))
            pip += self.pip_args
            venv = (interpreter, "-m", "venv", str(path))
            return [("python -m venv", venv, self.root), ("pip install", pip, path)]
        npm = str(Path(interpreter).with_name("npm"))
        if not os.access(npm, os.X_OK):
            npm = shutil.which("npm", path=self._base.get("PATH")) or "npm"
        if (path / "package-lock.json").is_file():
            return [("npm ci", (npm, "ci", "--omit=dev", *self.npm_args), path)]
        install = (npm, "install", "--omit=dev", "--no-package-lock", *self.npm_args)
        return [("npm install", install, path)]

    def _which(self, program: str) -> str:
        found = shutil.which(program, path=self._base.get("PATH"))
        if found is None:
            raise BuildError(f"interpreter {program!r} was not found on PATH")
        return found

    async def _version(self, interpreter: str) -> str:
        version = self._versions.get(interpreter)
        if version is None:
            argv = (interpreter, "--version")
            env = build_environment(self._base, self.cache_dir, "python")
            timeout = max(self.timeout, VERSION_TIMEOUT)
            lines = await run_tool(argv, Path("/"), env, timeout, f"{interpreter} --version")
            version = "\n".join(lines)
            self._versions[interpreter] = version
        return version

    # -- garbage --------------------------------------------------------------------------
    async def maybe_sweep(self) -> None:
        """``sweep`` when the last one is ``SWEEP_EVERY`` ago (the first call sweeps)."""
        now = time.monotonic()
        if self._swept and now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        await asyncio.to_thread(self.sweep)

    def sweep(self, max_age: float = MAX_AGE) -> list[str]:
        """Remove environments no current revision used for ``max_age`` seconds; their names."""
        if not self.root.is_dir():
            return []
        keep = set(self._current.values()) | set(self._builds)
        removed = []
        for entry in self.root.iterdir():
            env_hash = entry.name.partition("-")[2]
            if env_hash in keep:
                continue
            stamps = [p.stat().st_mtime for p in (entry / USED, entry / READY, entry) if p.exists()]
            if time.time() - max(stamps, default=0) > max_age:
                shutil.rmtree(entry, ignore_errors=True)
                self._known.pop(env_hash, None)
                removed.append(entry.name)
                log.info("removed environment %s, unused for a day", entry.name)
        return removed


def _read_ready(path: Path) -> tuple[float | None, int | None] | None:
    try:
        marker = json.loads((path / READY).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    return marker.get("build_seconds"), marker.get("size_bytes")
