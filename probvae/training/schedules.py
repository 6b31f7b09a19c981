"""The optimizer and the KL-weight schedule of a training run.

KL warm-up (Bowman et al., 2016; Sønderby et al., 2016) starts training as
an autoencoder and lets the KL term in linearly. With beta the final weight
and N = `kl_warmup_epochs`, epoch e (1, 2, ...) trains with

    kl_weight(e) = beta * min(1, (e - 1) / N)       (N = 0: beta throughout)

so epoch 1 has weight 0, epoch N + 1 and later the full beta. The weight is
the model's `kl_weight` variable, set once at the start of each epoch, so a
run resumed at an epoch boundary continues the same schedule. Only the
training loss changes: the reported ELBO always has KL weight 1.

Example:

    [kl_weight(1.0, 4, e) for e in range(1, 7)]  # [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
"""

from probvae._keras import keras
from probvae.registry import OPTIMIZERS, SCHEDULES

__all__ = ["constant", "cosine", "reduce_on_plateau", "learning_rate_schedule", "make_optimizer", "kl_weight",
           "set_kl_weight"]


def constant(train_config, steps_per_epoch: int):
    """The step size `learning_rate` throughout."""
    return train_config.learning_rate


def cosine(train_config, steps_per_epoch: int):
    """A half cosine (Loshchilov & Hutter 2017, without restarts) over all
    N = epochs * steps_per_epoch steps n:

        lr(n) = lr * (f + (1 - f) * (1 + cos(pi * min(n, N) / N)) / 2),   f = lr_final

    A function of the optimizer's iteration count, which checkpoints carry,
    so a resumed run continues on the same curve.
    """
    total = max(1, train_config.epochs * int(steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        train_config.learning_rate, decay_steps=total, alpha=train_config.lr_final)


def reduce_on_plateau(train_config, history: dict, epoch: int, step_size: float) -> float:
    """The step size of the epoch after `epoch` under the "plateau" schedule.

    With r = lr_plateau_factor, P = lr_plateau_patience and the floor
    f = lr_plateau_min * learning_rate: when P epochs have passed since both
    the best validation ELBO (history["best"]["epoch"]) and the last
    reduction (history["lr_reduced_at"], 0 if none), the step size becomes
    max(r * step_size, f); otherwise it stays. A pure function of the
    run's history, which checkpoints carry, so a resumed run reduces at the
    same epochs.
    """
    best = history.get("best") or {"epoch": epoch}
    since = max(best["epoch"], history.get("lr_reduced_at") or 0)
    floor = train_config.lr_plateau_min * train_config.learning_rate
    if epoch - since >= train_config.lr_plateau_patience and step_size > floor:
        return max(train_config.lr_plateau_factor * step_size, floor)
    return step_size


def learning_rate_schedule(train_config, steps_per_epoch: int):
    """The step size of a `TrainConfig`: a float, or a schedule of the
    optimizer's step, from the schedule registered as `lr_schedule`."""
    return SCHEDULES[train_config.lr_schedule].load()(train_config, steps_per_epoch)


def make_optimizer(train_config, steps_per_epoch: int = 1):
    """The tf-keras optimizer registered as `train_config.optimizer`, with its step size schedule."""
    return OPTIMIZERS[train_config.optimizer].load()(
        learning_rate=learning_rate_schedule(train_config, steps_per_epoch))


def kl_weight(beta: float, warmup_epochs: int, epoch: int) -> float:
    """The KL weight of epoch `epoch` (1-based): beta * min(1, (epoch - 1) / warmup_epochs)."""
    if warmup_epochs <= 0:
        return float(beta)
    return float(beta) * min(1.0, max(0, epoch - 1) / warmup_epochs)


def set_kl_weight(model, train_config, epoch: int) -> float:
    """Set `model.kl_weight` for `epoch` from the config's beta and warm-up; returns it."""
    weight = kl_weight(train_config.beta, train_config.kl_warmup_epochs, epoch)
    model.kl_weight.assign(weight)
    return weight
