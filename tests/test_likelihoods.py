import numpy as np
import pytest
from scipy import integrate

from probvae.config import ModelConfig
from probvae.distributions import ContinuousBernoulliHead, continuous_bernoulli, make_likelihood_head
from probvae.registry import LIKELIHOODS


def continuous_bernoulli_log_density(x, probability):
    """log C(l) + x log l + (1 - x) log(1 - l), C(l) = 2 artanh(1 - 2l) / (1 - 2l), float64."""
    middle = np.abs(probability - 0.5) < 1e-12
    safe = np.where(middle, 0.25, probability)
    log_constant = np.where(middle, np.log(2.0), np.log(2 * np.arctanh(1 - 2 * safe) / (1 - 2 * safe)))
    return log_constant + x * np.log(probability) + (1 - x) * np.log1p(-probability)


def test_continuous_bernoulli_log_prob_matches_its_normalising_constant():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3, 4, 5, 2)).astype(np.float32)
    logits[0, 0, 0] = [0.0, 1e-3]  # at and next to lambda = 1/2, where C has a removable singularity
    x = rng.uniform(size=logits.shape).astype(np.float32)
    p = continuous_bernoulli(logits)
    assert p.batch_shape == (3,) and p.event_shape == (4, 5, 2)
    probability = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = continuous_bernoulli_log_density(x.astype(np.float64), probability).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-4)


@pytest.mark.parametrize("logit", [-4.0, -0.3, 0.0, 2.5])
def test_continuous_bernoulli_density_integrates_to_one(logit):
    head = make_likelihood_head("continuous_bernoulli", (1, 1, 1))
    p = head.distribution(np.full([1, 1, 1, 1], logit, np.float32))
    density = lambda x: float(np.exp(p.log_prob(np.full([1, 1, 1, 1], x, np.float32))[0]))  # noqa: E731
    total, _ = integrate.quad(density, 0.0, 1.0)
    assert total == pytest.approx(1.0, abs=2e-4)
    # Its mean is not sigmoid(logit) (except at 1/2): closed form l/(2l-1) + 1/(2 artanh(1-2l)).
    mean, _ = integrate.quad(lambda x: x * density(x), 0.0, 1.0)
    assert float(p.mean().numpy().ravel()[0]) == pytest.approx(mean, abs=2e-4)
    assert (abs(mean - 1 / (1 + np.exp(-logit))) > 0.01) == (logit != 0.0)


def test_the_likelihood_decides_binarization_and_the_config_records_it():
    assert LIKELIHOODS.names() == ("bernoulli", "normal", "continuous_bernoulli")
    for name in LIKELIHOODS.names():
        head = make_likelihood_head(name, (2, 2, 1))
        config = ModelConfig(likelihood=name)
        assert head.binarize == config.binarize == (name == "bernoulli")
        assert config.to_dict()["binarize"] == head.binarize
        assert ModelConfig.from_dict(config.to_dict()) == config
    assert isinstance(make_likelihood_head("continuous_bernoulli", (2, 2, 1)), ContinuousBernoulliHead)
    values = ModelConfig(likelihood="normal").to_dict()
    values["binarize"] = True
    with pytest.raises(ValueError, match="contradicts likelihood 'normal'"):
        ModelConfig.from_dict(values)


def test_bernoulli_log_prob_is_tfps_on_binary_pixels_and_the_interpolation_between():
    import tensorflow as tf
    import tensorflow_probability as tfp

    from probvae.distributions.likelihoods import LogitBernoulli, bernoulli

    rng = np.random.default_rng(3)
    logits = rng.normal(scale=6.0, size=(5, 3, 4, 1)).astype(np.float32)
    logits[0, 0, :2, 0] = [np.inf, -np.inf]
    binary = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
    binary[0, 0, :2, 0] = [1.0, 0.0]  # log p = 0 at infinite logits of the right sign
    mine, tfps = LogitBernoulli(logits=logits, dtype=tf.float32), tfp.distributions.Bernoulli(logits=logits,
                                                                                              dtype=tf.float32)
    np.testing.assert_array_equal(mine.log_prob(binary), tfps.log_prob(binary))  # bit for bit
    assert isinstance(bernoulli(logits).distribution, LogitBernoulli)
    # Independent of TFP: x l - log(1 + e^l) in float64, for binary and grey pixels.
    finite = logits[1:].astype(np.float64)
    for x in (binary[1:], rng.uniform(size=finite.shape).astype(np.float32)):
        expected = (x * finite - np.logaddexp(0.0, finite)).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(bernoulli(logits[1:]).log_prob(x), expected, rtol=1e-6)
    # Its gradient with respect to the logits is TFP's too.
    variable = tf.Variable(logits[1:])
    with tf.GradientTape(persistent=True) as tape:
        a = tf.reduce_sum(LogitBernoulli(logits=variable, dtype=tf.float32).log_prob(binary[1:]))
        b = tf.reduce_sum(tfp.distributions.Bernoulli(logits=variable, dtype=tf.float32).log_prob(binary[1:]))
    np.testing.assert_array_equal(tape.gradient(a, variable), tape.gradient(b, variable))
