"""`EvaluationResult`: every held-out number of one evaluation, and its JSON.

The JSON of an evaluation file (RUN_DIR/eval_*.json) and of
`metrics.json["test"]` is `EvaluationResult.as_dict()`, with the keys that
earlier versions wrote, so files written before this class existed read
back with `EvaluationResult.from_dict`. A value that is not a finite number
is written as null: the standard error of a single image (n = 1 has no
spread to measure) and, say, a diverged model's log-likelihood; the JSON is
always strict (no bare NaN or Infinity).

The result is also a read-only mapping of those keys (`result["elbo"]`,
`"bdmc" in result`), so code written for the dict of earlier versions works
unchanged. No TensorFlow here: `probvae compare` reads results without it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
from typing import Any, List, Mapping, Optional

import numpy as np

from probvae.errors import UserError

__all__ = ["EvaluationResult", "mean_and_stderr", "json_safe"]


def mean_and_stderr(values) -> tuple:
    """(mean, standard error of the mean) of a 1-D array, as floats; the
    standard error of fewer than two values is NaN (written to JSON as null)."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def json_safe(value):
    """`value` with every float that is not finite replaced by None, through lists and dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


# Written only when set: the estimator's own fields, and what `evaluate_run` adds.
_OPTIONAL = ("iwae_samples", "ais", "ais_seconds", "bdmc", "split", "dataset", "run_dir", "skipped_images")
# Numbers a reader relies on: a file whose value here is not a number (or null) is not a result.
_NUMBERS = ("n_examples", "elbo", "elbo_stderr", "log_likelihood", "log_likelihood_stderr", "iwae_samples")


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationResult(collections.abc.Mapping):
    """One evaluation's numbers; nats per example unless the name says bits (docs/evaluation.md)."""

    # What was evaluated.
    n_examples: Optional[int] = None
    image_shape: Optional[List[int]] = None
    likelihood: Optional[str] = None
    units: str = "nats per example"
    # The ELBO and its parts, with standard errors over the images.
    elbo: Optional[float] = None
    elbo_stderr: Optional[float] = None
    reconstruction: Optional[float] = None
    reconstruction_stderr: Optional[float] = None
    kl: Optional[float] = None
    kl_stderr: Optional[float] = None
    # log p(x) by `estimator`, its errors, and the estimator's settings.
    estimator: str = "iwae"
    log_likelihood: Optional[float] = None
    log_likelihood_stderr: Optional[float] = None
    log_likelihood_mc_stderr: Optional[float] = None
    effective_sample_size: Optional[float] = None
    iwae_samples: Optional[int] = None  # "iwae": K
    ais: Optional[dict] = None  # "ais": AISSettings, acceptance, final_step_size
    ais_seconds: Optional[float] = None
    bdmc: Optional[dict] = None  # with bdmc_examples: lower, upper, gap, ...
    bits_per_dim: Optional[float] = None
    bits_per_dim_stderr: Optional[float] = None
    elbo_bits_per_dim: Optional[float] = None
    elbo_bits_per_dim_stderr: Optional[float] = None
    # The latent space.
    active_units: Optional[int] = None
    active_unit_threshold: Optional[float] = None
    latent_dim: Optional[int] = None
    posterior_mean_variance: Optional[List[float]] = None
    kl_per_dimension: Optional[List[float]] = None
    kl_total_correlation: Optional[float] = None
    # What fixes the numbers.
    seed: Any = 0
    batch_size: Optional[int] = None
    checkpoint: Optional[str] = None
    binarization: Optional[str] = None
    binarization_seed: Optional[int] = None
    seconds: Optional[float] = None
    # Added by `evaluate_run`.
    split: Optional[str] = None
    dataset: Optional[str] = None
    run_dir: Optional[str] = None
    max_examples: Optional[int] = None
    skipped_images: Optional[int] = None  # images of a streamed split that failed to decode
    # Not in the JSON: where the result was written (or read from), and keys this version does not know.
    file: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)

    def as_dict(self, with_file: bool = True) -> dict:
        """The JSON-ready dict (the keys of earlier versions; non-finite floats as None),
        with "file" if it is known and `with_file`."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values.update(values.pop("extra"))
        file = values.pop("file")
        for name in _OPTIONAL:
            if values[name] is None:
                del values[name]
        if "split" not in values:
            del values["max_examples"]
        if with_file and file is not None:
            values["file"] = file
        return json_safe(values)

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "an evaluation result") -> "EvaluationResult":
        """The result a JSON dict holds (keys this version does not know are kept
        in `extra`); a UserError naming `source` if a number is not a number."""
        if not isinstance(values, Mapping):
            raise UserError(f"{source} is not an evaluation result (a JSON object); delete it or evaluate again")
        for name in _NUMBERS:
            value = values.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UserError(f"{source}: {name} is {value!r}, not a number; delete the file or evaluate again")
        known = {field.name for field in dataclasses.fields(cls)} - {"extra"}
        fields = {key: value for key, value in values.items() if key in known}
        return cls(**fields, extra={key: value for key, value in values.items() if key not in known})

    def replace(self, **changes) -> "EvaluationResult":
        return dataclasses.replace(self, **changes)

    def __getitem__(self, key):
        return self.as_dict()[key]

    def __iter__(self):
        return iter(self.as_dict())

    def __len__(self):
        return len(self.as_dict())
