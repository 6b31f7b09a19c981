"""The training loop: epochs of compiled steps, checkpoints, the best epoch,
early stopping, summaries, and `fit`, which writes a run directory.

Checkpoints (every `checkpoint_every_steps` steps and at each epoch end) hold
the whole training state (see `probvae.training.checkpoints`); `fit(...,
resume=True)` continues from the newest one, and SIGINT/SIGTERM save one
before stopping. With a `NonFiniteFaults` record the loop stops with a
`NonFiniteError`, so no checkpoint ever holds a bad update.

Several devices and hosts (`probvae.training.distribute`): the model,
optimizer and state are made under a tf.distribute strategy's scope and the
step runs on every replica; only the chief writes the run directory.

Randomness: weights from `keras.utils.set_random_seed(seed)`; shuffling,
binarization and posterior samples from stateless seeds derived from (seed,
epoch, step), so a CPU run is repeatable, and a resumed run sees the batches
and samples the uninterrupted one would have.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from probvae import data as data_lib
from probvae import evaluation, replicas, runs
from probvae._keras import keras
from probvae.config import RunConfig
from probvae.errors import NonFiniteError, TrainingInterrupted, UserError
from probvae.model import VAE
from probvae.training import distribute, precision, schedules
from probvae.training.callbacks import Progress, Summaries, follow_validation, monitored, track_best
from probvae.training.checkpoints import RunState, StopSignals
from probvae.training.step import FAULT_CHECK_EVERY, NonFiniteFaults, StepLoop, StepTotals, make_train_step

__all__ = ["Trainer", "fit", "seed_process"]


def seed_process(train_config) -> None:
    """Process-wide set-up of a training run: seed Python's, NumPy's and
    TensorFlow's global generators from `train_config.seed` (the weights'
    initialisation draws from them) and, with `deterministic`, turn on
    TensorFlow's op determinism for the rest of the process.

    `fit` calls it before it builds the model; code that builds a `Trainer`
    itself calls it first to get the same weights.
    """
    if train_config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(train_config.seed)


# Pictures in TensorBoard: this many times a run, IMAGES_SHOWN reconstructions and twice as many prior draws.
PICTURES_PER_RUN = 20
IMAGES_SHOWN = 8


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
        self.strategy = strategy or tf.distribute.get_strategy()
        train = config.train
        replicas.check_batch_size(train.batch_size, self.strategy)
        with self.strategy.scope():
            with precision.mixed_precision_policy(train.mixed_precision):
                self.model = VAE(config.model, kl_weight=train.beta, free_bits=train.free_bits,
                                 train_samples=train.train_samples if train.objective == "iwae" else 0)
            self.steps_per_epoch = len(splits.x_train) // train.batch_size
            self.optimizer = schedules.make_optimizer(train, self.steps_per_epoch)
            if train.mixed_precision:
                self.optimizer = precision.loss_scaled(self.optimizer)
            self.totals, self.faults = StepTotals(), NonFiniteFaults()
        self.state = RunState(os.path.join(self.write_dir, runs.CHECKPOINT_DIR), strategy=self.strategy,
                              model=self.model, optimizer=self.optimizer, totals=self.totals)
        self.train_step = make_train_step(
            self.model, self.optimizer, self.totals, self.state.step, train.seed,
            (train.batch_size,) + splits.image_shape, eager=train.eager,
            faults=self.faults, skip_nonfinite=train.skip_nonfinite,
            jit_compile=precision.use_jit_compile(config.model.arch, train.jit_compile), strategy=self.strategy)
        replicated = self.strategy.num_replicas_in_sync > 1
        self.step_loop = StepLoop(self.train_step, train.steps_per_call, python_loop=train.eager or replicated)
        self.array_batches = None
        if isinstance(splits.x_train, np.ndarray) and not replicated:
            self.array_batches = data_lib.ArrayBatches(splits.x_train, train.batch_size, seed=train.seed,
                                                       binarize=self.model.likelihood_head.binarize)
        # What the checkpoints carry besides tensors (see probvae.training.checkpoints).
        self.history = {"epochs": [], "epoch_seconds": 0.0, "resumes": [], "train_examples": len(splits.x_train),
                        "best": None, "stopped_early": None}
        self.summaries = Summaries(os.path.join(self.write_dir, runs.LOG_DIR), lambda: self.state.latest)
        self.metrics = {
            "run_dir": os.path.abspath(run_dir),
            "dataset": splits.name,
            "data_source": splits.source,
            "device": distribute.describe(self.strategy)["devices"][0],
            "distribution": distribute.describe(self.strategy, train.batch_size),
            "parameters": int(sum(np.prod(v.shape) for v in self.model.trainable_variables)),
            "units": "nats per example",
            "epochs": self.history["epochs"],
        }
        model = config.model
        log(f"model: {model.arch}, latent {model.latent_dim}, {model.posterior} posterior, {model.likelihood} "
            f"likelihood, {self.metrics['parameters']:,} parameters, on {self.metrics['distribution']['summary']}")

    def evaluate(self, images: np.ndarray, seed: int, with_latents: bool = False, iwae_samples: int = 0) -> dict:
        return evaluation.evaluate_elbo(self.model, images, seed=seed, batch_size=self.config.train.eval_batch_size,
                                        binarization_seed=self.config.data.split_seed, strategy=self.strategy,
                                        with_latents=with_latents, iwae_samples=iwae_samples)

    def _pictures(self, epoch: int) -> None:
        """Reconstructions of the first validation images and decoded prior draws, to TensorBoard."""
        images = self.splits.x_validation[:IMAGES_SHOWN]
        x = self.model.prepare_inputs(images, self.config.data.split_seed)
        self.summaries.images("validation", {
            "reconstructions/input": x, "reconstructions/mean of p(x|z) at E[z|x]": self.model(x),
            "prior samples/mean of p(x|z), z ~ p(z)": self.model.sample(2 * IMAGES_SHOWN, seed=epoch).mean,
        }, epoch)

    def initialize_from_run(self) -> str:
        """Load the weights of the run `config.train.init_from` names (what
        `load_run` gives for it) into the model before the first step; return
        that checkpoint's prefix. The optimizer, step and epoch start afresh.

        Raises:
          UserError: no such run, a different model or data split, or an
            unreadable checkpoint (see `runs.initial_checkpoint`).
        """
        train = self.config.train
        path = runs.initial_checkpoint(self.config)
        runs.read_weights(self.model, path)
        self.history["initialized_from"] = {"run_dir": train.init_from, "checkpoint": os.path.basename(path)}
        self.metrics["initialized_from"] = self.history["initialized_from"]
        self.log(f"initial weights from {path}")
        if train.kl_warmup_epochs:
            self.log(f"note: the KL weight warms up again over {train.kl_warmup_epochs} epochs; "
                     "--kl-warmup-epochs 0 keeps the whole KL from the first step")
        return path

    def restore(self) -> bool:
        """Continue from the newest checkpoint of `run_dir`, if there is one;
        return whether there was one."""
        history = self.state.restore(log=self.log, directory=os.path.join(self.run_dir, runs.CHECKPOINT_DIR))
        if history is None:
            self.log("no checkpoint yet: training from the start")
            return False
        step, epoch = int(self.state.step.numpy()), int(self.state.epoch.numpy())
        checkpoint = self.state.latest or f"step {step}"
        if history.get("train_examples") != len(self.splits.x_train):
            raise UserError(f"the run trained on {history.get('train_examples')} examples, the data now gives "
                            f"{len(self.splits.x_train)}; resume with the same data, or start a new run")
        position = step - epoch * self.steps_per_epoch
        if not 0 <= position < self.steps_per_epoch or len(history["epochs"]) != epoch:
            raise UserError(f"checkpoint {checkpoint} (step {step}, epoch {epoch}) does not fit "
                            f"{self.steps_per_epoch} steps per epoch; start again with --overwrite")
        history.setdefault("best", None)
        history.setdefault("stopped_early", None)
        # The epoch it continues with, or None when training was complete (only the test evaluation was left).
        done = epoch >= self.config.train.epochs or bool(history.get("stopped_early"))
        history["resumes"].append({"checkpoint": os.path.basename(checkpoint), "step": step,
                                   "epoch": None if done else epoch + 1})
        self.history = history
        self.metrics["epochs"] = history["epochs"]
        if history.get("initialized_from"):
            self.metrics["initialized_from"] = history["initialized_from"]
        if done:
            self.log(f"resuming from {checkpoint}: training is complete ({step} steps done); the final test "
                     "evaluation follows")
        else:
            self.log(f"resuming from {checkpoint}: epoch {epoch + 1}, step {position} of {self.steps_per_epoch} "
                     f"({step} steps done)")
        return True

    def train(self) -> dict:
        """Run the remaining epochs; return the metrics (also in metrics.json)."""
        epochs = self.config.train.epochs
        if self.history["stopped_early"]:
            self.log(f"the run stopped early after epoch {self.history['stopped_early']}")
        elif int(self.state.epoch.numpy()) >= epochs:
            self.log(f"all {epochs} epochs were trained already")
        with StopSignals() as stop:
            for epoch in range(int(self.state.epoch.numpy()) + 1, epochs + 1):
                if self.history["stopped_early"]:
                    break
                self._run_epoch(epoch, stop)
        self.metrics["best"] = self.history["best"]
        self.metrics["stopped_early"] = self.history["stopped_early"]
        self.metrics["skipped_nonfinite_batches"] = sum(
            e["train"].get("skipped_nonfinite_batches", 0) for e in self.metrics["epochs"])
        self.metrics["resumes"] = self.history["resumes"]
        return self.metrics

    def _run_epoch(self, epoch: int, stop: StopSignals) -> None:
        train, steps = self.config.train, self.steps_per_epoch
        step = int(self.state.step.numpy())
        position = step - (epoch - 1) * steps
        if position == 0:
            self.totals.reset()
            self.history["epoch_seconds"] = 0.0
        started = time.time() - self.history["epoch_seconds"]
        schedules.set_kl_weight(self.model, train, epoch)
        if self.array_batches is not None:  # in memory, one device: batches computed in the compiled loop
            batches = self.array_batches.epoch(epoch, start_step=position)
        else:
            batches = replicas.distribute_batches(self.strategy, lambda: data_lib.training_batches(
                self.splits.x_train, train.batch_size, seed=train.seed, epoch=epoch,
                binarize=self.model.likelihood_head.binarize, start_step=position), train.batch_size)
        if self.progress is None:
            self.progress = Progress(self.log, train.epochs, early_stopping=train.patience > 0)
        progress = self.progress
        iterator, every = iter(batches), train.checkpoint_every_steps
        while position < steps:
            # A call ends at the next fault check, checkpoint and the epoch's end, so those keep their steps.
            limit = min(steps - position, FAULT_CHECK_EVERY - position % FAULT_CHECK_EVERY)
            if every:
                limit = min(limit, every - step % every)
            done = self.step_loop.run(iterator, self.step_loop.size(limit))
            step, position = step + done, position + done
            if done and position < steps and self._stopping(stop, position):  # at the end, finish the epoch first
                self._interrupt(stop, epoch, started)
            if position % FAULT_CHECK_EVERY == 0:
                self._check_faults()
            if done and every and step % every == 0 and position < steps:
                self._save(started)
            progress.update(epoch, position, steps, started, self.totals)
            if not done:  # a stream of files that failed to decode ran out early
                break
        self._check_faults()
        train_metrics = self.totals.means()
        train_metrics["skipped_nonfinite_batches"] = int(self.totals.skipped.numpy())
        monitor = monitored(train)
        validation = self.evaluate(self.splits.x_validation, seed=train.seed + epoch, with_latents=True,
                                   iwae_samples=monitor.iwae_samples)
        kl_per_dimension = validation.pop("kl_per_dimension")  # to TensorBoard, not into every epoch's record
        seconds = time.time() - started
        self.history["epochs"].append({"epoch": epoch, "seconds": seconds, "train": train_metrics,
                                       "validation": validation})
        self.state.epoch.assign(epoch)
        track_best(train, self.history, epoch, validation, self._save_best, self.log)
        follow_validation(train, self.history, epoch, self.optimizer, self.log)
        self._save(None)
        self.summaries.write("train", dict(train_metrics, learning_rate=float(self.optimizer.learning_rate.numpy()),
                                           kl_weight=float(self.model.kl_weight.numpy())), epoch)
        self.summaries.write("validation", dict(validation, kl_per_dimension=kl_per_dimension), epoch)
        if epoch % max(1, train.epochs // PICTURES_PER_RUN) == 0 or epoch == train.epochs:
            self._pictures(epoch)
        runs.write_json(os.path.join(self.write_dir, runs.METRICS_FILE), self.metrics)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, self.model, self.splits, self.write_dir)
        skipped = train_metrics["skipped_nonfinite_batches"]
        progress.end_epoch(epoch, seconds, (
            f"epoch {epoch}/{train.epochs}  train ELBO {train_metrics['elbo']:.2f}  "
            f"validation ELBO {validation['elbo']:.2f} ± {validation['elbo_stderr']:.2f} nats"
            + (f"  IWAE bound (K={monitor.iwae_samples}) {validation['iwae_bound']:.2f}" if monitor.iwae_samples else "")
            + (f"  {skipped} non-finite batches skipped" if skipped else "")))
        if self._stopping(stop):
            self._interrupt(stop, epoch, None)

    def _stopping(self, stop: StopSignals, position: Optional[int] = None) -> bool:
        """Whether to stop for a signal now. Several workers stop at the same step:
        they agree every FAULT_CHECK_EVERY steps (`position`) and at epoch ends."""
        if self.metrics["distribution"]["workers"] == 1:
            return bool(stop.received)
        if position is not None and position % FAULT_CHECK_EVERY:
            return False
        return distribute.any_worker(self.strategy, bool(stop.received))

    def _save(self, started: Optional[float]) -> str:
        """Checkpoint the state after the last step; `started`: time the current
        epoch began (None at an epoch end, once the epoch is in the history)."""
        self._check_faults()
        if not all(np.all(np.isfinite(v.numpy())) for v in self.model.variables):
            raise NonFiniteError(f"the weights became non-finite by step {int(self.state.step.numpy())}; "
                                 f"nothing was saved; {self._fix()}")
        self.history["epoch_seconds"] = 0.0 if started is None else time.time() - started
        return self.state.save(self.history)

    def _save_best(self) -> str:
        """Write the current weights as the best epoch's checkpoint; return its name."""
        self._check_faults()
        return os.path.basename(self.state.save_best())

    def use_best(self) -> str:
        """Load the best epoch's weights into the model if the run keeps them;
        return the name of the checkpoint the model now holds."""
        best = self.history.get("best") or {}
        if self.config.train.keep_best and best.get("checkpoint"):
            path = os.path.join(self.state.directory, best["checkpoint"])
            if not tf.io.gfile.exists(path + ".index"):  # a worker resumed after that epoch: the chief's copy
                path = os.path.join(self.run_dir, runs.CHECKPOINT_DIR, best["checkpoint"])
            tf.train.Checkpoint(model=self.model).read(path).expect_partial()
            return best["checkpoint"]
        return os.path.basename(self.state.latest)

    def _interrupt(self, stop: StopSignals, epoch: int, started: Optional[float]) -> None:
        step = int(self.state.step.numpy())
        latest = self.state.latest
        if latest is None or not latest.endswith(f"-{step}"):
            latest = self._save(started)
        number = stop.received or signal.SIGTERM  # another worker was signalled
        raise TrainingInterrupted(
            f"{signal.Signals(number).name} at step {step} (epoch {epoch}); saved checkpoint {latest}; "
            f"continue with: fit.py --resume {self.run_dir}", number)

    def _fix(self) -> str:
        return (f"the last good checkpoint is {self.state.latest or 'none (no checkpoint yet)'}; "
                f"lower --learning-rate (now {self.config.train.learning_rate:g}) and start again, or skip such "
                f"batches with: fit.py --resume {self.run_dir} --skip-nonfinite")

    def _check_faults(self) -> None:
        """Stop with a NonFiniteError if a step went non-finite (unless skipping them)."""
        if self.config.train.skip_nonfinite:
            return
        terms = int(self.faults.terms.numpy())
        if terms:
            step = int(self.faults.step.numpy()) + 1
            epoch = (step - 1) // self.steps_per_epoch + 1
            raise NonFiniteError(f"training stopped at step {step} (epoch {epoch}): "
                                 f"{NonFiniteFaults.describe(terms)} became non-finite (NaN or inf); {self._fix()}")

    def close(self) -> None:
        self.summaries.close()


def fit(config: RunConfig, run_dir: str, splits: Optional[data_lib.Splits] = None,
        overwrite: bool = False, log: Callable[[str], None] = print, resume: bool = False,
        on_epoch_end: Optional[Callable] = None, strategy=None) -> dict:
    """Train a VAE as `config` says, writing the run to `run_dir`.

    Args:
      resume: continue the run in `run_dir` from its newest checkpoint, with
        its saved config (a `config` contradicting it is refused).
      on_epoch_end: if given, called as `on_epoch_end(epoch, model, splits,
        run_dir)` after each epoch's checkpoint and metrics are written (e.g.
        `probvae.analysis.report.LatentSnapshots`).
      strategy: the tf.distribute strategy to train under; default the one
        `config.train.strategy` names, made before TensorFlow runs anything
        else. In a multi-worker cluster only the chief writes `run_dir`; every
        other worker writes to a temporary folder it removes at the end, and
        resumes from the chief's checkpoints (so `run_dir` must be readable
        from every host at the same path to resume).

    Returns:
      The metrics dict also written to RUN_DIR/metrics.json.

    Raises:
      UserError: bad input (nothing is written), a full disk (the last good
        checkpoint is kept); NonFiniteError: a non-finite loss or gradient.
      TrainingInterrupted: SIGINT or SIGTERM, after saving a checkpoint.
    """
    strategy = distribute.make_strategy(config.train.strategy) if strategy is None else strategy
    cluster = distribute.cluster_of(strategy)
    log = distribute.worker_log(log, cluster)
    with distribute.worker_directory(run_dir, cluster) as write_dir, runs.RunLock(write_dir, log) as lock:
        checked = run_dir if cluster.is_chief or resume else write_dir
        config, splits = runs.prepare_run(config, checked, splits=splits, overwrite=overwrite, resume=resume, log=log)
        if not resume:
            runs.prepare_run_dir(write_dir, overwrite=overwrite, lock=lock)
            runs.save_config(write_dir, config)
        if cluster.is_chief:
            log(f"run directory: {os.path.abspath(run_dir)}")
        seed_process(config.train)
        trainer = Trainer(config, splits, run_dir, log=log, on_epoch_end=on_epoch_end, strategy=strategy,
                          write_dir=write_dir)
        restored = trainer.restore() if resume else False
        if config.train.init_from is not None and not restored:
            trainer.initialize_from_run()
        try:
            metrics = trainer.train()
            saved = os.path.basename(trainer.state.latest or "none")
            with StopSignals() as stop:  # between batches: no exception lands inside TensorFlow's code

                def stop_if_signalled(done=None):
                    if stop.received:
                        raise TrainingInterrupted(
                            f"{stop.name} during the final test evaluation; training is complete and saved (newest "
                            f"checkpoint {saved}); evaluate with: evaluate.py {run_dir}, or rerun this evaluation "
                            f"with: fit.py --resume {run_dir}", stop.received)

                test = _test(trainer, config, splits, metrics, log, on_batch=stop_if_signalled)
                stop_if_signalled()
        except tf.errors.UnavailableError as error:  # a collective operation lost a worker
            if cluster.num_tasks == 1:
                raise
            raise UserError(f"lost contact with another worker ({type(error).__name__} in a collective operation); stop "
                            f"every worker, then resume on each host with: fit.py --resume {run_dir} (newest "
                            f"checkpoint: {os.path.basename(trainer.state.latest or 'none')})") from None
        metrics["test"] = test
        metrics["train_seconds"] = sum(e["seconds"] for e in metrics["epochs"])
        trainer.summaries.hparams(config, {f"test/{name}": test[name] for name in
                                           ("elbo", "log_likelihood", "bits_per_dim") if name in test},
                                  len(metrics["epochs"]))
        path = runs.write_json(os.path.join(write_dir, runs.METRICS_FILE), metrics)
        trainer.close()
    log(f"test ELBO {test['elbo']:.2f} ± {test['elbo_stderr']:.2f} nats "
        f"(reconstruction {test['reconstruction']:.2f}, KL {test['kl']:.2f}), log p(x) "
        f"{test['log_likelihood']:.2f} ± {test['log_likelihood_stderr']:.2f} nats (K={test['iwae_samples']}), "
        f"{test['bits_per_dim']:.4f} bits/dim on {test['n_examples']} images")
    if cluster.is_chief:
        log(f"run written to {os.path.abspath(run_dir)} (metrics: {path})")
    else:
        log(f"done; the chief writes the run to {os.path.abspath(run_dir)}, this worker's temporary files are removed")
    return metrics


def _test(trainer: Trainer, config: RunConfig, splits: data_lib.Splits, metrics: dict, log,
          on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """The test figures (`evaluation.evaluate`) of the best epoch's weights, or the last."""
    train = config.train
    checkpoint = trainer.use_best()
    best = metrics["best"]
    if checkpoint.startswith("best") and best["epoch"] != metrics["epochs"][-1]["epoch"]:
        monitor = monitored(train)
        log(f"test evaluation with the weights of epoch {best['epoch']} (best {monitor.label} "
            f"{best.get('validation_' + monitor.key, best['validation_elbo']):.2f}): {checkpoint}")
    log(f"final test evaluation: {len(splits.x_test)} images, K={train.test_iwae_samples}")
    return evaluation.evaluate(
        trainer.model, splits.x_test, iwae_samples=train.test_iwae_samples, batch_size=train.eval_batch_size,
        seed=train.seed + 10_000, binarization_seed=config.data.split_seed, checkpoint=checkpoint,
        strategy=trainer.strategy, on_batch=on_batch).as_dict()
