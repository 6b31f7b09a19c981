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
from probvae.export import export_run

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
    # Importance samples: K is an int32 in the compiled loop (2**32 + 5 once wrapped round to K = 5), and the
    # cost policy of the evaluate command (1e11 decoder passes) holds in the API.
    "log_likelihood beyond int32 samples": (lambda vae: vae.log_likelihood(_raw(), 2**32 + 5),
                                            "more than the 2147483647 importance samples"),
    "log_likelihood past the cost limit": (lambda vae: vae.log_likelihood(_raw(60), 2 * 10**9),
                                           "1.2e+11 decoder passes"),
    "evaluation.log_likelihood past the cost limit": (
        lambda vae: probvae.evaluation.log_likelihood(vae, vae.prepare_inputs(_raw(60)), 2 * 10**9, 0),
        "pass force=True"),
    "importance_sampling beyond int32 samples": (
        lambda vae: probvae.evaluation.importance_sampling(vae, vae.prepare_inputs(_raw()), 10**12, 0, force=True),
        "importance samples per image"),
    # Evaluation.
    "evaluate of None": (lambda vae: probvae.evaluation.evaluate(vae, None), "[n, height, width]"),
    "evaluate of the wrong shape": (lambda vae: probvae.evaluation.evaluate(vae, _raw()[:, :3]),
                                    "images must be [n, 4, 3, 1] for this model"),
    "evaluate of floats out of range": (
        lambda vae: probvae.evaluation.evaluate(vae, np.full((2,) + IMAGE_SHAPE, 3.0, np.float32)), "[0, 1]"),
    "evaluate with settings of another type": (lambda vae: probvae.evaluation.evaluate(vae, _raw(), settings=5),
                                               "EvaluationSettings"),
    "evaluate with a text binarization seed": (
        lambda vae: probvae.evaluation.evaluate(vae, _raw(), binarization_seed="a"),
        "binarization_seed must be a whole number"),
    "evaluate with an unknown AIS field": (
        lambda vae: probvae.evaluation.evaluate(vae, _raw(), estimator="ais", ais={"steps": 3}),
        "AISSettings has no field steps"),
    "evaluate with ais of another type": (
        lambda vae: probvae.evaluation.evaluate(vae, _raw(), estimator="ais", ais=3), "AISSettings(...)"),
    "evaluate_elbo with batch_size 0": (lambda vae: probvae.evaluate_elbo(vae, _raw(), batch_size=0),
                                        "batch_size must be a whole number"),
    "evaluate_elbo of None": (lambda vae: probvae.evaluate_elbo(vae, None), "[n, height, width]"),
    "per_example of an array": (lambda vae: probvae.evaluation.per_example(vae, _raw(), 0),
                                "evaluation_batches"),
    "bdmc with an unknown setting": (lambda vae: probvae.evaluation.bdmc(vae, 2, steps=3),
                                     "AISSettings has no field steps"),
    # Data.
    "binarize_fixed with a text seed": (lambda vae: probvae.data.binarize_fixed(_raw(), "a"), "binarization_seed"),
    "evaluation_batches of batch size 0": (
        lambda vae: probvae.data.evaluation_batches(_raw(), 0, binarize=True, seed=0), "batch_size"),
    "training_batches of batch size 0": (
        lambda vae: probvae.data.training_batches(_raw(), 0, binarize=True, seed=0, epoch=1), "batch_size"),
    "prepare_inputs with a text seed": (lambda vae: vae.prepare_inputs(_raw(), "a"), "binarization_seed"),
    "load_dataset with a bad image shape": (lambda vae: probvae.load_dataset("shapes", image_shape=(0, 3)),
                                            "three whole numbers"),
    "load_dataset with a number for data_dir": (lambda vae: probvae.load_dataset("mnist", data_dir=5),
                                                "data_dir is a folder path"),
    # Runs, the model, fit.
    "load_run of a file": (lambda vae: probvae.load_run(__file__), "is a file"),
    "load_run of an empty path": (lambda vae: probvae.load_run(""), "an empty path"),
    "VAE of None": (lambda vae: probvae.VAE(None), "VAE takes a ModelConfig"),
    "VAE with a negative kl_weight": (lambda vae: probvae.VAE(vae.config, kl_weight=-1.0), "kl_weight"),
    "VAE with negative train_samples": (lambda vae: probvae.VAE(vae.config, train_samples=-1), "train_samples"),
    "fit of None": (lambda vae: probvae.fit(None, "unused"), "fit takes a RunConfig"),
    "fit into None": (lambda vae: probvae.fit(RunConfig(), None), "a run directory is a path"),
    "export_run of None": (lambda vae: export_run(None, "unused"), "a run directory is a path"),
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


def test_ais_settings_as_a_dict_are_taken(vae):
    result = probvae.evaluation.evaluate(vae, _raw(), estimator="ais", ais={"num_steps": 2, "num_chains": 1})
    assert result["ais"]["num_steps"] == 2 and result["ais"]["num_chains"] == 1
