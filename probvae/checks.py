"""Checks of user-supplied values: each raises a `UserError` naming the value,
what it must be and what it got. Config fields, registered components and the
Python API share them, so every "must be a whole number of at least 1" reads
the same wherever it comes from.
"""

import math
from typing import Any, Sequence

import numpy as np

from probvae.errors import UserError

__all__ = [
    "require",
    "choice",
    "positive_int",
    "non_negative",
    "finite_number",
    "fraction",
    "flag",
    "positive_ints",
    "open_fraction",
    "non_negative_number",
    "whole_number",
    "MAX_DECODER_PASSES",
    "decoder_passes_within",
    "MAX_IMPORTANCE_SAMPLES",
    "importance_samples",
]

# The most decoder passes (one image, one latent) an evaluation may cost
# unless forced: K = 5000 importance samples on 10,000 images is 5e7.
MAX_DECODER_PASSES = 10**11
# Importance samples per image of one call: K is an int32 in the compiled loop.
MAX_IMPORTANCE_SAMPLES = 2**31 - 1


def require(condition: bool, message: str) -> None:
    """Raise a UserError with `message` unless `condition`."""
    if not condition:
        raise UserError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(name: str, value: Any, choices: Sequence[str]) -> None:
    require(value in choices, f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def positive_int(name: str, value: Any) -> None:
    require(_is_int(value) and value >= 1, f"{name} must be a whole number of at least 1 (got {value!r})")


def non_negative(name: str, value: Any, whole: bool = False) -> None:
    number = _is_int(value) if whole else (_is_int(value) or isinstance(value, float))
    require(number and value >= 0,
            f"{name} must be a {'whole ' if whole else ''}number of at least 0 (got {value!r})")


def finite_number(name: str, value: Any) -> None:
    require((_is_int(value) or isinstance(value, float)) and math.isfinite(value),
            f"{name} must be a finite number (got {value!r})")


def fraction(name: str, value: Any) -> None:
    """A number in [0, 1]."""
    finite_number(name, value)
    require(0 <= value <= 1, f"{name} must be in 0..1 (got {value!r})")


def flag(name: str, value: Any) -> None:
    require(isinstance(value, bool), f"{name} must be true or false (got {value!r})")


def positive_ints(name: str, value: Any) -> None:
    """A tuple of whole numbers of at least 1 (layer widths)."""
    require(isinstance(value, tuple), f"{name} must be a list of whole numbers (got {value!r})")
    for item in value:
        positive_int(name, item)


def open_fraction(name: str, value: Any) -> None:
    """A number strictly between 0 and 1."""
    finite_number(name, value)
    require(0 < value < 1, f"{name} must lie strictly between 0 and 1 (got {value!r})")


def non_negative_number(name: str, value: Any) -> None:
    """A finite number of at least 0."""
    finite_number(name, value)
    require(value >= 0, f"{name} must be 0 or more (got {value!r})")


def whole_number(name: str, value: Any) -> int:
    """`value` as an int if it is a whole number (NumPy integers too, not bools)."""
    if isinstance(value, np.integer):
        value = int(value)
    require(_is_int(value), f"{name} must be a whole number (got {value!r})")
    return value


def decoder_passes_within(what: str, passes: int, fix: str) -> None:
    """A UserError if `passes` decoder passes exceed MAX_DECODER_PASSES."""
    require(passes <= MAX_DECODER_PASSES,
            f"{what} means {passes:.2g} decoder passes, more than {MAX_DECODER_PASSES:.0e} (K = 5000 on 10,000 "
            f"images is 5e+07): days to years of computing; {fix}")


def importance_samples(num_samples: Any, num_images: int, force: bool = False,
                       fix: str = "ask for less, or pass force=True to run it anyway") -> int:
    """`num_samples` K as an int if it is a whole number in 1..MAX_IMPORTANCE_SAMPLES
    and, unless `force`, K decoder passes on each of `num_images` images stay
    within MAX_DECODER_PASSES; a UserError ending in `fix` otherwise."""
    if isinstance(num_samples, np.integer):
        num_samples = int(num_samples)
    positive_int("num_samples", num_samples)
    require(num_samples <= MAX_IMPORTANCE_SAMPLES, f"num_samples {num_samples} is more than the "
            f"{MAX_IMPORTANCE_SAMPLES} importance samples per image one call draws; draw fewer")
    if not force:
        decoder_passes_within(f"num_samples {num_samples} on {num_images} images", num_images * num_samples, fix)
    return num_samples
