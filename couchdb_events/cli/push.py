"""``couchdb-events push``: deploy an event (a ``.json`` file) or a worker (a folder).

An event file holds one event document. Its ``_id`` is the document's ``_id`` or, when that is
missing, the file name without ``.json`` (``events/email_event.json`` -> ``email_event``).

A worker folder holds ``doc.json`` (the worker document; any ``_attachments`` in it are replaced)
and the worker's code. Every other regular file in the folder, recursively, becomes an attachment
named by its relative POSIX path (``lib/helper.js``), ``requirements.txt``, ``package.json`` and
``package-lock.json`` included (the service builds the worker's environment from them); hidden
files and folders (names starting with ``.``: ``.venv``) and the folders of installed
dependencies or compiled code (``node_modules``, ``venv``, ``__pycache__``) are left out, and the
summary says so. Symbolic links are followed only when they
point inside the folder. The worker's ``_id`` is ``doc.json``'s ``_id`` or else the folder name.

Either way the document is checked as the service would read it, then saved in one request
(attachments inline), replacing the current revision if there is one: fields and attachments
that are no longer in the file or folder are gone. A concurrent update is retried once.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

from .. import logs
from ..config import Config
from ..couch.store import Store
from ..errors import Conflict, DocumentError, EventsError, NotFound
from ..model.events import parse_event
from ..model.workers import parse_worker
from .common import config_from_args

WORKER_DOC = "doc.json"
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "venv"})
REPORTED_DIRS = SKIPPED_DIRS | {".venv"}  # hidden, but worth saying: the worker's own installs
CONTENT_TYPES = {".js": "application/javascript", ".mjs": "application/javascript"}
_CONTEXT = 60  # characters shown on each side of a JSON error in a long line


def load_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``DocumentError`` saying file:line:col when it is not one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        message = f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}\n"
        message += _excerpt(text, exc.lineno, exc.colno)
        comma = text[: exc.pos].rstrip()  # a trailing comma is the usual cause: point at it
        if text[exc.pos : exc.pos + 1] in ("}", "]") and comma.endswith(","):
            line = comma.count("\n") + 1
            col = len(comma) - (comma.rfind("\n") + 1)
            message += f"\n{path}:{line}:{col}: note: JSON allows no comma before {text[exc.pos]}"
            message += "\n" + _excerpt(text, line, col)
        raise DocumentError(message) from None
    except ValueError as exc:
        raise DocumentError(f"{path}: {exc}") from None
    if not isinstance(value, dict):
        raise DocumentError(f"{path}: the top level must be an object {{...}}, not {_kind(value)}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (CouchDB would refuse it)")


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _excerpt(text: str, lineno: int, colno: int) -> str:
    """The offending line and a caret under the column, like a compiler's message."""
    lines = text.split("\n")  # json counts lines by "\n" only
    line = lines[lineno - 1].rstrip("\r") if lineno <= len(lines) else ""
    start = max(0, colno - 1 - _CONTEXT)
    shown = line[start : colno - 1 + _CONTEXT]
    before = line[start : colno - 1]
    pad = "".join("\t" if c == "\t" else " " for c in before)
    prefix = "..." if start else ""
    suffix = "..." if colno - 1 + _CONTEXT < len(line) else ""
    return f"{prefix}{shown}{suffix}\n{' ' * len(prefix)}{pad}^"


def push_path(config: Config, path: Path) -> str:
    """Deploy one event file or worker folder; a one-line summary of what was saved."""
    if path.is_dir():
        doc = _worker_doc(config, path)
        rev = _save(config, config.workers_db, doc)
        count = len(doc["_attachments"])
        plural = "" if count == 1 else "s"
        line = f"worker {doc['_id']} -> {config.workers_db} (rev {rev}, {count} attachment{plural})"
        left_out = left_out_folders(path)
        return line + (f"\nleft out: {', '.join(left_out)}" if left_out else "")
    if path.suffix == ".json" and path.is_file():
        doc = _event_doc(path)
        rev = _save(config, config.events_db, doc)
        return f"event {doc['_id']} -> {config.events_db} (rev {rev})"
    if not path.exists():
        raise DocumentError(f"{path}: no such file or folder")
    raise DocumentError(f"{path}: not an event (a .json file) or a worker (a folder)")


def _checked_id(path: Path, doc: dict[str, Any], default: str) -> str:
    doc_id = doc.setdefault("_id", default)
    if not isinstance(doc_id, str) or not doc_id:
        raise DocumentError(f"{path}: _id must be a non-empty string, not {doc_id!r}")
    if doc_id.startswith("_"):
        raise DocumentError(f"{path}: _id {doc_id!r}: ids starting with '_' are CouchDB's own")
    doc.pop("_rev", None)  # the current revision is looked up when saving
    return doc_id


def _event_doc(path: Path) -> dict[str, Any]:
    doc = load_json(path)
    _checked_id(path, doc, path.stem)
    spec = parse_event(doc)
    if spec.error:
        raise DocumentError(f"{path}: {spec.error}")
    return doc


def _worker_doc(config: Config, folder: Path) -> dict[str, Any]:
    doc_file = folder / WORKER_DOC
    if not doc_file.is_file():
        raise DocumentError(f"{folder}: a worker folder needs a {WORKER_DOC} (the worker document)")
    doc = load_json(doc_file)
    _checked_id(doc_file, doc, folder.resolve().name)
    root = folder.resolve()
    files = {name: file for name, file in _files(folder, root, "", (root,)) if name != WORKER_DOC}
    stubs = {name: {"content_type": _content_type(name), "stub": True} for name in files}
    spec = parse_worker({**doc, "_attachments": stubs}, config)
    if spec.error:
        raise DocumentError(f"{folder}: {spec.error}")
    attachments = {}
    for name, file in files.items():
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DocumentError(f"{file}: cannot read: {exc.strerror or exc}") from None
        attachments[name] = {
            "content_type": _content_type(name),
            "data": base64.b64encode(data).decode("ascii"),
        }
    doc["_attachments"] = attachments
    return doc


def left_out_folders(folder: Path) -> list[str]:
    """The folders of installed dependencies or compiled code under ``folder`` that ``push``
    does not send (``node_modules/``, ``.venv/``, ``venv/``, ``__pycache__/``)."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(p.startswith(".") or p in SKIPPED_DIRS for p in rel.parts[:-1]):
            continue  # inside a folder already left out
        if path.is_dir() and path.name in REPORTED_DIRS:
            out.append(rel.as_posix() + "/")
    return out


def _files(
    folder: Path, root: Path, prefix: str, walking: tuple[Path, ...]
) -> list[tuple[str, Path]]:
    """(attachment name, file) for every file under ``folder``, in name order."""
    out: list[tuple[str, Path]] = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise DocumentError(f"{folder}: cannot list: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.name.startswith(".") or entry.name in SKIPPED_DIRS:
            continue
        name = prefix + entry.name
        try:
            real = entry.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a loop of links (before Python 3.13)
            raise DocumentError(f"{entry}: a symbolic link loop") from None
        if entry.is_symlink() and not real.is_relative_to(root):
            raise DocumentError(f"{entry}: a symbolic link to {real}, outside the worker folder")
        if entry.is_dir():
            if real in walking:
                raise DocumentError(f"{entry}: a symbolic link loop")
            out += _files(entry, root, name + "/", (*walking, real))
        elif entry.is_file():
            out.append((name, entry))
        elif entry.is_symlink():
            raise DocumentError(f"{entry}: a broken symbolic link")
        else:
            raise DocumentError(f"{entry}: not a regular file")
    return out


def _content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _save(config: Config, db: str, doc: dict[str, Any]) -> str:
    """Create or replace ``doc`` in one PUT; its new rev. One retry after a conflict."""
    store = Store(config.couchdb_url, config.couchdb_timeout)
    try:
        return _put(store, db, doc)
    except Conflict:  # updated by someone else between our GET and PUT
        return _put(store, db, doc)


def _put(store: Store, db: str, doc: dict[str, Any]) -> str:
    body = dict(doc)
    with contextlib.suppress(NotFound):  # NotFound: a new document
        body["_rev"] = store.get(db, doc["_id"])["_rev"]
    return store.put(db, body)


def cmd_push(args: argparse.Namespace) -> int:
    logs.setup("warning")
    try:
        config = config_from_args(args)
        for path in args.paths:
            print(push_path(config, Path(path)))
    except EventsError as exc:
        print(f"couchdb-events push: {exc}", file=sys.stderr)
        return 1
    return 0
