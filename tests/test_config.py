import json

import pytest

from probvae.config import CONFIG_VERSION, DataConfig, ModelConfig, RunConfig, TrainConfig


def test_json_round_trip_keeps_every_field_and_tuple_types():
    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=7),
        model=ModelConfig(latent_dim=3, hidden_units=(11, 5), image_shape=(8, 8, 1)),
        train=TrainConfig(epochs=2, beta=0.5),
    )
    restored = RunConfig.from_json(config.to_json())
    assert restored == config
    assert isinstance(restored.model.image_shape, tuple)


def test_replace_changes_one_section_only():
    config = RunConfig().replace(train={"epochs": 4})
    assert config.train.epochs == 4
    assert config.model == ModelConfig()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ModelConfig(latent_dim=0), "latent_dim"),
        (lambda: ModelConfig(arch="resnet"), "conv, mlp"),
        (lambda: ModelConfig(posterior="flow"), "full, diag"),
        (lambda: TrainConfig(epochs=0), "epochs"),
        (lambda: TrainConfig(beta=-1.0), "beta"),
        (lambda: TrainConfig(learning_rate=0.0), "learning_rate"),
        (lambda: DataConfig(validation_fraction=1.0), "validation_fraction"),
    ],
)
def test_invalid_values_name_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_field_and_version_are_refused():
    values = RunConfig().to_dict()
    values["model"]["depth"] = 3
    with pytest.raises(ValueError, match="depth"):
        RunConfig.from_dict(values)
    values = json.loads(RunConfig().to_json())
    values["version"] = CONFIG_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        RunConfig.from_dict(values)


def test_layer_specs_round_trip_as_nested_tuples_and_are_validated():
    config = RunConfig(model=ModelConfig(conv_layers=((8, 3, 2), (16, 5, 1)), batch_norm=True, dense_units=0,
                                         prior="vamp", likelihood="continuous_bernoulli"),
                       train=TrainConfig(optimizer="rmsprop", kl_warmup_epochs=3, free_bits=0.25))
    restored = RunConfig.from_json(config.to_json())
    assert restored == config and restored.model.conv_layers[1] == (16, 5, 1)
    assert json.loads(config.to_json())["model"]["binarize"] is False
    assert ModelConfig(conv_filters=(4, 6)).encoder_conv_layers == ((4, 3, 2), (6, 3, 2))
    with pytest.raises(ValueError, match="conv_layers must be a list of"):
        ModelConfig(conv_layers=((8, 3),))
    with pytest.raises(ValueError, match="conv_layers stride"):
        ModelConfig(conv_layers=((8, 3, 0),))
    with pytest.raises(ValueError, match="free_bits"):
        TrainConfig(free_bits=-0.1)
    with pytest.raises(ValueError, match="kl_warmup_epochs"):
        TrainConfig(kl_warmup_epochs=1.5)
    with pytest.raises(ValueError, match="standard_normal, diag_gaussian, mixture, vamp"):
        ModelConfig(prior="flow")
