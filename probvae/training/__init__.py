"""Training: the step, the loop, checkpoints, schedules, precision and
tf.distribute.

- `step`: `make_train_step`, a compiled step with its on-device metrics and
  non-finite checks, and `StepLoop`, which runs several per compiled call;
- `loop`: `Trainer` (epochs, checkpoint cadence, resume, interrupts) and `fit`;
- `callbacks`: progress, summaries, best epoch, early stopping, a step size
  that follows the validation ELBO;
- `checkpoints`: the run state on disk and the stop signals;
- `schedules`: optimizer, step-size schedule and KL weight;
- `precision`: XLA and mixed precision;
- `distribute`: strategies, clusters and workers.
"""

from probvae.training.loop import Trainer, fit, seed_process
from probvae.training.step import NonFiniteFaults, StepLoop, StepTotals, make_train_step

__all__ = ["NonFiniteFaults", "StepLoop", "StepTotals", "Trainer", "fit", "make_train_step", "seed_process"]
