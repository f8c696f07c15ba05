"""Content digests of files: one streaming sha256 for the overlap check and the data/checkpoint fingerprints."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Optional

from ..errors import RoformerSimError


def hash_file(path: str | os.PathLike, digest: Optional["hashlib._Hash"] = None) -> "hashlib._Hash":
    """``digest`` (a new sha256 if none) updated with the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> str:
    """Short sha256 over file names and contents (folders expanded, order-independent)."""
    entries: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            entries += [(f.relative_to(p).as_posix(), f) for f in p.rglob("*") if f.is_file()]
        elif p.is_file():
            entries.append((p.name, p))
        else:
            raise RoformerSimError(f"cannot fingerprint {p}: no such file or folder")
    digest = hashlib.sha256()
    for name, path in sorted(entries):
        digest.update(name.encode("utf-8") + b"\0")
        hash_file(path, digest)
        digest.update(b"\0")
    return digest.hexdigest()[:16]
