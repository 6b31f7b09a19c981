"""The training step: a pure function factory.

`make_train_step(model, optimizer, totals, step, seed, batch_shape, ...)`
returns x -> loss, which minimises

    loss = -mean_n log p(x_n | z_n) + kl_weight * mean_n KL(q(z|x_n) || p(z)),  z_n ~ q(z|x_n)

where the KL term is the loss the posterior layer's `KLDivergenceRegularizer`
adds. With kl_weight = beta = 1 this is the negative ELBO. The step runs under
`tf.function` (one trace: fixed batch shape) unless `eager` is set, and
accumulates its metrics in `StepTotals` variables on the device (and, given
a `GradientNorms`, each applied step's gradient norm; both in
`probvae.training.records`), so the host reads them only when it reports.
TensorFlow places the step on a GPU when one is present.

Numerical faults are caught on the device: the step checks that the
reconstruction term, the KL term, the loss and every gradient are finite, and
applies the update only if they are (`tf.cond`; weights and Adam's moments are
untouched otherwise). By default the first bad step is recorded in
`NonFiniteFaults` and no later step updates the weights; the loop reads the
record every `FAULT_CHECK_EVERY` steps and before each checkpoint. With
`skip_nonfinite` the batch is counted (`StepTotals.skipped`) and training goes on.

Several replicas (tf.distribute): each replica's loss is its share of the
global batch's loss (scaled by the global batch size), the gradients and the
metric sums are all-reduced inside the step, and the update is applied (or
skipped) on every replica alike, so the run computes what one device computes
on the same global batches.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Optional

import tensorflow as tf

from probvae import replicas, seeds
from probvae.data.pipelines import ArrayEpoch
from probvae.objectives import ElboParts
from probvae.training import precision
from probvae.training.records import GradientNorms, NonFiniteFaults, StepTotals

__all__ = ["FAULT_CHECK_EVERY", "StepTotals", "NonFiniteFaults", "GradientNorms", "make_train_step", "StepLoop"]

# Steps between two host reads of the fault record (each read waits for the device).
FAULT_CHECK_EVERY = 50
# Automatic steps per call: as many as take about this long (seconds) ...
CALL_SECONDS = 0.1
# ... and at most this many (a call is also the granularity of signals and the progress bar).
MAX_STEPS_PER_CALL = FAULT_CHECK_EVERY



def _loss_and_gradients(model, optimizer, step, seed, variables, unconnected) -> Callable:
    """(x, rows) -> (loss, `StepTotals.batch_sums` of the ELBO parts, unscaled gradients);
    the posterior sample of step s uses the stateless seed (seed, s)."""
    base_seed = tf.constant(seed, tf.int32)

    def loss_and_gradients(x, rows=None):
        with tf.GradientTape() as tape:
            loss, parts = model.training_loss(x, seed=seeds.step_seed(base_seed, step), rows=rows)
            scaled_loss = precision.scale_loss(optimizer, loss)
        gradients = tape.gradient(scaled_loss, variables, unconnected_gradients=unconnected)
        return loss, StepTotals.batch_sums(parts), precision.unscale_gradients(optimizer, gradients)

    return loss_and_gradients


def clip_gradients(gradients, clip_norm: float):
    """(gradients, norm): the gradients scaled by min(1, clip_norm / ||g||),
    ||g|| their global norm over every variable (`tf.clip_by_global_norm`),
    and ||g||; the gradients as they are when `clip_norm` is 0. A non-finite
    norm makes them all NaN, which the step's finiteness check (or the loss
    scale) then refuses, as it would have before."""
    gradients = list(gradients)
    if not clip_norm:
        return gradients, tf.linalg.global_norm(gradients)
    return tf.clip_by_global_norm(gradients, clip_norm)


def _on_one_device(loss_and_gradients, optimizer, variables, clip_norm=0.0) -> Callable:
    """x -> (loss, sums, gradients, norm, apply_gradients) on one device; `norm` is the
    gradients' global norm before clipping."""
    def gradients_of(x):
        loss, sums, gradients = loss_and_gradients(x)
        gradients, norm = clip_gradients(gradients, clip_norm)
        return loss, sums, gradients, norm, lambda: optimizer.apply_gradients(zip(gradients, variables))

    return gradients_of


def _over_replicas(strategy, loss_and_gradients, optimizer, variables, clip_norm=0.0) -> Callable:
    """x (distributed) -> (loss, sums, gradients, norm, apply_gradients), each
    replica's share summed over all replicas (so every replica holds the same
    values, and the first replica's are returned); clipped after the sum, so
    by the norm of the global batch's gradient, as on one device."""
    def replica_step(x):
        loss, sums, gradients = loss_and_gradients(x, replicas.replica_rows(tf.shape(x)[0]))
        context = tf.distribute.get_replica_context()
        loss, gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, (loss, gradients))
        gradients, norm = clip_gradients(gradients, clip_norm)
        sums = context.all_reduce(tf.distribute.ReduceOp.SUM, list(sums))  # float64: a separate reduction
        return loss, ElboParts(*sums), gradients, norm

    def gradients_of(x):
        per_replica = strategy.run(replica_step, args=(x,))
        loss, sums, gradients, norm = tf.nest.map_structure(
            lambda value: strategy.experimental_local_results(value)[0], per_replica)

        def apply_gradients():
            strategy.extended.call_for_each_replica(
                lambda replica_gradients: optimizer.apply_gradients(
                    zip(replica_gradients, variables), skip_gradients_aggregation=True),
                args=(per_replica[2],))

        return loss, sums, gradients, norm, apply_gradients

    return gradients_of


def _guarded_update(optimizer, totals, faults, step, batch_size, skip_nonfinite, average=None,
                    norms=None, clip_norm=0.0) -> Callable:
    """(loss, sums, gradients, norm, apply_gradients) -> None: apply the update and
    add the metrics (and the gradients' norm to `norms`) if every checked term is
    finite (and, unless `skip_nonfinite`, no fault came before); else record the
    fault and count the batch as skipped. Either way the step counter moves on."""
    def update(loss, sums, gradients, norm, apply_gradients):
        checked = [] if precision.is_loss_scaled(optimizer) else gradients
        terms = NonFiniteFaults.check(loss, sums, checked)
        good = tf.equal(terms, 0)
        if not skip_nonfinite:
            good = tf.logical_and(good, tf.equal(faults.terms, 0))

        def apply():
            apply_gradients()
            if average is not None:
                average.update()
            totals.add(loss, sums, batch_size)
            if norms is not None:
                norms.add(norm, clip_norm)
            return tf.constant(0)

        def skip():
            faults.record(terms, step)
            totals.skipped.assign_add(1)
            return tf.constant(0)

        tf.cond(good, apply, skip)
        step.assign_add(1)

    return update


def make_train_step(model, optimizer, totals: StepTotals, step: tf.Variable, seed: int,
                    batch_shape, eager: bool = False, faults: Optional[NonFiniteFaults] = None,
                    skip_nonfinite: bool = False, jit_compile: bool = False, strategy=None,
                    average=None, clip_norm: float = 0.0, norms: Optional[GradientNorms] = None) -> Callable:
    """The training step x -> loss, compiled unless `eager` (with XLA if `jit_compile`).

    The posterior sample of step s uses the stateless seed (seed, s). The
    update is applied only if the loss and gradients are finite; otherwise the
    step records the fault in `faults` and, unless `skip_nonfinite`, no later
    step updates the weights either (the host stops the run). `step` counts
    every batch, applied or not. With a `LossScaleOptimizer` (mixed precision)
    the gradients are taken of the scaled loss and unscaled; non-finite
    gradients are then the loss scale's business (the optimizer skips the
    update and lowers the scale), so only the loss terms are checked.

    Args:
      batch_shape: shape of the global batch [B, h, w, c].
      strategy: the tf.distribute strategy the model, optimizer and variables
        were made under (default: the current one). With several replicas, x
        is a distributed batch (`replicas.distribute_batches`): replica r
        computes the loss of its rows of the global batch, scaled to its share
        of the global loss; the gradients, loss and metric sums are summed over
        replicas, and every replica checks and applies the same update. XLA
        then compiles each replica's loss and gradients, not the all-reduces;
        with free bits (all-reduces inside the loss) the step runs without XLA.
      average: a `WeightAverage` of the trainable weights, updated after each
        applied update.
      clip_norm: if positive, the (unscaled, summed) gradients are scaled
        down to this global norm when theirs is larger (`clip_gradients`).
      norms: a `GradientNorms` that records each applied step's gradient norm
        (before clipping) and whether it was clipped.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicated = strategy.num_replicas_in_sync > 1
    faults = NonFiniteFaults() if faults is None else faults
    # Create the optimizer's slots now: variables made inside the first trace
    # would make tf.function trace a second time.
    with strategy.scope():
        optimizer.build(model.trainable_variables)
    variables = model.trainable_variables
    # Gradients of variables the loss does not reach: None on one device (the
    # optimizer leaves them out), zeros under replicas (all-reduce needs tensors).
    unconnected = tf.UnconnectedGradients.ZERO if replicated else tf.UnconnectedGradients.NONE
    loss_and_gradients = _loss_and_gradients(model, optimizer, step, seed, variables, unconnected)
    if replicated:
        if jit_compile and not eager and model.free_bits == 0:
            loss_and_gradients = tf.function(loss_and_gradients, jit_compile=True, autograph=False)
        gradients_of = _over_replicas(strategy, loss_and_gradients, optimizer, variables, clip_norm)
    else:
        gradients_of = _on_one_device(loss_and_gradients, optimizer, variables, clip_norm)
    update = _guarded_update(optimizer, totals, faults, step, batch_shape[0], skip_nonfinite, average,
                             norms, clip_norm)

    def train_step(x):
        loss, sums, gradients, norm, apply_gradients = gradients_of(x)
        update(loss, sums, gradients, norm, apply_gradients)
        return loss

    if eager:
        return train_step
    if replicated:  # distributed inputs: one trace, as every batch has one shape
        return tf.function(train_step, jit_compile=False, autograph=False)
    return tf.function(train_step, input_signature=[tf.TensorSpec(batch_shape, tf.float32)],
                       jit_compile=jit_compile, autograph=False)


class StepLoop:
    """Runs training steps several per compiled call.

    `run(iterator, n)` takes the next n batches of `iterator` through
    `train_step` inside one `tf.function` (a `tf.while_loop` over the
    iterator, as Keras's `steps_per_execution` does), so the host dispatches
    once per n steps; it returns the steps done (fewer than n when the
    iterator ran out). The steps are the same compiled step, in the same
    order, with the same seeds (from the step counter), so the numbers do not
    depend on n. With XLA the step inside stays one XLA computation; the loop
    around it is a graph (the iterator cannot be compiled). Every step, one
    or many per call, runs inside that loop, so every call runs the same
    compiled code. An `ArrayEpoch` (an in-memory training set) is read
    without tf.data: the loop computes each batch from the images' tensor by
    the ops `training_batches` uses, the same numbers. Any other iterator
    that is not tf.data's (a Python generator of batches) is run one step
    per call.

    `steps_per_call` = 0 sizes the calls automatically: one step per call
    until a step's time is known (the first call compiles), then as many as
    take about CALL_SECONDS, at most MAX_STEPS_PER_CALL; `limit` (steps to
    the next checkpoint, fault check or epoch end) caps every call. With
    `python_loop` every call is one step, called from Python: for an eager
    step (`--eager`), and for the step of several tf.distribute replicas,
    whose update (a `tf.cond` around a cross-replica apply) cannot be traced
    inside the loop.
    """

    def __init__(self, train_step: Callable, steps_per_call: int = 0, python_loop: bool = False):
        self.train_step, self.python_loop = train_step, python_loop
        self.fixed = int(steps_per_call)
        self.step_seconds = None  # a running estimate of one step's time (automatic sizing)
        self._array_loops = {}
        self._timed = set()  # kinds of call whose first, compiling call is behind
        if not python_loop:
            self._loop = tf.function(self._steps, autograph=False)

    def _steps(self, iterator, n):
        """Up to n steps on the iterator's next batches; the number taken."""
        def step(done, _):
            batch = iterator.get_next_as_optional()
            more = batch.has_value()

            def train():
                self.train_step(batch.get_value())
                return done + 1

            return tf.cond(more, train, lambda: done), more

        done, _ = tf.while_loop(lambda done, more: tf.logical_and(more, done < n), step,
                                (tf.constant(0), tf.constant(True)))
        return done

    def size(self, limit: int) -> int:
        """Steps of the next call: at most `limit` (>= 1)."""
        if self.python_loop:
            return 1
        if self.fixed:
            return max(1, min(self.fixed, limit))
        if self.step_seconds is None:
            return 1
        wanted = int(round(CALL_SECONDS / max(self.step_seconds, 1e-6)))
        return max(1, min(wanted, MAX_STEPS_PER_CALL, limit))

    def _array_steps(self, source):
        """The compiled loop over an `ArrayEpoch` of `source` (one per source)."""
        if id(source) not in self._array_loops:
            def steps(order, epoch, first, n):
                def step(i):
                    self.train_step(source.batch(order, epoch, first + i))
                    return i + 1

                tf.while_loop(lambda i: i < n, step, (tf.zeros([], n.dtype),))

            self._array_loops[id(source)] = (source, tf.function(steps, autograph=False))
        return self._array_loops[id(source)][1]

    def run(self, iterator, n: int) -> int:
        """Take up to n batches from `iterator` through the step; return how many
        were taken (0 once the iterator is exhausted; at most 1 from an iterator
        that is not tf.data's)."""
        started = time.perf_counter()
        if isinstance(iterator, ArrayEpoch) and not self.python_loop:  # batches computed in the loop
            kind = "array"
            n = done = min(n, iterator.remaining())
            if n:
                self._array_steps(iterator.source)(iterator.order, tf.constant(iterator.epoch, tf.int64),
                                                   tf.constant(iterator.position, tf.int64), tf.constant(n, tf.int64))
                iterator.advance(n)
        elif self.python_loop or not hasattr(iterator, "get_next_as_optional"):  # one step (any iterator)
            kind, done = "python", 0
            for x in itertools.islice(iterator, 1):
                self.train_step(x)
                done = 1
        else:
            kind = "tf.data"
            done = int(self._loop(iterator, tf.constant(n, tf.int32)))
        if kind not in self._timed:  # the first call of each kind traces and compiles: not a step's time
            self._timed.add(kind)
        elif done:
            seconds = (time.perf_counter() - started) / done
            self.step_seconds = seconds if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * seconds
        return done
