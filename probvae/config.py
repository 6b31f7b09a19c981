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
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

from probvae import checks
from probvae.checks import require as _require
from probvae.registry import LIKELIHOODS, MODEL_REGISTRIES, NETWORKS, TRAIN_REGISTRIES, find_field

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
# How training is spread over devices and hosts (see probvae.training.distribute).
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
# Training objectives: the ELBO, or the importance-weighted bound (probvae.objectives).
OBJECTIVES = ("elbo", "iwae")


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
    """A config section: its own dataclass fields, and the fields of the
    components it names (`REGISTRIES`: field -> registry), which the
    registered entries declare with their defaults and checks.

    Component fields are passed and read like the section's own
    (`ModelConfig(arch="mlp", hidden_units=(7,))`, `config.hidden_units`),
    kept in `options` (sorted (name, value) pairs) and written flat in JSON.
    The chosen components' fields are filled in with their defaults, so a
    saved config records every value the run used; a field of a component
    not chosen is kept if given (older configs list them all) and reads as
    its default otherwise.
    """

    REGISTRIES: ClassVar[Dict[str, Any]] = {}

    def __init__(self, **values):
        own = {f.name: f for f in dataclasses.fields(self) if f.name != "options"}
        options = dict(values.pop("options", ()))
        for name in [n for n in values if n not in own]:
            options[name] = _tuples(values.pop(name))  # lists (JSON, users) as the tuples fields hold
        # The component fields given (the rest are the chosen components' defaults):
        # `replace` carries only these over, so a new component starts from its own defaults.
        object.__setattr__(self, "_given", frozenset(options))
        for name, field in own.items():
            if name in values:
                value = values[name]
            elif field.default is not dataclasses.MISSING:
                value = field.default
            else:
                value = field.default_factory()
            object.__setattr__(self, name, value)
        self._check()
        for option, registry in self.REGISTRIES.items():
            name = getattr(self, option)
            if name is None:
                continue
            for field in registry[name].fields:
                options.setdefault(field.name, field.default)
        for name, value in options.items():
            field = find_field(name)
            _require(field is not None, f"{type(self).__name__} has no field {name}; known fields: "
                     f"{', '.join(sorted(set(own) | set(self.component_fields())))}")
            field.check(name, value)
        object.__setattr__(self, "options", tuple(sorted(options.items())))

    def _check(self) -> None:
        """Validate the section's own fields (subclasses)."""

    def component_fields(self) -> Tuple[str, ...]:
        """Names of the fields the chosen components declare."""
        names = []
        for option, registry in self.REGISTRIES.items():
            if getattr(self, option) is not None:
                names += [f.name for f in registry[getattr(self, option)].fields]
        return tuple(dict.fromkeys(names))

    def __getattr__(self, name):
        if name.startswith("__") or name == "options":
            raise AttributeError(name)
        for key, value in object.__getattribute__(self, "options"):
            if key == name:
                return value
        field = find_field(name)
        if field is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        return field.default

    def values(self) -> dict:
        """Every field, the section's own and the components', as keyword arguments."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**own, **dict(self.options)}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.values()))

    @classmethod
    def from_dict(cls, values: dict):
        _require(isinstance(values, dict), f"{cls.__name__} must be a JSON object (got {values!r:.60})")
        # JSON has no tuples: lists come back as the tuples they were.
        return cls(**{name: _tuples(value) for name, value in values.items()})

    def replace(self, **changes):
        """A copy with `changes`; component fields not given before take the
        defaults of the components the copy chooses."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        given = {name: value for name, value in self.options if name in self._given}
        return type(self)(**{**own, **given, **changes})


@dataclasses.dataclass(frozen=True, init=False)
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
    options: Tuple[Tuple[str, Any], ...] = ()

    def _check(self):
        check_dataset_name(self.dataset)
        checks.finite_number("validation_fraction", self.validation_fraction)
        _require(
            0.0 < self.validation_fraction < 1.0,
            "validation_fraction must lie strictly between 0 and 1 "
            f"(got {self.validation_fraction!r})",
        )
        if self.max_train_examples is not None:
            checks.positive_int("max_train_examples", self.max_train_examples)
        _require(
            isinstance(self.split_seed, int) and 0 <= self.split_seed < 2**30,
            f"split_seed must be a whole number in 0..1073741823 (got {self.split_seed!r})",
        )


@dataclasses.dataclass(frozen=True, init=False)
class ModelConfig(_Section):
    """The model: which registered components (`probvae.registry`) and their fields.

    Besides the fields below it takes the fields of its components, e.g.
    `hidden_units` and `activation` of the "mlp" network, `prior_components`
    of the "mixture" and "vamp" priors, `normal_scale` of the "normal"
    likelihood (`fit.py --help` lists them all).
    """

    # Encoder family (probvae.registry.NETWORKS): "mlp" (dense), "gated" (gated
    # dense layers, as in the VampPrior paper) or "conv" (convolutional). The
    # default gated 300-300 network with a 40-D diagonal posterior reaches a
    # better held-out log-likelihood per CPU minute than the MLP and the conv
    # network (docs/results.md).
    arch: str = "gated"
    # Dimension d of the latent z; with latent_layers > 1, one size per level
    # from the bottom (z_1, next to x) up (e.g. (40, 40)), or one size for all.
    latent_dim: Union[int, Tuple[int, ...]] = 40
    # Stochastic levels L: 1, or a hierarchy p(z_L) p(z_(L-1) | z_L) ...
    # p(x | z_1, ..., z_L) (probvae.hierarchy; the VampPrior paper's HVAE for L = 2).
    latent_layers: int = 1
    # Width of the hidden layers of each lower level's networks, those of
    # q(z_l | x, z_(l+1)) and p(z_l | z_(l+1)) (latent_layers > 1 only).
    level_units: int = 300
    # q(z|x) (probvae.registry.POSTERIORS): "full" (MultivariateNormalTriL) or "diag".
    posterior: str = "diag"
    # p(z) (probvae.registry.PRIORS): "standard_normal" (fixed), "diag_gaussian"
    # (learned loc and scale), "mixture" (learned mixture of Gaussians) or "vamp" (VampPrior).
    prior: str = "standard_normal"
    # p(x|z) (probvae.registry.LIKELIHOODS): "bernoulli" (binarized pixels),
    # "normal" or "continuous_bernoulli" (grey levels in [0, 1]). The
    # likelihood decides whether data are binarized.
    likelihood: str = "bernoulli"
    # Decoder family; None: the encoder's (arch).
    decoder_arch: Optional[str] = None
    # Image shape [height, width, channels]; filled in from the data by fit.
    # Folder and celeb_a images are resized and cropped to it.
    image_shape: Optional[Tuple[int, int, int]] = None
    options: Tuple[Tuple[str, Any], ...] = ()

    REGISTRIES: ClassVar[Dict[str, Any]] = {**MODEL_REGISTRIES, "decoder_arch": NETWORKS}

    def _check(self):
        for option, registry in self.REGISTRIES.items():
            if not (option == "decoder_arch" and self.decoder_arch is None):
                registry[getattr(self, option)]  # raises for an unknown name
        checks.positive_int("latent_layers", self.latent_layers)
        checks.positive_int("level_units", self.level_units)
        if isinstance(self.latent_dim, tuple) and len(self.latent_dim) == 1:
            object.__setattr__(self, "latent_dim", self.latent_dim[0])
        if isinstance(self.latent_dim, tuple):
            checks.positive_ints("latent_dim", self.latent_dim)
            _require(len(self.latent_dim) == self.latent_layers,
                     f"latent_dim gives {len(self.latent_dim)} sizes for {self.latent_layers} latent layer(s); "
                     "give one size per layer or a single size for all")
        else:
            checks.positive_int("latent_dim", self.latent_dim)
        if self.image_shape is not None:
            _require(
                isinstance(self.image_shape, tuple) and len(self.image_shape) == 3,
                f"image_shape must be [height, width, channels] (got {self.image_shape!r})",
            )
            for size in self.image_shape:
                checks.positive_int("image_shape", size)

    @property
    def latent_dims(self) -> Tuple[int, ...]:
        """The size of each latent level, bottom (z_1) first: [d_1, ..., d_L]."""
        if isinstance(self.latent_dim, tuple):
            return self.latent_dim
        return (self.latent_dim,) * self.latent_layers

    def one_level(self, latent_dim: int) -> "ModelConfig":
        """This config with one latent level of `latent_dim`: what the prior of
        a hierarchy's top level and its decoder (on all levels' z) are built from."""
        return self.replace(latent_dim=int(latent_dim), latent_layers=1)

    @property
    def binarize(self) -> bool:
        """Whether this model sees binarized pixels (its likelihood's `binarize` trait)."""
        return bool(LIKELIHOODS[self.likelihood].trait("binarize", False))

    def to_dict(self) -> dict:
        """The fields, plus the derived `binarize` so config.json records the preprocessing."""
        values = super().to_dict()
        values["binarize"] = self.binarize
        return values

    @classmethod
    def from_dict(cls, values: dict):
        _require(isinstance(values, dict), f"{cls.__name__} must be a JSON object (got {values!r:.60})")
        values = dict(values)
        binarize = values.pop("binarize", None)
        config = super().from_dict(values)
        _require(
            binarize in (None, config.binarize),
            f"binarize={binarize} contradicts likelihood {config.likelihood!r}, which decides it; "
            "remove binarize from the config",
        )
        return config


@dataclasses.dataclass(frozen=True, init=False)
class TrainConfig(_Section):
    """Training. Besides the fields below it takes the fields of its optimizer
    and step-size schedule (e.g. `lr_final` of the "cosine" schedule)."""

    # Passes over the training set.
    epochs: int = 100
    # Examples per training step.
    batch_size: int = 100
    # probvae.registry.OPTIMIZERS: "adam" or "rmsprop".
    optimizer: str = "adam"
    # Optimizer step size (the initial one under a schedule).
    learning_rate: float = 1e-3
    # probvae.registry.SCHEDULES: "plateau": the step size halves after
    # lr_plateau_patience epochs without a better validation ELBO, so epochs
    # is a maximum, not a schedule length; "cosine": it falls from
    # learning_rate to lr_final * learning_rate along a half cosine over all
    # the run's steps (worse on short budgets); "constant": it stays. See
    # probvae.training.schedules and docs/results.md.
    lr_schedule: str = "plateau"
    # Weight of the KL term in the training loss (1 = the ELBO).
    beta: float = 1.0
    # Linear KL warm-up: the KL weight rises from 0 to beta over this many
    # epochs (0: no warm-up). See probvae.training.schedules.kl_weight.
    kl_warmup_epochs: int = 10
    # Free bits: nats per latent dimension of KL that cost nothing in the
    # training loss (0: none). See probvae.objectives.free_bits_kl.
    free_bits: float = 0.0
    # The training objective: "elbo", or "iwae", the importance-weighted bound
    # with train_samples samples per example (Burda et al., 2015; see
    # probvae.objectives.iwae_loss). The reported ELBO is the true ELBO either way.
    objective: str = "elbo"
    # K of the "iwae" objective (1 for "elbo").
    train_samples: int = 1
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
    # Training steps per compiled call (probvae.training.step.StepLoop): the
    # host dispatches once per call; signals and the progress bar act between
    # calls. 0: as many as take about 0.1 s (at most 50). The numbers do not
    # depend on it.
    steps_per_call: int = 0
    # Compile the step with XLA; None: per architecture and device
    # (probvae.training.precision.use_jit_compile: dense networks always, conv on a GPU).
    jit_compile: Optional[bool] = None
    # float16 compute, float32 variables and distributions, loss scaling (GPU).
    mixed_precision: bool = False
    # tf.distribute strategy: "auto" (multi-worker if TF_CONFIG names several
    # tasks, mirrored with more than one GPU, else one-device), "one-device",
    # "mirrored" or "multi-worker". batch_size is the global batch.
    strategy: str = "auto"
    # Start from the weights of another run's model (its best epoch's
    # checkpoint, else its newest) instead of a fresh initialisation: to
    # fine-tune with another objective or schedule. The model and the data
    # split must be the run's (probvae.runs.initial_checkpoint); the optimizer
    # starts afresh. None: initialise from `seed`.
    init_from: Optional[str] = None
    options: Tuple[Tuple[str, Any], ...] = ()

    REGISTRIES: ClassVar[Dict[str, Any]] = TRAIN_REGISTRIES
    # What runs whose config.json predates a field trained with.
    _BEFORE: ClassVar[Dict[str, Any]] = {"lr_schedule": "constant", "keep_best": False, "kl_warmup_epochs": 0}

    @classmethod
    def from_dict(cls, values: dict):
        if isinstance(values, dict):
            values = {**{k: v for k, v in cls._BEFORE.items() if k not in values}, **values}
        return super().from_dict(values)

    def _check(self):
        for option, registry in self.REGISTRIES.items():
            registry[getattr(self, option)]  # raises for an unknown name
        for name in ("epochs", "batch_size", "eval_batch_size", "test_iwae_samples"):
            checks.positive_int(name, getattr(self, name))
        checks.finite_number("learning_rate", self.learning_rate)
        _require(self.learning_rate > 0, f"learning_rate must be positive (got {self.learning_rate!r})")
        checks.non_negative("patience", self.patience, whole=True)
        checks.choice("strategy", self.strategy, STRATEGIES)
        checks.finite_number("beta", self.beta)
        _require(self.beta >= 0, f"beta must be 0 or more (got {self.beta!r})")
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**30,
            f"seed must be a whole number in 0..1073741823 (got {self.seed!r})",
        )
        checks.non_negative("checkpoint_every_steps", self.checkpoint_every_steps, whole=True)
        checks.non_negative("steps_per_call", self.steps_per_call, whole=True)
        for name in ("eager", "skip_nonfinite", "deterministic", "keep_best", "mixed_precision"):
            checks.flag(name, getattr(self, name))
        checks.non_negative("kl_warmup_epochs", self.kl_warmup_epochs, whole=True)
        checks.non_negative("free_bits", self.free_bits)
        checks.choice("objective", self.objective, OBJECTIVES)
        checks.positive_int("train_samples", self.train_samples)
        _require(self.objective == "iwae" or self.train_samples == 1,
                 f"train_samples={self.train_samples} needs the iwae objective (--objective iwae)")
        _require(self.objective == "elbo" or self.free_bits == 0,
                 "free bits shape the ELBO's KL term; use them with --objective elbo")
        _require(self.jit_compile in (None, True, False),
                 f"jit_compile must be true, false or null (got {self.jit_compile!r})")
        _require(self.init_from is None or (isinstance(self.init_from, str) and self.init_from.strip() != ""),
                 f"init_from must name a run directory or be null (got {self.init_from!r})")


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
        """The "section.field" keys whose values differ between two configs,
        sorted; a field only one of them has (one registered component's
        option, such as model.prior_components) counts as None in the other."""
        mine, theirs = self.flat(), other.flat()
        return sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key))

    def replace(self, **sections: dict) -> "RunConfig":
        """A copy with fields of some sections changed: `replace(train={"epochs": 2})`."""
        changed = {}
        for name, changes in sections.items():
            _require(name in self._SECTIONS, f"no config section {name!r}")
            changed[name] = getattr(self, name).replace(**changes)
        return dataclasses.replace(self, **changed)
