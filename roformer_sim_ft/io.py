"""Atomic file writing: everything the package writes goes to a temporary name first."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_lines(path: str | os.PathLike, missing: str = "file missing") -> list[str]:
    """Lines of a UTF-8 text file without line ends; one-line errors for a missing or non-UTF-8 file."""
    from .errors import RoformerSimError

    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f]
    except FileNotFoundError:
        raise RoformerSimError(f"{missing}: {path}") from None
    except UnicodeDecodeError as e:
        raise RoformerSimError(f"{path}: invalid UTF-8 ({e})") from None
