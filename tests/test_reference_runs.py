"""Four short fixed-seed runs of scripts/fit.py whose numbers must not move.

Each run trains on the built-in `shapes` data in its own process with
--deterministic, so on a CPU it repeats bit for bit. Its per-epoch train and
validation ELBO, test ELBO and importance-weighted log-likelihood, and the
weights of its last and best checkpoints (as a multiset of per-variable
shape, sum of |w| and sum of w^2, which does not depend on variable names),
together with the checkpoint's variable names (so runs written earlier still
resume and load), are compared with tests/reference_runs.json.

The references were recorded from the code before the package was laid out
by pipeline stage (the commit named in that file, with this harness). To
record them again (only in a commit that says why the numbers changed):

    python tests/test_reference_runs.py --record

A change that moves some runs' rounding replaces those entries only and says
so under "rerecorded" in the file (commit and reason), so the others keep
pinning the original code:

    python tests/test_reference_runs.py --record vamp-diag --why "..."
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "scripts", "fit.py")
REFERENCES = os.path.join(ROOT, "tests", "reference_runs.json")

_COMMON = ["--dataset", "shapes", "--deterministic", "--checkpoint-every", "0"]
# What the defaults were when the references were recorded (presets keep theirs).
_RECORDED_DEFAULTS = ["--lr-schedule", "cosine", "--kl-warmup-epochs", "0"]
RUNS = {
    "mlp-standard-full": [*_RECORDED_DEFAULTS,
        "--arch", "mlp", "--latent-dim", "2", "--posterior", "full", "--prior", "standard_normal",
        "--epochs", "2", "--max-train-examples", "120", "--batch-size", "20", "--seed", "1",
        "--test-iwae-samples", "7",
    ],
    "conv-batch-norm": [
        "--preset", "mnist-conv-2d", "--dataset", "shapes", "--epochs", "2", "--max-train-examples", "90",
        "--batch-size", "15", "--seed", "2", "--test-iwae-samples", "5",
    ],
    "vamp-diag": [*_RECORDED_DEFAULTS,
        "--arch", "mlp", "--latent-dim", "3", "--posterior", "diag", "--prior", "vamp", "--prior-components", "4",
        "--epochs", "2", "--max-train-examples", "100", "--batch-size", "25", "--seed", "3",
        "--test-iwae-samples", "6",
    ],
    "mixture-free-bits-warmup": [
        "--lr-schedule", "cosine", "--posterior", "full",
        "--arch", "mlp", "--latent-dim", "3", "--prior", "mixture", "--prior-components", "3",
        "--free-bits", "0.5", "--kl-warmup-epochs", "2", "--epochs", "3", "--max-train-examples", "80",
        "--batch-size", "16", "--seed", "4", "--test-iwae-samples", "9",
    ],
}
# Float32 round-off, accumulated over a few dozen training steps.
RTOL = 1e-5
# One thread per run: op determinism fixes the order of operations, but some
# kernels (oneDNN convolutions among them) split work by the number of threads,
# so the numbers depend on the cores a process gets unless it is fixed.
ENVIRONMENT = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _command(name, run_dir):
    return [sys.executable, FIT, *_COMMON, *RUNS[name], "--run-dir", run_dir]


def _checkpoint_summary(prefix):
    """Model variables of a checkpoint: sorted names and a name-free multiset of
    (shape, sum |w|, sum w^2) in float64."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    names = sorted(key for key in reader.get_variable_to_shape_map()
                   if key.startswith("model/") and key.endswith("VARIABLE_VALUE"))
    sums = []
    for key in names:
        value = np.asarray(reader.get_tensor(key), np.float64)
        sums.append([list(value.shape), float(np.abs(value).sum()), float(np.square(value).sum())])
    return {"variables": names, "checksums": sorted(sums)}


def summarize(run_dir):
    """The numbers of a finished run that the references pin down."""
    with open(os.path.join(run_dir, "metrics.json")) as stream:
        metrics = json.load(stream)
    folder = os.path.join(run_dir, "checkpoints")
    with open(os.path.join(folder, "checkpoint")) as stream:
        latest = stream.readline().split('"')[1]
    best = metrics["best"]["checkpoint"]
    return {
        "train_elbo": [epoch["train"]["elbo"] for epoch in metrics["epochs"]],
        "train_loss": [epoch["train"]["loss"] for epoch in metrics["epochs"]],
        "validation_elbo": [epoch["validation"]["elbo"] for epoch in metrics["epochs"]],
        "test_elbo": metrics["test"]["elbo"],
        "test_log_likelihood": metrics["test"]["log_likelihood"],
        "test_kl_per_dimension": metrics["test"]["kl_per_dimension"],
        "best_checkpoint": best,
        "latest": _checkpoint_summary(os.path.join(folder, latest)),
        "best": _checkpoint_summary(os.path.join(folder, best)),
    }


def run_all(root):
    """Run every reference run at once, one thread each (they are tiny)."""
    processes = {}
    for name in RUNS:
        run_dir = os.path.join(root, name)
        processes[name] = (run_dir, subprocess.Popen(_command(name, run_dir), stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True,
                                                     env={**os.environ, **ENVIRONMENT}))
    results = {}
    for name, (run_dir, process) in processes.items():
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, f"{name} failed:\n{out}\n{err}"
        results[name] = summarize(run_dir)
    return results


@pytest.fixture(scope="module")
def reference_results(tmp_path_factory):
    return run_all(str(tmp_path_factory.mktemp("reference-runs")))


def _close(actual, expected, what):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=RTOL, atol=0, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_reference_run_gives_its_recorded_numbers(reference_results, name):
    with open(REFERENCES) as stream:
        expected = json.load(stream)["runs"][name]
    actual = reference_results[name]
    for key in ("train_elbo", "train_loss", "validation_elbo", "test_elbo", "test_log_likelihood",
                "test_kl_per_dimension"):
        _close(actual[key], expected[key], f"{name}: {key}")
    assert actual["best_checkpoint"] == expected["best_checkpoint"]
    for which in ("latest", "best"):
        assert actual[which]["variables"] == expected[which]["variables"], f"{name}: {which} checkpoint keys"
        shapes = [row[0] for row in actual[which]["checksums"]]
        assert shapes == [row[0] for row in expected[which]["checksums"]]
        _close([row[1:] for row in actual[which]["checksums"]],
               [row[1:] for row in expected[which]["checksums"]], f"{name}: {which} weights")


def _record(names=(), why=None):
    """Record every run afresh, or replace only `names` (with the reason `why`)."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as root:
        results = run_all(root)
    if names:
        with open(REFERENCES) as stream:
            document = json.load(stream)
        for name in names:
            document["runs"][name] = results[name]
            document.setdefault("rerecorded", {})[name] = {"commit": commit, "why": why}
    else:
        document = {
            "commit": commit,
            "command": "python tests/test_reference_runs.py --record",
            "runs": {name: results[name] for name in sorted(results)},
            "arguments": {name: [*_COMMON, *RUNS[name]] for name in sorted(RUNS)},
        }
    with open(REFERENCES, "w") as stream:
        json.dump(document, stream, indent=1, sort_keys=True)
        stream.write("\n")
    print(f"references {', '.join(names) or 'all'} written to {REFERENCES} from commit {commit}")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    names, why = arguments[1:], None
    if "--why" in names:
        at = names.index("--why")
        names, why = names[:at], " ".join(names[at + 1:])
    if arguments[:1] != ["--record"] or (names and not why) or not set(names) <= set(RUNS):
        sys.exit(f"usage: python tests/test_reference_runs.py --record [NAME ... --why REASON]; names: {', '.join(RUNS)}")
    _record(names, why)
