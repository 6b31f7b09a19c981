"""Training: the step, the loop, checkpoints, schedules, precision and
tf.distribute.

- `step`: `make_train_step`, a compiled step with its non-finite checks and
  gradient clipping, and `StepLoop`, which runs several per compiled call;
- `records`: what the step records on the device (`StepTotals`,
  `NonFiniteFaults`, `GradientNorms`);
- `preflight`: `prepare_run`, the checks before a run writes anything (flags,
  data, memory, the run it resumes or starts from);
- `trainer`: `Trainer` (model, optimizer, checkpoint cadence, resume, interrupts);
- `epoch`: an epoch's training steps (`run_steps`) and its end (validation,
  decisions, checkpoint, summaries, metrics);
- `history`: `RunHistory`, what the checkpoints carry besides tensors;
- `loop`: `fit` and its final test evaluation;
- `callbacks`: progress, summaries, and the decisions after an epoch (best
  epoch, early stopping, a step size that follows the validation ELBO, KL warm-up);
- `checkpoints`: the run state on disk and the stop signals;
- `schedules`: optimizer, step-size schedule and KL weight;
- `precision`: XLA and mixed precision;
- `distribute`: strategies, clusters and workers.
"""

from probvae.training.history import RunHistory
from probvae.training.loop import Trainer, fit, seed_process
from probvae.training.preflight import prepare_run
from probvae.training.records import GradientNorms, NonFiniteFaults, StepTotals
from probvae.training.step import StepLoop, make_train_step

__all__ = ["GradientNorms", "NonFiniteFaults", "StepLoop", "StepTotals", "RunHistory", "Trainer", "fit",
           "make_train_step", "prepare_run", "seed_process"]
