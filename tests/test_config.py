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
        (lambda: ModelConfig(arch="resnet"), "mlp, gated, conv"),
        (lambda: ModelConfig(posterior="flow"), "full, diag"),
        (lambda: TrainConfig(epochs=0), "epochs"),
        (lambda: TrainConfig(beta=-1.0), "beta"),
        (lambda: TrainConfig(learning_rate=0.0), "learning_rate"),
        (lambda: DataConfig(validation_fraction=1.0), "validation_fraction"),
        (lambda: DataConfig(validation_fraction=float("nan")), "validation_fraction must be a finite number"),
        (lambda: TrainConfig(learning_rate=float("inf")), "learning_rate must be a finite number"),
        (lambda: TrainConfig(beta=float("nan")), "beta must be a finite number"),
        (lambda: TrainConfig(seed=-1), "seed must be a whole number in 0..1073741823"),
        (lambda: TrainConfig(seed=2**40), "seed must be a whole number"),
        (lambda: TrainConfig(checkpoint_every_steps=-5), "checkpoint_every_steps"),
        (lambda: TrainConfig(skip_nonfinite="yes"), "skip_nonfinite must be true or false"),
        (lambda: TrainConfig(epochs=2.5), "epochs must be a whole number"),
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


def test_a_config_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError, match="JSON object"):
        RunConfig.from_dict([1, 2])
    values = RunConfig().to_dict()
    values["train"] = 3
    with pytest.raises(ValueError, match="TrainConfig must be a JSON object"):
        RunConfig.from_dict(values)


def test_configs_written_before_the_resume_fields_still_load():
    values = RunConfig().to_dict()
    for name in ("checkpoint_every_steps", "skip_nonfinite", "deterministic"):
        del values["train"][name]
    assert RunConfig.from_dict(values) == RunConfig()


def test_differences_name_section_and_field():
    config = RunConfig()
    other = config.replace(train={"epochs": 3, "beta": 0.5}, model={"latent_dim": 4})
    assert config.differences(other) == ["model.latent_dim", "train.beta", "train.epochs"]
    assert config.differences(config) == []
    assert config.flat()["train.epochs"] == 100
    # An option only one side's prior has counts, whichever side has it.
    vamp = config.replace(model={"prior": "vamp"})
    assert "model.prior_components" not in config.flat()
    assert config.differences(vamp) == vamp.differences(config) == ["model.prior", "model.prior_components"]
def test_layer_specs_round_trip_as_nested_tuples_and_are_validated():
    config = RunConfig(model=ModelConfig(conv_layers=((8, 3, 2), (16, 5, 1)), batch_norm=True, dense_units=0,
                                         prior="vamp", likelihood="continuous_bernoulli"),
                       train=TrainConfig(optimizer="rmsprop", kl_warmup_epochs=3, free_bits=0.25))
    restored = RunConfig.from_json(config.to_json())
    assert restored == config and restored.model.conv_layers[1] == (16, 5, 1)
    assert json.loads(config.to_json())["model"]["binarize"] is False
    from probvae.networks.conv import encoder_conv_layers

    assert encoder_conv_layers(ModelConfig(conv_filters=(4, 6))) == ((4, 3, 2), (6, 3, 2))
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


def test_jit_compile_and_precision_are_checked():
    from probvae.errors import UserError

    assert TrainConfig().jit_compile is None and TrainConfig().precision is None
    assert TrainConfig.from_dict({"jit_compile": True}).jit_compile is True
    with pytest.raises(UserError, match="jit_compile must be true, false or null"):
        TrainConfig(jit_compile="yes")
    with pytest.raises(UserError, match="unknown precision .half.; choose one of: float32, bfloat16, float16"):
        TrainConfig(precision="half")
    assert TrainConfig(precision="bfloat16").precision == "bfloat16"


@pytest.mark.parametrize("saved, expected", [(True, "float16"), (False, "float32")])
def test_a_config_with_the_old_mixed_precision_flag_loads_as_its_precision(saved, expected):
    train = TrainConfig.from_dict({"mixed_precision": saved, "epochs": 3})
    assert train.precision == expected and train.epochs == 3


# config.json of a run written before components were registered: every model field flat.
_FLAT_CONFIG = {
    "data": {"data_dir": None, "dataset": "shapes", "max_train_examples": 300, "split_seed": 0,
             "validation_fraction": 0.1},
    "model": {"activation": "elu", "arch": "mlp", "batch_norm": False, "binarize": True, "conv_filters": [32, 64],
              "conv_layers": [], "decoder_conv_layers": [], "dense_units": 256, "hidden_units": [512, 256],
              "image_shape": [28, 28, 1], "latent_dim": 2, "likelihood": "bernoulli", "normal_scale": "shared",
              "posterior": "full", "prior": "standard_normal", "prior_components": 10},
    "train": {"batch_size": 10, "beta": 1.0, "checkpoint_every_steps": 500, "deterministic": True, "eager": False,
              "epochs": 2, "eval_batch_size": 1000, "free_bits": 0.0, "jit_compile": None, "keep_best": True,
              "kl_warmup_epochs": 0, "learning_rate": 0.001, "lr_final": 0.05, "lr_schedule": "cosine",
              "mixed_precision": False, "optimizer": "adam", "patience": 0, "seed": 3, "skip_nonfinite": False,
              "strategy": "auto", "test_iwae_samples": 10},
    "version": 1,
}


def test_a_config_written_before_the_registries_loads_and_round_trips():
    config = RunConfig.from_dict(_FLAT_CONFIG)
    assert config.model.hidden_units == (512, 256) and config.model.prior_components == 10
    assert config.model.conv_filters == (32, 64) and config.train.lr_final == 0.05
    written = json.loads(config.to_json())
    assert written["train"].pop("precision") == "float32"  # what "mixed_precision": false meant
    for section in ("data", "model", "train"):
        # Every field written then is written again with its value (or under its new name); fields
        # added since come with the values that reproduce the old behaviour.
        old = {k: v for k, v in _FLAT_CONFIG[section].items() if k != "mixed_precision"}
        assert {k: v for k, v in written[section].items() if k not in _ADDED} == old
    assert {k: v for section in ("model", "train") for k, v in written[section].items() if k in _ADDED} == _ADDED


_ADDED = {"decoder_arch": None, "latent_layers": 1, "level_units": 300, "objective": "elbo", "train_samples": 1,
          "steps_per_call": 0, "init_from": None, "weight_average": 0.0, "clip_norm": 0.0}


def test_component_fields_come_from_the_chosen_entries():
    gated, mlp = ModelConfig(arch="gated"), ModelConfig(arch="mlp")
    assert gated.hidden_units == (300, 300) and mlp.hidden_units == (512, 256)  # each entry's own default
    assert "conv_filters" not in mlp.to_dict() and "prior_components" not in mlp.to_dict()
    assert ModelConfig(prior="vamp").to_dict()["prior_components"] == 10
    assert mlp.replace(arch="conv").to_dict()["dense_units"] == 256  # filled in for the new choice
    assert TrainConfig(lr_schedule="constant").to_dict().get("lr_final") is None
    with pytest.raises(ValueError, match="has no field hidden_unit"):
        ModelConfig(hidden_unit=(3,))
    with pytest.raises(ValueError, match="prior_components must be a whole number of at least 1"):
        ModelConfig(prior="mixture", prior_components=0)
