"""Named presets: the classic VAE set-ups as `RunConfig` values.

Each preset is a complete `RunConfig`; `fit.py --preset NAME` starts from it
and command-line flags override single fields. docs/presets.md says what each
reproduces and what to expect.

Common choices, stated once:
- posteriors are diagonal Normals with softplus scales (the write-ups use
  exp(log_var / 2)); use --posterior full for a full covariance;
- Bernoulli likelihoods see binarized pixels (dynamically in training, fixed in
  evaluation); the write-ups feed grey levels to a binary cross-entropy,
  which is not a likelihood (use --likelihood continuous_bernoulli for that);
- conv decoders end in a 3x3 convolution to the likelihood parameters and
  crop the centre when their strides overshoot the image size.

Example:

    config = get("mnist-conv-2d").replace(train={"epochs": 2})
    probvae.fit(config, "runs/conv2d")
"""

from __future__ import annotations

from typing import Dict, NamedTuple

from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.errors import UserError

__all__ = ["Preset", "PRESETS", "get", "describe"]


class Preset(NamedTuple):
    """A named configuration and a one-line summary of what it reproduces."""

    name: str
    summary: str
    config: RunConfig


def _preset(name, summary, data, model, train) -> Preset:
    # The write-ups trained at a constant step size without KL warm-up; a preset
    # says so unless it chooses. The presets were written against the earlier
    # defaults (an MLP with a 32-D full-covariance posterior, batch 128); they
    # keep them, so a preset means what it meant.
    train = {"lr_schedule": "constant", "kl_warmup_epochs": 0, "batch_size": 128, **train}
    model = {"arch": "mlp", "latent_dim": 32, "posterior": "full", **model}
    return Preset(name, summary, RunConfig(data=DataConfig(**data), model=ModelConfig(**model),
                                           train=TrainConfig(**train)))


_DIAG_2D = dict(latent_dim=2, posterior="diag", likelihood="bernoulli")
_FASHION_CONV = dict(arch="conv", conv_layers=((32, 3, 2), (64, 3, 2), (64, 3, 1)), dense_units=128,
                     activation="relu", posterior="diag", likelihood="bernoulli")

# Tomczak & Welling (2018), VampPrior, and Norouzi et al. (2020), Exemplar VAE: their code's networks and schedule.
_PUBLISHED_VAE = dict(arch="gated", hidden_units=(300, 300), latent_dim=40, posterior="diag", likelihood="bernoulli")
_PUBLISHED_TRAINING = dict(epochs=2000, batch_size=100, learning_rate=5e-4, kl_warmup_epochs=100, patience=50)

PRESETS: Dict[str, Preset] = {p.name: p for p in [
    _preset(
        "mnist-dense-2d",
        "dense MLP VAE on flattened MNIST, 784-512-2, for the digit scatter and a 30x30 generated grid",
        dict(dataset="mnist"),
        dict(arch="mlp", hidden_units=(512,), activation="relu", **_DIAG_2D),
        dict(epochs=50, batch_size=128, learning_rate=1e-3),
    ),
    _preset(
        "mnist-conv-2d",
        "small conv VAE on MNIST: stride-2 convs of 8 and 16 filters with batch norm, 20-unit dense, 2-D latent, "
        "20% validation",
        dict(dataset="mnist", validation_fraction=0.2),
        dict(arch="conv", conv_layers=((8, 3, 2), (16, 3, 2)), batch_norm=True, dense_units=20,
             activation="relu", **_DIAG_2D),
        dict(epochs=30, batch_size=128, learning_rate=1e-3),
    ),
    _preset(
        "mnist-dcgan-2d",
        "DCGAN-like conv VAE on MNIST: four stride-2 5x5 convs 128-1024 with batch norm, transposed-conv decoder "
        "from 4x4x1024, 2-D latent",
        dict(dataset="mnist"),
        dict(arch="conv", conv_layers=((128, 5, 2), (256, 5, 2), (512, 5, 2), (1024, 5, 2)),
             decoder_conv_layers=((512, 5, 2), (256, 5, 2), (128, 5, 2)), batch_norm=True, dense_units=0,
             activation="leaky_relu", **_DIAG_2D),
        dict(epochs=20, batch_size=128, learning_rate=2e-4),
    ),
    _preset(
        "mnist-dlwp-2d",
        "Deep Learning with Python's conv VAE: convs 32, 64 (stride 2), 64, 64, 32-unit dense, 2-D latent, "
        "RMSprop, batch 16",
        dict(dataset="mnist"),
        dict(arch="conv", conv_layers=((32, 3, 1), (64, 3, 2), (64, 3, 1), (64, 3, 1)),
             decoder_conv_layers=((32, 3, 2),), dense_units=32, activation="relu", **_DIAG_2D),
        dict(epochs=10, batch_size=16, optimizer="rmsprop", learning_rate=1e-3),
    ),
    _preset(
        "fashion-conv",
        "conv VAE on Fashion-MNIST: two stride-2 convs and a stride-1 conv, softplus posterior scales, 5-D latent",
        dict(dataset="fashion_mnist"),
        dict(latent_dim=5, **_FASHION_CONV),
        dict(epochs=20, batch_size=64, learning_rate=1e-3),
    ),
    _preset(
        "fashion-conv-2d",
        "fashion-conv with a 2-D latent, for latent scatter plots and generated grids",
        dict(dataset="fashion_mnist"),
        dict(latent_dim=2, **_FASHION_CONV),
        dict(epochs=20, batch_size=64, learning_rate=1e-3),
    ),
    _preset(
        "fashion-best",
        "the MLP (784-512-256) with a VampPrior of 100 pseudo-inputs and a diagonal posterior, 30 epochs, cosine "
        "step size: the best NLL measured before the gated default (docs/results.md)",
        dict(dataset="fashion_mnist"),
        dict(arch="mlp", prior="vamp", prior_components=100, posterior="diag"),
        dict(epochs=30, lr_schedule="cosine"),
    ),
    _preset(
        "fashion-vae",
        "the VampPrior paper's one-layer VAE on Fashion-MNIST: gated dense 300-300, 40-D diagonal posterior, "
        "standard prior, batch 100, Adam 5e-4, KL warm-up over 100 epochs, up to 2000 epochs, early stopping after 50",
        dict(dataset="fashion_mnist"),
        dict(_PUBLISHED_VAE),
        dict(_PUBLISHED_TRAINING),
    ),
    _preset(
        "fashion-vamp",
        "fashion-vae with a VampPrior of 500 pseudo-inputs (the VampPrior paper's set-up)",
        dict(dataset="fashion_mnist"),
        dict(_PUBLISHED_VAE, prior="vamp", prior_components=500),
        dict(_PUBLISHED_TRAINING),
    ),
    _preset(
        "fashion-vamp-iaf",
        "fashion-vamp with an inverse autoregressive flow posterior: 2 steps of MADEs with two hidden layers of "
        "320 units (Kingma et al. 2016's smallest IAF)",
        dict(dataset="fashion_mnist"),
        dict(_PUBLISHED_VAE, prior="vamp", prior_components=500, posterior="iaf", iaf_steps=2, iaf_units=320),
        dict(_PUBLISHED_TRAINING),
    ),
    _preset(
        "fashion-hvae",
        "two-level hierarchical VAE p(z2) p(z1|z2) p(x|z1,z2), 40 + 40 latents, gated 300-unit networks, VampPrior "
        "of 500 pseudo-inputs on z2 (the VampPrior paper's HVAE)",
        dict(dataset="fashion_mnist"),
        dict(_PUBLISHED_VAE, latent_dim=(40, 40), latent_layers=2, level_units=300, prior="vamp",
             prior_components=500),
        dict(_PUBLISHED_TRAINING),
    ),
    _preset(
        "fashion-convhvae",
        "the VampPrior paper's convolutional two-level VAE (convHVAE): gated convolutions, 40 + 40 latents, "
        "VampPrior of 500 pseudo-inputs on z2, fashion-vamp's schedule",
        dict(dataset="fashion_mnist"),
        dict(_PUBLISHED_VAE, arch="gatedconv", latent_dim=(40, 40), latent_layers=2, level_units=300,
             prior="vamp", prior_components=500),
        dict(_PUBLISHED_TRAINING),
    ),
    _preset(
        "celeba-faces",
        "128x128 RGB faces (TFDS celeb_a or --dataset folder:PATH): four stride-2 convs 32, 64, 64, 64 with batch "
        "norm, mirrored decoder, 200-D latent, Normal likelihood",
        dict(dataset="celeb_a"),
        dict(arch="conv", conv_layers=((32, 3, 2), (64, 3, 2), (64, 3, 2), (64, 3, 2)), batch_norm=True,
             dense_units=0, activation="leaky_relu", latent_dim=200, posterior="diag", likelihood="normal",
             normal_scale="channel", image_shape=(128, 128, 3)),
        dict(epochs=10, batch_size=32, learning_rate=5e-4, eval_batch_size=200),
    ),
]}


def get(name: str) -> RunConfig:
    """The `RunConfig` of preset `name`.

    Raises:
      UserError: unknown name, listing the presets.
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (fit.py --list-presets)")
    return PRESETS[name].config


def describe() -> str:
    """One line per preset: name and summary."""
    width = max(len(name) for name in PRESETS)
    return "\n".join(f"{p.name:<{width}}  {p.summary}" for p in PRESETS.values())
