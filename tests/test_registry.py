"""Every entry of every registry resolves to what its kind must be, and the
traits it declares agree with the object it names."""

import inspect

import pytest
import tf_keras

from probvae import registry
from probvae.distributions import LikelihoodHead, Prior

ENTRIES = [(r, e) for r in registry.REGISTRIES for e in r.entries()]


def check_network(entry, family):
    assert callable(family.encoder) and callable(family.decoder)


def check_posterior(entry, layer):
    assert callable(layer.params_size) and callable(layer.new)


def check_prior(entry, cls):
    assert issubclass(cls, Prior)


def check_likelihood(entry, cls):
    assert issubclass(cls, LikelihoodHead)
    head = cls((4, 3, 1))
    # The head's binarize is its entry's trait (the one place it is stated).
    assert head.binarize is bool(entry.trait("binarize"))


def check_optimizer(entry, cls):
    assert issubclass(cls, tf_keras.optimizers.Optimizer)


def check_schedule(entry, function):
    assert callable(function)
    assert list(inspect.signature(function).parameters)[:2] == ["train_config", "steps_per_epoch"]
    if entry.trait("after_validation") is not None:
        assert callable(entry.load_trait("after_validation"))


def check_dataset(entry, builder):
    assert list(inspect.signature(builder).parameters) == ["request"]
    assert set(dict(entry.traits)) <= {"tfds_name", "idx", "idx_dir", "class_names", "test_examples", "splits",
                                       "image_shape", "path"}
    assert entry.trait("tfds_name") is not None or entry.name == "shapes" or entry.trait("path")
    assert (entry.trait("splits") is not None) == (builder.__name__ == "tfds_streams")


CHECKS = {"network": check_network, "posterior": check_posterior, "prior": check_prior,
          "likelihood": check_likelihood, "optimizer": check_optimizer, "learning-rate schedule": check_schedule,
          "dataset": check_dataset}


@pytest.mark.parametrize("kind, entry", [(r.kind, e) for r, e in ENTRIES],
                         ids=[f"{r.kind}:{e.name}" for r, e in ENTRIES])
def test_every_entry_resolves_and_its_traits_agree_with_what_it_names(kind, entry):
    CHECKS[kind](entry, entry.load())
    for field in entry.fields:
        field.check(field.name, field.default)  # its own default passes its check


def test_every_kind_is_checked():
    assert {r.kind for r in registry.REGISTRIES} == set(CHECKS)


def test_every_activation_a_network_may_name_is_a_tf_keras_activation():
    for name in registry.ACTIVATIONS:
        assert callable(tf_keras.activations.get(name)), name


def test_a_likelihood_registered_without_the_trait_models_grey_levels():
    class Grey(LikelihoodHead):
        pass

    registry.LIKELIHOODS.register("grey_test", Grey, binarize=False)
    try:
        assert Grey((2, 2, 1)).binarize is False
        registry.LIKELIHOODS.register("grey_test", Grey, binarize=True, replace=True)
        assert Grey((2, 2, 1)).binarize is True
    finally:
        registry.LIKELIHOODS._entries.pop("grey_test")
