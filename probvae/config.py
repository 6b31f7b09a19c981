"""Run configuration: frozen dataclasses, validated on construction, saved as JSON.

A run is fully described by a `RunConfig` (data, model, training). `config.json`
in a run directory holds `RunConfig.to_dict()`, and `RunConfig.from_dict` is the
only way a model is rebuilt from disk, so everything needed to rebuild the
model lives here.

Example:

    config = RunConfig(model=ModelConfig(latent_dim=2))
    config = config.replace(train={"epochs": 3})
    assert RunConfig.from_json(config.to_json()) == config
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, List, Optional, Tuple
from probvae.errors import UserError

__all__ = [
    "CONFIG_VERSION",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
]

# Bumped when a saved config can no longer be read by this code.
CONFIG_VERSION = 1

# Dataset names `probvae.data.load_dataset` knows, and the path-taking prefixes.
DATASETS = ("fashion_mnist", "mnist", "kmnist", "cifar10", "shapes", "celeb_a")
DATASET_PREFIXES = ("npz:", "folder:")
ARCHITECTURES = ("conv", "mlp", "gated")
POSTERIORS = ("full", "diag")
PRIORS = ("standard_normal", "diag_gaussian", "mixture", "vamp")
LIKELIHOODS = ("bernoulli", "normal", "continuous_bernoulli")
# Likelihoods that model binarized pixels; the others see grey levels in [0, 1].
BINARIZED_LIKELIHOODS = ("bernoulli",)
NORMAL_SCALES = ("shared", "channel", "pixel")
OPTIMIZERS = ("adam", "rmsprop")
LR_SCHEDULES = ("constant", "cosine")
# How training is spread over devices and hosts (see probvae.training.distribute).
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    _require(
        value in choices,
        f"unknown {name} {value!r}; choose one of: {', '.join(choices)}",
    )


def _positive_int(name: str, value: Any) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{name} must be a whole number of at least 1 (got {value!r})",
    )


def _finite_number(name: str, value: Any) -> None:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        f"{name} must be a finite number (got {value!r})",
    )


def _flag(name: str, value: Any) -> None:
    _require(isinstance(value, bool), f"{name} must be true or false (got {value!r})")
def _non_negative(name: str, value: Any, whole: bool = False) -> None:
    number = isinstance(value, int) if whole else isinstance(value, (int, float))
    _require(
        number and not isinstance(value, bool) and value >= 0,
        f"{name} must be a {'whole ' if whole else ''}number of at least 0 (got {value!r})",
    )


def _tuples(value):
    """JSON lists back to the (nested) tuples they were."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def check_dataset_name(name: str) -> None:
    """Raise a UserError listing the valid names if `name` is not a dataset."""
    known = isinstance(name, str) and (
        name in DATASETS or any(name.startswith(p) and len(name) > len(p) for p in DATASET_PREFIXES)
    )
    _require(
        known,
        f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}, "
        + ", ".join(f"{p}PATH" for p in DATASET_PREFIXES),
    )


class _Section:
    """JSON round trip shared by the config dataclasses."""

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict):
        _require(isinstance(values, dict), f"{cls.__name__} must be a JSON object (got {values!r:.60})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        _require(
            not unknown,
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; "
            f"known fields: {', '.join(fields)}",
        )
        # JSON has no tuples: lists come back as the tuples they were.
        return cls(**{name: _tuples(value) for name, value in values.items()})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    # Dataset name (see probvae.data.DATASETS), "npz:PATH" or "folder:PATH".
    dataset: str = "fashion_mnist"
    # Where TFDS keeps its data and where IDX files are looked for first.
    data_dir: Optional[str] = None
    # Share of the training set held out for validation, with a fixed seed
    # (folders: the same share is held out again as the test set).
    validation_fraction: float = 0.1
    # Use only the first N training examples (after the split); None: all.
    max_train_examples: Optional[int] = None
    # Seed of the train/validation split and the fixed evaluation binarization.
    split_seed: int = 0

    def __post_init__(self):
        check_dataset_name(self.dataset)
        _finite_number("validation_fraction", self.validation_fraction)
        _require(
            0.0 < self.validation_fraction < 1.0,
            "validation_fraction must lie strictly between 0 and 1 "
            f"(got {self.validation_fraction!r})",
        )
        if self.max_train_examples is not None:
            _positive_int("max_train_examples", self.max_train_examples)
        _require(
            isinstance(self.split_seed, int) and 0 <= self.split_seed < 2**30,
            f"split_seed must be a whole number in 0..1073741823 (got {self.split_seed!r})",
        )


ConvLayers = Tuple[Tuple[int, int, int], ...]


def _check_conv_layers(name: str, specs) -> None:
    _require(
        isinstance(specs, tuple) and all(isinstance(s, tuple) and len(s) == 3 for s in specs),
        f"{name} must be a list of [filters, kernel, stride] triples (got {specs!r})",
    )
    for filters, kernel, stride in specs:
        _positive_int(f"{name} filters", filters)
        _positive_int(f"{name} kernel", kernel)
        _positive_int(f"{name} stride", stride)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    # Encoder/decoder family: "mlp" (dense), "gated" (gated dense layers, as in
    # the VampPrior paper) or "conv" (convolutional). The
    # default MLP reaches a better held-out log-likelihood than the conv
    # network in a third of the CPU time (docs/results.md).
    arch: str = "mlp"
    # Dimension d of the latent z.
    latent_dim: int = 32
    # q(z|x): "full" (MultivariateNormalTriL) or "diag" (diagonal covariance).
    posterior: str = "full"
    # p(z): "standard_normal" (fixed), "diag_gaussian" (learned loc and scale),
    # "mixture" (learned mixture of Gaussians) or "vamp" (VampPrior).
    prior: str = "standard_normal"
    # Mixture components (mixture) or pseudo-inputs (vamp).
    prior_components: int = 10
    # p(x|z): "bernoulli" (binarized pixels), "normal" or "continuous_bernoulli"
    # (grey levels in [0, 1]). The likelihood decides whether data are binarized.
    likelihood: str = "bernoulli"
    # Normal likelihood scale: one "shared" value, one per "channel" or "pixel".
    normal_scale: str = "shared"
    # MLP and gated: width of each hidden layer (the decoder mirrors them).
    hidden_units: Tuple[int, ...] = (512, 256)
    # Conv: filters of each stride-2 3x3 convolution, used when conv_layers is empty.
    conv_filters: Tuple[int, ...] = (32, 64)
    # Conv: encoder convolutions as [filters, kernel, stride] triples; empty:
    # [f, 3, 2] for each f of conv_filters.
    conv_layers: ConvLayers = ()
    # Conv: decoder transposed convolutions [filters, kernel, stride]; empty:
    # the encoder's convolutions in reverse order (the mirror).
    decoder_conv_layers: ConvLayers = ()
    # Conv: batch normalisation after every (transposed) convolution.
    batch_norm: bool = False
    # Conv: width of the dense layer between the convolutions and the latent (0: none).
    dense_units: int = 256
    # Activation of every hidden layer (a tf-keras activation name).
    activation: str = "elu"
    # Image shape [height, width, channels]; filled in from the data by fit.
    # Folder and celeb_a images are resized and cropped to it.
    image_shape: Optional[Tuple[int, int, int]] = None

    def __post_init__(self):
        _choice("arch", self.arch, ARCHITECTURES)
        _positive_int("latent_dim", self.latent_dim)
        _choice("posterior", self.posterior, POSTERIORS)
        _choice("prior", self.prior, PRIORS)
        _positive_int("prior_components", self.prior_components)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("normal_scale", self.normal_scale, NORMAL_SCALES)
        for units in self.hidden_units:
            _positive_int("hidden_units", units)
        _require(len(self.conv_filters) >= 1, "conv_filters needs one entry or more")
        for filters in self.conv_filters:
            _positive_int("conv_filters", filters)
        _check_conv_layers("conv_layers", self.conv_layers)
        _check_conv_layers("decoder_conv_layers", self.decoder_conv_layers)
        _require(isinstance(self.batch_norm, bool), f"batch_norm must be true or false (got {self.batch_norm!r})")
        _non_negative("dense_units", self.dense_units, whole=True)
        if self.image_shape is not None:
            _require(
                len(self.image_shape) == 3,
                f"image_shape must be [height, width, channels] (got {self.image_shape!r})",
            )
            for size in self.image_shape:
                _positive_int("image_shape", size)

    @property
    def binarize(self) -> bool:
        """Whether this model sees binarized pixels (Bernoulli likelihood)."""
        return self.likelihood in BINARIZED_LIKELIHOODS

    @property
    def encoder_conv_layers(self) -> ConvLayers:
        """The encoder's [filters, kernel, stride] triples (conv_layers or conv_filters)."""
        return self.conv_layers or tuple((f, 3, 2) for f in self.conv_filters)

    def to_dict(self) -> dict:
        """The fields, plus the derived `binarize` so config.json records the preprocessing."""
        values = super().to_dict()
        values["binarize"] = self.binarize
        return values

    @classmethod
    def from_dict(cls, values: dict):
        values = dict(values)
        binarize = values.pop("binarize", None)
        config = super().from_dict(values)
        _require(
            binarize in (None, config.binarize),
            f"binarize={binarize} contradicts likelihood {config.likelihood!r}, which decides it; "
            "remove binarize from the config",
        )
        return config


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
    # Passes over the training set.
    epochs: int = 100
    # Examples per training step.
    batch_size: int = 128
    # "adam" or "rmsprop".
    optimizer: str = "adam"
    # Optimizer step size (the initial one under a schedule).
    learning_rate: float = 1e-3
    # "cosine": the step size falls from learning_rate to
    # lr_final * learning_rate along a half cosine over all the run's steps;
    # "constant": it stays. See probvae.training.schedules.learning_rate_schedule.
    lr_schedule: str = "cosine"
    lr_final: float = 0.05
    # Weight of the KL term in the training loss (1 = the ELBO).
    beta: float = 1.0
    # Linear KL warm-up: the KL weight rises from 0 to beta over this many
    # epochs (0: no warm-up). See probvae.training.schedules.kl_weight.
    kl_warmup_epochs: int = 0
    # Free bits: nats per latent dimension of KL that cost nothing in the
    # training loss (0: none). See probvae.objectives.free_bits_kl.
    free_bits: float = 0.0
    # Evaluate the test set (and load_run) with the weights of the epoch with
    # the best validation ELBO (RUN_DIR/checkpoints/best-<step>) rather than the last.
    keep_best: bool = True
    # Early stopping: end the run after this many epochs without a better
    # validation ELBO (0: train all epochs).
    patience: int = 0
    # Seed of initialisation, shuffling, binarization and sampling.
    seed: int = 0
    # Run the step eagerly (slow; for debugging with pdb and prints).
    eager: bool = False
    # Examples per evaluation step (evaluation needs no gradients).
    eval_batch_size: int = 1000
    # Save a checkpoint every N training steps (and always at the end of each
    # epoch); 0: only at epoch ends. A killed run loses at most N steps.
    checkpoint_every_steps: int = 500
    # On a non-finite loss or gradient, skip that batch (no weight update,
    # counted in metrics.json) instead of stopping the run.
    skip_nonfinite: bool = False
    # tf.config.experimental.enable_op_determinism(): a CPU run repeats bit for bit.
    deterministic: bool = False
    # Importance samples K of the test log-likelihood estimated at the end of
    # training (scripts/evaluate.py re-evaluates with any K, e.g. 5000).
    test_iwae_samples: int = 100
    # Compile the step with XLA; None: per architecture and device
    # (probvae.training.precision.use_jit_compile: the MLP always, conv on a GPU).
    jit_compile: Optional[bool] = None
    # float16 compute, float32 variables and distributions, loss scaling (GPU).
    mixed_precision: bool = False
    # tf.distribute strategy: "auto" (multi-worker if TF_CONFIG names several
    # tasks, mirrored with more than one GPU, else one-device), "one-device",
    # "mirrored" or "multi-worker". batch_size is the global batch.
    strategy: str = "auto"

    # What runs whose config.json predates a field trained with.
    _BEFORE = {"lr_schedule": "constant", "keep_best": False}

    @classmethod
    def from_dict(cls, values: dict):
        if isinstance(values, dict):
            values = {**{k: v for k, v in cls._BEFORE.items() if k not in values}, **values}
        return super().from_dict(values)

    def __post_init__(self):
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("test_iwae_samples", self.test_iwae_samples)
        _finite_number("learning_rate", self.learning_rate)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _finite_number("lr_final", self.lr_final)
        _require(0 <= self.lr_final <= 1, f"lr_final must be in 0..1, a fraction of learning_rate (got {self.lr_final!r})")
        _non_negative("patience", self.patience, whole=True)
        _choice("strategy", self.strategy, STRATEGIES)
        _require(
            self.learning_rate > 0,
            f"learning_rate must be positive (got {self.learning_rate!r})",
        )
        _finite_number("beta", self.beta)
        _require(self.beta >= 0, f"beta must be 0 or more (got {self.beta!r})")
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**30,
            f"seed must be a whole number in 0..1073741823 (got {self.seed!r})",
        )
        _require(
            isinstance(self.checkpoint_every_steps, int) and self.checkpoint_every_steps >= 0,
            f"checkpoint_every_steps must be a whole number, 0 or more (got {self.checkpoint_every_steps!r})",
        )
        for name in ("eager", "skip_nonfinite", "deterministic", "keep_best"):
            _flag(name, getattr(self, name))
        _non_negative("kl_warmup_epochs", self.kl_warmup_epochs, whole=True)
        _non_negative("free_bits", self.free_bits)
        _require(self.jit_compile in (None, True, False),
                 f"jit_compile must be true, false or null (got {self.jit_compile!r})")
        _require(isinstance(self.mixed_precision, bool),
                 f"mixed_precision must be true or false (got {self.mixed_precision!r})")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    _SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

    def to_dict(self) -> dict:
        values = {name: getattr(self, name).to_dict() for name in self._SECTIONS}
        values["version"] = self.version
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        _require(isinstance(values, dict), "a config must be a JSON object with data, model and train sections")
        version = values.get("version")
        _require(
            version == CONFIG_VERSION,
            f"config version {version!r} is not supported by this probvae "
            f"(it reads version {CONFIG_VERSION}); retrain with this version",
        )
        unknown = sorted(set(values) - set(cls._SECTIONS) - {"version"})
        _require(not unknown, f"config has unknown section(s): {', '.join(unknown)}")
        sections = {
            name: section.from_dict(values.get(name, {}))
            for name, section in cls._SECTIONS.items()
        }
        return cls(version=version, **sections)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def flat(self) -> dict:
        """Every field as {"section.field": value}, e.g. {"train.epochs": 20, ...}."""
        return {
            f"{name}.{field}": value
            for name in self._SECTIONS
            for field, value in getattr(self, name).to_dict().items()
        }

    def differences(self, other: "RunConfig") -> List[str]:
        """The "section.field" keys whose values differ between two configs, sorted."""
        mine, theirs = self.flat(), other.flat()
        return sorted(key for key in mine if mine[key] != theirs[key])

    def replace(self, **sections: dict) -> "RunConfig":
        """A copy with fields of some sections changed: `replace(train={"epochs": 2})`."""
        changed = {}
        for name, changes in sections.items():
            _require(name in self._SECTIONS, f"no config section {name!r}")
            changed[name] = getattr(self, name).replace(**changes)
        return dataclasses.replace(self, **changed)
