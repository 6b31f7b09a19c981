"""`Trainer`: one run's model, optimizer and checkpointed state, and its epochs.

Checkpoints (every `checkpoint_every_steps` steps and at each epoch end) hold
the whole training state (see `probvae.training.checkpoints`); `restore()`
continues from the newest one, and SIGINT/SIGTERM save one before stopping.
With a `NonFiniteFaults` record the loop stops with a `NonFiniteError`, so no
checkpoint ever holds a bad update. An epoch's steps and its end are
`probvae.training.epoch`'s; the run's history is a `RunHistory`.

Several devices and hosts (`probvae.training.distribute`): the model,
optimizer and state are made under a tf.distribute strategy's scope and the
step runs on every replica; only the chief writes the run directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from probvae import data as data_lib
from probvae import evaluation, replicas, runs
from probvae.config import RunConfig
from probvae.errors import NonFiniteError, TrainingInterrupted, UserError
from probvae.model import VAE
from probvae.training import distribute, precision, schedules
from probvae.training.averaging import WeightAverage
from probvae.training.callbacks import Progress, Summaries, kl_warmup
from probvae.training.checkpoints import RunState, StopSignals, find_best
from probvae.training.epoch import apply_decision, check_faults, end_epoch, epoch_batches, fault_remedy, run_steps
from probvae.training.history import RunHistory, check_restored
from probvae.training.preflight import initial_checkpoint
from probvae.training.records import GradientNorms, NonFiniteFaults, StepTotals
from probvae.training.step import FAULT_CHECK_EVERY, StepLoop, make_train_step

__all__ = ["Trainer"]


def _run_info(run_dir: str, splits, strategy, batch_size: int, model) -> dict:
    """metrics.json's fields that describe the run, not its epochs."""
    return {
        "run_dir": os.path.abspath(run_dir), "dataset": splits.name, "data_source": splits.source,
        "device": distribute.describe(strategy)["devices"][0],
        "distribution": distribute.describe(strategy, batch_size),
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "units": "nats per example",
    }


class Trainer:
    """One run's model, optimizer and checkpointed state, and its epoch loop.

    `Trainer(config, splits, run_dir).train()` runs the epochs not done yet
    (after `seed_process(config.train)`, which it leaves to its caller);
    call `restore()` first to continue from the newest checkpoint. With a
    tf.distribute `strategy`, everything is made under its scope. The run's
    files go to `write_dir` (default `run_dir`): a worker that is not the
    chief writes to a temporary folder and resumes from the chief's checkpoints.
    """

    def __init__(self, config: RunConfig, splits: data_lib.Splits, run_dir: str,
                 log: Callable[[str], None] = print, on_epoch_end: Optional[Callable] = None,
                 strategy=None, write_dir: Optional[str] = None):
        self.config, self.splits, self.run_dir, self.log = config, splits, run_dir, log
        self.write_dir = write_dir or run_dir
        self.on_epoch_end = on_epoch_end
        self.progress = None  # the run's Progress, made at the first epoch
        # This process's CPU time when the current epoch began, less the part its newest checkpoint saved.
        self.cpu_started = time.process_time()
        self.strategy = strategy or tf.distribute.get_strategy()
        train = config.train
        replicas.check_batch_size(train.batch_size, self.strategy)
        self.precision = precision.resolve(train.precision, config.model.arch)
        with self.strategy.scope():
            with precision.compute_policy(self.precision):
                self.model = VAE(config.model, kl_weight=train.beta, free_bits=train.free_bits,
                                 train_samples=train.train_samples if train.objective == "iwae" else 0)
            self.steps_per_epoch = len(splits.x_train) // train.batch_size
            self.optimizer = schedules.make_optimizer(train, self.steps_per_epoch)
            if precision.needs_loss_scale(self.precision):
                self.optimizer = precision.loss_scaled(self.optimizer)
            self.totals, self.faults, self.norms = StepTotals(), NonFiniteFaults(), GradientNorms()
        self.average = WeightAverage(self.model.trainable_variables, train.weight_average,
                                     self.strategy) if train.weight_average else None
        self.state = RunState(os.path.join(self.write_dir, runs.CHECKPOINT_DIR), strategy=self.strategy,
                              model=self.model, optimizer=self.optimizer, totals=self.totals,
                              **({"weight_average": self.average.module} if self.average else {}))
        self.train_step = make_train_step(
            self.model, self.optimizer, self.totals, self.state.step, train.seed,
            (train.batch_size,) + splits.image_shape, eager=train.eager,
            faults=self.faults, skip_nonfinite=train.skip_nonfinite, clip_norm=train.clip_norm,
            jit_compile=precision.use_jit_compile(config.model.arch, train.jit_compile), strategy=self.strategy,
            average=self.average, norms=self.norms)
        replicated = self.strategy.num_replicas_in_sync > 1
        self.step_loop = StepLoop(self.train_step, train.steps_per_call, python_loop=train.eager or replicated)
        self.array_batches = None
        if isinstance(splits.x_train, np.ndarray) and not replicated:
            self.array_batches = data_lib.ArrayBatches(splits.x_train, train.batch_size, seed=train.seed,
                                                       binarize=self.model.likelihood_head.binarize)
        self.history = RunHistory(train_examples=len(splits.x_train))  # what the checkpoints carry besides tensors
        self.summaries = Summaries(os.path.join(self.write_dir, runs.LOG_DIR), lambda: self.state.latest)
        self.run_info = dict(_run_info(run_dir, splits, self.strategy, train.batch_size, self.model),
                             precision=self.precision)
        model = config.model
        log(f"model: {model.arch}, latent {model.latent_dim}, {model.posterior} posterior, {model.likelihood} "
            f"likelihood, {self.run_info['parameters']:,} parameters, {self.precision} compute, on "
            f"{self.run_info['distribution']['summary']}")

    @property
    def metrics(self) -> dict:
        """metrics.json during training: the run's description and its epochs so far."""
        metrics = dict(self.run_info, epochs=self.history.epochs)
        if self.history.initialized_from:
            metrics["initialized_from"] = self.history.initialized_from
        return metrics

    def write_metrics(self) -> str:
        return runs.write_json(os.path.join(self.write_dir, runs.METRICS_FILE), self.metrics)

    def evaluate(self, images: np.ndarray, seed: int, with_latents: bool = False, iwae_samples: int = 0) -> dict:
        return evaluation.evaluate_elbo(self.model, images, seed=seed, batch_size=self.config.train.eval_batch_size,
                                        binarization_seed=self.config.data.split_seed, strategy=self.strategy,
                                        with_latents=with_latents, iwae_samples=iwae_samples)

    def initialize_from_run(self) -> str:
        """Load the weights of the run `config.train.init_from` names (what
        `load_run` gives for it) into the model before the first step; return
        that checkpoint's prefix. The optimizer, step and epoch start afresh.

        Raises:
          UserError: no such run, a different model or data split, or an
            unreadable checkpoint (see `preflight.initial_checkpoint`).
        """
        train = self.config.train
        path = initial_checkpoint(self.config)
        runs.read_weights(self.model, path)
        if self.average:
            self.average.reset()
        self.history.initialized_from = {"run_dir": train.init_from, "checkpoint": os.path.basename(path)}
        self.log(f"initial weights from {path}")
        if train.kl_warmup_epochs:
            self.log(f"note: the KL weight warms up again over {train.kl_warmup_epochs} epochs; "
                     "--kl-warmup-epochs 0 keeps the whole KL from the first step")
        return path

    def restore(self) -> bool:
        """Continue from the newest checkpoint of `run_dir`, if there is one;
        return whether there was one.

        Raises:
          UserError: the checkpoint does not fit the data or the steps per
            epoch, or the best epoch's checkpoint it names is gone.
        """
        saved = self.state.restore(log=self.log, directory=os.path.join(self.run_dir, runs.CHECKPOINT_DIR))
        if saved is None:
            self.log("no checkpoint yet: training from the start")
            return False
        if self.average:
            self.average.restored()
        history = RunHistory.from_dict(saved)
        self.norms.load(history.epoch_gradient_norms)
        step, epoch = int(self.state.step.numpy()), int(self.state.epoch.numpy())
        checkpoint = self.state.latest or f"step {step}"
        check_restored(history, checkpoint, step, epoch, self.steps_per_epoch, len(self.splits.x_train))
        _check_best(self, history, history.complete(epoch, self.config.train.epochs))
        self.log(history.record_resume(checkpoint, step, epoch, self.config.train.epochs, self.steps_per_epoch))
        self.history = history
        return True

    def train(self) -> dict:
        """Run the remaining epochs; return the metrics (also in metrics.json)."""
        epochs, history = self.config.train.epochs, self.history
        if history.stopped_early:
            self.log(f"the run stopped early after epoch {history.stopped_early}")
        elif int(self.state.epoch.numpy()) >= epochs:
            self.log(f"all {epochs} epochs were trained already")
        with StopSignals() as stop:
            for epoch in range(int(self.state.epoch.numpy()) + 1, epochs + 1):
                if self.history.stopped_early:
                    break
                self._run_epoch(epoch, stop)
        return dict(self.metrics, best=self.history.best, stopped_early=self.history.stopped_early,
                    skipped_nonfinite_batches=sum(e["train"].get("skipped_nonfinite_batches", 0)
                                                  for e in self.history.epochs),
                    resumes=self.history.resumes)

    def _run_epoch(self, epoch: int, stop: StopSignals) -> None:
        train, steps, every = self.config.train, self.steps_per_epoch, self.config.train.checkpoint_every_steps
        step = int(self.state.step.numpy())
        position = step - (epoch - 1) * steps
        if position == 0:
            self.totals.reset()
            self.norms.reset()
            self.history.epoch_seconds = 0.0
            self.history.epoch_cpu_seconds = 0.0
        started = time.time() - self.history.epoch_seconds
        # CPU time of this process (every thread) in the epoch, counted on from the newest checkpoint's
        # (None: not counted, the epoch was begun by a version that did not count it).
        saved_cpu = self.history.epoch_cpu_seconds
        self.cpu_started = None if saved_cpu is None else time.process_time() - saved_cpu
        apply_decision(self, kl_warmup(train, epoch), epoch)
        if self.progress is None:
            self.progress = Progress(self.log, train.epochs, early_stopping=train.patience > 0)

        def after_call(step: int, position: int, done: int) -> None:
            if done and position < steps and self._stopping(stop, position):  # at the end, finish the epoch first
                _interrupt(self, stop, epoch, started)
            if position % FAULT_CHECK_EVERY == 0:
                check_faults(self)
            if done and every and step % every == 0 and position < steps:
                self.save(started)
            self.progress.update(epoch, position, steps, started, self.totals)

        run_steps(self.step_loop, iter(epoch_batches(self, epoch, position)), step, position, steps, every, after_call)
        check_faults(self)
        end_epoch(self, epoch, started)
        if self._stopping(stop):
            _interrupt(self, stop, epoch, None)

    def _stopping(self, stop: StopSignals, position: Optional[int] = None) -> bool:
        """Whether to stop for a signal now. Several workers stop at the same step:
        they agree every FAULT_CHECK_EVERY steps (`position`) and at epoch ends."""
        if self.run_info["distribution"]["workers"] == 1:
            return bool(stop.received)
        if position is not None and position % FAULT_CHECK_EVERY:
            return False
        return distribute.any_worker(self.strategy, bool(stop.received))

    def save(self, started: Optional[float]) -> str:
        """Checkpoint the state after the last step; `started`: time the current
        epoch began (None at an epoch end, once the epoch is in the history)."""
        check_faults(self)
        if not all(np.all(np.isfinite(v.numpy())) for v in self.model.variables):
            raise NonFiniteError(f"the weights became non-finite by step {int(self.state.step.numpy())}; "
                                 f"nothing was saved; {fault_remedy(self)}")
        self.history.epoch_seconds = 0.0 if started is None else time.time() - started
        self.history.epoch_cpu_seconds = 0.0 if started is None else (
            None if self.cpu_started is None else time.process_time() - self.cpu_started)
        self.history.epoch_gradient_norms = None if started is None else self.norms.state()
        with self.published():
            return self.state.save(self.history.to_dict())

    def save_best(self) -> str:
        """Write the current weights as the best epoch's checkpoint; return its name."""
        check_faults(self)
        with self.published():
            return os.path.basename(self.state.save_best())

    def published(self):
        """A context in which the model holds the run's published weights: the
        averages under `--weight-average` (`averaging.WeightAverage`)."""
        return self.average.published() if self.average else contextlib.nullcontext()

    def best_path(self, name: str) -> str:
        """The prefix of the best epoch's checkpoint `name` (`checkpoints.find_best`)."""
        return find_best(name, [self.state.directory, os.path.join(self.run_dir, runs.CHECKPOINT_DIR)], self.run_dir)

    def use_best(self) -> str:
        """Load the best epoch's weights into the model if the run keeps them
        (`runs.read_weights`); return the name of the checkpoint the model now holds."""
        best = self.history.best or {}
        if self.config.train.keep_best and best.get("checkpoint"):
            runs.read_weights(self.model, self.best_path(best["checkpoint"]))
            return best["checkpoint"]
        if self.average:
            self.average.publish()  # as the newest checkpoint holds them
        return os.path.basename(self.state.latest)

    def close(self) -> None:
        self.summaries.close()


def _interrupt(trainer: Trainer, stop: StopSignals, epoch: int, started: Optional[float]) -> None:
    """Save a checkpoint after the last step (unless the newest is of it) and
    raise `TrainingInterrupted`, naming the signal and the resume command."""
    step = int(trainer.state.step.numpy())
    latest = trainer.state.latest
    if latest is None or not latest.endswith(f"-{step}"):
        latest = trainer.save(started)
    number = stop.received or signal.SIGTERM  # another worker was signalled
    raise TrainingInterrupted(
        f"{signal.Signals(number).name} at step {step} (epoch {epoch}); saved checkpoint {latest}; "
        f"continue with: fit.py --resume {trainer.run_dir}", number)


def _check_best(trainer: Trainer, history: RunHistory, complete: bool) -> None:
    """Refuse a resume whose best epoch's checkpoint is gone when no epoch is
    left to write another (or no best-epoch checkpoint is left at all); a
    run killed between writing a new best and its checkpoint continues."""
    name = (history.best or {}).get("checkpoint")
    if trainer.config.train.keep_best and name:
        try:
            trainer.best_path(name)
        except UserError:
            if complete or not runs.complete_checkpoints(trainer.state.directory, runs.BEST_PREFIX):
                raise
