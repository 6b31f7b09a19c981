"""How a global batch is spread over tf.distribute replicas, for the model,
the training step and evaluation alike.

A global batch of B examples is split into R equal shares, one per replica
(B a multiple of R): replica r gets examples r*B/R .. (r+1)*B/R - 1 of every
global batch (`distribute_batches`), knows its rows (`replica_rows`), and
takes batch means over the whole global batch where the loss needs them
(`global_mean`). Evaluation runs one whole held-out batch per replica (batch
k on replica k mod R) and gathers the per-example results in order
(`gathered`, `map_batches`), so the numbers are those of a single device;
AIS runs one chunk per replica the same way (`run_each`).
Strategies, clusters and workers are `probvae.training.distribute`'s.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from probvae.errors import UserError

__all__ = [
    "default_device",
    "replicated",
    "check_batch_size",
    "distribute_batches",
    "replica_rows",
    "global_mean",
    "gathered",
    "map_batches",
    "run_each",
]


def default_device() -> str:
    """The device TensorFlow computes on by default: the first GPU if any, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name

def replicated() -> bool:
    """Whether the code runs under a strategy of more than one replica."""
    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1

def check_batch_size(batch_size: int, strategy) -> None:
    """Raise a UserError unless the global batch splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(f"batch size {batch_size} does not split evenly over {replicas} replicas; use a multiple of "
                        f"{replicas} (--batch-size is the global batch, summed over replicas)")

def distribute_batches(strategy, make_batches: Callable[[], tf.data.Dataset], batch_size: int):
    """Global batches [batch_size, h, w, c] from `make_batches()`, as the replicas take them.

    With one replica, the dataset itself. Otherwise each worker builds the
    same global batches (stateless seeds make them identical) and keeps the
    rows of its replicas: replica r gets rows r*b .. (r+1)*b - 1, b = batch_size / R.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_batches()
    share = batch_size // replicas

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local * share

        def split(x):  # [B, h, w, c] -> [local replicas, b, h, w, c]
            return tf.reshape(x[first: first + local * share], [local, share] + x.shape[1:].as_list())

        return make_batches().map(split).unbatch()

    return strategy.distribute_datasets_from_function(dataset_fn)

def replica_rows(batch):
    """(offset, total): this replica's rows in the global batch, for a batch of
    `batch` examples per replica; None outside a context of several replicas."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    return replica * batch, context.num_replicas_in_sync * batch

def global_mean(values, axis: int = 0):
    """Mean over `axis` of `values` across the whole global batch: an all-reduce
    under several replicas (gradients pass through it), else tf.reduce_mean."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.reduce_mean(values, axis=axis)
    count = tf.cast(tf.shape(values)[axis], values.dtype)
    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, (tf.reduce_sum(values, axis=axis), count))
    return total / count

def gathered(strategy, fn: Callable) -> Callable:
    """A compiled function (index, x, *args) -> fn(x, index, *args) on every
    replica, each output concatenated along axis 0 in replica order.

    `index` and `x` are distributed values (from `map_batches`'s dataset);
    `args` are tensors every replica shares. Outputs must be [n, ...] tensors.
    """
    def run(index, x, *args):
        outputs = strategy.run(fn, args=(x, index) + args)
        return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs)

    return tf.function(run, autograph=False)

def map_batches(strategy, run: Callable, batches: tf.data.Dataset, *args,
                on_round: Optional[Callable[[int], None]] = None):
    """Apply `run` (from `gathered`) to every batch of `batches`, batch k on
    replica k mod R, and concatenate the results in batch order (NumPy).

    Replicas with no batch left in the last round compute on an empty one.
    `on_round(examples_done)` is called after each round of R batches.
    """
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def mine(index, x):
            return tf.logical_and(index % replicas >= first, index % replicas < first + local)

        return batches.enumerate().filter(mine)

    rounds, done = [], 0
    for index, x in strategy.distribute_datasets_from_function(dataset_fn):
        rounds.append(tf.nest.map_structure(lambda value: value.numpy(), run(index, x, *args)))
        done += len(tf.nest.flatten(rounds[-1])[0])
        if on_round is not None:
            on_round(done)
    if not rounds:
        return None
    return tf.nest.map_structure(lambda *values: np.concatenate(values), *rounds)


def run_each(strategy, run: Callable, arguments: list) -> list:
    """`run(*arguments[r])` on replica r of `strategy`, for each of its R replicas
    (R argument tuples of tensors, shapes free to differ); the R outputs in
    replica order, each as `run` returns it (a tuple of tensors)."""
    def argument(i):
        return strategy.experimental_distribute_values_from_function(
            lambda context: arguments[context.replica_id_in_sync_group][i])

    outputs = strategy.run(run, args=tuple(argument(i) for i in range(len(arguments[0]))))
    return list(zip(*(strategy.experimental_local_results(part) for part in outputs)))
