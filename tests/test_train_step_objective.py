"""The compiled training step minimises the negative ELBO.

At beta = 1 without free bits, the loss the step of `make_train_step` returns
for batch x at step s is -mean_n ELBO_n, with the ELBO's one-sample estimate
drawn from the seed the step uses, (seed, s), by the weights before the
step's update: the posterior layer's KL is counted once, and for a prior
without an analytic KL the regularizer's Monte Carlo estimate uses the
ELBO's own sample.

In graph mode the ELBO is written out in NumPy from the documented
posterior draw. Under XLA TensorFlow's stateless sampler uses another
algorithm, so the reference is `model.elbo` compiled with XLA too.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from probvae._keras import keras
from probvae.model import VAE
from probvae.training import StepTotals, make_train_step

from conftest import (
    BATCH,
    IMAGE_SHAPE,
    gaussian_kl_to_standard_normal,
    mvn_log_density,
    pixel_log_likelihood,
    reparameterized_sample,
    tiny_model_config,
)

SEED = 7


def _batches():
    """Two different binary batches [3, 8, 8, 1]."""
    rng = np.random.default_rng(11)
    return [tf.constant((rng.uniform(size=(BATCH,) + IMAGE_SHAPE) < p).astype(np.float32)) for p in (0.3, 0.6)]


def numpy_elbo(model, x, seed):
    """ELBO_n = log p(x_n|z_n) - KL_n at z = loc + chol(cov) eps, eps from `seed`, float64.

    KL: closed form for the standard normal prior; log q(z|x) - log p(z) for the mixture,
    log p(z) = logsumexp_k [log softmax(logits)_k + log N(z; m_k, diag(s_k^2))], s = softplus(raw) + 1e-5.
    """
    q = model.posterior(x)
    loc, covariance = q.mean().numpy(), q.covariance().numpy()
    z = reparameterized_sample(q, tf.constant(seed, tf.int32))
    reconstruction = pixel_log_likelihood(model, z, x.numpy())
    if model.config.prior == "standard_normal":
        kl = gaussian_kl_to_standard_normal(loc, covariance)
    else:
        prior = model.prior_layer
        locs = prior.locs.numpy().astype(np.float64)  # [K, d]
        scales = np.logaddexp(0.0, prior.raw_scales.numpy().astype(np.float64)) + 1e-5
        log_weights = special.log_softmax(prior.logits.numpy().astype(np.float64))
        per_component = (-0.5 * ((z[:, None, :] - locs) / scales) ** 2 - np.log(scales)
                         - 0.5 * np.log(2 * np.pi)).sum(-1)  # [n, K]
        log_prior = special.logsumexp(log_weights + per_component, axis=1)
        kl = mvn_log_density(z, loc, covariance) - log_prior
    return reconstruction - kl


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_the_step_loss_is_minus_the_mean_elbo_at_beta_one(prior, jit_compile):
    keras.utils.set_random_seed(0)
    model = VAE(tiny_model_config(arch="mlp", prior=prior, prior_components=3), kl_weight=1.0, free_bits=0.0)
    step = tf.Variable(0, dtype=tf.int64)
    train_step = make_train_step(model, keras.optimizers.Adam(1e-2), StepTotals(), step, seed=SEED,
                                 batch_shape=(BATCH,) + IMAGE_SHAPE, jit_compile=jit_compile)
    compiled_elbo = tf.function(lambda x, seed: model.elbo(x, seed=seed).elbo, jit_compile=True)
    for s, x in enumerate(_batches()):
        seed = [SEED, s]  # the step's sample seed at step s
        before = [v.numpy().copy() for v in model.trainable_variables]
        if jit_compile:
            expected = -np.mean(compiled_elbo(x, tf.constant(seed, tf.int32)).numpy())
        else:
            expected = -np.mean(numpy_elbo(model, x, seed))
            # The eager ELBO agrees with the NumPy one (same draw, same densities).
            np.testing.assert_allclose(-np.mean(model.elbo(x, seed=tf.constant(seed)).elbo.numpy()), expected,
                                       rtol=1e-5)
        loss = float(train_step(x))
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        assert int(step.numpy()) == s + 1
        assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
        # Had the KL been counted twice (or left out), the loss would be off by the mean
        # KL, a hundred times the tolerance above or more.
        q = model.posterior(x)
        kl = gaussian_kl_to_standard_normal(q.mean().numpy(), q.covariance().numpy()).mean()
        assert kl > 100 * 1e-5 * abs(loss), (kl, loss)
