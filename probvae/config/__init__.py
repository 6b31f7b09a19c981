"""Run configuration: frozen dataclasses, validated on construction, saved as JSON.

A run is fully described by a `RunConfig` (data, model, training). `config.json`
in a run directory holds `RunConfig.to_dict()`, and `RunConfig.from_dict` is the
only way a model is rebuilt from disk, so everything needed to rebuild the
model lives here.

- `probvae.config.fields`: what a field is (default, check, flag: `setting`)
  and a section built from its fields and its components' fields;
- `probvae.config.sections`: `DataConfig`, `ModelConfig`, `TrainConfig`;
- here: `RunConfig`, the three sections together, and the record of the
  modules that registered its components.

`to_dict` lists, under "components", the modules (not probvae's own) that
registered the components the config chooses, and `from_dict` imports them
again before it reads the sections (`probvae.components`), so a run of a
user's own prior loads in any process that can import that module; a config
written without the list loads as before.

Example:

    config = RunConfig(model=ModelConfig(latent_dim=2))
    config = config.replace(train={"epochs": 3})
    assert RunConfig.from_json(config.to_json()) == config
"""

from __future__ import annotations

import dataclasses
import json
from typing import FrozenSet, List

from probvae import checks, components
from probvae.checks import require as _require
from probvae.config.fields import flags
from probvae.config.sections import (
    OBJECTIVES,
    PRECISIONS,
    STRATEGIES,
    DataConfig,
    ModelConfig,
    TrainConfig,
    check_dataset_name,
)
from probvae.errors import UserError
from probvae.registry import DATASETS, is_registered, owners

__all__ = [
    "CONFIG_VERSION",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "RunConfig",
    "PRECISIONS",
    "STRATEGIES",
    "OBJECTIVES",
    "check_dataset_name",
]

# Bumped when a saved config can no longer be read by this code.
CONFIG_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    version: int = CONFIG_VERSION

    SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    _SECTIONS = SECTIONS  # (the name older code reads)

    def __post_init__(self):
        # The final test evaluation costs test_iwae_samples decoder passes per test image; datasets
        # that state their test size are checked here, the others by the data they load.
        entry = DATASETS[self.data.dataset]
        images = entry.trait("test_examples", 1)
        checks.decoder_passes_within(
            f"test_iwae_samples {self.train.test_iwae_samples} on {images} {self.data.dataset} test images",
            images * self.train.test_iwae_samples, "lower --test-iwae-samples (evaluate.py re-evaluates with "
            "any K)")

    @classmethod
    def resumable(cls) -> FrozenSet[str]:
        """The "section.field" keys a resumed run may change: how the run is
        carried out, not what it computes from good batches."""
        return frozenset(f"{section}.{name}" for section, fields in cls.SECTIONS.items()
                         for name, _, flag in flags(fields) if flag.resume)

    def to_dict(self) -> dict:
        values = {name: getattr(self, name).to_dict() for name in self.SECTIONS}
        values["version"] = self.version
        recorded = self.component_modules()
        if recorded:
            values["components"] = recorded
        return values

    def component_modules(self) -> List[dict]:
        """The modules that registered the components this config chooses,
        as config.json records them (`probvae.components.records`): only those
        a run uses, not every module imported; none for the built-in ones."""
        chosen = [(registry, entry) for name in self.SECTIONS
                  for _, registry, entry in getattr(self, name).components()]
        return components.records(owners(chosen))

    @staticmethod
    def import_components(values: dict) -> None:
        """Import the modules a config dict records ("components") whose
        components are not registered yet; see `probvae.components.import_recorded`."""
        if isinstance(values, dict) and "components" in values:
            components.import_recorded(values["components"], is_registered)

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
        unknown = sorted(set(values) - set(cls.SECTIONS) - {"version", "components"})
        _require(not unknown, f"config has unknown section(s): {', '.join(unknown)}")
        cls.import_components(values)
        sections = {
            name: section.from_dict(values.get(name, {}))
            for name, section in cls.SECTIONS.items()
        }
        return cls(version=version, **sections)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        _require(isinstance(text, (str, bytes, bytearray)), f"from_json takes the text of a config.json, got a "
                 f"{type(text).__name__}; for a dict use RunConfig.from_dict")
        try:
            values = json.loads(text)
        except ValueError as error:
            raise UserError(f"a config must be JSON text ({error}); pass what to_json wrote") from None
        return cls.from_dict(values)

    def flat(self) -> dict:
        """Every field as {"section.field": value}, e.g. {"train.epochs": 20, ...}."""
        return {
            f"{name}.{field}": value
            for name in self.SECTIONS
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
            _require(name in self.SECTIONS, f"no config section {name!r}")
            _require(isinstance(changes, dict), f"replace({name}=...) takes a dict of {name} fields, got "
                     f"{changes!r}; e.g. replace(train={{\"epochs\": 2}})")
            changed[name] = getattr(self, name).replace(**changes)
        return dataclasses.replace(self, **changed)
