import pytest

from probvae._keras import keras
from probvae.config import TrainConfig
from probvae.model import VAE
from probvae.training import schedules

from conftest import tiny_model_config


def test_linear_warm_up_from_zero_to_beta():
    # N = 4 epochs: weights 0, 1/4, 2/4, 3/4 of beta, then beta.
    assert [schedules.kl_weight(2.0, 4, e) for e in range(1, 8)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [schedules.kl_weight(0.7, 0, e) for e in (1, 5)] == [0.7, 0.7]


def test_set_kl_weight_changes_the_models_variable():
    vae = VAE(tiny_model_config(arch="mlp"), kl_weight=1.0)
    train = TrainConfig(beta=0.8, kl_warmup_epochs=2)
    assert schedules.set_kl_weight(vae, train, 2) == pytest.approx(0.4)
    assert float(vae.kl_weight.numpy()) == pytest.approx(0.4)


def test_optimizers_by_name():
    optimizer = schedules.make_optimizer(TrainConfig(optimizer="rmsprop", learning_rate=0.01))
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    assert isinstance(schedules.make_optimizer(TrainConfig()), keras.optimizers.Adam)
    with pytest.raises(ValueError, match="adam, rmsprop"):
        TrainConfig(optimizer="sgd")
