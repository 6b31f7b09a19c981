"""`fit`: a run from its pre-flight to its final test evaluation.

`fit(config, run_dir)` checks everything first (`preflight.prepare_run`),
creates the run directory, lets a `Trainer` run the epochs (resuming from the
newest checkpoint with `resume=True`), evaluates the best epoch's weights on
the test set (`final_test`) and writes metrics.json.

Randomness (`probvae.seeds`): weights from `keras.utils.set_random_seed(seed)`; shuffling,
binarization and posterior samples from stateless seeds derived from (seed,
epoch, step), so a CPU run is repeatable, and a resumed run sees the batches
and samples the uninterrupted one would have.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import tensorflow as tf

from probvae import data as data_lib
from probvae import evaluation, runs, seeds
from probvae._keras import keras
from probvae.config import RunConfig
from probvae.errors import TrainingInterrupted, UserError
from probvae.training import distribute
from probvae.training.callbacks import monitored
from probvae.training.checkpoints import StopSignals
from probvae.training.preflight import check_arguments, prepare_run
from probvae.training.trainer import Trainer

__all__ = ["Trainer", "fit", "final_test", "seed_process"]


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
    check_arguments(config, run_dir)
    strategy = distribute.make_strategy(config.train.strategy) if strategy is None else strategy
    cluster = distribute.cluster_of(strategy)
    log = distribute.worker_log(log, cluster)
    with distribute.worker_directory(run_dir, cluster) as write_dir, runs.RunLock(write_dir, log) as lock:
        checked = run_dir if cluster.is_chief or resume else write_dir
        config, splits = prepare_run(config, checked, splits=splits, overwrite=overwrite, resume=resume, log=log)
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

                test = final_test(trainer, splits, metrics, log, on_batch=stop_if_signalled)
                stop_if_signalled()
        except tf.errors.UnavailableError as error:  # a collective operation lost a worker
            if cluster.num_tasks == 1:
                raise
            raise UserError(f"lost contact with another worker ({type(error).__name__} in a collective operation); "
                            "stop "
                            f"every worker, then resume on each host with: fit.py --resume {run_dir} (newest "
                            f"checkpoint: {os.path.basename(trainer.state.latest or 'none')})") from None
        metrics["test"] = test
        metrics["train_seconds"] = sum(e["seconds"] for e in metrics["epochs"])
        if all("cpu_seconds" in e for e in metrics["epochs"]):  # not in epochs of earlier versions
            metrics["train_cpu_seconds"] = sum(e["cpu_seconds"] for e in metrics["epochs"])
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


def final_test(trainer: Trainer, splits: data_lib.Splits, metrics: dict, log,
               on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """The test figures (`evaluation.evaluate`) of the best epoch's weights, or the last."""
    config = trainer.config
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
        seed=seeds.test_seed(train.seed), binarization_seed=config.data.split_seed, checkpoint=checkpoint,
        strategy=trainer.strategy, on_batch=on_batch).as_dict()
