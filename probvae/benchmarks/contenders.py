"""What the benchmark runs: its settings (`BenchConfig`, `QUICK`) and the
two contenders, each an object whose `run()` trains one timed epoch:

- `probvae_trainer`: probvae's compiled step (`make_train_step`) over one
  epoch of batches computed in its loop, several steps per call
  (`StepLoop`), the calls cut as `fit` cuts them (`training.epoch.run_steps`),
  metrics read once at the end;
- `fit_trainer`: the plain tf-keras recipe (`probvae.benchmarks.baseline`)
  trained with `model.fit` on the same batches.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from probvae import data
from probvae._keras import keras
from probvae.benchmarks.baseline import keras_recipe
from probvae.config import ModelConfig
from probvae.model import VAE
from probvae.training import StepLoop, StepTotals, make_train_step, precision
from probvae.training.epoch import run_steps
from probvae.training.step import FAULT_CHECK_EVERY, NonFiniteFaults

__all__ = ["BenchConfig", "QUICK", "Trainer", "probvae_trainer", "fit_trainer"]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    # Architectures to measure, each with ModelConfig defaults (the fashion default is "conv").
    archs: Tuple[str, ...] = ("mlp", "conv")
    # Training batch size of every contender.
    batch_size: int = 128
    # Evaluation batch size (ELBO).
    eval_batch_size: int = 1000
    # Timed rounds after the warm-up; figures are medians over them.
    repeats: int = 7
    # Training steps per timed run (one epoch), per architecture: enough that
    # fit's fixed cost per call (about 0.1 s) is a few per cent, as in a real epoch.
    # A network not listed gets the largest count.
    train_steps: Tuple[Tuple[str, int], ...] = (("mlp", 100), ("gated", 100), ("conv", 25))
    # Held-out images per ELBO run.
    eval_images: int = 4000
    # IWAE: samples K per image, images per call, samples per chunk.
    num_samples: int = 1000
    iwae_images: int = 8
    sample_chunk: int = 125
    # Memory: K values compared, and images evaluated, each in its own process.
    memory_samples: Tuple[int, ...] = (500, 5000)
    memory_images: int = 200
    # Size of the square matmul that stands for the machine's attainable GFLOP/s.
    matmul_size: int = 2048
    # What probvae's networks compute in (probvae.training.precision.PRECISIONS); None: each network's
    # default on this machine (`precision.default_precision`). The keras recipe computes in float32 on a CPU
    # and in probvae's precision on a GPU.
    precision: Optional[str] = None
    learning_rate: float = 1e-3
    seed: int = 0
    # Image side (square, one channel); ModelConfig fields changed from the defaults.
    image_size: int = 28
    # The benchmarked model: the MLP VAE of docs/performance.md (32-D full-covariance posterior).
    model: Tuple[Tuple[str, object], ...] = (("latent_dim", 32), ("posterior", "full"))

    def steps(self, arch: str) -> int:
        steps = dict(self.train_steps)
        return steps.get(arch, max(steps.values()))

    def model_config(self, arch: str) -> ModelConfig:
        shape = (self.image_size, self.image_size, 1)
        return ModelConfig(arch=arch, image_shape=shape, **dict(self.model))

    def precision_of(self, arch: str) -> str:
        """What probvae's networks compute in for `arch`."""
        return precision.resolve(self.precision, arch)

    def baseline_precision(self, arch: str) -> str:
        """What the keras recipe computes in for `arch`: float32 on a CPU (the
        recipe a user writes; in bfloat16 its unfused elementwise ops made it
        1.5x slower here), probvae's precision on a GPU."""
        if not tf.config.list_logical_devices("GPU"):
            return "float32"
        return self.precision_of(arch)


# A smoke configuration: tiny images and networks, a few steps.
QUICK = BenchConfig(
    batch_size=16, eval_batch_size=32, repeats=1, train_steps=(("mlp", 3), ("gated", 3), ("conv", 3)), eval_images=64,
    num_samples=20,
    iwae_images=2, sample_chunk=5, memory_samples=(5, 20), memory_images=4, matmul_size=256, image_size=8,
    model=(("latent_dim", 2), ("posterior", "full"), ("conv_filters", (4, 6)), ("dense_units", 8),
           ("hidden_units", (16,))),
)


@dataclasses.dataclass
class Trainer:
    """A training contender: `run` trains one epoch and returns its images."""

    run: Callable[[], int]
    first_step_seconds: float
    tracing_counts: list  # traces of the compiled step after each epoch
    step: Optional[Callable] = None  # probvae's compiled step


def _epochs(bench: BenchConfig, images: np.ndarray):
    """Datasets of successive epochs (1, 2, ...) of dynamically binarized batches."""
    for epoch in itertools.count():
        yield data.training_batches(images, bench.batch_size, binarize=True, seed=bench.seed, epoch=epoch)


def probvae_trainer(model: VAE, bench: BenchConfig, images: np.ndarray, jit_compile: bool,
                    steps_per_call: int = 0) -> Trainer:
    """probvae's loop, as `fit` runs it, on `model`: the compiled step, several
    per call (`StepLoop`, sized as in `fit` unless `steps_per_call`), batches
    computed in the loop from the images in memory (`ArrayBatches`: the
    batches of `training_batches`), each epoch's steps through the loop's own
    `training.epoch.run_steps` (calls ending at every FAULT_CHECK_EVERY-th
    step, where the host reads the fault record), and the metrics read once
    at the end of the epoch. No checkpoints and no validation: the steps alone."""
    optimizer = keras.optimizers.Adam(bench.learning_rate)
    if model.dtype_policy.compute_dtype == "float16":
        optimizer = precision.loss_scaled(optimizer)
    totals, step, faults = StepTotals(), tf.Variable(0, dtype=tf.int64, trainable=False), NonFiniteFaults()
    started = time.perf_counter()
    train_step = make_train_step(model, optimizer, totals, step, bench.seed,
                                 (bench.batch_size,) + model.image_shape, jit_compile=jit_compile, faults=faults)
    loop = StepLoop(train_step, steps_per_call)
    source = data.ArrayBatches(images, bench.batch_size, binarize=True, seed=bench.seed)
    numbers = itertools.count()
    loop.run(source.epoch(next(numbers)), 1)
    totals.means()
    trainer = Trainer(None, time.perf_counter() - started, [], train_step)

    def check_faults(step: int, position: int, done: int) -> None:
        if position % FAULT_CHECK_EVERY == 0:  # where fit's loop reads the fault record
            int(faults.terms.numpy())

    def run():
        totals.reset()
        _, count = run_steps(loop, source.epoch(next(numbers)), 0, 0, source.steps, 0, check_faults)
        totals.means()  # the one host read of an epoch
        trainer.tracing_counts.append(train_step.experimental_get_tracing_count())
        return count * bench.batch_size

    trainer.run = run
    return trainer


def fit_trainer(config: ModelConfig, bench: BenchConfig, images: np.ndarray) -> Trainer:
    """The plain recipe trained with `model.fit` on the same batches."""
    model = keras_recipe(config, bench.learning_rate, bench.baseline_precision(config.arch))
    epochs = (dataset.map(lambda x: (x, x)) for dataset in _epochs(bench, images))
    started = time.perf_counter()
    model.fit(next(epochs).take(1), verbose=0)
    trainer = Trainer(None, time.perf_counter() - started, [])

    def run():
        model.fit(next(epochs), epochs=1, verbose=0)
        trainer.tracing_counts.append(model.train_function.experimental_get_tracing_count())
        return (len(images) // bench.batch_size) * bench.batch_size

    trainer.run = run
    return trainer
