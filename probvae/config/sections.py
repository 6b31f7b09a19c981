"""The three sections of a run's config: data, model and training.

Each field is declared once, with its default, its check and its flag
(`probvae.config.fields.setting`); a comment above it says more where one
line of help is not enough. Besides their own fields, the model and training
sections take the fields of the components they name (`probvae.registry`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional, Tuple, Union

from probvae import checks
from probvae.checks import require as _require
from probvae.config.fields import _Section, image_shape, latent_sizes, setting
from probvae.registry import DATASETS, LIKELIHOODS, NETWORKS, OPTIMIZERS, POSTERIORS, PRIORS, SCHEDULES

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "STRATEGIES", "OBJECTIVES", "check_dataset_name"]

# How training is spread over devices and hosts (see probvae.training.distribute).
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
# What the networks may compute in (probvae.training.precision).
PRECISIONS = ("float32", "bfloat16", "float16")
# Training objectives: the ELBO, or the importance-weighted bound (probvae.objectives).
OBJECTIVES = ("elbo", "iwae")


def check_dataset_name(name: str) -> None:
    """Raise a UserError listing the valid names if `name` is not a dataset."""
    DATASETS[name]


def _seed(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**30,
             f"{name} must be a whole number in 0..1073741823 (got {value!r})")


def _positive_number(name: str, value: Any) -> None:
    checks.finite_number(name, value)
    _require(value > 0, f"{name} must be positive (got {value!r})")


def _decay(name: str, value: Any) -> None:
    checks.finite_number(name, value)
    _require(0 <= value < 1, f"{name} must be 0 (off) or a decay in (0, 1), e.g. 0.999 (got {value!r})")


def _whole(name: str, value: Any) -> None:
    checks.non_negative(name, value, whole=True)


def _one_of(choices):
    """The check of a field that takes one of `choices`."""
    return lambda name, value: checks.choice(name, value, choices)


def _run_dir(name: str, value: Any) -> None:
    _require(isinstance(value, str) and value.strip() != "",
             f"{name} must name a run directory or be null (got {value!r})")


def _optional_one_of(choices):
    """The check of a field that takes one of `choices` or None."""
    return lambda name, value: None if value is None else checks.choice(name, value, choices)


def _optional_flag(name: str, value: Any) -> None:
    _require(value in (None, True, False), f"{name} must be true, false or null (got {value!r})")


@dataclasses.dataclass(frozen=True, init=False)
class DataConfig(_Section):
    dataset: str = setting("fashion_mnist", "", parse=str, registry=DATASETS)
    data_dir: Optional[str] = setting(None, "folder with IDX files and TFDS data", parse=str, resume=True)
    # Folders hold out the same share again as the test set.
    validation_fraction: float = setting(0.1, "share of the training images held out for validation",
                                         parse=float, check=checks.open_fraction)
    max_train_examples: Optional[int] = setting(None, "train on the first N examples only (after the split)",
                                                parse=int, check=checks.positive_int)
    split_seed: int = setting(0, "seed of the train/validation split and of the held-out binarization",
                              parse=int, check=_seed)
    options: Tuple[Tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True, init=False)
class ModelConfig(_Section):
    """The model: which registered components (`probvae.registry`) and their fields.

    Besides the fields below it takes the fields of its components, e.g.
    `hidden_units` and `activation` of the "mlp" network, `prior_components`
    of the "mixture" and "vamp" priors, `normal_scale` of the "normal"
    likelihood (`fit.py --help` lists them all).
    """

    # The default gated 300-300 network with a 40-D diagonal posterior reaches a
    # better held-out log-likelihood per CPU minute than the MLP and the conv
    # network (docs/results.md).
    arch: str = setting("gated", parse=str, registry=NETWORKS)
    # With latent_layers > 1, one size per level from the bottom (z_1, next to x) up, or one size for all.
    latent_dim: Union[int, Tuple[int, ...]] = setting(
        40, "dimension of z; with --latent-layers, one per level from the bottom, e.g. 40,40", parse=latent_sizes)
    # p(z_L) p(z_(L-1) | z_L) ... p(x | z_1, ..., z_L) (probvae.hierarchy; the VampPrior paper's HVAE for L = 2).
    latent_layers: int = setting(1, "stochastic levels: 2 for the hierarchical VAE p(z2) p(z1|z2) p(x|z1,z2)",
                                 parse=int, check=checks.positive_int)
    level_units: int = setting(300, "hidden width of the lower levels' networks q(z1|x,z2), p(z1|z2)",
                               parse=int, check=checks.positive_int)
    posterior: str = setting("diag", parse=str, registry=POSTERIORS)
    prior: str = setting("standard_normal", parse=str, registry=PRIORS)
    # The likelihood decides whether data are binarized (its registry entry's `binarize`).
    likelihood: str = setting("bernoulli", parse=str, registry=LIKELIHOODS)
    decoder_arch: Optional[str] = setting(None, "decoder family (default: the encoder's --arch)", parse=str,
                                          registry=NETWORKS)
    # Filled in from the data by fit.
    image_shape: Optional[Tuple[int, int, int]] = setting(
        None, "H,W,C; folder and celeb_a images are resized and cropped to it", parse=image_shape)
    options: Tuple[Tuple[str, Any], ...] = ()

    def _check(self):
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

    epochs: int = setting(100, "passes over the training images", parse=int, check=checks.positive_int)
    batch_size: int = setting(100, "images per step (the global batch under a --strategy)", parse=int,
                              check=checks.positive_int)
    optimizer: str = setting("adam", parse=str, registry=OPTIMIZERS)
    learning_rate: float = setting(1e-3, "initial step size", parse=float, check=_positive_number)
    # "plateau" makes epochs a maximum, not a schedule length; "cosine" falls over all the
    # run's steps (worse on short budgets). See probvae.training.schedules and docs/results.md.
    lr_schedule: str = setting("plateau", parse=str, registry=SCHEDULES)
    beta: float = setting(1.0, "KL weight in the training loss (the reported ELBO keeps 1)", parse=float,
                          check=checks.non_negative_number)
    # See probvae.training.schedules.kl_weight.
    kl_warmup_epochs: int = setting(10, "raise the KL weight linearly from 0 to beta over this many epochs",
                                    parse=int, check=_whole)
    # See probvae.objectives.free_bits_kl.
    free_bits: float = setting(0.0, "nats of KL per latent dimension left free in training", parse=float,
                               check=checks.non_negative_number)
    # Burda et al. (2015); see probvae.objectives.iwae_loss. The reported ELBO is the true ELBO either way.
    objective: str = setting("elbo", "elbo, or iwae: the importance-weighted bound of --train-samples samples",
                             parse=str, choices=OBJECTIVES, check=_one_of(OBJECTIVES))
    train_samples: int = setting(1, "importance samples K of the iwae objective", parse=int,
                                 check=checks.positive_int)
    # probvae.training.averaging: the averages are the run's published weights.
    weight_average: float = setting(0.0, "decay D of an exponential moving average of the weights (e.g. 0.999); "
                                    "validation, the best epoch, checkpoints and the test use the average; 0: none",
                                    parse=float, check=_decay, metavar="D")
    # probvae.training.step: clipped after the replicas' sum, before the optimizer sees them.
    clip_norm: float = setting(0.0, "scale the gradients down to this global norm when it is larger (e.g. 100); "
                               "0: no clipping", parse=float, check=checks.non_negative_number, metavar="NORM")
    # RUN_DIR/checkpoints/best-<step> is evaluated (and loaded by load_run) rather than the last.
    keep_best: bool = setting(True, "evaluate with the weights of the best validation epoch", check=checks.flag)
    patience: int = setting(0, "stop after this many epochs without a better validation ELBO (the IWAE bound "
                            "under --objective iwae); 0: never", parse=int, check=_whole)
    seed: int = setting(0, "seed of the initial weights, the data order and every sample", parse=int, check=_seed)
    eager: bool = setting(False, "run the step eagerly, for debugging with pdb and prints", check=checks.flag,
                          resume=True)
    eval_batch_size: int = setting(1000, "images per evaluation step (evaluation needs no gradients)", parse=int,
                                   check=checks.positive_int)
    # A killed run loses at most STEPS steps.
    checkpoint_every_steps: int = setting(
        500, "save a checkpoint every STEPS steps as well as at each epoch end (0: epoch ends only)", parse=int,
        check=_whole, flag="--checkpoint-every", metavar="STEPS", resume=True)
    skip_nonfinite: bool = setting(False, "skip batches with a non-finite loss or gradient (no update, counted "
                                   "in metrics.json) instead of stopping", check=checks.flag, resume=True)
    deterministic: bool = setting(False, "deterministic ops: with --seed, a CPU run repeats bit for bit",
                                  check=checks.flag, resume=True)
    # scripts/evaluate.py re-evaluates with any K, e.g. 5000.
    test_iwae_samples: int = setting(100, "importance samples K of the final test log-likelihood", parse=int,
                                     check=checks.positive_int)
    # The host dispatches once per call; signals and the progress bar act between calls
    # (probvae.training.step.StepLoop).
    steps_per_call: int = setting(0, "training steps per compiled call (0: as many as take about 0.1 s, at "
                                  "most 50); the numbers do not depend on it", parse=int, check=_whole, metavar="N")
    # None: per architecture and device (probvae.training.precision.use_jit_compile).
    jit_compile: Optional[bool] = setting(None, "compile the step with XLA (default: dense networks always, "
                                          "conv on a GPU)", check=_optional_flag)
    # None: per network and device (probvae.training.precision.default_precision); a run records its choice.
    precision: Optional[str] = setting(
        None, "what the networks compute in, with float32 variables; distributions and the ELBO stay float32 "
        "(default: bfloat16 where the device has its units and the network gains, else float32; float16 "
        "scales the loss, for older GPUs)", parse=str, choices=PRECISIONS, check=_optional_one_of(PRECISIONS),
        aliases=(("--mixed-precision", "float16"),))
    # "auto": multi-worker if TF_CONFIG names several tasks, mirrored with more than one GPU, else one-device.
    strategy: str = setting("auto", "tf.distribute strategy; --batch-size is the global batch", parse=str,
                            choices=STRATEGIES, check=_one_of(STRATEGIES), resume=True)
    # The model and the data split must be the run's (probvae.runs.initial_checkpoint); the optimizer
    # starts afresh.
    init_from: Optional[str] = setting(
        None, "start from the weights of the run in RUN_DIR (its best epoch's) instead of a fresh "
        "initialisation, e.g. to fine-tune with --objective iwae; same model and data split; the KL warm-up "
        "runs again unless --kl-warmup-epochs 0", parse=str, check=_run_dir, metavar="RUN_DIR")
    options: Tuple[Tuple[str, Any], ...] = ()

    # What runs whose config.json predates a field trained with.
    _BEFORE: ClassVar[Dict[str, Any]] = {"lr_schedule": "constant", "keep_best": False, "kl_warmup_epochs": 0}

    @classmethod
    def from_dict(cls, values: dict):
        if isinstance(values, dict):
            values = {**{k: v for k, v in cls._BEFORE.items() if k not in values}, **values}
            if "mixed_precision" in values and "precision" not in values:  # before --precision
                mixed = values.pop("mixed_precision")
                values["precision"] = "float16" if mixed is True else "float32" if mixed is False else mixed
        return super().from_dict(values)

    def _check(self):
        _require(self.objective == "iwae" or self.train_samples == 1,
                 f"train_samples={self.train_samples} needs the iwae objective (--objective iwae)")
        _require(self.objective == "elbo" or self.free_bits == 0,
                 "free bits shape the ELBO's KL term; use them with --objective elbo")
