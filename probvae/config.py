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
from typing import Any, Optional, Tuple
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
DATASETS = ("fashion_mnist", "mnist", "kmnist", "cifar10", "shapes")
DATASET_PREFIXES = ("npz:",)
ARCHITECTURES = ("conv", "mlp")
POSTERIORS = ("full", "diag")
PRIORS = ("standard_normal",)
LIKELIHOODS = ("bernoulli", "normal")
NORMAL_SCALES = ("shared", "channel", "pixel")


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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        _require(
            not unknown,
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; "
            f"known fields: {', '.join(fields)}",
        )
        converted = {}
        for name, value in values.items():
            # JSON has no tuples: lists come back as the tuples they were.
            if isinstance(value, list):
                value = tuple(value)
            converted[name] = value
        return cls(**converted)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    # Dataset name (see probvae.data.DATASETS) or "npz:PATH".
    dataset: str = "fashion_mnist"
    # Where TFDS keeps its data and where IDX files are looked for first.
    data_dir: Optional[str] = None
    # Share of the training set held out for validation, with a fixed seed.
    validation_fraction: float = 0.1
    # Use only the first N training examples (after the split); None: all.
    max_train_examples: Optional[int] = None
    # Seed of the train/validation split and the fixed evaluation binarization.
    split_seed: int = 0

    def __post_init__(self):
        check_dataset_name(self.dataset)
        _require(
            0.0 < self.validation_fraction < 1.0,
            "validation_fraction must lie strictly between 0 and 1 "
            f"(got {self.validation_fraction!r})",
        )
        if self.max_train_examples is not None:
            _positive_int("max_train_examples", self.max_train_examples)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    # Encoder/decoder family: "conv" (convolutional) or "mlp" (dense).
    arch: str = "conv"
    # Dimension d of the latent z.
    latent_dim: int = 32
    # q(z|x): "full" (MultivariateNormalTriL) or "diag" (diagonal covariance).
    posterior: str = "full"
    # p(z): "standard_normal".
    prior: str = "standard_normal"
    # p(x|z): "bernoulli" (binarized pixels) or "normal" (grey levels in [0, 1]).
    likelihood: str = "bernoulli"
    # Normal likelihood scale: one "shared" value, one per "channel" or "pixel".
    normal_scale: str = "shared"
    # MLP: width of each hidden layer (the decoder mirrors them).
    hidden_units: Tuple[int, ...] = (512, 256)
    # Conv: filters of each stride-2 3x3 convolution (the decoder mirrors them).
    conv_filters: Tuple[int, ...] = (32, 64)
    # Conv: width of the dense layer between the convolutions and the latent.
    dense_units: int = 256
    # Activation of every hidden layer (a tf-keras activation name).
    activation: str = "elu"
    # Image shape [height, width, channels]; filled in from the data by fit.
    image_shape: Optional[Tuple[int, int, int]] = None

    def __post_init__(self):
        _choice("arch", self.arch, ARCHITECTURES)
        _positive_int("latent_dim", self.latent_dim)
        _choice("posterior", self.posterior, POSTERIORS)
        _choice("prior", self.prior, PRIORS)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("normal_scale", self.normal_scale, NORMAL_SCALES)
        for units in self.hidden_units:
            _positive_int("hidden_units", units)
        _require(len(self.conv_filters) >= 1, "conv_filters needs one entry or more")
        for filters in self.conv_filters:
            _positive_int("conv_filters", filters)
        _positive_int("dense_units", self.dense_units)
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
        return self.likelihood == "bernoulli"


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
    # Passes over the training set.
    epochs: int = 20
    # Examples per training step.
    batch_size: int = 128
    # Adam step size.
    learning_rate: float = 1e-3
    # Weight of the KL term in the training loss (1 = the ELBO).
    beta: float = 1.0
    # Seed of initialisation, shuffling, binarization and sampling.
    seed: int = 0
    # Run the step eagerly (slow; for debugging with pdb and prints).
    eager: bool = False
    # Examples per evaluation step (evaluation needs no gradients).
    eval_batch_size: int = 1000
    # Compile the step with XLA; None: per architecture and device
    # (probvae.acceleration.use_jit_compile: the MLP always, conv on a GPU).
    jit_compile: Optional[bool] = None
    # float16 compute, float32 variables and distributions, loss scaling (GPU).
    mixed_precision: bool = False

    def __post_init__(self):
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _require(
            self.learning_rate > 0,
            f"learning_rate must be positive (got {self.learning_rate!r})",
        )
        _require(self.beta >= 0, f"beta must be 0 or more (got {self.beta!r})")
        _require(isinstance(self.seed, int), f"seed must be an integer (got {self.seed!r})")
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

    def replace(self, **sections: dict) -> "RunConfig":
        """A copy with fields of some sections changed: `replace(train={"epochs": 2})`."""
        changed = {}
        for name, changes in sections.items():
            _require(name in self._SECTIONS, f"no config section {name!r}")
            changed[name] = getattr(self, name).replace(**changes)
        return dataclasses.replace(self, **changed)
