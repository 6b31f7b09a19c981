"""Misuses of the Python API raise a `UserError` in the API's words, never a
TensorFlow, NumPy or Python error from deep inside.

Each case: (what is called, a phrase the message must hold to say what to do).
"""

import numpy as np
import pytest

import probvae
from probvae import inputs
from probvae.config import ModelConfig, RunConfig
from probvae.errors import UserError

IMAGE_SHAPE = (4, 3, 1)  # distinct height and width


@pytest.fixture(scope="module")
def vae():
    return probvae.VAE(ModelConfig(latent_dim=2, image_shape=IMAGE_SHAPE, hidden_units=(5,)))


def _raw(n=3):
    return np.random.default_rng(2).integers(0, 256, size=(n,) + IMAGE_SHAPE, dtype=np.uint8)


MISUSES = {
    "sample more than memory holds": (lambda vae: vae.sample(10**12), "GiB"),
    "sample zero": (lambda vae: vae.sample(0), "at least 1"),
    "replace with a number": (lambda vae: RunConfig().replace(train=5), "takes a dict of train fields"),
    "replace an unknown section": (lambda vae: RunConfig().replace(trian={}), "no config section"),
    "from_json of broken JSON": (lambda vae: RunConfig.from_json("{x"), "must be JSON text"),
    "from_json of a dict": (lambda vae: RunConfig.from_json({}), "from_dict"),
    "load_run of None": (lambda vae: probvae.load_run(None), "a run directory is a path"),
    "decode with the wrong width": (lambda vae: vae.decode(np.zeros((3, 5))), "[n, 2]"),
    "decode with the wrong rank": (lambda vae: vae.decode(np.zeros((3,))), "[n, 2]"),
    "decode of text": (lambda vae: vae.decode("abc"), "numbers of shape [n, 2]"),
    "log_likelihood of raw uint8": (
        lambda vae: probvae.evaluation.log_likelihood(vae, _raw(), 3, 0), "vae.prepare_inputs"),
    "log_likelihood of the wrong shape": (
        lambda vae: probvae.evaluation.log_likelihood(vae, np.zeros((3, 3, 4, 1), np.float32), 3, 0),
        "vae.prepare_inputs"),
    "encode with batch_size 0": (lambda vae: probvae.encode(vae, _raw(), batch_size=0), "batch_size"),
    "evaluate_elbo of no images": (lambda vae: probvae.evaluate_elbo(vae, _raw(0)), "at least one image"),
    "elbo of images out of range": (lambda vae: vae.elbo(np.full((2,) + IMAGE_SHAPE, -1.0, np.float32)),
                                    "[0, 1]"),
}


@pytest.mark.parametrize("name", sorted(MISUSES))
def test_misuse_raises_user_error(vae, name):
    call, phrase = MISUSES[name]
    with pytest.raises(UserError) as raised:
        call(vae)
    assert phrase in str(raised.value)


def test_a_sample_that_fits_is_drawn(vae):
    # The memory check refuses by size, not always: 3 draws of 2 latents and 4x3 images fit.
    assert vae.sample(3, seed=1).x.shape == (3,) + IMAGE_SHAPE
    inputs.check_sample_size(3, 2, IMAGE_SHAPE, available=1000)  # 2*4*3*(2+24) = 624 bytes: fits
    with pytest.raises(UserError, match="GiB"):
        inputs.check_sample_size(3, 2, IMAGE_SHAPE, available=600)
