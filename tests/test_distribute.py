"""tf.distribute: the cluster and strategy choice, the split of a global batch,
MirroredStrategy over two logical CPU devices against one device, and a real
two-process MultiWorkerMirroredStrategy run of fit.py on 127.0.0.1.

Run as a script (`python tests/test_distribute.py mirrored OUT.json`), this
file splits the CPU into two logical devices before TensorFlow starts, trains
the same model on one device and on both, and writes what it measured.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
# A process starts TensorFlow in about 5 s on a quiet machine; a loaded one can take ten times that.
TIMEOUT = 600
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
    from probvae import data
    from probvae import replicas
    from probvae.training import Trainer, seed_process

    config = config.replace(model={"image_shape": splits.image_shape})
    seed_process(config.train)
    trainer = Trainer(config, splits, run_dir, log=lambda _: None, strategy=strategy)
    initial = [v.numpy() for v in trainer.model.weights]
    if weights is not None:
        trainer.model.set_weights(weights)
    train = config.train
    batches = replicas.distribute_batches(strategy, lambda: data.training_batches(
        splits.x_train, train.batch_size, binarize=True, seed=train.seed, epoch=1), train.batch_size)
    losses, started = [], None
    for x in batches:
        losses.append(float(trainer.train_step(x)))
        started = started or time.perf_counter()  # after the first step, which traces
    return trainer, {"initial": initial, "losses": losses, "weights": [v.numpy() for v in trainer.model.weights],
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
        "mlp_free_bits": _config().replace(train={"free_bits": 0.3, "jit_compile": False}),
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
        }
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
    from probvae.training import distribute
    from probvae.errors import NonFiniteError
    from probvae.training import Trainer, seed_process

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
            batches = replicas.distribute_batches(strategy, lambda: _poisoned(splits, config.train, 2, 4),
                                                    config.train.batch_size)
            losses = [float(trainer.train_step(x)) for x in batches]
            try:
                trainer._check_faults()
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
    config = _config().replace(train={"mixed_precision": True, "jit_compile": False})
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


def _fit_and_resume(work_dir, splits, mirrored):
    """fit on one device; fit on two replicas; the latter again, resumed from
    its checkpoint at step 12 as if killed there (2 epochs of 8 steps)."""
    from probvae import runs
    from probvae.training import distribute
    from probvae.training import fit

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


# --- in this process: the cluster, the strategy choice, the split ------------------


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1"]}, {"type": "chief", "index": 0}, True),
    ({"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1"]}, {"type": "worker", "index": 0}, False),
])
def test_the_chief_is_the_chief_task_else_worker_0(cluster, task, chief):
    from probvae.training import distribute

    found = distribute.cluster_from_env({"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})})
    assert found.is_chief == chief and found.num_tasks == sum(len(v) for v in cluster.values())
    assert (found.task_type, found.task_id) == (task["type"], task["index"])
    assert distribute.cluster_from_env({}).is_chief and distribute.cluster_from_env({}).num_tasks == 1


@pytest.mark.parametrize("text, problem", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG names job(s) ps; probvae trains with chief and worker tasks only"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "TF_CONFIG task 'worker' 3 is not in its cluster (1 worker)"),
])
def test_a_bad_tf_config_is_one_line_naming_the_fix(text, problem):
    from probvae.training import distribute
    from probvae.errors import UserError

    with pytest.raises(UserError) as raised:
        distribute.cluster_from_env({"TF_CONFIG": text})
    message = str(raised.value)
    assert message.startswith(problem) and "docs/distributed.md" in message and "\n" not in message


def test_strategy_choice():
    import tensorflow as tf

    from probvae import replicas
    from probvae.training import distribute
    from probvae.errors import UserError

    assert distribute.make_strategy("one-device", distribute.Cluster()) is tf.distribute.get_strategy()
    if not tf.config.list_physical_devices("GPU"):
        assert distribute.make_strategy("auto", distribute.Cluster()) is tf.distribute.get_strategy()
    two = distribute.Cluster("worker", 0, 2)
    with pytest.raises(UserError, match="TF_CONFIG describes a cluster of 2 tasks but --strategy mirrored"):
        distribute.make_strategy("mirrored", two)
    with pytest.raises(UserError, match="unknown strategy 'tpu'; choose one of: auto, one-device, mirrored"):
        distribute.make_strategy("tpu", distribute.Cluster())
    with pytest.raises(UserError, match="batch size 7 does not split evenly over 2 replicas; use a multiple of 2"):
        replicas.check_batch_size(7, type("TwoReplicas", (), {"num_replicas_in_sync": 2})())


def test_only_the_chief_writes_the_run_directory(tmp_path, monkeypatch):
    from probvae.training import distribute

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with distribute.worker_directory("runs/x", distribute.Cluster("worker", 0, 2)) as path:
        assert path == "runs/x"
    with pytest.raises(RuntimeError):
        with distribute.worker_directory("runs/x", distribute.Cluster("worker", 1, 2)) as path:
            assert os.path.dirname(path) == str(tmp_path / "tmp") and "worker1" in path
            open(os.path.join(path, "metrics.json"), "w").close()
            raise RuntimeError("the worker failed")
    assert os.listdir(tmp_path / "tmp") == []  # removed, also after an error


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_the_rows_of_a_split_batch_draw_the_whole_batch_sample(covariance):
    import tensorflow as tf

    from conftest import reparameterized_sample
    from probvae.distributions import posterior_distribution, posterior_params_size, sample_posterior

    params = np.random.default_rng(3).normal(size=(5, posterior_params_size(2, covariance))).astype(np.float32)
    seed = tf.constant([7, 8])
    whole = sample_posterior(posterior_distribution(params, 2, covariance), seed).numpy()  # [5, 2]
    pieces = [sample_posterior(posterior_distribution(params[a:b], 2, covariance), seed, rows=(a, 5)).numpy()
              for a, b in ((0, 2), (2, 5))]
    # The same noise rows; the matrix-vector products may round differently in the last bit.
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=1e-6, atol=1e-7)
    expected = reparameterized_sample(posterior_distribution(params, 2, covariance), seed)
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-6)
    # The whole batch's sample is TFP's own, bit for bit (one device trains as before).
    np.testing.assert_array_equal(whole, posterior_distribution(params, 2, covariance).sample(seed=seed).numpy())


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_replica_shares_of_the_loss_sum_to_the_whole_batch_loss(binary_images, prior):
    import tensorflow as tf

    from conftest import tiny_model_config
    from probvae.model import VAE

    vae = VAE(tiny_model_config(prior=prior, prior_components=3), kl_weight=0.5)
    seed = tf.constant([2, 9])
    loss, parts = vae.training_loss(binary_images, seed=seed)
    # Closed form of the whole-batch loss: -mean reconstruction + kl_weight * mean KL.
    np.testing.assert_allclose(loss, -np.mean(parts.reconstruction) + 0.5 * np.mean(parts.kl), rtol=1e-5)
    shares = [vae.training_loss(binary_images[a:b], seed=seed, rows=(a, 3)) for a, b in ((0, 1), (1, 3))]
    np.testing.assert_allclose(sum(float(share) for share, _ in shares), loss, rtol=1e-5)
    for name in ("elbo", "kl"):  # each example keeps its own posterior sample
        np.testing.assert_allclose(np.concatenate([getattr(p, name) for _, p in shares]), getattr(parts, name),
                                   rtol=1e-5)


# --- MirroredStrategy on two logical CPU devices, in a fresh process --------------


def _environment(**extra):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    environment.setdefault("TF_USE_LEGACY_KERAS", "1")  # as the commands start TensorFlow: without Keras 3
    environment["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return environment


def _run_script(checks, tmp_path):
    """{check: report} of `checks` (names of `_CHECKS`), run in one process on two logical CPUs."""
    out = tmp_path / "reports.json"
    result = subprocess.run([sys.executable, os.path.abspath(__file__), ",".join(checks), str(out)],
                            capture_output=True, text=True, timeout=TIMEOUT, env=_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """The comparisons with one device, in one process (it starts TensorFlow once)."""
    return _run_script(["steps", "faults", "fit"], tmp_path_factory.mktemp("mirrored"))


def test_mirrored_training_on_two_devices_matches_one_device(mirrored):
    report = mirrored["steps"]
    assert report["replicas"] == 2 and len(report["devices"]) == 2
    for name in ("mlp_xla_cosine", "mlp_free_bits", "conv_batch_norm"):
        measured = report[name]
        one, two = measured["losses"]
        assert len(one) == STEPS and measured["traces"] == [1, 1], name
        assert measured["same_initial_weights_from_the_seed"], name
        # float32 sums in another order: measured at most 5e-7 relative over 8 steps.
        np.testing.assert_allclose(two, one, rtol=1e-5, err_msg=name)
        # The same weights give the same held-out numbers on two replicas (measured: equal, or 4e-9 relative).
        for key in ("elbo", "elbo_stderr", "reconstruction", "kl", "n_examples"):
            assert measured["evaluation"][1][key] == pytest.approx(measured["evaluation"][0][key], rel=1e-6), key
        assert measured["evaluation"][0]["n_examples"] == 30
        # The cosine schedule is a function of the optimizer's step count: the same on both.
        assert measured["learning_rates"][0] == measured["learning_rates"][1] < 1e-2, name
        if name != "conv_batch_norm":
            # Weights move by 0.047 in 8 steps; the two runs differ by 4e-6 at most (measured), 5e-5
            # under XLA, whose fused kernels round differently for a batch of 3 than one of 6.
            assert measured["weight_largest_change"] > 0.03
            assert measured["weight_max_abs_diff"] < (2e-4 if name == "mlp_xla_cosine" else 1e-5), name
    # With batch normalisation, a bias before it has a zero gradient up to rounding,
    # which Adam turns into steps of +-learning rate: those weights are not comparable,
    # while the losses (batch statistics over the global batch) are.


@pytest.mark.slow
def test_a_mirrored_run_resumes_and_ends_with_the_one_device_numbers(mirrored):
    report = mirrored["fit"]
    one, two, resumed = report["metrics"]
    assert two["distribution"]["replicas"] == 2 and one["distribution"]["replicas"] == 1
    assert resumed["resumes"] == [{"checkpoint": "ckpt-12", "step": 12, "epoch": 2}]
    for mine, theirs in zip(resumed["epochs"], two["epochs"]):  # same strategy: exactly the same numbers
        assert mine["train"] == theirs["train"] and mine["validation"] == theirs["validation"]
    without_time = [{k: v for k, v in m["test"].items() if k != "seconds"} for m in (resumed, two)]
    assert without_time[0] == without_time[1]
    for mine, theirs in zip(two["epochs"], one["epochs"]):
        for split in ("train", "validation"):
            for key in ("elbo", "reconstruction", "kl"):
                assert mine[split][key] == pytest.approx(theirs[split][key], rel=1e-5), (split, key)
    for key in ("elbo", "log_likelihood", "kl"):  # ELBO and importance-weighted log p(x), distributed
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-5), key
    # The test figures come from the best epoch's checkpoint, written by the mirrored run too.
    assert two["best"]["epoch"] == one["best"]["epoch"] and two["test"]["checkpoint"].startswith("best-")
    assert resumed["best"] == two["best"] and resumed["test"]["checkpoint"] == two["test"]["checkpoint"]
    assert report["weight_max_abs_diff"] < 2e-4  # measured 5e-5: XLA rounds batches of 3 and 6 differently


def test_mirrored_steps_check_faults_and_scale_losses_like_one_device(mirrored):
    report = mirrored["faults"]
    stop, skip = report["stop"], report["skip"]
    # NaN in row 4 of step 2's global batch of 6 (rows 3-5 are the second replica's): the
    # reconstruction and KL terms (bits 1, 2), the loss (4) and the gradients (8) go bad.
    assert stop["terms"] == [15, 15] and stop["fault_steps"] == [2, 2] and stop["steps"] == [STEPS, STEPS]
    assert all(error and "step 3" in error for error in stop["errors"]), stop["errors"]
    assert skip["skipped"] == [1, 1] and skip["errors"] == [None, None]
    assert stop["skipped"] == [STEPS - 2, STEPS - 2]  # the bad step and every one after it
    for measured in (stop, skip):
        one, two = measured["losses"]
        assert np.isnan(one[2]) and np.isnan(two[2])
        np.testing.assert_allclose(two, one, rtol=1e-5)
        # No update reached either replica's copy of the weights at the bad step (stop:
        # nor after it); both copies stay equal, and equal to one device's.
        assert measured["replicas_differ"] == 0.0 and measured["weight_max_abs_diff"] < 1e-4
    mixed = report["mixed_precision"]
    assert mixed["optimizers"] == ["LossScaleOptimizerV3"] * 2 and mixed["compute_dtype"] == "float16"
    # The loss scale fell from 2^15 (float16 gradients overflowed), yet no fault was recorded
    # and no step counted as skipped: non-finite gradients are the loss scale's business.
    assert mixed["loss_scales"][0] < 2 ** 15 and mixed["loss_scales"][1] < 2 ** 15
    assert mixed["terms"] == [0, 0] and mixed["skipped"] == [0, 0] and mixed["replicas_differ"] == 0.0
    one, two = mixed["losses"]
    assert np.all(np.isfinite(one)) and np.all(np.isfinite(two))
    # Which float16 sums overflow depends on how a batch is split, so the runs part after a
    # few steps (measured: within 2e-6 relative for 5 steps, 2% apart by step 8).
    np.testing.assert_allclose(two[:2], one[:2], rtol=1e-4)


# --- two worker processes on 127.0.0.1 -----------------------------------------


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_two_worker_processes_train_like_one_process(tmp_path):
    from probvae import runs
    from probvae.config import RunConfig
    from probvae.training import fit

    try:
        ports = _free_ports(2)
    except OSError as error:
        pytest.skip(f"cannot bind a port on 127.0.0.1 for the workers ({error})")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run_dir = tmp_path / "run"
    args = ["--dataset", "shapes", "--arch", "mlp", "--latent-dim", "2", "--epochs", "1", "--max-train-examples",
            str(6 * STEPS), "--batch-size", "6", "--learning-rate", "0.01", "--seed", "5", "--strategy",
            "multi-worker", "--run-dir", str(run_dir)]
    workers = []
    try:
        for index in range(2):
            temporary = tmp_path / f"tmp-{index}"
            temporary.mkdir()
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            workers.append(subprocess.Popen([sys.executable, FIT, *args], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True,
                                            env=_environment(TF_CONFIG=tf_config, TMPDIR=str(temporary))))
        deadline = time.time() + TIMEOUT
        outputs = [worker.communicate(timeout=max(1.0, deadline - time.time())) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    assert "[worker 1] done; the chief writes the run to" in outputs[1][0]
    # Only the chief wrote the run directory; the other worker's temporary folder is gone.
    assert sorted(os.listdir(tmp_path)) == ["run", "tmp-0", "tmp-1"]
    assert os.listdir(tmp_path / "tmp-1") == []
    assert {"config.json", "metrics.json", "checkpoints", "logs"} <= set(os.listdir(run_dir))
    metrics = runs.read_json(str(run_dir / runs.METRICS_FILE))
    assert metrics["distribution"]["strategy"] == "multi-worker"
    assert (metrics["distribution"]["replicas"], metrics["distribution"]["workers"]) == (2, 2)

    # The same configuration in this process, on one device.
    config = RunConfig.from_dict(runs.read_json(str(run_dir / runs.CONFIG_FILE)))
    single = fit(config.replace(train={"strategy": "one-device"}), str(tmp_path / "single"), log=lambda _: None)
    train, reference = metrics["epochs"][0]["train"], single["epochs"][0]["train"]
    # 8 steps in float32, sums in another order: equal to 1e-5 relative.
    for key in ("loss", "elbo", "reconstruction", "kl"):
        assert train[key] == pytest.approx(reference[key], rel=1e-5), key
    assert metrics["test"]["log_likelihood"] == pytest.approx(single["test"]["log_likelihood"], rel=1e-5)
    assert metrics["test"]["checkpoint"] == single["test"]["checkpoint"]
    for key in ("elbo", "reconstruction", "kl", "n_examples"):
        assert metrics["epochs"][0]["validation"][key] == pytest.approx(single["epochs"][0]["validation"][key],
                                                                        rel=1e-5), key
        assert metrics["test"][key] == pytest.approx(single["test"][key], rel=1e-5), key


# --- script mode ------------------------------------------------------------------


_CHECKS = {"steps": _compare_steps, "faults": _faults, "fit": _fit_and_resume}


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
    report = {check: _CHECKS[check](os.path.dirname(out_path), splits, mirrored) for check in checks.split(",")}
    with open(out_path, "w") as stream:
        json.dump(report, stream, indent=2)


if __name__ == "__main__":
    _script(sys.argv[1], sys.argv[2])
