"""Four short fixed-seed runs of scripts/fit.py whose numbers must not move.

Each run trains on the built-in `shapes` data with --deterministic, so on a
CPU it repeats bit for bit; the four run one after another in one process
(fit.py's command line through `run_command`, as the script does). Its per-epoch train
ELBO and loss, validation ELBO, test ELBO, importance-weighted
log-likelihood and per-dimension KL, and the weights of its last and best
checkpoints (as a multiset of per-variable shape, sum of |w| and sum of w^2,
which does not depend on variable names), together with the checkpoint's
variable names (so runs written earlier still resume and load), are compared
with tests/reference_runs.json.

Why the numbers depend on the CPU, and what is compared. oneDNN (the
convolutions, and the sgemm behind TensorFlow's matrix products on x86-64)
and the XLA CPU compiler (the MLP runs' training step) choose their kernels by
the host's instruction set, so the same run rounds differently on another
CPU. Measured on an AMD EPYC (AVX-512 with bf16, no AMX) by capping the
instruction set of each library (ONEDNN_MAX_CPU_ISA = SSE41, AVX2,
AVX512_CORE or none; DNNL_MAX_CPU_ISA is the same switch; XLA_FLAGS
--xla_cpu_max_isa = SSE4_2, AVX2 or none), the largest relative difference
between any two of these settings was:

    run                       training   held-out   KL per dim   weights (of total)
    conv-batch-norm           7.2e-07    1.7e-03    1.3e-02      1.1e-05
    mixture-free-bits-warmup  7.1e-07    1.1e-06    1.9e-05      2.5e-09
    mlp-standard-full         2.0e-08    9.8e-09    4.2e-07      2.5e-10
    vamp-diag                 2.1e-07    2.0e-07    1.2e-06      1.2e-09

The convolution run's held-out numbers and some of its weights move most:
its convolutions' biases sit before batch normalisation, so their true
gradient is zero and Adam turns the round-off in it into full-size steps
(their sums move by up to 160% between kernels); in training mode batch
normalisation cancels them, but the held-out numbers use the moving mean,
which after a dozen steps is still mostly its initial zero, so they pass
straight through. Per weight they are meaningless to compare; as a share of
the model's total weight (sum |w|, sum w^2) they stay small, which is how the
weights are compared. With TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's Eigen
convolutions, another algorithm) the conv run's training curves move by 5e-5.

An Intel Xeon with AVX-512 and AMX gave the conv run's validation
ELBO -547.51 / -539.52 against -547.41 / -539.80 recorded here (2e-4, 5e-4),
inside this spread.

So the harness pins the kernels (ENVIRONMENT below: one thread, oneDNN on,
oneDNN and XLA capped at AVX2), so that CPUs with AVX2 or more run the same
kernels (here every cap at or above AVX2 repeats the runs bit for bit;
other CPU models are not checked), and compares each group of
numbers at a tolerance (TOLERANCE, TOLERANCE_OF) of at least ten times the
largest difference measured between unpinned kernels, so the test still
passes where a CPU's cache sizes or a newer instruction set change a kernel
the cap does not reach. Two threads instead of one
move the conv run's training curves by 5.5e-5 (oneDNN splits a convolution's
sums by thread), so every run has one thread whatever the cores.

The training curves, compared at 1e-5 in every run, catch a one-line change
to the objective or to the data order (measured against the same kernels):

    change                                     training curves   held-out numbers
    KL weighted 0.99 in VAE.training_loss      1.2e-4 (conv) to  2.4e-4 to 1.6e-3 (MLP runs;
                                               1.7e-3            conv 6.5e-4, inside its round-off)
    permutation seed + 1 in ArrayBatches.order 2.3e-3 (conv) to  2.4e-3 to 0.29
                                               0.27

Run it under other caps to emulate another CPU (a cap set by the caller wins):

    ONEDNN_MAX_CPU_ISA=SSE41 XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 \\
        python -m pytest -n 0 tests/test_reference_runs.py

The references were recorded with the pinned kernels (the commit and reason
are in that file; the earlier records' commits under "earlier"). To record
them again (only in a commit that says why the numbers changed):

    python tests/test_reference_runs.py --record --why "..."

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

from conftest import fit_one_after_another

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
# What is compared, in groups, and to what relative tolerance: 1 or 2 times a
# power of ten, at least ten times the largest difference measured between
# kernels (see the module docstring); the training curves carry the
# tightest check in every run, and the convolution run's held-out numbers and
# weights, which round-off moves most, the loosest.
GROUPS = {
    "training": ("train_elbo", "train_loss"),
    "held_out": ("validation_elbo", "test_elbo", "test_log_likelihood"),
    "kl_per_dimension": ("test_kl_per_dimension",),
}
TOLERANCE = {"training": 1e-5, "held_out": 2e-5, "kl_per_dimension": 2e-4, "weights": 1e-7}
TOLERANCE_OF = {"conv-batch-norm": {"held_out": 2e-2, "kl_per_dimension": 2e-1, "weights": 2e-4}}

# The kernels a run uses, pinned so that CPUs with AVX2 or more run the same code:
# one thread (op determinism fixes the order of operations, but oneDNN
# convolutions split work by the number of threads), oneDNN on (the commands'
# default) and capped at AVX2, the floor of the CPUs this suite supports, and
# the XLA CPU compiler (the MLP runs' training step) capped at AVX2 as well.
# Uncapped, oneDNN and XLA dispatch on the host's instruction set (AVX-512,
# AMX), and the convolution run's held-out numbers move by 1e-3. A cap set in
# the calling environment wins, so another CPU can be emulated:
#     ONEDNN_MAX_CPU_ISA=SSE41 XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 pytest tests/test_reference_runs.py
# TF_ENABLE_ONEDNN_OPTS is pinned to 1: with 0 the conv run takes TensorFlow's
# Eigen convolutions, another algorithm, and its training curves move by 5e-5.
ISA = "AVX2"
ENVIRONMENT = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
               "TF_ENABLE_ONEDNN_OPTS": "1"}


def environment(base=None):
    """The subprocesses' environment: `base` (os.environ) with ENVIRONMENT and the ISA caps."""
    base = dict(os.environ if base is None else base)
    pinned = {**base, **ENVIRONMENT}
    if not (base.get("ONEDNN_MAX_CPU_ISA") or base.get("DNNL_MAX_CPU_ISA")):
        pinned["ONEDNN_MAX_CPU_ISA"] = ISA
    if "xla_cpu_max_isa" not in base.get("XLA_FLAGS", ""):
        pinned["XLA_FLAGS"] = f"{base.get('XLA_FLAGS', '')} --xla_cpu_max_isa={ISA}".strip()
    return pinned


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
    """Run every reference run, one after another in one process with the pinned kernels (they are tiny)."""
    fit_one_after_another({name: [*_COMMON, *RUNS[name], "--run-dir", os.path.join(root, name)] for name in RUNS},
                          env=environment())
    return {name: summarize(os.path.join(root, name)) for name in RUNS}


@pytest.fixture(scope="module")
def reference_results(tmp_path_factory):
    return run_all(str(tmp_path_factory.mktemp("reference-runs")))


def _close(actual, expected, rtol, what):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=0, err_msg=what)


def _weights_close(actual, expected, rtol, what):
    """Checksum rows [variables, (sum |w|, sum w^2)] equal to `rtol` of the
    checkpoint's total (each column's sum over the variables)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    worst = np.max(np.abs(actual - expected) / expected.sum(axis=0))
    assert worst <= rtol, f"{what}: a variable's checksum moved by {worst:.2e} of the model's total (limit {rtol:g})"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_reference_run_gives_its_recorded_numbers(reference_results, name):
    with open(REFERENCES) as stream:
        expected = json.load(stream)["runs"][name]
    actual, tolerance = reference_results[name], {**TOLERANCE, **TOLERANCE_OF.get(name, {})}
    for group, keys in GROUPS.items():
        for key in keys:
            _close(actual[key], expected[key], tolerance[group], f"{name}: {key}")
    assert actual["best_checkpoint"] == expected["best_checkpoint"]
    for which in ("latest", "best"):
        assert actual[which]["variables"] == expected[which]["variables"], f"{name}: {which} checkpoint keys"
        shapes = [row[0] for row in actual[which]["checksums"]]
        assert shapes == [row[0] for row in expected[which]["checksums"]]
        _weights_close([row[1:] for row in actual[which]["checksums"]],
                       [row[1:] for row in expected[which]["checksums"]], tolerance["weights"],
                       f"{name}: {which} weights")


def _record(names=(), why=None):
    """Record every run afresh, or replace only `names`, with the reason `why`
    (a full record keeps the earlier record's commit and replacements under
    "earlier")."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") \
            or "xla_cpu_max_isa" in os.environ.get("XLA_FLAGS", ""):
        sys.exit("record with the pinned kernels: unset ONEDNN_MAX_CPU_ISA, DNNL_MAX_CPU_ISA and XLA_FLAGS' cap")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as root:
        results = run_all(root)
    with open(REFERENCES) as stream:
        document = json.load(stream)
    if names:
        for name in names:
            document["runs"][name] = results[name]
            document.setdefault("rerecorded", {})[name] = {"commit": commit, "why": why}
    else:
        earlier = {key: document[key] for key in ("commit", "rerecorded") if key in document}
        document = {
            "commit": commit,
            "why": why,
            "earlier": [{**earlier, "replaced_because": why}, *document.get("earlier", [])],
            "command": "python tests/test_reference_runs.py --record --why REASON",
            "environment": {key: value for key, value in environment({}).items()},
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
    if arguments[:1] != ["--record"] or not why or not set(names) <= set(RUNS):
        sys.exit("usage: python tests/test_reference_runs.py --record [NAME ...] --why REASON; "
                 f"names: {', '.join(RUNS)}")
    _record(names, why)
