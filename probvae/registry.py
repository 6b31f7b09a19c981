"""One registry per kind of component: network, posterior, prior, likelihood,
optimizer and step-size schedule.

An entry owns everything about its component: its name (what a config and a
flag say), a one-line summary (what `--help` prints), the config fields it
reads with their defaults, checks and command-line parsers, any traits the
rest of the package asks about (a likelihood's `binarize`), and its builder.
`probvae.config` validates a config by asking the registries, the command
line builds its choices and flags from them, and the model and the training
loop build what the entries name. There is no other list of names.

Built-in builders are named as "module:attribute" and imported when first
built, so a config can be read and checked before TensorFlow is loaded; a
user's own entry passes the object itself:

    from probvae.registry import PRIORS, Field
    from probvae import checks

    PRIORS.register("laplace", LaplacePrior, summary="factorised Laplace(0, b)",
                    fields=[Field("laplace_scale", 1.0, checks.finite_number, "b of every dimension", float)])

after which `ModelConfig(prior="laplace", laplace_scale=0.5)` is a valid
config and `VAE` builds it (docs/extending.md walks through it). An entry
knows the module that registered it (`Entry.module`); a run records the
modules of the components it uses in config.json and every reader imports
them again (`probvae.components`). A name is owned by the module that
registered it first: another module (or a built-in) registering it is
refused, naming both. Installed packages register theirs through the
entry-point group `probvae.components`, loaded when a registry is first read
(`names`, `entries`, `[name]`, `in`), never when probvae is imported.

A field's check is called as `check(name, value)` (the field's name, for the
message) and raises a `UserError` for a bad value; a check that cannot be
called so is refused when the field is declared.

What a builder must be, per kind:

    network     an object with encoder(config) -> keras layer [n, h, w, c] -> [n, f]
                and decoder(config, channels) -> keras layer [n, d] -> [n, h, w, channels]
    posterior   a posterior layer class with static params_size(d) and new(params, d)
                (see probvae.distributions.posteriors); optionally for_config(config) -> its
                keyword arguments, analytic_kl(config), input_size(d, config) and
                flow_size(d, config) (a flow: probvae.distributions.flows)
    prior       a probvae.distributions.Prior subclass; built as cls.from_config(config, encode=...)
    likelihood  a probvae.distributions.LikelihoodHead subclass; built as cls.from_config(config)
    optimizer   a tf-keras optimizer class, called with learning_rate=
    schedule    a function (train_config, steps_per_epoch) -> a step size or a keras schedule;
                a schedule that follows the validation ELBO also names, as its trait
                `after_validation`, a function (train_config, history, epoch, step_size) ->
                the step size of the next epoch (see probvae.training.schedules.reduce_on_plateau)
    dataset     a function (probvae.data.sources.DataRequest) -> `Arrays` (train and test
                images, split by probvae) or `Splits` (a source with its own splits);
                registered with `path=True` it is spelled "name:PATH" (npz:PATH)

Traits the package asks about: a likelihood's `binarize` (the one place it is
stated; the head reads it), a network's `xla_on_cpu` and `bfloat16_on_cpu`, a schedule's
`after_validation`, a dataset's `tfds_name`, `idx` (IDX files first),
`idx_dir`, `class_names`, `test_examples`, `splits` and `image_shape`.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from probvae import checks, components
from probvae.entries import DatasetRegistry, Entry, Field, Registry, check_signature, declared_field

__all__ = [
    "Field",
    "Entry",
    "Registry",
    "NETWORKS",
    "POSTERIORS",
    "PRIORS",
    "LIKELIHOODS",
    "OPTIMIZERS",
    "SCHEDULES",
    "DATASETS",
    "DatasetRegistry",
    "ACTIVATIONS",
    "REGISTRIES",
    "MODEL_REGISTRIES",
    "TRAIN_REGISTRIES",
    "int_list",
    "conv_layer_list",
    "check_signature",
    "find_field",
    "owners",
    "is_registered",
]


# --- command-line parsers of field values -------------------------------------------------------

def int_list(text: str) -> tuple:
    """"300,300" -> (300, 300)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected whole numbers separated by commas such as 300,300, got {text!r}") from None


def conv_layer_list(text: str) -> tuple:
    """"32:3:2,64:3:2" -> ((32, 3, 2), (64, 3, 2)): [filters, kernel, stride] triples; "" -> ()."""
    try:
        layers = tuple(tuple(int(v) for v in part.split(":")) for part in text.split(",") if part)
    except ValueError:
        layers = ((),)
    if any(len(layer) != 3 for layer in layers):
        raise ValueError(f"expected filters:kernel:stride triples separated by commas such as 32:3:2,64:3:2, "
                         f"got {text!r}")
    return layers


# The tf-keras activations a network may name (tf_keras.activations.get accepts each).
ACTIVATIONS = ("elu", "relu", "relu6", "leaky_relu", "gelu", "selu", "silu", "swish", "mish", "tanh", "sigmoid",
               "hard_sigmoid", "softplus", "softsign", "exponential", "linear")


def _activation(name: str, value: Any) -> None:
    checks.require(isinstance(value, str) and value in ACTIVATIONS,
                   f"unknown {name} {value!r}; choose a tf-keras activation: {', '.join(ACTIVATIONS)}")


def _conv_layers(name: str, value: Any) -> None:
    checks.require(isinstance(value, tuple) and all(isinstance(s, tuple) and len(s) == 3 for s in value),
                   f"{name} must be a list of [filters, kernel, stride] triples (got {value!r})")
    for filters, kernel, stride in value:
        checks.positive_int(f"{name} filters", filters)
        checks.positive_int(f"{name} kernel", kernel)
        checks.positive_int(f"{name} stride", stride)


def _conv_filters(name: str, value: Any) -> None:
    checks.positive_ints(name, value)
    checks.require(len(value) >= 1, f"{name} needs one entry or more")


def _non_negative_int(name: str, value: Any) -> None:
    checks.non_negative(name, value, whole=True)


NORMAL_SCALES = ("shared", "channel", "pixel")


def _normal_scale(name: str, value: Any) -> None:
    checks.choice(name, value, NORMAL_SCALES)


# --- the registries and the built-in components -------------------------------------------------

NETWORKS = Registry("network", "model", "arch")
POSTERIORS = Registry("posterior", "model", "posterior")
PRIORS = Registry("prior", "model", "prior")
LIKELIHOODS = Registry("likelihood", "model", "likelihood")
OPTIMIZERS = Registry("optimizer", "train", "optimizer")
SCHEDULES = Registry("learning-rate schedule", "train", "lr_schedule")
DATASETS = DatasetRegistry("dataset", "data", "dataset")

# Config field -> the registry whose entry it names, per section.
MODEL_REGISTRIES = {"arch": NETWORKS, "posterior": POSTERIORS, "prior": PRIORS, "likelihood": LIKELIHOODS}
TRAIN_REGISTRIES = {"optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES}
# Every registry, for lookups across kinds (a field means one thing in all of them).
REGISTRIES = (NETWORKS, POSTERIORS, PRIORS, LIKELIHOODS, OPTIMIZERS, SCHEDULES, DATASETS)


def find_field(name: str) -> Optional[Field]:
    """The field called `name` that some registered component declares, or None."""
    components.load_entry_points()
    return declared_field(name)


def owners(entries: Iterable[Tuple["Registry", Entry]]) -> Dict[str, Dict[str, list]]:
    """{module: {kind: [names]}} of the (registry, entry) pairs: who registered what."""
    found: Dict[str, Dict[str, list]] = {}
    for registry, entry in entries:
        found.setdefault(entry.module, {}).setdefault(registry.kind, []).append(entry.name)
    return found


def is_registered(kind: str, name: str) -> bool:
    """Whether a component `name` of `kind` ("prior", a registry's kind) is registered."""
    return any(registry.kind == kind and name in registry for registry in REGISTRIES)


def _hidden_units(default):
    return Field("hidden_units", default, checks.positive_ints,
                 "widths of the hidden layers, e.g. 300,300 (the decoder mirrors them)", int_list)


_ACTIVATION = Field("activation", "elu", _activation, "activation of every hidden layer (a tf-keras name)", str,
                    choices=ACTIVATIONS)

NETWORKS.register(
    "mlp", "probvae.networks.dense:MLP", summary="dense layers", fields=[_hidden_units((512, 256)), _ACTIVATION],
    xla_on_cpu=True)
NETWORKS.register(
    "gated", "probvae.networks.dense:GATED", summary="gated dense layers h = (W x + b) * sigmoid(V x + c)",
    fields=[_hidden_units((300, 300))], xla_on_cpu=True)
NETWORKS.register(
    "conv", "probvae.networks.conv:CONV", summary="strided convolutions, transposed-convolution decoder",
    fields=[
        Field("conv_filters", (32, 64), _conv_filters,
              "filters of each 3x3 stride-2 convolution (when --conv-layers is empty)", int_list),
        Field("conv_layers", (), _conv_layers,
              "encoder convolutions as filters:kernel:stride triples, e.g. 32:3:2,64:3:2", conv_layer_list),
        Field("decoder_conv_layers", (), _conv_layers,
              "decoder transposed convolutions as triples (default: the encoder's, reversed)", conv_layer_list),
        Field("batch_norm", False, checks.flag, "batch normalisation after every convolution", None),
        Field("dense_units", 256, _non_negative_int, "width of the dense layer beside the latent (0: none)", int),
        _ACTIVATION,
    ])

NETWORKS.register(
    "gatedconv", "probvae.networks.gatedconv:GATED_CONV", summary="gated convolutions (W * x + b) * sigmoid(V * x + c)",
    fields=[Field("gated_conv_layers", ((32, 7, 1), (32, 3, 2), (64, 5, 1), (64, 3, 2), (6, 3, 1)), _conv_layers,
                  "encoder gated convolutions as filters:kernel:stride triples", conv_layer_list),
            Field("level_conv_layers", ((32, 3, 1), (32, 3, 2), (64, 3, 1), (64, 3, 2), (6, 3, 1)), _conv_layers,
                  "the lower levels' gated convolutions of x, as triples", conv_layer_list),
            Field("gated_decoder_filters", (64, 64, 64, 64), _conv_filters,
                  "filters of the decoder's 3x3 gated convolutions at the image size", int_list),
            Field("gated_decoder_units", 300, checks.positive_int, "decoder gated dense width per level", int)],
    bfloat16_on_cpu=True)

POSTERIORS.register("full", "probvae.distributions.posteriors:MultivariateNormalTriL",
                    summary="MultivariateNormalTriL, full covariance")
POSTERIORS.register("diag", "probvae.distributions.posteriors:MultivariateNormalDiag",
                    summary="diagonal covariance")
POSTERIORS.register(
    "iaf", "probvae.distributions.flows:IAFPosterior",
    summary="diagonal Gaussian followed by inverse autoregressive flow steps (MADEs conditioned on the encoder)",
    fields=[Field("iaf_steps", 2, _non_negative_int,
                  "inverse autoregressive flow steps after the Gaussian (0: the Gaussian)", int),
            Field("iaf_units", 320, checks.positive_int,
                  "hidden units of each step's MADE (two layers) and size of the encoder's context vector", int)])

_COMPONENTS = Field("prior_components", 10, checks.positive_int, "mixture components or VampPrior pseudo-inputs", int)
PRIORS.register("standard_normal", "probvae.distributions.priors:StandardNormalPrior", summary="N(0, I), fixed")
PRIORS.register("diag_gaussian", "probvae.distributions.priors:DiagonalGaussianPrior",
                summary="N(loc, diag(scale^2)), learned")
PRIORS.register("mixture", "probvae.distributions.priors:MixturePrior", summary="learned mixture of Gaussians",
                fields=[_COMPONENTS])
PRIORS.register("vamp", "probvae.distributions.priors:VampPrior",
                summary="VampPrior: mixture of the posteriors of learned pseudo-inputs", fields=[_COMPONENTS])

LIKELIHOODS.register("bernoulli", "probvae.distributions.likelihoods:BernoulliHead",
                     summary="binarized pixels", binarize=True)
LIKELIHOODS.register("normal", "probvae.distributions.likelihoods:NormalHead", summary="grey levels, Normal",
                     binarize=False,
                     fields=[Field("normal_scale", "shared", _normal_scale,
                                   "Normal scale: one shared value, one per channel or per pixel", str,
                                   choices=NORMAL_SCALES)])
LIKELIHOODS.register("continuous_bernoulli", "probvae.distributions.likelihoods:ContinuousBernoulliHead",
                     summary="grey levels, continuous Bernoulli", binarize=False)

OPTIMIZERS.register("adam", "tf_keras.optimizers:Adam", summary="Adam")
OPTIMIZERS.register("rmsprop", "tf_keras.optimizers:RMSprop", summary="RMSprop")

SCHEDULES.register("constant", "probvae.training.schedules:constant", summary="the step size stays")
SCHEDULES.register(
    "plateau", "probvae.training.schedules:constant",
    summary="the step size falls by --lr-plateau-factor after --lr-plateau-patience epochs without a better "
            "validation ELBO, down to --lr-plateau-min x --learning-rate",
    fields=[
        Field("lr_plateau_factor", 0.5, checks.open_fraction, "factor of each reduction on a plateau", float),
        Field("lr_plateau_patience", 10, checks.positive_int,
              "epochs without a better validation ELBO before the step size falls", int),
        Field("lr_plateau_min", 0.01, checks.fraction, "smallest step size, as a fraction of --learning-rate",
              float),
    ],
    after_validation="probvae.training.schedules:reduce_on_plateau")
SCHEDULES.register("cosine", "probvae.training.schedules:cosine",
                   summary="half cosine from --learning-rate to --lr-final x it over the run",
                   fields=[Field("lr_final", 0.05, checks.fraction,
                                 "final step size as a fraction of --learning-rate", float)])

_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DATASETS.register("fashion_mnist", "probvae.data.sources:tfds_arrays",
                  summary="Fashion-MNIST 28x28 grey (IDX files in --data-dir or /usr/share/datasets, else TFDS)",
                  tfds_name="fashion_mnist", idx=True, idx_dir="/usr/share/datasets/fashion-mnist",
                  class_names=_FASHION, test_examples=10_000)
DATASETS.register("mnist", "probvae.data.sources:tfds_arrays",
                  summary="MNIST digits 28x28 grey (IDX files in --data-dir, else TFDS)", tfds_name="mnist",
                  idx=True, class_names=tuple(str(digit) for digit in range(10)), test_examples=10_000)
DATASETS.register("kmnist", "probvae.data.sources:tfds_arrays", summary="Kuzushiji-MNIST 28x28 grey (TFDS)",
                  tfds_name="kmnist", class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
                  test_examples=10_000)
DATASETS.register("cifar10", "probvae.data.sources:tfds_arrays", summary="CIFAR-10 32x32 colour (TFDS)",
                  tfds_name="cifar10", test_examples=10_000,
                  class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"))
DATASETS.register("shapes", "probvae.data.sources:shapes_arrays",
                  summary="built-in procedural 28x28 shapes, offline",
                  class_names=("square", "disc", "triangle", "cross"),
                  test_examples=500)
DATASETS.register("celeb_a", "probvae.data.sources:tfds_streams",
                  summary="CelebA faces (TFDS), streamed, resized to --image-shape (64,64,3 unless given)",
                  tfds_name="celeb_a", splits=("train", "validation", "test"), image_shape=(64, 64, 3),
                  test_examples=19_962)
DATASETS.register("npz", "probvae.data.sources:npz_arrays",
                  summary="arrays x_train, x_test (uint8 or floats in [0, 1]), optional y_train, y_test", path=True)
DATASETS.register("folder", "probvae.data.sources:folder_streams",
                  summary="JPEG/PNG files (class subfolders give labels), streamed", path=True)
