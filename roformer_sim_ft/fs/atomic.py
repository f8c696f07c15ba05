"""Atomic file writing: everything the package writes goes to a temporary name first."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import RoformerSimError


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (tempfile makes 0600/0700)."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~umask())


def real_path(path: str | os.PathLike) -> Path:
    """``path`` with its symlinks followed, where one is involved (else ``path`` as given, so messages
    keep naming it): a file or folder is then replaced beside its real target and the symlink keeps
    pointing at the new one."""
    path = Path(path)
    real = os.path.realpath(path)
    return path if real == os.path.abspath(path) else Path(real)


_LONG_PATH = re.compile(r"/[^\s;:,'\"()]{40,}")


def error_text(e: BaseException, limit: int = 200) -> str:
    """The first line of ``e``'s message within ``limit`` characters, its reason kept: long paths are
    shortened to ``…/`` and their last part first, then the middle is cut (a reason comes last)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0]
    if len(line) > limit:
        line = _LONG_PATH.sub(lambda m: "…/" + m.group(0).rsplit("/", 1)[-1][-40:], line)
    if len(line) > limit:
        head = limit // 3
        line = line[:head] + "…" + line[len(line) - (limit - head - 1):]
    return line


def os_error(path: str | os.PathLike, e: OSError) -> RoformerSimError:
    """A one-line error naming ``path`` for a failed file operation."""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EROFS: "read-only file system"}.get(e.errno, e.strerror or str(e))
    return RoformerSimError(f"{path}: cannot write ({reason}); nothing half-written was left")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A symlinked ``path`` is written through: the file it points to is replaced.
    The file gets the mode the umask gives; a failed write (full disk, no
    permission) raises :class:`RoformerSimError` naming ``path`` and leaves nothing.
    """
    path = real_path(path)
    if path.is_dir():
        raise RoformerSimError(f"{path}: is a folder; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise RoformerSimError(f"{path}: a parent of this path is a file, not a folder") from None
    except OSError as e:
        raise os_error(path, e) from None
    os.close(fd)
    try:
        yield Path(tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_lines(path: str | os.PathLike, missing: str = "file missing") -> list[str]:
    """Lines of a UTF-8 text file without line ends; one-line errors for a missing or non-UTF-8 file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f]
    except FileNotFoundError:
        raise RoformerSimError(f"{missing}: {path}") from None
    except IsADirectoryError:
        raise RoformerSimError(f"{path}: is a folder, expected a text file") from None
    except PermissionError:
        raise RoformerSimError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise RoformerSimError(f"{path}: invalid UTF-8 ({e})") from None
