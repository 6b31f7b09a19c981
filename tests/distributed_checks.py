"""The tf.distribute comparisons that need a fresh process: MirroredStrategy
over two logical CPU devices against one device. Run as a script
(`python tests/distributed_checks.py steps,faults OUT.json`), this file
splits the CPU into two logical devices before TensorFlow starts, runs the
named checks and writes what they measured. test_distribute.py runs them
all in one such process (`run_checks`): TensorFlow starts once for them.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
# A process starts TensorFlow in about 5 s on a quiet machine; a loaded one can take ten times that.
TIMEOUT = 600
# All the checks take about 2 minutes in one process on a quiet machine; the same margin.
CHECKS_TIMEOUT = 1800
# 48 shapes in global batches of 6: 8 steps of an MLP with a 2-D latent.
STEPS = 8


def _config(**model):
    from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    values = dict(arch="mlp", latent_dim=2, hidden_units=(9,))
    values.update(model)
    return RunConfig(data=DataConfig(dataset="shapes", max_train_examples=6 * STEPS),
                     model=ModelConfig(**values),
                     train=TrainConfig(epochs=1, batch_size=6, learning_rate=1e-2, eval_batch_size=7, seed=5))


def _train(config, splits, run_dir, strategy, weights=None):
    """The trainer after STEPS steps, and the losses and weights along the way."""
    from probvae import data, replicas
    from probvae.training import Trainer, seed_process

    config = config.replace(model={"image_shape": splits.image_shape})
    seed_process(config.train)
    trainer = Trainer(config, splits, run_dir, log=lambda _: None, strategy=strategy)
    initial = [v.numpy() for v in trainer.model.weights]
    if weights is not None:
        trainer.model.set_weights(weights)
    initial_trainable = [v.numpy() for v in trainer.model.trainable_variables]
    train = config.train
    batches = replicas.distribute_batches(strategy, lambda: data.training_batches(
        splits.x_train, train.batch_size, binarize=True, seed=train.seed, epoch=1), train.batch_size)
    losses, started = [], None
    for x in batches:
        losses.append(float(trainer.train_step(x)))
        started = started or time.perf_counter()  # after the first step, which traces
    return trainer, {"initial": initial, "initial_trainable": initial_trainable,
                     "losses": losses, "weights": [v.numpy() for v in trainer.model.weights],
                     "traces": trainer.train_step.experimental_get_tracing_count(),
                     "steps_per_second": (len(losses) - 1) / (time.perf_counter() - started)}


def _max_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


def _compare_steps(work_dir, splits, mirrored):
    """STEPS steps on one device and on two replicas from the same weights."""
    from probvae.training import distribute

    # 30 images in batches of 7: 5 batches, so the second replica has none in the last round.
    held_out = splits.x_validation[:30]
    report = {"replicas": mirrored.num_replicas_in_sync, "devices": distribute.describe(mirrored)["devices"]}
    variants = {
        # The defaults: XLA for the MLP (each replica's loss and gradients), the cosine step size.
        "mlp_xla_cosine": _config(),
        # Free bits: batch means over the global batch, all-reduced inside the loss, so
        # no XLA under replicas; XLA draws other normals from a seed, so none on one device either.
        # With a moving average of the weights, updated on every replica, and the gradients clipped
        # by the global batch's norm (about 23 at the first step), not by each replica's.
        "mlp_free_bits": _config().replace(train={"free_bits": 0.3, "jit_compile": False, "weight_average": 0.5,
                                                  "clip_norm": 5.0}),
        # The KL regularizer's share, synchronized batch normalisation.
        "conv_batch_norm": _config(arch="conv", conv_filters=(4,), dense_units=5, batch_norm=True),
    }
    for name, config in variants.items():
        one_trainer, one = _train(config, splits, os.path.join(work_dir, name + "-one"),
                                  distribute.make_strategy("one-device"))
        two_trainer, two = _train(config, splits, os.path.join(work_dir, name + "-two"), mirrored,
                                  weights=one["initial"])
        one_eval = one_trainer.evaluate(held_out, seed=3)
        two_trainer.model.set_weights(one["weights"])  # the same weights, evaluated on two replicas
        two_eval = two_trainer.evaluate(held_out, seed=3)
        report[name] = {
            "same_initial_weights_from_the_seed": _max_difference(one["initial"], two["initial"]) == 0.0,
            "losses": [one["losses"], two["losses"]],
            "weight_max_abs_diff": _max_difference(one["weights"], two["weights"]),
            "weight_largest_change": _max_difference(one["weights"], one["initial"]),
            "weight_names": [v.name for v in one_trainer.model.weights],
            "weight_abs_diffs": [float(np.max(np.abs(a - b))) for a, b in zip(one["weights"], two["weights"])],
            "evaluation": [one_eval, two_eval],
            "traces": [one["traces"], two["traces"]],
            "learning_rates": [float(t.optimizer.learning_rate.numpy()) for t in (one_trainer, two_trainer)],
            "steps_per_second": [one["steps_per_second"], two["steps_per_second"]],
            "gradient_norms": [t.norms.means(config.train.clip_norm) for t in (one_trainer, two_trainer)],
        }
        if one_trainer.average:
            averages = [[h.numpy() for h in t.average.held] for t in (one_trainer, two_trainer)]
            report[name].update(average_max_abs_diff=_max_difference(*averages),
                                average_largest_change=_max_difference(averages[0], one["initial_trainable"]),
                                average_replicas_differ=max(_max_difference(c, c[:1] * len(c)) for c in (
                                    mirrored.experimental_local_results(h) for h in two_trainer.average.held)))
    return report


def _replicas_differ(strategy, model) -> float:
    """Largest difference between the replicas' copies of a weight (0 on one device)."""
    copies = [strategy.experimental_local_results(v) for v in model.weights]
    return max(_max_difference(c, c[:1] * len(c)) for c in copies)


def _poisoned(splits, train, step, row):
    """The epoch's global batches with NaN in one row of one step."""
    import tensorflow as tf

    from probvae import data

    def poison(index, x):  # [B, h, w, c]
        rows = tf.reshape(tf.range(tf.shape(x)[0]) == row, [-1, 1, 1, 1])
        return tf.where(tf.logical_and(index == step, rows), np.float32("nan"), x)

    return data.training_batches(splits.x_train, train.batch_size, binarize=True, seed=train.seed,
                                 epoch=1).enumerate().map(poison)


def _faults(work_dir, splits, mirrored):
    """A NaN in the rows of the second replica at step 2, on one device and on two
    replicas, stopping and skipping; and mixed precision (a LossScaleOptimizer)."""
    from probvae import replicas
    from probvae.errors import NonFiniteError
    from probvae.training import Trainer, distribute, seed_process
    from probvae.training.epoch import check_faults

    report = {}
    for skip in (False, True):
        config = _config().replace(model={"image_shape": splits.image_shape}, train={"skip_nonfinite": skip})
        runs = {}
        for name, strategy in (("one", distribute.make_strategy("one-device")), ("two", mirrored)):
            seed_process(config.train)
            trainer = Trainer(config, splits, os.path.join(work_dir, f"faults-{skip}-{name}"), log=lambda _: None,
                              strategy=strategy)
            if runs:
                trainer.model.set_weights(runs["one"]["initial"])
            initial = [v.numpy() for v in trainer.model.weights]
            batches = replicas.distribute_batches(strategy, lambda config=config: _poisoned(splits, config.train, 2, 4),
                                                    config.train.batch_size)
            losses = [float(trainer.train_step(x)) for x in batches]
            try:
                check_faults(trainer)
                error = None
            except NonFiniteError as raised:
                error = str(raised)
            runs[name] = {
                "initial": initial, "losses": losses, "error": error,
                "terms": int(trainer.faults.terms.numpy()), "fault_step": int(trainer.faults.step.numpy()),
                "skipped": int(trainer.totals.skipped.numpy()), "step": int(trainer.state.step.numpy()),
                "weights": [v.numpy() for v in trainer.model.weights],
                "replicas_differ": _replicas_differ(strategy, trainer.model),
            }
        one, two = runs["one"], runs["two"]
        report["skip" if skip else "stop"] = {
            "losses": [one["losses"], two["losses"]], "errors": [one["error"], two["error"]],
            "terms": [one["terms"], two["terms"]], "fault_steps": [one["fault_step"], two["fault_step"]],
            "skipped": [one["skipped"], two["skipped"]], "steps": [one["step"], two["step"]],
            "weight_max_abs_diff": _max_difference(one["weights"], two["weights"]),
            "replicas_differ": two["replicas_differ"],
        }
    config = _config().replace(train={"precision": "float16", "jit_compile": False})
    one_trainer, one = _train(config, splits, os.path.join(work_dir, "mixed-one"),
                              distribute.make_strategy("one-device"))
    two_trainer, two = _train(config, splits, os.path.join(work_dir, "mixed-two"), mirrored,
                              weights=one["initial"])
    report["mixed_precision"] = {
        "optimizers": [type(t.optimizer).__name__ for t in (one_trainer, two_trainer)],
        "loss_scales": [float(t.optimizer.loss_scale) for t in (one_trainer, two_trainer)],
        "terms": [int(t.faults.terms.numpy()) for t in (one_trainer, two_trainer)],
        "skipped": [int(t.totals.skipped.numpy()) for t in (one_trainer, two_trainer)],
        "replicas_differ": _replicas_differ(mirrored, two_trainer.model),
        "losses": [one["losses"], two["losses"]],
        "weight_max_abs_diff": _max_difference(one["weights"], two["weights"]),
        "compute_dtype": two_trainer.model.encoder.layers[0].compute_dtype,
    }
    return report


def _ais(work_dir, splits, mirrored):
    """AIS and BDMC of the same weights on one device and spread over two replicas,
    in chunks that split the images (3 chunks: the last round leaves a replica
    idle) and the chains (6 chunks of 2 + 1 chains)."""
    from probvae import evaluation
    from probvae.model import VAE
    from probvae.training import distribute

    config = _config().model.replace(image_shape=splits.image_shape)
    with distribute.make_strategy("one-device").scope():
        one = VAE(config)
    with mirrored.scope():
        two = VAE(config)
    two.set_weights(one.get_weights())
    report = {}
    for name, images, ais in (("images", 5, dict(num_chains=2, chunk_rows=4)),
                              ("chains", 3, dict(num_chains=3, chunk_rows=2))):
        ais = dict(ais, num_steps=5, num_leapfrog_steps=2)
        x = one.prepare_inputs(splits.x_test[:images])
        progress = {"one": [], "two": []}
        estimates = {key: evaluation.ais_log_likelihood(model, x, seed=7, strategy=strategy,
                                                        on_chunk=progress[key].append, **ais)
                     for key, model, strategy in (("one", one, None), ("two", two, mirrored))}
        results = {key: evaluation.evaluate(model, splits.x_test[:images], estimator="ais", ais=ais, bdmc_examples=3,
                                            seed=7, strategy=strategy).as_dict()
                   for key, model, strategy in (("one", one, None), ("two", two, mirrored))}
        report[name] = {
            "log_weights": [estimates[key].log_weights.tolist() for key in ("one", "two")],
            "acceptance": [estimates[key].acceptance.tolist() for key in ("one", "two")],
            "step_size": [estimates[key].step_size.tolist() for key in ("one", "two")],
            "progress": [progress["one"], progress["two"]],
            "evaluations": [{k: v for k, v in results[key].items() if "seconds" not in k and k != "bdmc"}
                            for key in ("one", "two")],
            "bdmc": [{k: v for k, v in results[key]["bdmc"].items() if k != "seconds"} for key in ("one", "two")],
        }
    return report


def _flow(work_dir, splits, mirrored):
    """STEPS steps of an IAF posterior under a VampPrior on one device and on two replicas."""
    from probvae.training import distribute

    config = _config(posterior="iaf", iaf_steps=2, iaf_units=4, prior="vamp", prior_components=3)
    _, one = _train(config, splits, os.path.join(work_dir, "flow-one"), distribute.make_strategy("one-device"))
    _, two = _train(config, splits, os.path.join(work_dir, "flow-two"), mirrored, weights=one["initial"])
    return {"losses": [one["losses"], two["losses"]]}


def _fit_and_resume(work_dir, splits, mirrored):
    """fit on one device; fit on two replicas; the latter again, resumed from
    its checkpoint at step 12 as if killed there (2 epochs of 8 steps)."""
    from probvae import runs
    from probvae.training import distribute, fit

    config = _config().replace(train={"epochs": 2, "checkpoint_every_steps": 3})
    quiet = dict(splits=splits, log=lambda _: None)
    one = fit(config, os.path.join(work_dir, "fit-one"), strategy=distribute.make_strategy("one-device"), **quiet)
    two_dir = os.path.join(work_dir, "fit-two")
    two = fit(config, two_dir, strategy=mirrored, **quiet)
    checkpoints = os.path.join(two_dir, runs.CHECKPOINT_DIR)
    for name in os.listdir(checkpoints):  # keep ckpt-12 (and best-8) only, as a run killed after step 12 would
        if not name.startswith(("ckpt-12.", "best-")):
            os.remove(os.path.join(checkpoints, name))
    with open(os.path.join(checkpoints, "checkpoint"), "w") as stream:
        stream.write('model_checkpoint_path: "ckpt-12"\nall_model_checkpoint_paths: "ckpt-12"\n')
    os.remove(os.path.join(two_dir, runs.METRICS_FILE))
    resumed = fit(config, two_dir, resume=True, strategy=mirrored, **quiet)
    weights = [runs.load_run(d).get_weights() for d in (os.path.join(work_dir, "fit-one"), two_dir)]
    return {"metrics": [one, two, resumed], "weight_max_abs_diff": _max_difference(*weights)}



def environment(**extra):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    environment.setdefault("TF_USE_LEGACY_KERAS", "1")  # as the commands start TensorFlow: without Keras 3
    environment["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return environment


def run_checks(checks, tmp_path):
    """{check: report} of `checks` (names of `_CHECKS`), run in one process on two logical CPUs."""
    out = tmp_path / "reports.json"
    result = subprocess.run([sys.executable, os.path.abspath(__file__), ",".join(checks), str(out)],
                            capture_output=True, text=True, timeout=CHECKS_TIMEOUT, env=environment())
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())



# --- script mode ------------------------------------------------------------------


_CHECKS = {"steps": _compare_steps, "faults": _faults, "fit": _fit_and_resume, "ais": _ais, "flow": _flow}


def _script(checks, out_path):
    """Split the CPU into two logical devices, run `checks` (comma-separated names of
    `_CHECKS`), write {check: report} as JSON."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from probvae import data
    from probvae.training import distribute

    splits = data.load_dataset("shapes", max_train_examples=6 * STEPS)
    # 40 validation and 50 test images (of 250 and 500): the fits' evaluations, in batches of 7.
    splits = dataclasses.replace(splits, x_validation=splits.x_validation[:40], x_test=splits.x_test[:50])
    mirrored = distribute.make_strategy("mirrored")
    report = {}
    for check in checks.split(","):
        started = time.time()
        report[check] = _CHECKS[check](os.path.dirname(out_path), splits, mirrored)
        print(f"{check}: {time.time() - started:.1f} s", file=sys.stderr, flush=True)
    with open(out_path, "w") as stream:
        json.dump(report, stream, indent=2)


if __name__ == "__main__":
    _script(sys.argv[1], sys.argv[2])

