"""A large BDMC gap is warned about, once, and recorded in the result.

The model is test_bdmc.py's: a 2-D latent, 15 Bernoulli pixels, a decoder with
set weights. With q(z|x) narrow and far from p(z|x) the gap from the posterior
is thousands of nats (test_bdmc.py measures it against log p(x) on a grid);
from the prior the same model's gap is below 0.5 nats.
"""

import json
import warnings

import numpy as np
import pytest
from test_bdmc import LATENT, SHAPE, set_decoder, set_posterior

from probvae import evaluation
from probvae.config import ModelConfig
from probvae.model import VAE

AIS = dict(num_steps=50, num_chains=4, num_leapfrog_steps=3)


@pytest.fixture(scope="module")
def model():
    model = VAE(ModelConfig(arch="mlp", hidden_units=(6,), activation="tanh", latent_dim=LATENT,
                            posterior="diag", likelihood="bernoulli", image_shape=SHAPE))
    set_decoder(model)
    return set_posterior(model, [-12.0, 9.0], [0.003, 0.1])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(8).integers(0, 2, (3,) + SHAPE).astype(np.uint8) * 255


def test_a_large_gap_is_warned_about_once_and_recorded(model, images):
    lines = []
    result = evaluation.evaluate(model, images, estimator="ais", ais=evaluation.AISSettings(**AIS), bdmc_examples=4,
                                 seed=2, log=lines.append)
    bdmc = result["bdmc"]
    assert bdmc["gap"] > 1000 > evaluation.BDMC_GAP_WARNING_NATS
    warned = [line for line in lines if line.startswith("warning:")]
    assert warned == [f"warning: {bdmc['warning']}"]
    assert (f"the BDMC gap is {bdmc['gap']:.2f} nats per image, more than 1: AIS with these settings may "
            "underestimate log p(x) by as much; start the chains at the prior (initial='prior') or anneal "
            "longer (more num_steps, now 50)") == bdmc["warning"]
    assert json.loads(json.dumps(result.as_dict()))["bdmc"]["warning"] == bdmc["warning"]
    # Without a log, a Python warning says the same.
    with pytest.warns(UserWarning, match="the BDMC gap is .* nats per image"):
        evaluation.evaluate(model, images, estimator="ais", ais=evaluation.AISSettings(**AIS), bdmc_examples=4,
                            seed=2)


def test_a_small_gap_is_not_warned_about(model, images):
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluation.evaluate(model, images, estimator="ais", bdmc_examples=4, seed=2, log=lines.append,
                                     ais=evaluation.AISSettings(initial="prior", **AIS))
    assert result["bdmc"]["gap"] < evaluation.BDMC_GAP_WARNING_NATS
    assert "warning" not in result["bdmc"] and not [line for line in lines if "warning" in line]


def test_the_warning_names_what_to_change():
    prior = evaluation.AISSettings(num_steps=20, initial="prior")
    assert evaluation.bdmc_gap_warning(1.0, prior) is None
    warning = evaluation.bdmc_gap_warning(1.01, prior, {"ais_steps": "--ais-steps"})
    assert warning.endswith("1.01 nats per image, more than 1: AIS with these settings may underestimate log p(x) "
                            "by as much; anneal longer (more --ais-steps, now 20)"), warning
    assert "not finite" in evaluation.bdmc_gap_warning(None, evaluation.AISSettings())
