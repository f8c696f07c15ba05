"""Reading a data file line by line: numbered lines, the bad-line policy, and the per-file report.

A bad line raises :class:`~roformer_sim_ft.errors.RoformerSimError` naming
``path:line``, or with ``skip_bad_lines`` is skipped and counted in the file's
:class:`FileReport`. Blank lines at the very end of a file are normal in a text
file and left out; a blank line before another line is a bad line. Pure Python.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, Optional

from ..errors import RoformerSimError

MAX_REPORTED_ERRORS = 20


@dataclass
class FileReport:
    """What reading one file gave: lines kept, bad lines skipped, unlabelled NLI lines skipped."""

    path: str
    kept: int = 0
    bad: int = 0
    unlabeled: int = 0  # NLI gold_label outside the three classes (e.g. '-'): skipped by design
    errors: list[str] = field(default_factory=list)  # the first MAX_REPORTED_ERRORS bad-line messages

    def summary(self) -> str:
        """One line for the CLI, e.g. ``a.data: 100 kept, 2 bad lines skipped``."""
        parts = [f"{self.kept} kept"]
        if self.bad:
            parts.append(f"{self.bad} bad lines skipped")
        if self.unlabeled:
            parts.append(f"{self.unlabeled} without a gold label skipped")
        return f"{self.path}: " + ", ".join(parts)


class BadLine(Exception):
    """The current line is bad; carries what is wrong (the reader turns it into ``path:line: what``)."""


class LineReader:
    """Iterates a file's lines as (number, text), applying the bad-line policy."""

    def __init__(self, path: str | os.PathLike, skip_bad_lines: bool, strip_bom: bool = False):
        self.path = str(path)
        self.skip = skip_bad_lines
        self.strip_bom = strip_bom
        self.report = FileReport(self.path)

    def bad(self, lineno: int, what: str) -> None:
        msg = f"{self.path}:{lineno}: {what}"
        if not self.skip:
            raise RoformerSimError(msg)
        self.report.bad += 1
        if len(self.report.errors) < MAX_REPORTED_ERRORS:
            self.report.errors.append(msg)

    def lines(self) -> Iterator[tuple[int, str]]:
        """(number, text) of each line; blank lines at the very end of the file (normal in a text file)
        are left out, a blank line before another line is yielded (a bad line for every reader)."""
        blank: list[tuple[int, str]] = []
        for lineno, text, error in self._decoded():
            if text is not None and not text.strip():
                blank.append((lineno, text))
                continue
            yield from blank
            blank = []
            if text is None:
                self.bad(lineno, error)
                continue
            yield lineno, text

    def _decoded(self) -> Iterator[tuple[int, Optional[str], str]]:
        """(number, text without line end, '') of each line; (number, None, what is wrong) if it is not UTF-8."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise RoformerSimError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise RoformerSimError(f"{self.path}: is a directory, expected a file") from None
        except OSError as e:
            raise RoformerSimError(f"{self.path}: cannot read ({e.strerror})") from None
        with f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield lineno, None, f"invalid UTF-8 (byte {e.start})"
                    continue
                if text.endswith("\n"):
                    text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
                if lineno == 1 and self.strip_bom and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text, ""
