"""Every config field has a flag, declared once beside the field, and every flag
reaches its field; flags that cannot mean anything are refused in one line."""

import dataclasses
import os

import pytest

from probvae import runs
from probvae.cli import common, fit
from probvae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from probvae.registry import DATASETS

SECTIONS = fit.parse_args([]).sections

# A value other than the default, as typed and as the config holds it, for fields whose type
# alone does not give one; the others: a choice or registry entry that is not the default,
# the opposite of a true/false default, the default plus 3 for whole numbers.
VALUES = {
    "dataset": ("shapes", "shapes"), "data_dir": ("/tmp/idx", "/tmp/idx"),
    "validation_fraction": ("0.25", 0.25), "latent_dim": ("7", 7), "image_shape": ("8,6,1", (8, 6, 1)),
    "hidden_units": ("9,5", (9, 5)), "conv_filters": ("6,12", (6, 12)), "conv_layers": ("8:3:2", ((8, 3, 2),)),
    "decoder_conv_layers": ("8:3:2", ((8, 3, 2),)), "learning_rate": ("0.0025", 0.0025), "beta": ("0.5", 0.5),
    "free_bits": ("0.5", 0.5), "init_from": ("/tmp/other-run", "/tmp/other-run"),
    "lr_plateau_factor": ("0.25", 0.25), "lr_plateau_min": ("0.02", 0.02), "lr_final": ("0.1", 0.1),
    "train_samples": ("4", 4), "weight_average": ("0.999", 0.999), "clip_norm": ("100", 100.0),
    "gated_conv_layers": ("5:3:2", ((5, 3, 2),)),
    "level_conv_layers": ("4:5:1,3:3:2", ((4, 5, 1), (3, 3, 2))), "gated_decoder_filters": ("9,2", (9, 2)),
}
# Flags a field needs beside it: the component that declares it, or the objective it belongs to.
NEEDS = {"train_samples": ["--objective", "iwae"]}


def flag_and_value(section, name):
    """(argv, expected value) that sets `section.name` to a value other than its default."""
    default = getattr(getattr(RunConfig(), section), name)
    parser_action = _actions()[name]
    if name in VALUES:
        text, value = VALUES[name]
        return [parser_action.option_strings[0], text], value
    if parser_action.type is None and parser_action.nargs == 0:  # --flag / --no-flag
        return [parser_action.option_strings[1 if default else 0]], not default
    if parser_action.choices:
        value = next(c for c in parser_action.choices if c != default)
        return [parser_action.option_strings[0], value], value
    assert parser_action.type is int, (name, parser_action.type)
    value = (default or 0) + 3
    return [parser_action.option_strings[0], str(value)], value


def _all_actions():
    parser = common.ArgumentParser()
    common.add_config_arguments(parser, {})
    return parser._actions


def _actions():
    """The flag of each field (an older alias of the same field comes after it)."""
    actions = {}
    for action in _all_actions():
        actions.setdefault(action.dest, action)
    return actions


def needs(section, name):
    """The flags choosing a component that declares `name`, if the default config does not."""
    config = getattr(RunConfig(), section)
    if common.component_of(config, name) is None:
        return NEEDS.get(name, [])
    for option, registry in config.registries().items():
        for entry in registry.entries():
            if any(f.name == name for f in entry.fields):
                return [f"--{option.replace('_', '-')}", entry.name]
    raise AssertionError(name)


FIELDS = [(section, name) for section, names in SECTIONS.items() for name in names]


@pytest.mark.parametrize("section, name", FIELDS, ids=[f"{s}.{n}" for s, n in FIELDS])
def test_every_flag_reaches_its_config_field(section, name):
    argv, value = flag_and_value(section, name)
    config = fit.config_from_args(fit.parse_args(needs(section, name) + argv))
    assert getattr(getattr(config, section), name) == value
    assert value != getattr(getattr(RunConfig(), section), name)


def test_every_field_has_a_flag_and_the_named_flags_keep_their_spelling():
    for section, fields in RunConfig.SECTIONS.items():
        own = [f.name for f in dataclasses.fields(fields) if f.name != "options"]
        assert set(own) <= set(SECTIONS[section]), section
    actions = {index: action for index, action in enumerate(_all_actions())}
    for flag in ("--patience", "--keep-best", "--no-keep-best", "--lr-final", "--lr-plateau-factor",
                 "--lr-plateau-patience", "--lr-plateau-min", "--optimizer", "--jit-compile", "--mixed-precision",
                 "--latent-layers", "--level-units", "--decoder-arch", "--checkpoint-every", "--eval-batch-size",
                 "--split-seed", "--eager", "--deterministic", "--skip-nonfinite", "--init-from"):
        assert any(flag in a.option_strings for a in actions.values()), flag


@pytest.mark.parametrize("argv, expected", [
    ([], None), (["--precision", "bfloat16"], "bfloat16"), (["--mixed-precision"], "float16"),
    (["--precision", "float32"], "float32"),
])
def test_the_precision_flag_and_its_older_spelling_reach_the_config(argv, expected):
    assert fit.config_from_args(fit.parse_args(argv)).train.precision == expected


def test_what_a_resumed_run_may_change_comes_from_the_fields():
    assert runs.RESUME_MAY_CHANGE == {"data.data_dir", "train.eager", "train.checkpoint_every_steps",
                                      "train.skip_nonfinite", "train.deterministic", "train.strategy"}


def run_fit(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        common.run(lambda: fit.main(argv), argv)
    except SystemExit as exit:
        return exit.code, capsys.readouterr().err.strip().splitlines()
    return 0, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv, message", [
    (["--resume", ""], "argument --resume: an empty value"),
    (["--run-dir", "", "--dataset", "shapes"], "argument --run-dir: an empty value"),
    (["--preset", ""], "argument --preset: an empty value"),
    (["--dataset", " "], "argument --dataset: an empty value"),
    (["--init-from", ""], "argument --init-from: an empty value"),
    (["--arch", "mlp", "--conv-filters", "8"], r"--conv-filters belongs to the network conv \(--arch"),
    (["--dataset", "shapes", "--normal-scale", "pixel"], r"--normal-scale belongs to the likelihood normal"),
    (["--dataset", "shapes", "--prior-components", "3"], r"--prior-components belongs to the prior mixture or vamp"),
    (["--dataset", "shapes", "--lr-schedule", "constant", "--lr-plateau-factor", "0.3"],
     r"--lr-plateau-factor belongs to the learning-rate schedule plateau"),
    (["--dataset", "shapes", "--free-bits", "inf"], "free_bits must be a finite number"),
    (["--dataset", "shapes", "--arch", "mlp", "--activation", "relux"], "argument --activation: invalid choice"),
    (["--test-iwae-samples", "1000000000"], r"test_iwae_samples 1000000000 on 10000 fashion_mnist test images "
                                            r"means 1e\+13 decoder passes, more than 1e\+11"),
])
def test_refused_command_lines_say_so_in_one_line_and_write_nothing(argv, message, tmp_path, monkeypatch, capsys):
    import re

    code, lines = run_fit(argv + ["--dry-run"], tmp_path, monkeypatch, capsys)  # (a missed refusal trains nothing)
    assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
    assert os.listdir(tmp_path) == []


def test_a_preset_may_carry_fields_of_components_the_flags_replace():
    config = fit.config_from_args(fit.parse_args(["--preset", "mnist-conv-2d", "--arch", "mlp"]))
    assert config.model.arch == "mlp" and config.model.conv_layers  # kept from the preset, unused


def test_api_configs_refuse_what_the_command_line_refuses():
    with pytest.raises(ValueError, match="free_bits must be a finite number"):
        TrainConfig(free_bits=float("inf"))
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        ModelConfig(arch="mlp", activation="relux")
    with pytest.raises(ValueError, match="unknown dataset 'npz:'"):
        DataConfig(dataset="npz:")
    assert DATASETS["npz:x.npz"].name == "npz" and DATASETS["shapes"].name == "shapes"
    RunConfig(data=DataConfig(dataset="shapes"), train=TrainConfig(test_iwae_samples=10**8))  # 5e10 passes: fine
