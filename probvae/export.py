"""A trained run as a TensorFlow SavedModel that needs nothing of probvae.

    probvae export RUN_DIR OUT          # or python scripts/export.py RUN_DIR OUT

writes OUT, a SavedModel whose graphs hold the encoder, the decoder, the prior
and the importance-weighted estimator as plain TensorFlow operations, with
three signatures (D latent dimensions, images [h, w, c] as the model sees
them: float32 in [0, 1], binarized for a Bernoulli likelihood):

    encode(images [n, h, w, c])           -> loc [n, D], scale_tril [n, D, D]
    decode(z [n, D])                      -> mean [n, h, w, c] and the likelihood's
                                             parameters (logits; or loc and scale)
    log_likelihood(images, num_samples)   -> [n], nats: the K-sample importance-weighted
                                             estimate of log p(x), seed (0, 0)

The signatures check their inputs in the graph: images must be finite, in
[0, 1] for a likelihood over the unit interval and binary for a Bernoulli
likelihood, num_samples at least 1; else the call raises
`tf.errors.InvalidArgumentError` with a message saying what to pass.

Any TensorFlow program loads it with `tf.saved_model.load(OUT)` (also from
C++, Java or TF Serving); `probvae.export.export_run` is the library call.
`loc` is the posterior's location (`VAE.location`) and `scale_tril` the
block-diagonal matrix of each level's scale, q(z_l | x, z_(l+1)) given the
level above drawn with seed (0, 0); for one level they are q(z|x)'s own. For
a flow posterior ("iaf") they are those of its linearisation at its Gaussian's
mean (`probvae.distributions.gaussian_approximation`): the flow's location and
the Cholesky factor of J S S^T J^T; `log_likelihood` uses the flow's exact density.
"""

import os
import shutil
from typing import Optional

import tensorflow as tf
import tensorflow_probability as tfp

from probvae import runs
from probvae.distributions.analysis import unwrap
from probvae.distributions.flows import gaussian_approximation
from probvae.errors import UserError

tfd = tfp.distributions

__all__ = ["LIKELIHOOD_PARAMETERS", "Exported", "export_model", "export_run"]

# What the exported folder is called in messages.
EXPORTED = "the exported model"
# The parameters `decode` returns, where the likelihood has them.
LIKELIHOOD_PARAMETERS = ("logits", "loc", "scale")


def _parameters(likelihood: tfd.Distribution) -> dict:
    inner = likelihood.distribution if isinstance(likelihood, tfd.Independent) else likelihood
    outputs = {"mean": likelihood.mean()}
    for name in LIKELIHOOD_PARAMETERS:
        value = inner.parameters.get(name)
        if value is not None:
            value = tf.convert_to_tensor(value, tf.float32)
            outputs[name] = tf.broadcast_to(value, tf.shape(outputs["mean"]))
    return outputs


def _checked_images(images, binary: bool, unit_interval: bool) -> tf.Tensor:
    """`images` once the graph has checked them (an InvalidArgumentError naming
    the fix otherwise): finite; in [0, 1] for a likelihood over the unit
    interval; exactly 0 or 1 for a Bernoulli likelihood."""
    checks = [tf.debugging.assert_all_finite(images, "images must be finite")]
    if unit_interval or binary:
        checks += [tf.debugging.assert_greater_equal(images, 0.0, message="images must lie in [0, 1]: scale "
                                                     "uint8 images by 1/255"),
                   tf.debugging.assert_less_equal(images, 1.0, message="images must lie in [0, 1]: scale uint8 "
                                                  "images by 1/255")]
    if binary:
        checks.append(tf.debugging.assert_equal(
            tf.reduce_all((images == 0.0) | (images == 1.0)), True,
            message="this model's likelihood is Bernoulli: images must be binary (0 or 1); binarize them, e.g. "
                    "pixels > 0.5 or a Bernoulli draw"))
    with tf.control_dependencies(checks):
        return tf.identity(images)


class Exported(tf.Module):
    """The three signatures over a model's variables (see the module docstring)."""

    def __init__(self, vae):
        super().__init__(name="probvae_model")
        self.model_variables = list(vae.variables)  # tracked, so the SavedModel holds them
        image = tf.TensorSpec([None] + list(vae.image_shape), tf.float32, name="images")
        latent = tf.TensorSpec([None, vae.latent_dim], tf.float32, name="z")
        count = tf.TensorSpec([], tf.int32, name="num_samples")
        head = vae.likelihood_head
        checked = lambda images: _checked_images(images, head.binarize, head.unit_interval)  # noqa: E731

        @tf.function(input_signature=[image], autograph=False)
        def encode(images):
            terms = vae.elbo_terms(checked(images), seed=tf.constant([0, 0]))
            # [n, d_l, d_l] each; a flow's by its linearisation at its Gaussian's mean
            scales = [unwrap(gaussian_approximation(level.posterior)).scale for level in terms.levels]
            return {"loc": vae.latent_statistics(terms).location,
                    "scale_tril": tf.linalg.LinearOperatorBlockDiag(scales).to_dense()}

        @tf.function(input_signature=[latent], autograph=False)
        def decode(z):
            return _parameters(vae.likelihood(z))

        @tf.function(input_signature=[image, count], autograph=False)
        def log_likelihood(images, num_samples):
            positive = tf.debugging.assert_greater_equal(num_samples, 1, message="num_samples must be at least 1")
            with tf.control_dependencies([positive]):
                num_samples = tf.identity(num_samples)
            return {"log_likelihood": vae.importance_sampling(checked(images), num_samples, tf.constant([0, 0]),
                                                               tf.constant(0)).log_likelihood}

        self.encode, self.decode, self.log_likelihood = encode, decode, log_likelihood


def export_model(vae, out_dir: str) -> str:
    """Write `vae` as a SavedModel to `out_dir`, a new folder in an existing
    one (it must not exist yet: nothing is ever written into an existing
    folder); return its path.

    Raises:
      UserError: `out_dir` is empty, exists, or cannot be made or written (a
        folder this call made is removed again).
    """
    runs.check_new_folder(out_dir, EXPORTED)
    module = Exported(vae)
    signatures = {"encode": module.encode, "decode": module.decode, "log_likelihood": module.log_likelihood}
    try:
        os.mkdir(out_dir)  # fails if the folder appeared since the check: never write into an existing one
    except FileExistsError:
        raise UserError(f"{out_dir} exists; give a new folder for {EXPORTED}") from None
    except OSError as error:
        raise UserError(f"cannot create {out_dir}: {error.strerror}") from None
    try:
        tf.saved_model.save(module, out_dir, signatures=signatures)
    except BaseException as error:
        shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(error, (OSError, tf.errors.OpError)):
            reason = error.strerror if isinstance(error, OSError) else type(error).__name__
            raise UserError(f"cannot write {out_dir}: {reason}; free disk space or fix permissions") from None
        raise
    return out_dir


def export_run(run_dir: str, out_dir: str, checkpoint: Optional[str] = None) -> str:
    """Export the model of a run (its best epoch's weights unless `checkpoint` names
    others) as a SavedModel in `out_dir`, a new folder (see `export_model`); return the path."""
    runs.check_new_folder(out_dir, EXPORTED)
    return export_model(runs.load_run(run_dir, checkpoint), out_dir)
