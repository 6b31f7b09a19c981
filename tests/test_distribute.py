"""tf.distribute: the cluster and strategy choice, the split of a global batch,
and MirroredStrategy over two logical CPU devices against one device (in one
fresh process, `distributed_checks`): the steps, AIS and BDMC, a flow posterior,
a `fit` killed and resumed, and the steps' checks of non-finite values. The
two-process cluster is in test_distribute_workers.py.
"""

import json
import os

import numpy as np
import pytest

from distributed_checks import STEPS, run_checks

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

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
    from probvae.errors import UserError
    from probvae.training import distribute

    with pytest.raises(UserError) as raised:
        distribute.cluster_from_env({"TF_CONFIG": text})
    message = str(raised.value)
    assert message.startswith(problem) and "docs/distributed.md" in message and "\n" not in message


def test_strategy_choice():
    import tensorflow as tf

    from probvae import replicas
    from probvae.errors import UserError
    from probvae.training import distribute

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

    from probvae.distributions import posterior_distribution, posterior_params_size, sample_posterior

    from conftest import reparameterized_sample

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

    from probvae.model import VAE

    from conftest import tiny_model_config

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


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Every comparison with one device, in one process (it starts TensorFlow once)."""
    return run_checks(["steps", "ais", "flow", "fit", "faults"], tmp_path_factory.mktemp("mirrored"))


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
        # The global batch's gradient norm, recorded on each: the same mean and largest value.
        norms_one, norms_two = measured["gradient_norms"]
        assert norms_one["gradient_norm"] == pytest.approx(norms_two["gradient_norm"], rel=1e-5), name
        assert norms_one["gradient_norm_max"] == pytest.approx(norms_two["gradient_norm_max"], rel=1e-5), name
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
    # The moving average of the weights (--weight-average 0.5) is the same too, on every replica.
    averaged = report["mlp_free_bits"]
    # Clipped at 5 by the global norm: the first steps (norm about 23) on both, the same count.
    clipped = [norms["clipped_batches"] for norms in averaged["gradient_norms"]]
    assert clipped[0] == clipped[1] and 0 < clipped[0], clipped
    assert averaged["average_largest_change"] > 0.02 and averaged["average_max_abs_diff"] < 1e-5
    assert averaged["average_replicas_differ"] == 0.0
    # With batch normalisation, a bias before it has a zero gradient up to rounding,
    # which Adam turns into steps of +-learning rate: those weights are not comparable,
    # while the losses (batch statistics over the global batch) are.



def test_ais_and_bdmc_spread_over_replicas_give_the_numbers_of_one_device(mirrored):
    """Chunk k of an AIS run goes to replica k mod 2 with the seed it has on one
    device: every log weight, acceptance rate, step size, progress report and
    evaluation figure is the one device's."""
    for name, chunks in (("images", [2, 4, 5]), ("chains", [1, 2, 3])):
        report = mirrored["ais"][name]
        one, two = report["log_weights"]
        assert np.isfinite(one).all() and len(one) == (2 if name == "images" else 3)
        np.testing.assert_allclose(two, one, rtol=1e-6, err_msg=name)
        for key in ("acceptance", "step_size"):
            np.testing.assert_allclose(report[key][1], report[key][0], rtol=1e-6, err_msg=(name, key))
        # Progress after each finished run of images; two replicas run two chunks a round
        # (so with chunks of images the first report comes after two of them).
        rounds = [4, 5] if name == "images" else chunks
        assert report["progress"] == [chunks, rounds], report["progress"]
        for key, value in report["evaluations"][0].items():
            if isinstance(value, float):
                assert report["evaluations"][1][key] == pytest.approx(value, rel=1e-6), (name, key)
        assert report["evaluations"][1]["estimator"] == "ais"
        for key in ("lower", "upper", "gap"):
            assert report["bdmc"][1][key] == pytest.approx(report["bdmc"][0][key], rel=1e-6), (name, key)


def test_mirrored_training_of_a_flow_matches_one_device(mirrored):
    """An IAF posterior (its MADEs, the Monte Carlo KL at the ELBO's sample) under a
    VampPrior trains on two replicas as on one device."""
    one, two = mirrored["flow"]["losses"]
    assert len(one) == STEPS and np.all(np.isfinite(one))
    np.testing.assert_allclose(two, one, rtol=1e-4)
    assert len(set(one)) > 1


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
