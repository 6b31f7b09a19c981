"""--clip-norm: the step scales its gradients g down to the global norm c when
||g|| > c, g * min(1, c / ||g||) with ||g|| = sqrt(sum over variables of
sum g^2), before the optimizer sees them. Checked against the gradients of
the same loss taken here without the step, clipped and applied in NumPy
(plain SGD: w <- w - lr g)."""

import numpy as np
import pytest
import tensorflow as tf

from probvae._keras import keras
from probvae.model import VAE
from probvae.training import GradientNorms, StepTotals, make_train_step

from conftest import BATCH, IMAGE_SHAPE, tiny_model_config

SEED, LEARNING_RATE = 4, 0.05


def _batches():
    rng = np.random.default_rng(5)
    return [tf.constant((rng.uniform(size=(BATCH,) + IMAGE_SHAPE) < p).astype(np.float32)) for p in (0.2, 0.7)]


@pytest.mark.parametrize("clip_norm", [0.0, 1.0, 1e6], ids=["off", "clipping", "above-the-norm"])
def test_the_step_applies_the_clipped_gradient(clip_norm):
    keras.utils.set_random_seed(0)
    model = VAE(tiny_model_config(arch="mlp"), kl_weight=1.0)
    step, recorded = tf.Variable(0, dtype=tf.int64), GradientNorms()
    train_step = make_train_step(model, keras.optimizers.SGD(LEARNING_RATE), StepTotals(), step, seed=SEED,
                                 batch_shape=(BATCH,) + IMAGE_SHAPE, clip_norm=clip_norm, norms=recorded)
    norms = []
    for s, x in enumerate(_batches()):
        variables = model.trainable_variables
        before = [v.numpy().astype(np.float64) for v in variables]
        with tf.GradientTape() as tape:
            loss, _ = model.training_loss(x, seed=tf.constant([SEED, s], tf.int32))
        gradients = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
        norm = np.sqrt(sum(np.sum(g**2) for g in gradients))
        norms.append(norm)
        scale = min(1.0, clip_norm / norm) if clip_norm else 1.0
        train_step(x)
        for variable, weight, gradient in zip(variables, before, gradients):
            np.testing.assert_allclose(variable.numpy(), weight - LEARNING_RATE * scale * gradient,
                                       rtol=1e-4, atol=1e-6, err_msg=variable.name)
    if clip_norm == 1.0:
        assert min(norms) > 2.0  # the clipping acted on both steps (the test would pass unclipped otherwise)
    if clip_norm == 1e6:
        assert max(norms) < 1e6
    # The record: the norms before clipping, and how many steps were clipped.
    means = recorded.means(clip_norm)
    assert means["gradient_norm"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert means["gradient_norm_max"] == pytest.approx(max(norms), rel=1e-5)
    assert means.get("clipped_batches") == {0.0: None, 1.0: 2, 1e6: 0}[clip_norm]


def test_the_norm_record_leaves_out_non_finite_norms_and_survives_the_checkpoint_json():
    recorded = GradientNorms()
    assert recorded.means() == {"gradient_norm": None, "gradient_norm_max": None}
    for norm in (3.0, np.inf, 5.1, np.nan, 1.0):
        recorded.add(tf.constant(norm, tf.float64), clip_norm=2.0)
    assert recorded.means(2.0) == {"gradient_norm": 9.1 / 3, "gradient_norm_max": 5.1, "clipped_batches": 2}
    copy = GradientNorms()
    copy.load(recorded.state())
    assert copy.means(2.0) == recorded.means(2.0)
    copy.load(None)  # a checkpoint written before the record existed
    assert copy.means(2.0) == {"gradient_norm": None, "gradient_norm_max": None, "clipped_batches": 0}


def test_a_non_finite_gradient_stays_non_finite():
    from probvae.training.step import clip_gradients

    clipped, norm = clip_gradients([tf.constant([np.inf, 1.0]), None, tf.constant([2.0])], 1.0)
    assert clipped[1] is None and not np.isfinite(clipped[0].numpy()).any()
    assert not np.isfinite(clipped[2].numpy()).any() and not np.isfinite(norm.numpy())
    values, norm = clip_gradients([tf.constant([3.0]), tf.constant([4.0])], 1.0)
    np.testing.assert_allclose([v.numpy()[0] for v in values], [0.6, 0.8], rtol=1e-6)
    assert float(norm) == pytest.approx(5.0)
    values, norm = clip_gradients([tf.constant([3.0]), None, tf.constant([4.0])], 0.0)  # off: only the norm
    assert [v.numpy()[0] for v in (values[0], values[2])] == [3.0, 4.0] and float(norm) == pytest.approx(5.0)


def test_the_trainer_clips_with_the_configs_norm(tmp_path):
    """Through `Trainer` with Adam: its first step moves each weight by lr * g / (|g| + 1e-7),
    about lr unclipped; clipped to a global norm of 1e-9 every |g| is at most 1e-9, so by at most
    lr / 100."""
    from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from probvae.data import load_dataset
    from probvae.training import Trainer, seed_process

    splits = load_dataset("shapes", max_train_examples=12)
    moves = {}
    for clip_norm in (0.0, 1e-9):
        config = RunConfig(data=DataConfig(dataset="shapes", max_train_examples=12),
                           model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(5,),
                                             image_shape=splits.image_shape),
                           train=TrainConfig(batch_size=4, learning_rate=1e-2, jit_compile=False, clip_norm=clip_norm))
        seed_process(config.train)
        trainer = Trainer(config, splits, str(tmp_path / f"run{clip_norm}"), log=lambda _: None)
        before = [v.numpy() for v in trainer.model.trainable_variables]
        trainer.train_step(tf.constant(splits.x_train[:4] > 127, tf.float32))
        moves[clip_norm] = max(float(np.max(np.abs(v.numpy() - b)))
                               for v, b in zip(trainer.model.trainable_variables, before))
    assert moves[0.0] > 0.5e-2 and moves[1e-9] < 1e-4, moves


def test_a_negative_norm_is_refused_in_one_line(tmp_path):
    from conftest import command_here

    result = command_here("fit", "--dataset", "shapes", "--clip-norm", "-1", "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip() == "error: clip_norm must be 0 or more (got -1.0)"


def test_a_clipping_run_reports_its_clipped_steps(tmp_path):
    """Each epoch's train figures: the norms, and with --clip-norm the steps clipped, which its line prints."""
    from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from probvae.training import fit

    lines = []
    config = RunConfig(data=DataConfig(dataset="shapes", max_train_examples=12),
                       model=ModelConfig(arch="mlp", latent_dim=2, hidden_units=(5,)),
                       train=TrainConfig(epochs=1, batch_size=4, jit_compile=False, clip_norm=1e-9,
                                         test_iwae_samples=2))
    metrics = fit(config, str(tmp_path / "run"), log=lines.append)
    train = metrics["epochs"][0]["train"]
    assert train["clipped_batches"] == 3 and 0 < train["gradient_norm"] <= train["gradient_norm_max"]
    assert any(line.startswith("epoch 1/1 ") and "  3 batches clipped" in line for line in lines), lines


def test_under_float16_the_unscaled_gradient_is_clipped():
    """With loss scaling (s = 2^15 at first), SGD's applied update is lr * c * g / ||g||, of norm lr * c:
    clipping the scaled gradient s * g instead would give an update s times smaller, and no clipping
    one of norm lr * ||g||. A step the loss scale skips (an overflow) leaves the weights as they were;
    the first step that moves them is checked."""
    from probvae.training import precision

    clip_norm = 1e-3
    keras.utils.set_random_seed(0)
    with precision.compute_policy("float16"):
        model = VAE(tiny_model_config(arch="mlp"), kl_weight=1.0)
    optimizer = precision.loss_scaled(keras.optimizers.SGD(LEARNING_RATE))
    recorded = GradientNorms()
    train_step = make_train_step(model, optimizer, StepTotals(), tf.Variable(0, dtype=tf.int64), seed=SEED,
                                 batch_shape=(BATCH,) + IMAGE_SHAPE, clip_norm=clip_norm, norms=recorded)
    for x in _batches() * 3:
        before = [v.numpy().astype(np.float64) for v in model.trainable_variables]
        train_step(x)
        moved = np.sqrt(sum(np.sum((v.numpy() - b) ** 2) for v, b in zip(model.trainable_variables, before)))
        if moved:
            break
    assert moved == pytest.approx(LEARNING_RATE * clip_norm, rel=1e-2)
    assert recorded.means(clip_norm)["gradient_norm"] > 100 * clip_norm  # it did clip
