"""Runs side by side: the settings in which they differ and their held-out numbers.

    probvae compare runs/a runs/b runs/c --csv table.csv --plot curves.png

For each run: every config field whose value differs between the runs (a
field of a component only some runs use is not a difference), the
test ELBO and log p(x) with its estimator (the best evaluation written into
the run: the most importance samples on the whole test split, or AIS with the
most steps, else the `fit` run's own test numbers), the epochs trained and the
training time (so far, for a run still training). `Comparison.markdown()` and `.csv()` render the table;
`plot_validation_curves` draws each run's validation ELBO per epoch.
"""

from __future__ import annotations

import csv
import io
import os
from typing import List, NamedTuple, Optional, Sequence

from probvae import runs
from probvae.errors import UserError

__all__ = ["RunSummary", "Comparison", "summarise_run", "compare_runs"]


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
    validation_elbo: List[float]  # per epoch


def _best_evaluation(run_dir: str) -> Optional[dict]:
    """The most trustworthy test-split evaluation of the whole split: AIS with
    the most steps x chains, else importance sampling with the largest K."""
    whole = [r for r in runs.read_evaluations(run_dir, "test") if not r.get("max_examples")
             and "log_likelihood" in r]

    def rank(result):
        if result.get("estimator") == "ais":
            return (1, result["ais"]["num_steps"] * result["ais"]["num_chains"])
        return (0, result.get("iwae_samples", 0))

    return max(whole, key=rank) if whole else None


def summarise_run(run_dir: str) -> RunSummary:
    """The `RunSummary` of a run directory (its config, metrics and evaluations)."""
    config = runs.load_config(run_dir)
    metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
    metrics = runs.read_json(metrics_path) if os.path.exists(metrics_path) else {}
    epochs = metrics.get("epochs", [])
    best = _best_evaluation(run_dir)
    test = metrics.get("test") or {}
    if best is not None:
        numbers, source = best, best["file"]
    elif test:
        numbers, source = dict(test, estimator="iwae"), runs.METRICS_FILE
    else:
        numbers, source = {}, ""
    return RunSummary(
        run_dir=run_dir, settings=config.flat(), test_elbo=numbers.get("elbo"),
        log_likelihood=numbers.get("log_likelihood"), log_likelihood_stderr=numbers.get("log_likelihood_stderr"),
        estimator=runs.estimator_label(numbers) if "log_likelihood" in numbers else "", source=source,
        epochs=len(epochs),
        train_seconds=metrics.get("train_seconds", sum(e.get("seconds", 0.0) for e in epochs) if epochs else None),
        validation_elbo=[e["validation"]["elbo"] for e in epochs if "validation" in e])


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
        header = ["run"] + self.differing + ["test ELBO", "test NLL", "estimator", "epochs", "train time (min)"]
        table = [header]
        for s in self.summaries:
            nll = "" if s.log_likelihood is None else f"{-s.log_likelihood:.2f} ± {s.log_likelihood_stderr:.2f}"
            table.append([os.path.basename(os.path.normpath(s.run_dir))]
                         + [_shown(s.settings.get(key)) for key in self.differing]
                         + ["" if s.test_elbo is None else f"{s.test_elbo:.2f}", nll, s.estimator, str(s.epochs),
                            "" if s.train_seconds is None else f"{s.train_seconds / 60:.1f}"])
        return table

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
