"""Output folders we own: a manifest naming our files, whole-folder swaps, a lock on a training folder.

Every folder the package writes (checkpoints, exports, training outputs, the
pipeline's and the demo's) holds :data:`MANIFEST_NAME`, a small JSON file
naming the format, the files we wrote and the package version. A folder is
replaced or written into only if it is absent, empty, or carries our manifest
for a compatible format; a file we did not write is never replaced or deleted.

A folder is replaced whole (:func:`swap_in`): the new one is written and
verified beside the target, entries of the old folder that the new one does
not replace (a training folder's states, a user's notes) are hard-linked into
it, and the two folders are exchanged in one ``renameat2(RENAME_EXCHANGE)``
where the system has it (else two renames, the old folder kept until the new
one is in place). A kill at any point leaves the old or the new folder, each
complete. A folder holding an earlier output is replaced only when the caller
says so (:func:`check_replace`), and never while it holds an input of the same
command (:func:`check_not_input`). A symlinked target is followed
(:func:`~roformer_sim_ft.fs.atomic.real_path`): the swap happens beside the real
folder and the symlink keeps pointing at it. Plain standard library: no TensorFlow.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import RoformerSimError
from .atomic import follow_umask, os_error, real_path, umask, write_text_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME = ".roformer-sim-ft.json"
LOCK_NAME = ".roformer-sim-ft.lock"
# Files of a legacy training folder (written before manifests existed) that are ours.
_LEGACY_TRAINING = ("run.json", "training_state", "bert_config.json", "vocab.txt", "checkpoint",
                    "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001")


# ------------------------------------------------------------- folders
def temp_dir_beside(target: str | os.PathLike, tag: str = "tmp") -> Path:
    """A new folder ``.NAME.TAG-xxxx`` beside ``target`` (same file system, so it can be renamed onto it);
    beside the real folder of a symlinked ``target``."""
    target = real_path(target)
    ensure_folder(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    except OSError as e:
        raise os_error(target.parent, e) from None
    follow_umask(tmp)
    return tmp


def ensure_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) as a folder; one line if it or a parent is a file."""
    path = Path(path)
    check_not_under_file(path)
    if path.exists() and not path.is_dir():
        raise RoformerSimError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(path, e) from None
    return path


def check_not_under_file(path: str | os.PathLike) -> None:
    """One line if a parent of ``path`` is a file (so nothing can be created there)."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RoformerSimError(f"{path}: {parent} is a file, not a folder")
            return


def check_file_target(path: str | os.PathLike, what: str = "output file") -> None:
    """One line, before any work, if ``path`` cannot become a file: a folder, or under a file."""
    path = Path(path)
    if path.is_dir():
        raise RoformerSimError(f"{path}: is a folder; the {what} must be a file path")
    check_not_under_file(path)


# ------------------------------------------------------------- manifest
def plain_name(name: object) -> bool:
    """Whether ``name`` names an entry directly inside a folder: a non-empty string, no path separator,
    not ``.`` or ``..``, no NUL (so ``folder / name`` is always an entry of ``folder`` itself)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and not any(sep and sep in name for sep in ("/", os.sep, os.altsep)))


_WARNED: set[str] = set()  # manifests already reported as listing a name outside their folder


def read_manifest(folder: str | os.PathLike) -> Optional[dict]:
    """Our manifest of ``folder``, or None (absent, unreadable, or listing anything but plain names:
    then the folder is not ours). A manifest is data: its ``files`` are only ever names inside ``folder``."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "roformer-sim-ft" or not isinstance(data.get("files"), list):
        return None
    bad = [name for name in data["files"] if not plain_name(name)]
    if bad:
        if str(path) not in _WARNED:  # once: several checks of one folder read its manifest
            _WARNED.add(str(path))
            log.warning("%s: lists %r, not a name inside the folder; the folder is not taken as an output of "
                        "roformer-sim-ft", path, bad[0])
        return None
    return data


def write_manifest(folder: str | os.PathLike, format: str, files: Iterable[str]) -> None:
    """Write the manifest of ``folder`` (atomically): ``format`` and the names of the entries we wrote."""
    from .. import __version__

    doc = {"written_by": "roformer-sim-ft", "version": __version__, "format": format, "files": sorted(set(files))}
    write_text_atomic(Path(folder) / MANIFEST_NAME, json.dumps(doc, indent=2) + "\n")


def _is_legacy_training(folder: Path) -> bool:
    states = folder / "training_state"
    return states.is_dir() and any((p / "state.json").exists() for p in states.glob("step-*"))


def ownership(folder: str | os.PathLike) -> tuple[Optional[str], set[str]]:
    """(format, names of our entries) of ``folder``; (None, empty) if it is not ours.

    Training folders written before manifests existed are recognised by their
    ``training_state/step-N/state.json``.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is not None:
        return str(manifest.get("format")), set(manifest["files"]) | {MANIFEST_NAME}
    if _is_legacy_training(folder):
        return "training", set(_LEGACY_TRAINING) | {LOCK_NAME}
    return None, set()


def check_folder_target(path: str | os.PathLike, formats: Sequence[str], what: str) -> Optional[str]:
    """Refuse ``path`` unless it is absent, an empty folder, or our output in one of ``formats``.

    Returns the format of our existing output (None if absent or empty).
    """
    path = Path(path)
    check_not_under_file(path)
    if not path.exists():
        return None
    if not path.is_dir():
        raise RoformerSimError(f"{path}: exists and is not a folder")
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)  # a lock alone: a run starting
    if not entries:
        return None
    format, _ = ownership(path)
    if format is None:
        shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
        raise RoformerSimError(
            f"{path}: folder is not empty and not an earlier output of roformer-sim-ft ({shown}); "
            f"not writing the {what} into it: choose an empty or new folder"
        )
    if format not in formats:
        raise RoformerSimError(f"{path}: holds a roformer-sim-ft {format} output, not a {what}; not replacing it")
    return format


def holds_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is our output and still holds some of the entries its manifest names."""
    path = Path(path)
    format, ours = ownership(path) if path.is_dir() else (None, set())
    return format is not None and any(os.path.lexists(path / name) for name in ours - {MANIFEST_NAME, LOCK_NAME})


def check_replace(path: str | os.PathLike, overwrite: bool) -> None:
    """One line unless ``overwrite``, if ``path`` holds an earlier output of ours (weights a command would replace)."""
    if not overwrite and holds_output(path):
        format, _ = ownership(path)
        raise RoformerSimError(f"{path}: holds a roformer-sim-ft {format} output; not replacing it without "
                               "--overwrite (overwrite=True): pass it, or choose another folder")


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or inside it, symlinks followed."""
    inner, outer = os.path.realpath(path), os.path.realpath(folder)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def check_not_input(out: str | os.PathLike, inputs: Mapping[str, Optional[str | os.PathLike]]) -> None:
    """One line, before anything is written, if an input (``{flag: path}``) is inside the output folder ``out``."""
    for flag, path in inputs.items():
        if path is None or not is_inside(path, out):
            continue
        if os.path.realpath(path) == os.path.realpath(out):
            raise RoformerSimError(f"{flag} {path} is {out}, the folder this command replaces: choose another --out")
        raise RoformerSimError(f"{flag} {path} is inside {out}, which this command replaces: "
                               f"choose another --out, or move {path} out of it first")


# ------------------------------------------------------------- swap
def _link_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` sharing its files (hard links; copies where links fail)."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        shutil.copymode(src, dst)
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
    else:
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.copy2(src, dst)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(new: Path, target: Path, format: str, files: Iterable[str]) -> Path:
    """Put the finished folder ``new`` (holding ``files``) in place of ``target``.

    ``target`` must have passed :func:`check_folder_target`. Entries of an
    existing ``target`` that ``new`` lacks are carried over (hard links); an
    entry ``new`` would replace must be ours. The old folder is deleted only
    after the new one is in place. ``new`` gets a manifest: ``format`` (a
    training folder stays one) and ``files`` plus the old folder's own files.
    A symlinked ``target`` is followed: its real folder is replaced, the symlink kept.
    """
    new, target = Path(new), real_path(target)
    files = set(files)
    old_format, ours = ownership(target) if target.is_dir() else (None, set())
    if old_format == "training":
        format = "training"
    write_manifest(new, format, files | (ours - {MANIFEST_NAME}))
    if not target.exists():
        os.rename(new, target)
        return target
    for entry in target.iterdir():
        if os.path.lexists(new / entry.name):
            if entry.name not in ours:
                raise RoformerSimError(f"{entry}: not written by roformer-sim-ft; not replacing it")
        else:
            _link_tree(entry, new / entry.name)
    if _exchange(new, target):
        shutil.rmtree(new)  # now the old folder: our replaced files and second links of the carried ones
        return target
    aside = temp_dir_beside(target, "old")
    os.rename(target, aside / target.name)
    os.rename(new, target)
    shutil.rmtree(aside)
    return target


def recover(target: str | os.PathLike) -> None:
    """After a kill between the two renames of a swap without renameat2, put the old folder back."""
    target = real_path(target)
    if target.exists():
        return
    aside = sorted(target.parent.glob(f".{target.name}.old-*/{target.name}")) if target.parent.is_dir() else []
    if len(aside) == 1 and read_manifest(aside[0]) is not None:
        os.rename(aside[0], target)
        shutil.rmtree(aside[0].parent, ignore_errors=True)
        print(f"note: restored {target} from {aside[0]} (an interrupted replacement)", file=sys.stderr)


# ------------------------------------------------------------- lock
_HELD: set[str] = set()  # folders whose FolderLock this process holds


def holds_lock(folder: str | os.PathLike) -> bool:
    """Whether this process holds the :class:`FolderLock` of ``folder`` (i.e. is training into it)."""
    return os.path.realpath(folder) in _HELD

class FolderLock:
    """An exclusive lock on an output folder (``flock`` on ``LOCK_NAME``, which holds the holder's pid).

    A second process gets one line naming the holder's pid. A lock left by a
    process that died (SIGKILL) is taken over with a note.

    Example:
        >>> with FolderLock("runs/ft"):
        ...     pass
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: Optional[int] = None

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        except OSError as e:
            raise os_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RoformerSimError(
                f"{self.path.parent}: another training (pid {holder}) is writing into this folder; "
                "wait for it or choose another --out"
            ) from None
        stale = os.read(fd, 64).decode("ascii", "replace").strip()
        if stale and stale != str(os.getpid()):
            print(f"note: {self.path.parent}: took over the lock of pid {stale}, which is no longer running",
                  file=sys.stderr)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        _HELD.add(os.path.realpath(self.path.parent))
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _HELD.discard(os.path.realpath(self.path.parent))
            os.ftruncate(self._fd, 0)  # empty: released cleanly (a pid left behind marks a dead holder)
            os.close(self._fd)
            self._fd = None
