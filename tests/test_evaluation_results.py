"""The evaluation's registry, results and files: names defined once, costs,
the JSON of a result (old files read back, strict JSON), file names that
tell evaluations apart, seeds as ints or pairs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from probvae import data, evaluation
from probvae.errors import UserError
from probvae.evaluation import estimators, files, names
from probvae.evaluation.result import EvaluationResult
from probvae.model import VAE

from conftest import tiny_model_config

# What `evaluate_run` wrote before EvaluationResult existed (eval_test_iwae20.json of a 2-latent run).
TODAYS_FILE = {
    "active_unit_threshold": 0.01, "active_units": 1, "batch_size": 150, "binarization": "fixed, seed 0",
    "binarization_seed": 0, "bits_per_dim": 0.4, "bits_per_dim_stderr": 0.01, "checkpoint": "best-4",
    "dataset": "shapes", "effective_sample_size": 3.5, "elbo": -30.0, "elbo_bits_per_dim": 0.45,
    "elbo_bits_per_dim_stderr": 0.01, "elbo_stderr": 0.5, "estimator": "iwae", "image_shape": [8, 8, 1],
    "iwae_samples": 20, "kl": 2.0, "kl_per_dimension": [1.5, 0.3], "kl_stderr": 0.1, "kl_total_correlation": 0.2,
    "latent_dim": 2, "likelihood": "bernoulli", "log_likelihood": -28.0, "log_likelihood_mc_stderr": 0.02,
    "log_likelihood_stderr": 0.5, "max_examples": None, "n_examples": 500, "posterior_mean_variance": [0.5, 0.001],
    "reconstruction": -28.0, "reconstruction_stderr": 0.4, "run_dir": "/runs/shapes", "seconds": 3.0, "seed": 7,
    "split": "test", "units": "nats per example",
}


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_names_are_defined_once_and_read_without_tensorflow():
    code = ("import sys; import probvae.evaluation as e; from probvae.cli import evaluate, compare; "
            "import probvae.analysis.compare; e.SPLITS; e.ESTIMATORS; e.EvaluationResult; e.read_evaluations; "
            "print('tensorflow' in sys.modules, list(e.ESTIMATORS), e.SPLITS)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "['elbo',", "'iwae',", "'ais']", "('test',", "'validation',", "'train')"]
    from probvae.cli import evaluate as command

    args = command.parse_args(["run", "--estimator", "elbo", "--split", "validation"])
    assert args.estimator == "elbo" and args.split == "validation"
    assert command.SPLITS is names.SPLITS and command.ESTIMATORS is estimators.ESTIMATORS


def test_the_registry_states_cost_tag_and_label_of_each_estimator():
    ais = estimators.AISSettings(num_steps=7, num_chains=3, num_leapfrog_steps=2)
    assert evaluation.decoder_passes(11, "elbo") == 11
    assert evaluation.decoder_passes(11, "iwae", iwae_samples=5) == 55
    assert evaluation.decoder_passes(11, "ais", ais=ais) == 11 * 3 * 7 * 2 * 3
    assert evaluation.decoder_passes(11, "iwae", iwae_samples=5, ais=ais, bdmc_examples=4) == 55 + 2 * 4 * 126
    results = {"elbo": {"estimator": "elbo"}, "iwae": {"estimator": "iwae", "iwae_samples": 5},
               "ais": {"estimator": "ais", "ais": {"num_steps": 7, "num_chains": 3}}}
    assert [evaluation.estimator_label(r) for r in results.values()] == ["ELBO", "K=5", "AIS T=7, C=3"]
    assert [evaluation.evaluation_name(r) for r in results.values()] == [
        "eval_test_elbo.json", "eval_test_iwae5.json", "eval_test_ais7x3.json"]
    assert [estimators.ESTIMATORS[name].trust for name in results] == [0, 1, 2]
    with pytest.raises(UserError, match="unknown estimator 'nuts'; choose one of: elbo, iwae, ais"):
        evaluation.EvaluationSettings(estimator="nuts").checked()


def test_a_result_reads_and_writes_the_json_of_earlier_versions():
    result = EvaluationResult.from_dict(TODAYS_FILE)
    assert result.as_dict() == TODAYS_FILE
    assert result["log_likelihood"] == -28.0 and "bdmc" not in result and result.seed == 7
    assert EvaluationResult.from_dict(dict(TODAYS_FILE, new_key=1)).as_dict()["new_key"] == 1
    # A result of `evaluate` alone (no run) has no run fields; the file name is never in the JSON.
    alone = {k: v for k, v in TODAYS_FILE.items() if k not in ("split", "dataset", "run_dir", "max_examples")}
    assert EvaluationResult.from_dict(alone).replace(file="x.json").as_dict(with_file=False) == alone
    with pytest.raises(UserError, match="eval_x.json: elbo is 'high', not a number"):
        EvaluationResult.from_dict(dict(TODAYS_FILE, elbo="high"), "eval_x.json")


def test_file_names_tell_checkpoint_seed_binarization_and_subset_apart():
    base = dict(TODAYS_FILE, seed=0)
    assert files.evaluation_name(base, True, 0) == "eval_test_iwae20.json"  # the default keeps today's name
    assert files.evaluation_name(base, False, 0) == "eval_test_iwae20_best-4.json"
    assert files.evaluation_name(dict(base, seed=7), True, 0) == "eval_test_iwae20_seed7.json"
    assert files.evaluation_name(dict(base, seed=[3, 4]), True, 0) == "eval_test_iwae20_seed3-4.json"
    assert files.evaluation_name(dict(base, binarization_seed=5), True, 0) == "eval_test_iwae20_binarization5.json"
    assert files.evaluation_name(dict(base, binarization_seed=5), True, 5) == "eval_test_iwae20.json"
    assert files.evaluation_name(dict(base, checkpoint="ckpt-15", seed=7, max_examples=100, n_examples=100),
                                 False, 0) == "eval_test_iwae20_ckpt-15_seed7_first100.json"


def test_the_output_is_checked_before_anything_is_computed(tmp_path):
    files.check_writable(str(tmp_path / "eval_test_iwae5.json"))
    (tmp_path / "eval_test_iwae5.json").mkdir()
    with pytest.raises(UserError, match="a folder of that name is in the way"):
        files.check_writable(str(tmp_path / "eval_test_iwae5.json"))
    with pytest.raises(UserError, match="cannot write .*: No such file or directory"):
        files.check_writable(str(tmp_path / "missing" / "eval.json"))


@pytest.fixture(scope="module")
def model_and_images():
    return VAE(tiny_model_config(arch="mlp", hidden_units=(6,))), data.make_shapes(13, seed=4, size=8)[0]


def test_one_image_gives_strict_json_with_null_standard_errors(model_and_images):
    model, images = model_and_images
    result = evaluation.evaluate(model, images[:1], iwae_samples=3, batch_size=1)
    text = json.dumps(result.as_dict(), allow_nan=True)
    written = strict_json(text)
    assert written["elbo_stderr"] is None and written["log_likelihood_stderr"] is None
    assert written["bits_per_dim_stderr"] is None and np.isfinite(written["elbo"]) and written["n_examples"] == 1
    assert np.isnan(evaluation.mean_and_stderr([1.0])[1])


def test_seeds_are_ints_or_pairs(model_and_images):
    model, images = model_and_images
    by_int = evaluation.evaluate(model, images, iwae_samples=2, batch_size=5, seed=3)
    again = evaluation.evaluate(model, images, iwae_samples=2, batch_size=5, seed=3)
    assert by_int.elbo == again.elbo and by_int.seed == 3
    by_pair = evaluation.evaluate(model, images, iwae_samples=2, batch_size=5, seed=(3, 1))
    assert by_pair.seed == [3, 1] and by_pair.elbo != by_int.elbo  # batch b draws from fold_in((3, 1), b)
    # An int s draws batch b from (s, b): per_example on the first batch alone with the pair (3, 0).
    x = data.binarize_fixed(images[:5], seed=0)
    first = evaluation.per_example(model, [x], seed=3)["elbo"]
    expected = model.elbo(x, seed=evaluation.statistics.seeds.sample_seed([3, 0], 0)).elbo.numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-6)  # compiled against eager: round-off only
    for bad in (1.5, "7", None, True):
        with pytest.raises(UserError, match="a seed is an integer or a pair"):
            evaluation.evaluate(model, images, iwae_samples=2, seed=bad)


def test_the_elbo_estimator_reports_the_elbo_as_its_bound(model_and_images):
    model, images = model_and_images
    result = evaluation.evaluate(model, images, estimator="elbo", batch_size=6, seed=2)
    assert result.log_likelihood == result.elbo and result.log_likelihood_stderr == result.elbo_stderr
    assert result.log_likelihood_mc_stderr is None and result.iwae_samples is None
    assert evaluation.evaluation_name(result) == "eval_test_elbo_seed2.json"


def test_an_image_stream_reports_its_skipped_images(tmp_path, model_and_images):
    from test_image_streams import truncated_jpeg, write_png

    from probvae.data.folders import ImageFiles

    model, _ = model_and_images
    paths = []
    for index in range(4):
        paths.append(str(tmp_path / f"{index}.png"))
        write_png(paths[-1], np.full((8, 8, 1), 40 * index, np.uint8))
    truncated_jpeg(str(tmp_path / "cut.jpg"))
    stream = ImageFiles(paths + [str(tmp_path / "cut.jpg")], (8, 8, 1))
    result = evaluation.evaluate(model, stream, iwae_samples=2, batch_size=2)
    assert result.skipped_images == 1 and result["skipped_images"] == 1
    assert evaluation.evaluate_elbo(model, stream, batch_size=3)["skipped_images"] == 1
