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


def test_jit_compile_and_mixed_precision_are_checked():
    from probvae.errors import UserError

    assert TrainConfig().jit_compile is None and TrainConfig().mixed_precision is False
    assert TrainConfig.from_dict({"jit_compile": True}).jit_compile is True
    with pytest.raises(UserError, match="jit_compile must be true, false or null"):
        TrainConfig(jit_compile="yes")
    with pytest.raises(UserError, match="mixed_precision must be true or false"):
        TrainConfig(mixed_precision=1)
