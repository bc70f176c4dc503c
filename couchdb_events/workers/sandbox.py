"""The command line that fences a worker in with bubblewrap (``bwrap``): a pure function of the
worker's ``Sandbox``, its folders and the account it runs as.

Inside: the host's root file system, read-only; a fresh ``/dev``, a ``/proc`` of its own PID
namespace (no other process, so no other process's environment, is visible) and a private,
writable ``/tmp``. The whole ``work_dir`` is an empty tmpfs but for the worker's revision
directory (read-only) and its data directory (writable unless ``writable`` leaves it out), at
their usual paths. The daemon's config files are hidden (``/dev/null`` over each) with the
folders holding them (an empty tmpfs), unless such a folder is a top-level one like ``/etc``;
so are the ``sandbox_hide`` paths. What the worker needs from a hidden place (its interpreter's
prefix, the helpers on ``PYTHONPATH``) is bound back read-only. No network unless
``network``; its own PID, IPC and UTS namespaces; no capabilities.

When the daemon runs as root, bwrap runs as root (it can reach every bound folder) and
``setpriv`` inside it switches to the worker's account before the interpreter starts; bwrap
keeps only the capabilities setpriv needs for that, and setpriv drops them with the root uid
(and empties the bounding set), so the worker runs with none.

The bwrap process is the worker's process as the pool sees it: it stays in the process group
the pool started (no ``--new-session``), so killing that group kills the tree inside;
``--die-with-parent`` takes the namespace down with bwrap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..model.sandbox import Sandbox


@dataclass(frozen=True)
class Account:
    """The user a worker runs as (when the daemon runs as root)."""

    name: str
    uid: int
    gid: int


def _under(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def hidden(box: Sandbox) -> tuple[list[Path], list[Path]]:
    """The folders to cover with an empty tmpfs and the files to cover with /dev/null."""
    folders: set[Path] = set()
    files: set[Path] = set()
    for path in box.config_files:
        if path.is_file():
            files.add(path)
        if len(path.parent.parts) > 2:  # not /, not /etc: those stay, the file alone is hidden
            folders.add(path.parent)
    for path in box.hide:
        if path.is_dir():
            folders.add(path)
        elif path.exists():
            files.add(path)
    folders = {f for f in folders if f.is_dir() and len(f.parts) > 1}
    folders = {f for f in folders if not _under(f, box.work_dir)}  # hidden with it anyway
    ordered = sorted(folders, key=lambda f: (len(f.parts), str(f)))  # parents first
    return ordered, sorted(files)


def bwrap_argv(
    bwrap: str,
    box: Sandbox,
    code_dir: Path,
    data_dir: Path,
    keep: Iterable[Path] = (),
    account: Account | None = None,
    setpriv: str = "setpriv",
) -> list[str]:
    """bwrap and its options, up to the ``--`` after which the worker's command line goes.

    ``keep``: folders bound back read-only if a hidden folder (or ``work_dir``) covers them.
    ``account``: the user to switch to (the daemon runs as root), with ``setpriv``.
    """
    folders, files = hidden(box)
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    argv += ["--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108 - a private one
    for folder in folders:
        argv += ["--tmpfs", str(folder)]
    argv += ["--tmpfs", str(box.work_dir)]
    covers = [Path("/tmp"), *folders, box.work_dir]  # noqa: S108 - no longer the host's
    mine = (code_dir, data_dir)
    kept = [
        path
        for path in sorted(set(keep))
        if any(_under(path, c) for c in covers) and not any(_under(path, m) for m in mine)
    ]
    made: set[Path] = set()

    def bind(how: str, path: Path) -> None:
        # bwrap would make the folders leading to a mount point on a tmpfs private (0700):
        # made here first, they are 0755, so that the worker's account can pass them.
        for parent in reversed(path.parents):
            if parent not in made and any(parent != c and _under(parent, c) for c in covers):
                argv.extend(["--dir", str(parent)])
                made.add(parent)
        argv.extend([how, str(path), str(path)])

    for path in kept:
        bind("--ro-bind", path)
    for folder in folders:  # a hidden folder inside one bound back stays hidden
        if any(_under(folder, path) for path in kept):
            argv += ["--tmpfs", str(folder)]
    bind("--ro-bind", code_dir)
    bind("--bind" if "data" in box.writable else "--ro-bind", data_dir)
    for path in files:
        if not any(_under(path, folder) for folder in folders):  # else gone with its folder
            argv += ["--ro-bind", "/dev/null", str(path)]
    argv += ["--chdir", str(code_dir)]
    if not box.network:
        argv.append("--unshare-net")
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    argv += ["--cap-drop", "ALL"]
    if account is None:
        return [*argv, "--"]
    for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
        argv += ["--cap-add", cap]
    argv += ["--", setpriv, f"--reuid={account.uid}", f"--regid={account.gid}"]
    argv += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return argv


def keep_paths(interpreter: Path | None, search_paths: Iterable[str]) -> list[Path]:
    """What the worker's command needs that a hidden folder might cover: the interpreter's
    prefix (a virtualenv's folder, say) and the folders on PYTHONPATH / NODE_PATH."""
    found: list[Path] = []
    if interpreter is not None:
        for path in (interpreter, interpreter.resolve()):
            bin_dir = path.parent
            found.append(bin_dir.parent if bin_dir.name == "bin" else bin_dir)
    for entry in search_paths:
        for part in entry.split(":"):
            if part and Path(part).is_absolute() and Path(part).is_dir():
                found.append(Path(part))
    return [p for p in found if len(p.parts) > 1]
