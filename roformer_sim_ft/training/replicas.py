"""Losses on the global batch when a training step runs on several replicas.

Under ``tf.distribute.MirroredStrategy`` each replica holds ``B/R`` rows of a
batch of ``B``. The training loop divides each replica's loss by ``R`` and sums
the gradients, so a loss is the global batch's when each replica returns
``R ×`` its own rows' share of the global mean. :func:`global_rows` gives a
replica every replica's rows (``all_gather``, whose gradient is summed over
replicas and sliced back), for losses that compare rows with each other;
:func:`replica_mean` turns this replica's sum into its share of the mean over
the global count. With one replica (or outside a replica context) both are the
plain computation.
"""
from __future__ import annotations

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf  # noqa: E402


def _context():
    """The replica context when more than one replica is in sync, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def global_rows(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(the rows of every replica, in global batch order; the global index of this replica's first row)."""
    context = _context()
    if context is None:
        return x, tf.constant(0, tf.int32)
    everything = context.all_gather(x, axis=0)
    sizes = context.all_gather(tf.shape(x)[:1], axis=0)
    return everything, tf.reduce_sum(sizes[: context.replica_id_in_sync_group])


def replica_mean(local_sum: tf.Tensor, local_count: tf.Tensor) -> tf.Tensor:
    """``R × local_sum / global count``: summed over replicas and divided by R, the global mean.

    0 when the global count is 0 (as ``divide_no_nan``). The count carries no gradient.
    """
    local_count = tf.stop_gradient(tf.cast(local_count, tf.float32))
    context = _context()
    if context is None:
        return tf.math.divide_no_nan(local_sum, local_count)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
    return float(context.num_replicas_in_sync) * tf.math.divide_no_nan(local_sum, total)
