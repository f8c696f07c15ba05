"""Where a training step runs: one device, several on one machine, or several machines.

:func:`make_strategy` picks TensorFlow's own engine: with a ``TF_CONFIG``
naming more than one task, ``tf.distribute.MultiWorkerMirroredStrategy``
(start-up and collectives with a timeout, so a missing, dead or stuck worker
stops the job with an error instead of a hang); otherwise ``MirroredStrategy`` over the local
devices, or the default strategy for one. :func:`distributed_batches` gives
every replica its rows of each global batch: replica ``r`` of ``R`` takes rows
``[r * B/R, (r + 1) * B/R)`` of batch ``k`` (each worker computes batch ``k``
from the same files, seed and ``k``), so the replicas together see the same
batches as one device would. :func:`broadcast_from_chief` makes the workers
continue from the state the chief alone has read. docs/SCALING.md says how to
run it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from ..errors import RoformerSimError

ENV = "TF_CONFIG"
# Errors of a collective whose peer died, timed out or aborted: the job cannot go on.
COLLECTIVE_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                     tf.errors.AbortedError)


@dataclass(frozen=True)
class Role:
    """This process's place in the job: ``workers`` tasks in all, this one ``task`` (``type:index``).

    The chief, ``chief_task`` (``chief:0``, else ``worker:0``), alone writes
    what the user sees; a single-machine run is its own chief.
    """

    workers: int = 1
    task: str = "worker:0"
    chief_task: str = "worker:0"

    @property
    def chief(self) -> bool:
        return self.task == self.chief_task

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1


def role(env: Optional[Mapping[str, str]] = None) -> Role:
    """This process's :class:`Role` from ``TF_CONFIG`` (absent or one task: a single machine)."""
    text = (os.environ if env is None else env).get(ENV, "").strip()
    if not text:
        return Role()
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = str(task["type"]), int(task["index"])
        sizes = {name: len(addresses) for name, addresses in cluster.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RoformerSimError(
            f"{ENV} is not a cluster spec ({type(e).__name__}: {e}); expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}'
        ) from None
    _check_addresses(cluster)
    other = sorted(set(sizes) - {"chief", "worker"})
    if other:
        raise RoformerSimError(f"{ENV}: task types {', '.join(other)} are not used here; give only chief and worker tasks")
    if kind not in sizes or not 0 <= index < sizes[kind]:
        raise RoformerSimError(f"{ENV}: task {kind}:{index} is not in the cluster ({sizes})")
    if sizes.get("chief", 0) > 1:
        raise RoformerSimError(f"{ENV}: a cluster has at most one chief, got {sizes['chief']}")
    chief_task = "chief:0" if sizes.get("chief") else "worker:0"
    return Role(workers=sum(sizes.values()), task=f"{kind}:{index}", chief_task=chief_task)


def _check_addresses(cluster: Mapping) -> None:
    """One line unless every task type of ``cluster`` lists ``host:port`` strings (port 0 to 65535)."""
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list):
            raise RoformerSimError(f'{ENV}: cluster {kind!r} must be a list of "host:port" addresses, got {addresses!r}')
        for address in addresses:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise RoformerSimError(f'{ENV}: address {address!r} of cluster {kind!r} is not "host:port" '
                                       "(a port from 0 to 65535)")


def make_strategy(devices: Optional[int] = None, timeout: Optional[float] = None,
                  env: Optional[Mapping[str, str]] = None) -> tf.distribute.Strategy:
    """The strategy of this process: multi-worker under a ``TF_CONFIG`` of several tasks, else local.

    Multi-worker, call it before any other TensorFlow work of the process (the
    training loop does so first; later calls return the same strategy).
    Local: MirroredStrategy over ``devices`` devices (GPUs if any, else logical
    CPUs); the default strategy for one; ``None``: every visible GPU, or one
    device. Multi-worker: every worker uses its visible GPUs (or its CPU);
    the wait for the other workers at start-up and collectives (NCCL on GPUs,
    ring on CPUs) give up after ``timeout`` seconds.
    """
    if role(env).multi_worker:
        if devices is not None and devices > 1:
            raise RoformerSimError(
                f"devices={devices} with a multi-worker {ENV}: each worker uses all its visible GPUs "
                "(choose them with CUDA_VISIBLE_DEVICES)")
        return _multi_worker(timeout)
    gpus = tf.config.list_logical_devices("GPU")
    if devices is None:
        devices = len(gpus) or 1
    if devices <= 1:
        return tf.distribute.get_strategy()
    pool = gpus if gpus else tf.config.list_logical_devices("CPU")
    if len(pool) < devices:
        raise RoformerSimError(
            f"devices={devices} but only {len(pool)} {'GPU' if gpus else 'CPU'} device(s) are visible"
        )
    names = [d.name for d in pool[:devices]]
    cross = None if gpus else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(names, cross_device_ops=cross)


_MULTI_WORKER: dict = {}  # the process's one MultiWorkerMirroredStrategy (collectives are set up once)


def _multi_worker(timeout: Optional[float]) -> tf.distribute.Strategy:
    if "strategy" in _MULTI_WORKER:
        return _MULTI_WORKER["strategy"]
    kinds = tf.distribute.experimental.CommunicationImplementation
    gpus = tf.config.list_physical_devices("GPU")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=kinds.NCCL if gpus else kinds.RING, timeout_seconds=timeout or None)
    try:
        _join_within(timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as e:
        if "at program startup" not in str(e):
            raise
        raise RoformerSimError(
            f"multi-worker training ({ENV}) must set up TensorFlow's collectives before any other TensorFlow "
            "work in the process: call roformer_sim_ft.training.distribute.make_strategy() first") from None
    except COLLECTIVE_ERRORS as e:
        raise RoformerSimError(_not_joined(e, timeout)) from None
    _MULTI_WORKER["strategy"] = strategy
    return strategy


def _join_within(timeout: Optional[float]) -> None:
    """Make the start-up wait for the other workers end after ``timeout`` seconds.

    TensorFlow's own coordination set-up (what the strategy would configure)
    with two changes: a register timeout, and the register barrier, without
    which the leader (the chief, else worker 0) waits for a missing worker for
    ever. Left alone when the process configured coordination itself.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    cluster = TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(1000 * (timeout or 0)))
    if timeout:
        context.context().coordination_service.cluster_register_with_barrier = True


def _not_joined(error: Exception, timeout: Optional[float]) -> str:
    """One line for a start-up that gave up waiting for the other workers."""
    me = role()
    text = str(error)
    missing = sorted({f"{kind}:{index}" for kind, index in
                      re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text.split("timed out task names", 1)[-1])}
                     - {me.task}) if "timed out task names" in text else []
    waited = f"within {timeout:g} s" if timeout else "in time"
    if missing:
        what = f"{', '.join(missing)} did not join {waited}"
    else:
        what = f"could not reach the chief ({me.chief_task}) {waited}"
    return (f"multi-worker start-up stopped on {me.task}: {what}; start every worker of {ENV}'s cluster, "
            "check its host:port addresses, or raise --collective-timeout")


def distributed_batches(strategy: tf.distribute.Strategy, batches):
    """The ``batches.dataset()`` with each replica's rows of every global batch (see the module doc).

    ``batches.batch_size`` rows must split evenly over the replicas. One replica: the dataset itself.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batches.dataset()
    batch_size = batches.batch_size
    if batch_size % replicas:
        raise RoformerSimError(f"batch_size {batch_size} does not split evenly over {replicas} replicas")
    rows = batch_size // replicas

    def per_worker(context: tf.distribute.InputContext):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local * rows

        def split(batch):  # [B, ...] -> [local, rows, ...]: this worker's replicas, in replica order
            return {k: tf.reshape(v[first:first + local * rows], tf.concat([[local, rows], tf.shape(v)[1:]], 0))
                    for k, v in batch.items()}

        dataset = batches.dataset().map(split).unbatch() if local > 1 else batches.dataset().map(
            lambda b: {k: v[first:first + rows] for k, v in b.items()})
        return dataset.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(per_worker)


def broadcast_from_chief(strategy: tf.distribute.Strategy, variables: Sequence[tf.Variable]) -> None:
    """Give every worker the chief's values of ``variables`` (after the chief alone read a state)."""
    values = list(variables)

    def replica_fn():
        context = tf.distribute.get_replica_context()
        mine = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float64)
        out = []
        for v in values:  # integer collectives are not available everywhere: float64 holds int64 steps exactly
            x = tf.cast(v.read_value(), tf.float64) * mine
            out.append(context.all_reduce(tf.distribute.ReduceOp.SUM, x))
        return out

    summed = tf.function(lambda: strategy.run(replica_fn))()
    for v, value in zip(values, summed):
        v.assign(tf.cast(strategy.experimental_local_results(value)[0], v.dtype))


def any_replica(flag: tf.Tensor) -> tf.Tensor:
    """In a replica: 1.0 when any replica's float ``flag`` is set (every worker then stops at the same step)."""
    context = tf.distribute.get_replica_context()
    local = tf.identity(flag)  # placed on this replica's device: an input tensor has none, and a collective needs one
    return tf.minimum(context.all_reduce(tf.distribute.ReduceOp.SUM, local), 1.0)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker is here (one tiny collective)."""
    tf.function(lambda: strategy.run(lambda: any_replica(tf.constant(0.0))))()


@contextmanager
def scratch_folder() -> Iterator[str]:
    """A temporary folder for a non-chief worker's states (collectives need every worker to save); removed after."""
    path = tempfile.mkdtemp(prefix="roformer-sim-ft-worker-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def collective_error(error: BaseException, who: Role) -> RoformerSimError:
    """One line for a collective that failed because another worker died, stalled or stopped."""
    text = " ".join(str(error).split())
    for marker in ("Collective ops is aborted by:", "}}"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    return RoformerSimError(
        f"multi-worker training stopped on {who.task}: another worker died, stopped or timed out "
        f"({type(error).__name__}: {text[:240]}); restart every worker with --resume")
