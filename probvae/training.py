"""Training: a compiled step, the epoch loop, checkpoints, summaries.

The step minimises

    loss = -mean_n log p(x_n | z_n) + kl_weight * mean_n KL(q(z|x_n) || p(z)),  z_n ~ q(z|x_n)

where the KL term is the loss the posterior layer's `KLDivergenceRegularizer`
adds. With kl_weight = beta = 1 this is the negative ELBO. The step runs under
`tf.function` (one trace: fixed batch shape) unless `eager` is set, and
accumulates its metrics in variables on the device, so the host reads them
only when it reports. TensorFlow places the step on a GPU when one is present.

Randomness: weights from `keras.utils.set_random_seed(seed)`; shuffling,
binarization and posterior samples from stateless seeds derived from (seed,
epoch, step), so a CPU run is repeatable.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from probvae import data as data_lib
from probvae import acceleration, evaluation, runs
from probvae._keras import keras
from probvae.config import RunConfig
from probvae.model import VAE
from probvae.errors import UserError

__all__ = ["StepTotals", "make_train_step", "fit", "device_name"]


def device_name() -> str:
    """The device TensorFlow computes on: the first GPU if any, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name


class StepTotals(tf.Module):
    """Sums of the training metrics over the steps of an epoch, kept on the device."""

    NAMES = ("loss", "elbo", "reconstruction", "kl")

    def __init__(self):
        super().__init__(name="step_totals")
        self.sums = {n: tf.Variable(0.0, dtype=tf.float64, trainable=False) for n in self.NAMES}
        self.count = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def add(self, loss, parts, batch_size):
        n = tf.cast(batch_size, tf.float64)
        self.sums["loss"].assign_add(tf.cast(loss, tf.float64) * n)
        for name in ("elbo", "reconstruction", "kl"):
            self.sums[name].assign_add(tf.reduce_sum(tf.cast(getattr(parts, name), tf.float64)))
        self.count.assign_add(n)

    def reset(self):
        for variable in list(self.sums.values()) + [self.count]:
            variable.assign(tf.zeros_like(variable))

    def means(self) -> dict:
        count = max(float(self.count.numpy()), 1.0)
        return {name: float(variable.numpy()) / count for name, variable in self.sums.items()}


def make_train_step(model: VAE, optimizer, totals: StepTotals, step: tf.Variable, seed: int,
                    batch_shape, eager: bool = False, jit_compile: bool = False) -> Callable:
    """The training step x -> loss, compiled unless `eager` (with XLA if `jit_compile`).

    The posterior sample of step s uses the stateless seed (seed, s). With a
    `LossScaleOptimizer` the gradients are taken of the scaled loss and unscaled.
    """
    base_seed = tf.constant(seed, tf.int32)
    # Create the optimizer's slots now: variables made inside the first trace
    # would make tf.function trace a second time.
    optimizer.build(model.trainable_variables)

    def train_step(x):
        with tf.GradientTape() as tape:
            loss, parts = model.training_loss(x, seed=tf.stack([base_seed, tf.cast(step, tf.int32)]))
            scaled_loss = acceleration.scale_loss(optimizer, loss)
        variables = model.trainable_variables
        gradients = acceleration.unscale_gradients(optimizer, tape.gradient(scaled_loss, variables))
        optimizer.apply_gradients(zip(gradients, variables))
        totals.add(loss, parts, tf.shape(x)[0])
        step.assign_add(1)
        return loss

    if eager:
        return train_step
    return tf.function(train_step, input_signature=[tf.TensorSpec(batch_shape, tf.float32)],
                       jit_compile=jit_compile)


class _Progress:
    """One line per epoch; on a terminal, a line updated in place during it."""

    def __init__(self, stream=sys.stderr, every_seconds: float = 1.0):
        self.stream = stream
        self.interactive = stream.isatty()
        self.every = every_seconds
        self.last = 0.0

    def update(self, epoch, epochs, done, steps, started, totals: StepTotals, force=False):
        now = time.time()
        if not self.interactive or (not force and now - self.last < self.every):
            return
        self.last = now
        rate = done / max(now - started, 1e-9)
        loss = totals.means()["loss"]
        self.stream.write(
            f"\repoch {epoch}/{epochs}  step {done}/{steps}  loss {loss:9.3f}  {rate:6.1f} steps/s"
        )
        self.stream.flush()

    def end_epoch(self, message):
        self.stream.write(("\r" if self.interactive else "") + message + "\n")
        self.stream.flush()


def _summary_scalars(writer, values: dict, step: int):
    with writer.as_default(step=step):
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(name, value)


def fit(config: RunConfig, run_dir: str, splits: Optional[data_lib.Splits] = None,
        overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train a VAE as `config` says, writing the run to `run_dir`.

    Returns:
      The metrics dict also written to RUN_DIR/metrics.json.
    """
    if splits is None:
        d = config.data
        splits = data_lib.load_dataset(d.dataset, d.data_dir, d.validation_fraction, d.split_seed,
                                       d.max_train_examples)
    log(f"data: {splits.name} from {splits.source}: {len(splits.x_train)} train, "
        f"{len(splits.x_validation)} validation, {len(splits.x_test)} test images of shape {splits.image_shape}")
    if config.model.image_shape not in (None, splits.image_shape):
        raise UserError(
            f"the model expects images of shape {config.model.image_shape} but {splits.name} has {splits.image_shape}"
        )
    config = config.replace(model={"image_shape": splits.image_shape})
    train = config.train
    if train.batch_size > len(splits.x_train):
        raise UserError(
            f"batch size {train.batch_size} is larger than the {len(splits.x_train)} training examples; "
            "lower --batch-size"
        )

    runs.prepare_run_dir(run_dir, overwrite=overwrite)
    runs.save_config(run_dir, config)
    keras.utils.set_random_seed(train.seed)
    with acceleration.mixed_precision_policy(train.mixed_precision):
        model = VAE(config.model, kl_weight=train.beta)
    optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate)
    if train.mixed_precision:
        optimizer = acceleration.loss_scaled(optimizer)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, runs.CHECKPOINT_DIR), max_to_keep=3)
    writers = {name: tf.summary.create_file_writer(os.path.join(run_dir, runs.LOG_DIR, name))
               for name in ("train", "validation")}

    binarize = model.likelihood_head.binarize
    totals = StepTotals()
    batch_shape = (train.batch_size,) + splits.image_shape
    jit_compile = acceleration.use_jit_compile(config.model.arch, train.jit_compile)
    train_step = make_train_step(model, optimizer, totals, step, train.seed, batch_shape, eager=train.eager,
                                 jit_compile=jit_compile)
    steps_per_epoch = len(splits.x_train) // train.batch_size
    metrics = {
        "run_dir": os.path.abspath(run_dir),
        "dataset": splits.name,
        "data_source": splits.source,
        "device": device_name(),
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "units": "nats per example",
        "epochs": [],
    }
    log(f"model: {config.model.arch}, latent {config.model.latent_dim}, {config.model.posterior} posterior, "
        f"{config.model.likelihood} likelihood, {metrics['parameters']:,} parameters, on {metrics['device']}")
    evaluate = lambda images, seed: evaluation.evaluate_elbo(  # noqa: E731
        model, images, seed=seed, batch_size=train.eval_batch_size, binarization_seed=config.data.split_seed)
    progress = _Progress()
    for epoch in range(1, train.epochs + 1):
        started = time.time()
        totals.reset()
        batches = data_lib.training_batches(splits.x_train, train.batch_size, binarize=binarize,
                                            seed=train.seed, epoch=epoch)
        for done, x in enumerate(batches, start=1):
            train_step(x)
            progress.update(epoch, train.epochs, done, steps_per_epoch, started, totals)
        train_metrics = totals.means()
        if not np.isfinite(train_metrics["loss"]):
            raise UserError(
                f"the training loss became non-finite in epoch {epoch}; lower --learning-rate"
            )
        validation = evaluate(splits.x_validation, seed=train.seed + epoch)
        seconds = time.time() - started
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)
        metrics["epochs"].append({"epoch": epoch, "seconds": seconds, "train": train_metrics, "validation": validation})
        _summary_scalars(writers["train"], train_metrics, epoch)
        _summary_scalars(writers["validation"], validation, epoch)
        runs.write_json(os.path.join(run_dir, runs.METRICS_FILE), metrics)
        progress.end_epoch(
            f"epoch {epoch}/{train.epochs}  train ELBO {train_metrics['elbo']:.2f}  "
            f"validation ELBO {validation['elbo']:.2f} ± {validation['elbo_stderr']:.2f} nats  ({seconds:.0f}s)"
        )

    test = evaluate(splits.x_test, seed=train.seed + 10_000)
    test["checkpoint"] = os.path.basename(manager.latest_checkpoint)
    metrics["test"] = test
    metrics["train_seconds"] = sum(e["seconds"] for e in metrics["epochs"])
    path = runs.write_json(os.path.join(run_dir, runs.METRICS_FILE), metrics)
    for writer in writers.values():
        writer.flush()
    log(f"test ELBO {test['elbo']:.2f} ± {test['elbo_stderr']:.2f} nats "
        f"(reconstruction {test['reconstruction']:.2f}, KL {test['kl']:.2f}) on {test['n_examples']} images")
    log(f"run written to {os.path.abspath(run_dir)} (metrics: {path})")
    return metrics
