import numpy as np
import pytest
import tensorflow as tf

from probvae import presets
from probvae.model import VAE
from probvae.training import StepTotals, make_train_step, schedules

# Image shapes to test each preset at: MNIST-sized as trained, faces downscaled from 128x128.
TEST_SHAPES = {"celeba-faces": (16, 16, 3)}
BATCH = 3


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_each_preset_builds_runs_forward_and_takes_a_training_step(name):
    config = presets.get(name)
    shape = TEST_SHAPES.get(name, config.model.image_shape or (28, 28, 1))
    vae = VAE(config.model.replace(image_shape=shape), kl_weight=config.train.beta)
    x = np.random.default_rng(0).uniform(size=(BATCH,) + shape).astype(np.float32)
    if vae.likelihood_head.binarize:
        x = (x < 0.3).astype(np.float32)
    assert vae(x).shape == (BATCH,) + shape
    q = vae.posterior(x)
    assert q.event_shape == (sum(config.model.latent_dims),) and q.batch_shape == (BATCH,)
    optimizer = schedules.make_optimizer(config.train)
    step = tf.Variable(0, dtype=tf.int64)
    train_step = make_train_step(vae, optimizer, StepTotals(), step, seed=0, batch_shape=(BATCH,) + shape,
                                 eager=True)  # one step: tracing would cost more than it saves
    before = [v.numpy().copy() for v in vae.trainable_variables]
    loss = float(train_step(tf.constant(x)))
    assert np.isfinite(loss) and int(step.numpy()) == 1
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, vae.trainable_variables))


def test_presets_say_what_the_write_ups_say():
    conv2d = presets.get("mnist-conv-2d")
    assert conv2d.data.validation_fraction == 0.2 and conv2d.model.batch_norm
    assert [f for f, _, s in conv2d.model.conv_layers] == [8, 16] and conv2d.model.dense_units == 20
    dcgan = presets.get("mnist-dcgan-2d").model
    assert dcgan.conv_layers == ((128, 5, 2), (256, 5, 2), (512, 5, 2), (1024, 5, 2))
    dlwp = presets.get("mnist-dlwp-2d")
    assert dlwp.train.optimizer == "rmsprop" and dlwp.train.batch_size == 16
    assert [s for _, _, s in dlwp.model.conv_layers] == [1, 2, 1, 1] and dlwp.model.dense_units == 32
    assert presets.get("fashion-conv").model.latent_dim == 5 and presets.get("fashion-conv-2d").model.latent_dim == 2
    faces = presets.get("celeba-faces").model
    assert faces.image_shape == (128, 128, 3) and faces.latent_dim == 200 and faces.likelihood == "normal"
    vae, vamp = presets.get("fashion-vae"), presets.get("fashion-vamp")
    assert vae.model.arch == "gated" and vae.model.hidden_units == (300, 300) and vae.model.latent_dim == 40
    assert (vae.train.batch_size, vae.train.learning_rate, vae.train.kl_warmup_epochs) == (100, 5e-4, 100)
    assert (vae.train.epochs, vae.train.patience, vae.train.lr_schedule) == (2000, 50, "constant")
    assert vamp.model.prior == "vamp" and vamp.model.prior_components == 500
    assert vamp.model.replace(prior="standard_normal", prior_components=10) == vae.model.replace(prior_components=10)
    hvae = presets.get("fashion-hvae")
    assert hvae.model.latent_dims == (40, 40) and hvae.model.latent_layers == 2 and hvae.model.level_units == 300
    assert hvae.model.replace(latent_dim=40, latent_layers=1) == vamp.model and hvae.train == vamp.train
    conv = presets.get("fashion-convhvae")
    assert conv.model.arch == "gatedconv" and conv.model.latent_dims == (40, 40) and conv.model.prior_components == 500
    assert conv.model.gated_conv_layers == ((32, 7, 1), (32, 3, 2), (64, 5, 1), (64, 3, 2), (6, 3, 1))
    assert conv.model.level_conv_layers == ((32, 3, 1), (32, 3, 2), (64, 3, 1), (64, 3, 2), (6, 3, 1))
    assert conv.model.gated_decoder_filters == (64,) * 4 and conv.model.gated_decoder_units == 300
    assert conv.model.replace(arch="gated") == hvae.model and conv.train == hvae.train
    for name in presets.PRESETS:
        if name.endswith("-2d"):
            assert presets.get(name).model.latent_dim == 2


def test_listing_and_unknown_names():
    lines = presets.describe().splitlines()
    assert [line.split()[0] for line in lines] == list(presets.PRESETS)
    with pytest.raises(ValueError, match="mnist-dense-2d, mnist-conv-2d"):
        presets.get("mnist-resnet")
