"""A user's component from every command: `--import` (a .py file or a module
on the path) and installed packages' entry points register it; the run
records the module in config.json, and evaluate, inspect, export, compare and
fit --resume import it again without being told; a missing module is one
line naming it; a name another module owns is refused naming both; the export
of such a run loads where neither probvae nor the module can be imported."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from probvae import components, registry
from probvae.config import ModelConfig, RunConfig, TrainConfig
from probvae.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
# 60 shapes in batches of 20, a dense network of 8 units, 2 latent dimensions: seconds.
TINY = ["--dataset", "shapes", "--arch", "mlp", "--hidden-units", "8", "--latent-dim", "2", "--epochs", "1",
        "--max-train-examples", "60", "--batch-size", "20", "--test-iwae-samples", "2", "--seed", "3"]



def _documented_prior() -> str:
    """The my_prior.py of docs/extending.md: the Student-t prior the page walks through."""
    with open(os.path.join(ROOT, "docs", "extending.md")) as stream:
        text = stream.read()
    block = text[text.index("```python\n# my_prior.py\n"):]
    return block[len("```python\n"):block.index("\n```\n")] + "\n"


STUDENT_T = _documented_prior()

# What loads the export: probvae and the prior's module cannot be imported (python -I: no PYTHONPATH either).
LOAD_EXPORT = '''
import sys


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("probvae", "student_prior"):
            raise ImportError(name + " is not importable here")


sys.meta_path.insert(0, Refuse())
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
images = tf.constant((np.random.default_rng(0).uniform(size=(3, 28, 28, 1)) < 0.5).astype(np.float32))
values = model.signatures["log_likelihood"](images=images, num_samples=tf.constant(4))["log_likelihood"].numpy()
loaded = [name for name in sys.modules if name.split(".")[0] in ("probvae", "student_prior")]
print(values.shape, bool(np.isfinite(values).all()), loaded)
'''


def command(*args, path=(ROOT,), cwd=None):
    """Run `args` (a script and its arguments) in a fresh python with PYTHONPATH `path`."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=environment,
                          cwd=cwd)


def script(name):
    return os.path.join(SCRIPTS, name)


def probvae_command(*args):
    return ["-m", "probvae.cli.main", *args]


def assert_one_line_error(result, *parts):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def listing(folder):
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, dirs, files in os.walk(folder) for name in dirs + files)


def write_plugin(folder, module_text, entry_point="student_t = studentlab.priors", package="probvae-student"):
    """A package as pip would leave it: studentlab/priors.py and its metadata
    with a `probvae.components` entry point, in `folder` (put on the path)."""
    os.makedirs(os.path.join(folder, "studentlab"), exist_ok=True)
    with open(os.path.join(folder, "studentlab", "__init__.py"), "w"):
        pass
    with open(os.path.join(folder, "studentlab", "priors.py"), "w") as stream:
        stream.write(module_text)
    info = os.path.join(folder, f"{package.replace('-', '_')}-1.0.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as stream:
        stream.write(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as stream:
        stream.write(f"[probvae.components]\n{entry_point}\n")
    return folder


# --- in this process: records, refusals, entry points (no training) -------------------------------------------

@pytest.fixture
def restored():
    """Leave the registries, sys.modules and the record of sources as they were."""
    entries = [(r, dict(r._entries)) for r in registry.REGISTRIES]
    modules, sources, loaded = set(sys.modules), dict(components._SOURCES), components._entry_points
    yield
    for r, saved in entries:
        r._entries.clear()
        r._entries.update(saved)
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    components._SOURCES.clear()
    components._SOURCES.update(sources)
    components._entry_points = loaded


def write_module(folder, name, text):
    path = os.path.join(str(folder), f"{name}.py")
    with open(path, "w") as stream:
        stream.write(textwrap.dedent(text))
    return path


LIGHT_PRIOR = """
    from probvae import checks
    from probvae.registry import PRIORS, Field

    PRIORS.register("light_t", "probvae.distributions.priors:StandardNormalPrior",
                    fields=[Field("light_df", 4.0, checks.finite_number, "degrees of freedom", float)])
"""


def test_a_config_records_the_module_of_its_component_and_reading_it_imports_it_again(tmp_path, restored):
    path = write_module(tmp_path, "light_prior", LIGHT_PRIOR)
    components.import_module(path)
    config = RunConfig(model=ModelConfig(prior="light_t", light_df=2.5))
    values = config.to_dict()
    assert values["components"] == [{"module": "light_prior", "path": path, "registers": {"prior": ["light_t"]}}]
    assert "components" not in RunConfig().to_dict()  # built-in components: config.json as before

    registry.PRIORS._entries.pop("light_t")
    del sys.modules["light_prior"]
    assert RunConfig.from_dict(json.loads(json.dumps(values))) == config  # imported again, from the file
    assert registry.PRIORS["light_t"].module == "light_prior"

    registry.PRIORS._entries.pop("light_t")
    del sys.modules["light_prior"]
    os.rename(path, path + ".moved")
    with pytest.raises(UserError) as error:
        RunConfig.from_dict(values)
    assert str(error.value) == (
        f"this run needs the module light_prior (it registered the prior light_t), which cannot be imported here: "
        f"pass --import with its file (it was {path}, which is not there), or install the package that provides it")


def test_only_the_modules_a_run_uses_are_recorded_and_a_package_module_by_name(tmp_path, restored, monkeypatch):
    write_module(tmp_path, "unused_optimizer", """
        from probvae.registry import OPTIMIZERS
        OPTIMIZERS.register("sgd_unused", "tf_keras.optimizers:SGD")
    """)
    os.makedirs(tmp_path / "lab")
    (tmp_path / "lab" / "__init__.py").write_text("")
    write_module(tmp_path / "lab", "optimizers", """
        from probvae.registry import OPTIMIZERS
        OPTIMIZERS.register("sgd_lab", "tf_keras.optimizers:SGD")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    components.import_modules([f"{tmp_path / 'unused_optimizer.py'},lab.optimizers"])
    config = RunConfig(train=TrainConfig(optimizer="sgd_lab"))
    assert config.to_dict()["components"] == [{"module": "lab.optimizers", "registers": {"optimizer": ["sgd_lab"]}}]


def test_a_name_another_module_or_probvae_owns_is_refused_naming_both(tmp_path, restored):
    first = write_module(tmp_path, "first_prior", LIGHT_PRIOR)
    second = write_module(tmp_path, "second_prior", LIGHT_PRIOR)
    builtin = write_module(tmp_path, "my_vamp", """
        from probvae.registry import PRIORS
        PRIORS.register("vamp", "probvae.distributions.priors:VampPrior")
    """)
    components.import_module(first)
    with pytest.raises(UserError) as error:
        components.import_module(second)
    assert str(error.value) == ("prior 'light_t' is registered already by the module first_prior; the module "
                                "second_prior cannot register it too: give it another name")
    assert "second_prior" not in sys.modules and registry.PRIORS["light_t"].module == "first_prior"
    with pytest.raises(UserError, match=r"^prior 'vamp' is registered already by probvae \(built in\); the module "
                                        r"my_vamp cannot register it too: give it another name$"):
        components.import_module(builtin)
    with pytest.raises(UserError, match=r"^prior 'vamp' is registered already by probvae \(built in\); the module "
                                        r"\S*test_components_import cannot register it too"):
        registry.PRIORS.register("vamp", "probvae.distributions.priors:VampPrior", replace=True)
    with pytest.raises(UserError, match=r"^prior 'light_t' is registered already by the module first_prior; the "
                                        r"module second_prior cannot"):
        registry.PRIORS.register("light_t", "probvae.distributions.priors:StandardNormalPrior", replace=True,
                                 module="second_prior")
    assert registry.PRIORS["vamp"].module == "probvae.registry"
    components.import_module(first)  # the same file again: the module it is already


def test_import_errors_are_one_line_naming_the_module(tmp_path, restored):
    broken = write_module(tmp_path, "broken_prior", "import no_such_dependency_xyz\n")
    with pytest.raises(UserError, match=r"^importing .*broken_prior.py failed: ModuleNotFoundError: No module "
                                        r"named 'no_such_dependency_xyz'$"):
        components.import_module(broken)
    with pytest.raises(UserError, match=r"^cannot import nowhere_xyz.priors: no module of that name on the path"):
        components.import_module("nowhere_xyz.priors")
    with pytest.raises(UserError, match="no such file"):
        components.import_module(str(tmp_path / "absent.py"))
    with pytest.raises(UserError, match="an empty module name"):
        components.import_modules(["a,,b"])


def test_a_field_check_is_called_with_name_and_value_and_another_signature_is_refused():
    def one_argument(value):
        pass

    with pytest.raises(UserError) as error:
        registry.Field("student_t_df", 5.0, one_argument)
    assert str(error.value) == ("the check of field 'student_t_df' is called as check(name, value) and raises a "
                                "UserError for a bad value; test_a_field_check_is_called_with_name_and_value_and_"
                                "another_signature_is_refused.<locals>.one_argument(value) cannot be called so")
    registry.Field("df", 5.0, lambda name, value, strict=False: None)  # more, with defaults: fine
    with pytest.raises(UserError, match="must be a function check"):
        registry.Field("df", 5.0, None)


def test_a_section_field_with_a_one_argument_check_is_refused_when_declared():
    import dataclasses

    from probvae.config.fields import _Section, setting

    with pytest.raises(UserError, match=r"^the check of field 'width' is called as check\(name, value\)"):
        @dataclasses.dataclass(frozen=True, init=False)
        class Section(_Section):
            width: int = setting(3, "a width", parse=int, check=lambda value: None)


LIGHT_PLUGIN = """
from probvae.registry import OPTIMIZERS

OPTIMIZERS.register("sgd_plugin", "tf_keras.optimizers:SGD", summary="from an entry point")
"""


def test_entry_points_register_when_a_registry_is_first_read_not_at_import(tmp_path):
    plugin = write_plugin(str(tmp_path), LIGHT_PLUGIN, "sgd = studentlab.priors")
    result = command("-c", (
        "import sys; import probvae; from probvae import config, registry; "
        "before = 'studentlab.priors' in sys.modules; names = registry.OPTIMIZERS.names(); "
        "print(before, 'studentlab.priors' in sys.modules, names[-1], registry.OPTIMIZERS['sgd_plugin'].module, "
        "config.RunConfig(train=config.TrainConfig(optimizer='sgd_plugin')).to_dict()['components'])"),
        path=(ROOT, plugin))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 4) == ["False", "True", "sgd_plugin", "studentlab.priors", (
        "[{'module': 'studentlab.priors', 'package': 'probvae-student', 'registers': {'optimizer': "
        "['sgd_plugin']}}]\n")]


def test_a_failing_entry_point_is_one_line_naming_its_package(tmp_path):
    plugin = write_plugin(str(tmp_path), "raise RuntimeError('half installed')\n", "sgd = studentlab.priors")
    result = command(script("fit.py"), "--dry-run", path=(ROOT, plugin))
    assert_one_line_error(result, "the entry point sgd = studentlab.priors of the package probvae-student (group "
                          "probvae.components) failed: RuntimeError: half installed; fix or uninstall that package")


# --- through the commands, in fresh processes (slow) --------------------------------------------------------------

@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    path = folder / "student_prior.py"
    path.write_text(STUDENT_T)
    return str(path)


@pytest.fixture(scope="module")
def trained(prior_file, tmp_path_factory):
    """A run of the Student-t prior, imported by fit with --import (the only time it is named)."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "student")
    result = command(*probvae_command("fit", "--import", prior_file, "--prior", "student_t", "--student-t-df", "3",
                                      *TINY, "--run-dir", run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "student")
    result = command(script("export.py"), trained, out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_fit_records_the_imported_module_in_config_json(trained, prior_file):
    with open(os.path.join(trained, "config.json")) as stream:
        config = json.load(stream)
    assert config["model"]["prior"] == "student_t" and config["model"]["student_t_df"] == 3.0
    assert config["components"] == [{"module": "student_prior", "path": prior_file,
                                     "registers": {"prior": ["student_t"]}}]


@pytest.mark.slow
def test_every_reader_imports_the_recorded_module_by_itself(trained, exported, tmp_path):
    evaluate = command(script("evaluate.py"), trained, "--iwae-samples", "2", "--max-examples", "10")
    assert evaluate.returncode == 0, evaluate.stderr
    assert os.path.exists(os.path.join(trained, "eval_test_iwae2_first10.json"))
    out = str(tmp_path / "plots")
    inspect = command(*probvae_command("inspect", trained, "--max-examples", "12", "--grid-size", "3", "--out", out))
    assert inspect.returncode == 0, inspect.stderr
    assert os.path.exists(os.path.join(out, "index.html"))
    assert os.path.exists(os.path.join(exported, "saved_model.pb"))  # export, by the fixture
    compare = command(*probvae_command("compare", trained, trained, "--plot", str(tmp_path / "curves.png")))
    assert compare.returncode == 0, compare.stderr
    assert "| student |" in compare.stdout
    resume = command(script("fit.py"), "--resume", trained)
    assert resume.returncode == 0, resume.stderr
    assert "test ELBO" in resume.stdout


@pytest.mark.slow
def test_init_from_imports_the_module_of_the_run_it_starts_from(trained, tmp_path):
    result = command(script("fit.py"), "--init-from", trained, "--prior", "student_t", "--student-t-df", "3", *TINY,
                     "--run-dir", str(tmp_path / "fine"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run:" in result.stdout and not os.path.exists(tmp_path / "fine")


@pytest.mark.slow
def test_the_export_loads_without_probvae_and_without_the_users_module(exported, tmp_path):
    loader = tmp_path / "load_export.py"
    loader.write_text(LOAD_EXPORT)
    result = subprocess.run([sys.executable, "-I", str(loader), exported], capture_output=True, text=True,
                            timeout=600, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "(3,) True []"


@pytest.mark.slow
def test_a_missing_module_is_one_line_and_nothing_is_written(trained, tmp_path):
    run_dir = str(tmp_path / "moved")
    shutil.copytree(trained, run_dir)
    with open(os.path.join(run_dir, "config.json")) as stream:
        config = json.load(stream)
    config["components"][0]["path"] = str(tmp_path / "gone" / "student_prior.py")
    with open(os.path.join(run_dir, "config.json"), "w") as stream:
        json.dump(config, stream)
    before = listing(str(tmp_path))
    needs = (f"{run_dir}/config.json: this run needs the module student_prior (it registered the prior student_t), "
             f"which cannot be imported here: pass --import with its file (it was {tmp_path}/gone/student_prior.py, "
             "which is not there), or install the package that provides it")
    for args in [(script("evaluate.py"), run_dir), probvae_command("inspect", run_dir),
                 probvae_command("export", run_dir, str(tmp_path / "out")),
                 probvae_command("compare", run_dir, "--plot", str(tmp_path / "c.png")),
                 (script("fit.py"), "--resume", run_dir)]:
        assert_one_line_error(command(*args), needs)
    assert listing(str(tmp_path)) == before


@pytest.mark.slow
def test_a_package_registers_its_prior_through_an_entry_point(tmp_path):
    plugin = write_plugin(str(tmp_path / "site"), STUDENT_T)
    run_dir = str(tmp_path / "run")
    fit = command(script("fit.py"), "--prior", "student_t", *TINY, "--run-dir", run_dir, path=(ROOT, plugin))
    assert fit.returncode == 0, fit.stderr
    with open(os.path.join(run_dir, "config.json")) as stream:
        assert json.load(stream)["components"] == [
            {"module": "studentlab.priors", "package": "probvae-student", "registers": {"prior": ["student_t"]}}]
    evaluate = command(script("evaluate.py"), run_dir, "--iwae-samples", "2", "--max-examples", "10",
                       path=(ROOT, plugin))
    assert evaluate.returncode == 0, evaluate.stderr
    before = listing(run_dir)
    missing = command(*probvae_command("evaluate", run_dir, "--iwae-samples", "2"))  # the package not installed
    assert_one_line_error(missing, "this run needs the module studentlab.priors (it registered the prior student_t)",
                          "pass --import studentlab.priors with its folder on PYTHONPATH, or --import its .py file, "
                          "or install the package probvae-student")
    assert listing(run_dir) == before
