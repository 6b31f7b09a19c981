"""The evaluation files of a run directory: their names, and reading them back.

    RUN_DIR/eval_<split>_<tag>[_<checkpoint>][_seed<S>][_binarization<B>][_first<N>].json

<tag> is the estimator's (`estimators.ESTIMATORS`: iwae5000, ais1000x16,
elbo). The other parts appear only when they differ from the run's default,
so that no evaluation replaces another and the default keeps the name it
always had: `_<checkpoint>` when the weights are not the run's model (its
best epoch's, or latest, checkpoint), `_seed<S>` for a posterior seed other
than 0 (`_seed<a>-<b>` for a pair), `_binarization<B>` for a held-out
binarization seed other than the run's split seed, `_first<N>` for the first
N images only. Runs evaluated by earlier versions also have eval_<split>.json.
No TensorFlow here.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from probvae import runs
from probvae.evaluation.estimators import estimator
from probvae.run_dir import check_writable  # the output check every command makes before its work

__all__ = ["evaluation_name", "evaluation_path", "read_evaluations", "check_writable"]


def _seed_text(seed) -> str:
    return "-".join(str(int(part)) for part in seed) if isinstance(seed, (list, tuple)) else str(int(seed))


def evaluation_name(result: Mapping, model_checkpoint: bool = True, split_seed: Optional[int] = None) -> str:
    """The file name of an evaluation result (see the module docstring), e.g.
    eval_test_iwae5000.json, eval_test_ais1000x16.json,
    eval_test_iwae100_ckpt-15_seed7_first1000.json.

    Args:
      result: an `EvaluationResult` (or its dict): split, estimator and its
        settings, n_examples, max_examples, checkpoint, seed, binarization_seed.
      model_checkpoint: whether its weights are the run's model (then the
        checkpoint is left out of the name).
      split_seed: the run's split seed: a `binarization_seed` other than it is
        named (None: never named).
    """
    name = f"eval_{result.get('split') or 'test'}_{estimator(result.get('estimator', 'iwae')).tag(result)}"
    if not model_checkpoint and result.get("checkpoint"):
        name += f"_{result['checkpoint']}"
    seed = result.get("seed")
    if seed is not None and (isinstance(seed, (list, tuple)) or int(seed) != 0):
        name += f"_seed{_seed_text(seed)}"
    binarization_seed = result.get("binarization_seed")
    if split_seed is not None and binarization_seed is not None and binarization_seed != split_seed:
        name += f"_binarization{binarization_seed}"
    if result.get("max_examples"):
        name += f"_first{result['n_examples']}"
    return name + ".json"


def evaluation_path(run_dir: str, result: Mapping, model_checkpoint: bool = True,
                    split_seed: Optional[int] = None) -> str:
    """RUN_DIR/`evaluation_name(result, model_checkpoint, split_seed)`."""
    return os.path.join(run_dir, evaluation_name(result, model_checkpoint, split_seed))


def read_evaluations(run_dir: str, split: Optional[str] = None) -> list:
    """The evaluation results written into RUN_DIR (every eval_*.json, also
    the eval_<split>.json of earlier versions) as dicts, of one split if given,
    each with its file name under "file"; sorted by file name. Files that are
    not JSON objects are left out."""
    results = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("eval_") and name.endswith(".json"):
            try:
                result = runs.read_json(os.path.join(run_dir, name))
            except (OSError, ValueError):
                continue
            if isinstance(result, dict) and (split is None or result.get("split") == split):
                results.append(dict(result, file=name))
    return results
