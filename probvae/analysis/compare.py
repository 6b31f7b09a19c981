"""Runs side by side: the settings in which they differ and their held-out numbers.

    probvae compare runs/a runs/b runs/c --csv table.csv --plot curves.png

For each run: every config field whose value differs between the runs (a
field of a component only some runs use is not a difference), the
test ELBO and log p(x) with its estimator and the checkpoint it measured (the
most trusted evaluation of the run's model, i.e. its best epoch's checkpoint,
else its newest, on the whole test split: AIS with the most steps x chains,
else importance sampling with the largest K, else the ELBO
(`probvae.evaluation.estimators`); else the `fit` run's own test numbers;
evaluations of other checkpoints are left out), the epochs trained and the
training time (so far, for a run still training). `Comparison.markdown()` and `.csv()` render the table;
`Comparison.curves()` gives each run's validation ELBO per epoch, and the
importance-weighted bound per epoch of a run trained on it (the figure its
best epoch was chosen by), for `plot_validation_curves` to draw.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from probvae import runs
from probvae.errors import UserError
from probvae.evaluation.estimators import ESTIMATORS, estimator_label
from probvae.evaluation.files import read_evaluations
from probvae.evaluation.result import EvaluationResult

__all__ = ["RunSummary", "Comparison", "model_checkpoint", "summarise_run", "compare_runs"]


class RunSummary(NamedTuple):
    """One run's line of a comparison."""

    run_dir: str
    settings: dict  # "section.field" -> value, every field
    test_elbo: Optional[float]
    log_likelihood: Optional[float]
    log_likelihood_stderr: Optional[float]
    estimator: str  # "K=5000", "AIS T=1000, C=16", or "" without a log p(x)
    source: str  # the file the numbers come from
    epochs: int
    train_seconds: Optional[float]
    train_cpu_seconds: Optional[float]  # None if an epoch has no CPU time (trained by a version before it)
    validation_elbo: List[float]  # per epoch
    checkpoint: str = ""  # the checkpoint the numbers measured, "" if not recorded
    # The validation IWAE bound per epoch and its K, of a run whose every epoch recorded one (trained on it).
    validation_bound: Tuple[float, ...] = ()
    bound_samples: int = 0


def model_checkpoint(run_dir: str) -> Optional[str]:
    """The name of a run's model checkpoint (its best epoch's, else its newest;
    found without TensorFlow), or None if it has none."""
    folder = os.path.join(run_dir, runs.CHECKPOINT_DIR)
    found = runs.best_checkpoint(folder) or next(
        reversed(runs.complete_checkpoints(folder, runs.CHECKPOINT_PREFIX)), None)
    return None if found is None else os.path.basename(found)


def _trust(result: EvaluationResult) -> tuple:
    entry = ESTIMATORS[result.estimator]
    return entry.trust, entry.size(result)


def _readable(values: dict, source: str) -> EvaluationResult:
    """The result in `values`, or a UserError naming `source` if compare cannot read it."""
    result = EvaluationResult.from_dict(values, source)
    if result.estimator not in ESTIMATORS:
        raise UserError(f"{source}: unknown estimator {result.estimator!r}; delete the file or evaluate again")
    try:
        if result.log_likelihood is not None:
            estimator_label(result)
    except (KeyError, TypeError):
        raise UserError(f"{source}: the settings of its {result.estimator} estimator are missing; "
                        "delete the file or evaluate again") from None
    return result


def _best_evaluation(run_dir: str, checkpoint: Optional[str]) -> Optional[EvaluationResult]:
    """The most trusted test-split evaluation of the whole split of `checkpoint`
    (of any checkpoint if None; results that do not say theirs count as it)."""
    results = [_readable(values, os.path.join(run_dir, values["file"]))
               for values in read_evaluations(run_dir, "test")]
    whole = [r for r in results if not r.max_examples and r.log_likelihood is not None
             and (checkpoint is None or r.checkpoint in (None, checkpoint))]
    return max(whole, key=_trust) if whole else None


def _epochs(metrics: dict, path: str) -> tuple:
    """(epochs, validation ELBO per epoch, seconds per epoch, CPU seconds per epoch or None
    for an epoch without them, (validation IWAE bound per epoch, its K) or ((), 0)) of a
    metrics file."""
    epochs = metrics.get("epochs") or []
    try:
        validated = [e["validation"] for e in epochs if "validation" in e]
        validation = [float(v["elbo"]) for v in validated]
        seconds = [float(e.get("seconds", 0.0)) for e in epochs]
        cpu = [float(e["cpu_seconds"]) if "cpu_seconds" in e else None for e in epochs]
        samples = {int(v.get("iwae_samples", 0)) for v in validated}
        bound = ((tuple(float(v["iwae_bound"]) for v in validated), samples.pop())
                 if validated and len(samples) == 1 and 0 not in samples else ((), 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: an epoch without a numeric validation ELBO or time; "
                        "delete the file or train the run again") from None
    return epochs, validation, seconds, cpu, bound


def summarise_run(run_dir: str) -> RunSummary:
    """The `RunSummary` of a run directory (its config, metrics and evaluations)."""
    config = runs.load_config(run_dir)
    metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
    metrics = runs.read_json(metrics_path) if os.path.exists(metrics_path) else {}
    if not isinstance(metrics, dict):
        raise UserError(f"{metrics_path} is not a metrics file (a JSON object); delete it or train the run again")
    epochs, validation, seconds, cpu, (bound, bound_samples) = _epochs(metrics, metrics_path)
    best = _best_evaluation(run_dir, model_checkpoint(run_dir))
    test = metrics.get("test") or {}
    if best is not None:
        numbers, source = best, best.file
    elif isinstance(test, dict) and test:
        numbers, source = _readable(dict(test, estimator="iwae"), metrics_path), runs.METRICS_FILE
    else:
        numbers, source = EvaluationResult(), ""
    return RunSummary(
        run_dir=run_dir, settings=config.flat(), test_elbo=numbers.elbo, log_likelihood=numbers.log_likelihood,
        log_likelihood_stderr=numbers.log_likelihood_stderr,
        estimator=estimator_label(numbers) if numbers.log_likelihood is not None else "", source=source,
        epochs=len(epochs), train_seconds=metrics.get("train_seconds", sum(seconds) if epochs else None),
        train_cpu_seconds=sum(cpu) if epochs and None not in cpu else None,
        validation_elbo=validation, checkpoint=numbers.checkpoint or "", validation_bound=bound,
        bound_samples=bound_samples)


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Comparison(NamedTuple):
    """Runs and the settings in which they differ."""

    summaries: List[RunSummary]
    differing: List[str]  # "section.field" keys whose values differ between the runs

    def rows(self) -> List[List[str]]:
        """The table as strings: a header, then one row per run."""
        header = ["run"] + self.differing + ["test ELBO", "test NLL", "estimator", "checkpoint", "epochs",
                                             "train time (min)", "train CPU (h)"]
        table = [header]
        for s in self.summaries:
            nll = "" if s.log_likelihood is None else f"{-s.log_likelihood:.2f}" + (
                "" if s.log_likelihood_stderr is None else f" ± {s.log_likelihood_stderr:.2f}")
            table.append([os.path.basename(os.path.normpath(s.run_dir))]
                         + [_shown(s.settings.get(key)) for key in self.differing]
                         + ["" if s.test_elbo is None else f"{s.test_elbo:.2f}", nll, s.estimator, s.checkpoint,
                            str(s.epochs),
                            "" if s.train_seconds is None else f"{s.train_seconds / 60:.1f}",
                            "" if s.train_cpu_seconds is None else f"{s.train_cpu_seconds / 3600:.2f}"])
        return table

    def curves(self) -> Tuple[Dict[str, List[float]], Dict[str, Tuple[str, Tuple[float, ...]]]]:
        """({run name: validation ELBO per epoch}, {run name: (label, validation
        IWAE bound per epoch)} for the runs trained on the bound)."""
        names = [os.path.basename(os.path.normpath(s.run_dir)) for s in self.summaries]
        elbo = {name: s.validation_elbo for name, s in zip(names, self.summaries)}
        bounds = {name: (f"{name}, IWAE bound (K={s.bound_samples})", s.validation_bound)
                  for name, s in zip(names, self.summaries) if s.validation_bound}
        return elbo, bounds

    def markdown(self) -> str:
        table = self.rows()
        lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        return "\n".join(lines)

    def csv(self) -> str:
        stream = io.StringIO()
        csv.writer(stream, lineterminator="\n").writerows(self.rows())
        return stream.getvalue()


def compare_runs(run_dirs: Sequence[str]) -> Comparison:
    """A `Comparison` of the runs in `run_dirs` (each checked to hold a run)."""
    if not run_dirs:
        raise UserError("give one or more run directories to compare")
    summaries = [summarise_run(run_dir) for run_dir in run_dirs]
    keys = sorted(set().union(*(s.settings for s in summaries)))
    # A field some runs do not have (None: another component's) differs only where two runs set it differently.
    differing = [key for key in keys if key != "data.data_dir"
                 and len({repr(s.settings.get(key)) for s in summaries if s.settings.get(key) is not None}) > 1]
    return Comparison(summaries, differing)
