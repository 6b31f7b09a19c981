"""One epoch of the training loop, in its two halves.

- `run_steps`: the training steps, in compiled calls (`StepLoop`) that end at
  the next fault check (every FAULT_CHECK_EVERY steps), the next checkpoint
  and the epoch's end, so those keep their steps whatever the call size. The
  benchmark's probvae contender runs its epochs through it too, so it times
  what `fit` runs.
- `end_epoch`: after the last step, the validation pass, the callbacks'
  decisions (best epoch, early stopping, step size), the checkpoint, the
  TensorBoard summaries and pictures, metrics.json and the epoch's line.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Tuple

from probvae import data as data_lib
from probvae import replicas, seeds
from probvae.errors import NonFiniteError, UnreadableImagesError, UserError
from probvae.training.callbacks import Decision, follow_validation, monitored, track_best
from probvae.training.step import FAULT_CHECK_EVERY, NonFiniteFaults, StepLoop

__all__ = ["run_steps", "epoch_batches", "validate", "apply_decision", "end_epoch", "PICTURES_PER_RUN", "IMAGES_SHOWN"]

# Pictures in TensorBoard: this many times a run, IMAGES_SHOWN reconstructions and twice as many prior draws.
PICTURES_PER_RUN = 20
IMAGES_SHOWN = 8


def run_steps(step_loop: StepLoop, iterator, step: int, position: int, steps: int, checkpoint_every: int,
              after_call: Callable[[int, int, int], None]) -> Tuple[int, int]:
    """Train on `iterator`'s batches from step `position` of an epoch of
    `steps` (global step `step`) to its end.

    Each call of `step_loop` ends at the next multiple of FAULT_CHECK_EVERY
    steps into the epoch, the next multiple of `checkpoint_every` global steps
    (0: none) and the epoch's end; then `after_call(step, position, done)` runs
    on the host (it may raise to stop). Stops early when the iterator runs out.

    Returns:
      (global step, position in the epoch) after the last step.
    """
    while position < steps:
        limit = min(steps - position, FAULT_CHECK_EVERY - position % FAULT_CHECK_EVERY)
        if checkpoint_every:
            limit = min(limit, checkpoint_every - step % checkpoint_every)
        done = step_loop.run(iterator, step_loop.size(limit))
        step, position = step + done, position + done
        after_call(step, position, done)
        if not done:  # a stream of files that failed to decode ran out early
            break
    return step, position


def epoch_batches(trainer, epoch: int, position: int):
    """The training batches of `epoch` from step `position` on: an `ArrayEpoch`
    that the compiled loop computes itself (an in-memory set on one device),
    else a (distributed) tf.data pipeline."""
    train = trainer.config.train
    if trainer.array_batches is not None:
        return trainer.array_batches.epoch(epoch, start_step=position)
    return replicas.distribute_batches(trainer.strategy, lambda: data_lib.training_batches(
        trainer.splits.x_train, train.batch_size, seed=train.seed, epoch=epoch,
        binarize=trainer.model.likelihood_head.binarize, start_step=position), train.batch_size)


def validate(trainer, epoch: int) -> Tuple[dict, list]:
    """The validation figures after `epoch` (`Trainer.evaluate` with the
    epoch's seed, and the bound the run is judged by) and the per-dimension
    KL, which goes to TensorBoard only.

    Raises:
      UserError: a validation image (of an image folder) can no longer be
        read: the epoch's figures would not compare with the others', so the
        run stops before anything of the epoch is written.
    """
    train, images = trainer.config.train, trainer.splits.x_validation
    try:
        validation = trainer.evaluate(images, seed=seeds.validation_seed(train.seed, epoch),
                                      with_latents=True, iwae_samples=monitored(train).iwae_samples)
    except UnreadableImagesError:
        validation = {"skipped_images": len(images)}
    if validation.get("skipped_images"):
        raise UserError(_unreadable(trainer, epoch, validation["skipped_images"]))
    return validation, validation.pop("kl_per_dimension")


def _unreadable(trainer, epoch: int, skipped: int) -> str:
    """Why the run stops when `skipped` validation images failed after `epoch`, and how to continue."""
    images = trainer.splits.x_validation
    failing = images.failing()
    names = f" ({', '.join(failing[:3])}{', ...' if len(failing) > 3 else ''})" if failing else ""
    latest = os.path.basename(trainer.state.latest) if trainer.state.latest else "none yet"
    return (f"validation after epoch {epoch}: {skipped} of {len(images)} validation images can no longer be "
            f"read{names}; their files changed or were removed since the data were listed, and a validation "
            f"without them would not compare with the other epochs'; nothing of epoch {epoch} was written: "
            f"restore the files, then continue with fit.py --resume {trainer.run_dir} (newest checkpoint: {latest})")


def apply_decision(trainer, decision: Decision, epoch: int) -> None:
    """Carry out a callback's `decision` on the trainer's history, optimizer and log."""
    history = trainer.history
    if decision.best is not None:
        best = dict(decision.best)
        if trainer.config.train.keep_best:
            best["checkpoint"] = trainer.save_best()
        history.best = best
    if decision.stop:
        history.stopped_early = epoch
    if decision.learning_rate is not None:
        current = float(trainer.optimizer.learning_rate.numpy())
        history.epochs[-1]["learning_rate"] = current
        if decision.learning_rate != current:
            trainer.optimizer.learning_rate.assign(decision.learning_rate)
            history.lr_reduced_at = epoch
    if decision.kl_weight is not None:
        trainer.model.kl_weight.assign(decision.kl_weight)
    if decision.message:
        trainer.log(decision.message)


def _pictures(trainer, epoch: int) -> None:
    """Reconstructions of the first validation images and decoded prior draws, to TensorBoard."""
    model = trainer.model
    x = model.prepare_inputs(trainer.splits.x_validation[:IMAGES_SHOWN], trainer.config.data.split_seed)
    trainer.summaries.images("validation", {
        "reconstructions/input": x, "reconstructions/mean of p(x|z) at E[z|x]": model(x),
        "prior samples/mean of p(x|z), z ~ p(z)": model.sample(2 * IMAGES_SHOWN, seed=seeds.picture_seed(epoch)).mean,
    }, epoch)


def end_epoch(trainer, epoch: int, started: float) -> None:
    """Everything after the last step of `epoch` (begun at time `started`), in this order:
    validation, the epoch's record, the best epoch and early stopping, the step
    size, the checkpoint, summaries and pictures, metrics.json, `on_epoch_end`,
    and the epoch's line."""
    train = trainer.config.train
    train_metrics = trainer.totals.means()
    train_metrics["skipped_nonfinite_batches"] = int(trainer.totals.skipped.numpy())
    train_metrics.update(trainer.norms.means(train.clip_norm))
    with trainer.published():  # the averaged weights under --weight-average
        validation, kl_per_dimension = validate(trainer, epoch)
        seconds = time.time() - started
        record = {"epoch": epoch, "seconds": seconds}
        if trainer.cpu_started is not None:  # else begun by a version that did not count CPU time
            record["cpu_seconds"] = time.process_time() - trainer.cpu_started
        trainer.history.epochs.append(dict(record, train=train_metrics, validation=validation))
        trainer.state.epoch.assign(epoch)
        apply_decision(trainer, track_best(train, trainer.history, epoch, validation), epoch)
        apply_decision(trainer, follow_validation(train, trainer.history, epoch,
                                          float(trainer.optimizer.learning_rate.numpy())), epoch)
        trainer.save(None)
        learning_rate = float(trainer.optimizer.learning_rate.numpy())
        trainer.summaries.write("train", dict(train_metrics, learning_rate=learning_rate,
                                              kl_weight=float(trainer.model.kl_weight.numpy())), epoch)
        trainer.summaries.write("validation", dict(validation, kl_per_dimension=kl_per_dimension), epoch)
        if epoch % max(1, train.epochs // PICTURES_PER_RUN) == 0 or epoch == train.epochs:
            _pictures(trainer, epoch)
        trainer.write_metrics()
        if trainer.on_epoch_end is not None:
            trainer.on_epoch_end(epoch, trainer.model, trainer.splits, trainer.write_dir)
    trainer.progress.end_epoch(epoch, seconds, _line(train, epoch, train_metrics, validation))


def fault_remedy(trainer) -> str:
    """What to do after a non-finite step: the last good checkpoint and the two ways on."""
    return (f"the last good checkpoint is {trainer.state.latest or 'none (no checkpoint yet)'}; "
            f"lower --learning-rate (now {trainer.config.train.learning_rate:g}) and start again, or skip such "
            f"batches with: fit.py --resume {trainer.run_dir} --skip-nonfinite")


def check_faults(trainer) -> None:
    """Stop with a NonFiniteError if a step went non-finite (unless the run skips such batches)."""
    if trainer.config.train.skip_nonfinite:
        return
    terms = int(trainer.faults.terms.numpy())
    if terms:
        step = int(trainer.faults.step.numpy()) + 1
        epoch = (step - 1) // trainer.steps_per_epoch + 1
        raise NonFiniteError(f"training stopped at step {step} (epoch {epoch}): "
                             f"{NonFiniteFaults.describe(terms)} became non-finite (NaN or inf); "
                             f"{fault_remedy(trainer)}")


def _line(train, epoch: int, train_metrics: dict, validation: dict) -> str:
    """The epoch's line in the log."""
    samples, skipped = monitored(train).iwae_samples, train_metrics["skipped_nonfinite_batches"]
    clipped = train_metrics.get("clipped_batches", 0)
    return (f"epoch {epoch}/{train.epochs}  train ELBO {train_metrics['elbo']:.2f}  "
            f"validation ELBO {validation['elbo']:.2f} ± {validation['elbo_stderr']:.2f} nats"
            + (f"  IWAE bound (K={samples}) {validation['iwae_bound']:.2f}" if samples else "")
            + (f"  {clipped} batches clipped" if clipped else "")
            + (f"  {skipped} non-finite batches skipped" if skipped else ""))
