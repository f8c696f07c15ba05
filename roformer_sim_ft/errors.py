"""The one error type users see.

Every public function that reads user input (files, checkpoints, arguments)
raises :class:`RoformerSimError` with a one-line message naming the file and
line, or the variable and both shapes. The CLI prints that line and exits 2.
"""


class RoformerSimError(Exception):
    """Bad input: a malformed data line, a missing or mismatched checkpoint file, a bad argument."""


class NoDataFiles(RoformerSimError):
    """A data folder holds none of the files looked for (callers may offer a hint, e.g. another split)."""


class DamagedState(RoformerSimError):
    """A saved training state whose content cannot be used as written (malformed, not merely other settings)."""


class NothingToDo(RoformerSimError):
    """``resume`` of a run that is already finished at the steps asked for."""
