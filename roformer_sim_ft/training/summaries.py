"""TensorBoard scalars of a training run, written with ``tf.summary.write`` (no tensorboard package needed).

Tags: ``train/<term>`` for each loss term (``train/loss`` is the total),
``train/learning_rate``, ``train/steps_per_second`` at every logging step;
``eval/<task>`` and ``eval/average`` at every evaluation. Watch them with
``tensorboard --logdir OUT/logs``. The log folder's manifest (format ``logs``)
names the event files our runs wrote there: ``--overwrite`` deletes those
(:func:`clear_logs`) and nothing else.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from tensorflow.core.framework import summary_pb2

from ..fs import folders as outputs
from ..errors import RoformerSimError
from ..fs.atomic import error_text

LOGS_FORMAT = "logs"  # the manifest format of a TensorBoard folder we wrote into
# What tensorboard's own scalar summary writes (tf.summary.scalar needs the tensorboard package; this does not).
_SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
                                      data_class=summary_pb2.DATA_CLASS_SCALAR)


class ScalarLog:
    """An event-file writer in ``log_dir`` (created), or nothing when ``log_dir`` is None.

    Args:
        log_dir: folder of the event files; None: a log that writes nothing
            (the workers of a multi-worker job other than the chief, ``--no-tensorboard``).

    Example:
        >>> log = ScalarLog("runs/ft/logs")
        >>> log.scalars(10, {"loss": 0.69}, prefix="train")
        >>> log.close()
    """

    def __init__(self, log_dir: Optional[str | os.PathLike]) -> None:
        self.log_dir = None if log_dir is None else str(log_dir)
        self._writer = None
        self._before: Optional[set] = None  # the folder's entries before this writer: a new event file is ours
        if self.log_dir is not None:
            try:
                os.makedirs(self.log_dir, exist_ok=True)
                self._before = set(os.listdir(self.log_dir))
                self._writer = tf.summary.create_file_writer(self.log_dir)
            except (OSError, tf.errors.OpError) as e:
                raise RoformerSimError(f"{self.log_dir}: cannot write TensorBoard logs ({error_text(e)})") from None
            self._record()

    def _record(self) -> None:
        """Name the event files this writer created in the folder's manifest, once they exist
        (not in a folder whose manifest is another output's: there nothing is recorded)."""
        if self._before is None:
            return
        folder = Path(self.log_dir)
        new = {name for name in os.listdir(folder) if name not in self._before and ".tfevents." in name}
        if not new:
            return
        self._before = None
        format, ours = outputs.ownership(folder)
        unreadable = format is None and (folder / outputs.MANIFEST_NAME).exists()  # not ours to rewrite
        if format in (None, LOGS_FORMAT) and not unreadable:
            outputs.write_manifest(folder, LOGS_FORMAT, (ours - {outputs.MANIFEST_NAME}) | new)

    def scalars(self, step: int, values: Mapping[str, float], prefix: str) -> None:
        """Write ``prefix/name`` = value for each entry (non-numbers skipped) at ``step``."""
        if self._writer is None:
            return
        with self._writer.as_default(step=int(step)):
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tf.summary.write(f"{prefix}/{name}", tf.constant(float(value), tf.float32), metadata=_SCALAR)
        self._writer.flush()
        self._record()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def clear_logs(log_dir: str | os.PathLike) -> bool:
    """Delete the event files our runs wrote in ``log_dir`` (named by its manifest), then the folder
    if nothing else is left in it; files we did not write stay. False (nothing deleted) without our manifest."""
    folder = Path(log_dir)
    manifest = outputs.read_manifest(folder)
    if manifest is None or manifest.get("format") != LOGS_FORMAT:
        return False
    for name in manifest["files"]:
        path = folder / name
        if path.parent == folder and path.is_file() and not path.is_symlink():
            path.unlink()
    (folder / outputs.MANIFEST_NAME).unlink()
    if not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()
    return True


def evaluation_scalars(metric: float, record: Mapping) -> dict[str, float]:
    """Scalars of one evaluation: ``metric`` (the one the run maximises), each task's
    ``spearman_x100`` by task name, and every other number at the record's top level (``average``)."""
    values = {"metric": metric}
    for task, score in (record.get("tasks") or {}).items():
        if isinstance(score, Mapping) and isinstance(score.get("spearman_x100"), (int, float)):
            values[task] = score["spearman_x100"]
    for name, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = value
    return values


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``log_dir``: ``{tag: [(step, value), ...]}`` in file order."""
    found: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(os.listdir(log_dir)):
        if ".tfevents." not in name:
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(str(log_dir), name)):
            for value in event.summary.value:
                number = value.simple_value if value.HasField("simple_value") else float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((int(event.step), number))
    return found
