"""Time to quality: how long probvae and the plain tf-keras recipe take to
train the same VAE to the same held-out ELBO.

Both train the benchmark's model (`BenchConfig.model_config`, full-covariance
posterior, Bernoulli likelihood) from the same initial weights' seed with
Adam at the same constant step size and batch, on batches of the same
pipeline (`probvae.data.training_batches`, dynamically binarized; probvae's
epochs run one behind keras's, as its first, compiling step takes a batch of
epoch 0), epoch after epoch:

- keras_fit: `probvae.benchmarks.baseline.keras_recipe`, `model.fit` one
  epoch at a time, its KL regularizer weighted 1/2 because stock
  `tfpl.MultivariateNormalTriL` adds it twice (tensorflow/probability#1215),
  so that both minimise the negative ELBO;
- probvae: the compiled step, several per call, as `fit` runs it
  (`contenders.probvae_trainer`).

After every epoch each is evaluated on the same held-out images, binarized
once: an unbiased one-sample estimate of the ELBO, mean over the images
(probvae's `evaluate_elbo`, with the analytic KL; for keras, minus
`model.evaluate`'s loss, whose KL is its regularizer's one-sample estimate
log q(z) - log p(z)). The target is
the ELBO keras reaches after `epochs` epochs; each contender's time is the
training time (evaluations excluded) up to the end of the first epoch at
which it reaches the target, and the ratio is keras's time over probvae's.
probvae may take up to twice the epochs. Data: Fashion-MNIST when it can be
loaded (a subset of `train_images`), else the built-in shapes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

from probvae import data, evaluation
from probvae._keras import keras
from probvae.benchmarks.baseline import keras_recipe
from probvae.benchmarks.contenders import BenchConfig, probvae_trainer
from probvae.errors import UserError
from probvae.model import VAE
from probvae.training import precision

__all__ = ["TARGET_SPEEDUP", "QualityConfig", "QUICK_QUALITY", "time_to_quality", "format_quality"]

# keras's time to the target over probvae's that docs/performance.md aims for (MLP and conv).
TARGET_SPEEDUP = 3.0


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    # The network (a BenchConfig architecture).
    arch: str = "mlp"
    # Training and held-out images (at most: Fashion-MNIST's training split holds 54,000 after validation).
    train_images: int = 60_000
    held_out_images: int = 5_000
    # Epochs of keras_fit that set the target; probvae may take twice as many.
    epochs: int = 10
    # Dataset: "fashion_mnist" (falls back to the shapes when it cannot be loaded) or "shapes".
    dataset: str = "fashion_mnist"


QUICK_QUALITY = QualityConfig(train_images=64, held_out_images=32, epochs=2, dataset="shapes")


def _images(quality: QualityConfig, bench: BenchConfig, log: Callable[[str], None]):
    """(training images, held-out images, the data's name), uint8 [n, h, w, 1]."""
    if quality.dataset == "fashion_mnist":
        try:
            splits = data.load_dataset("fashion_mnist")
            if splits.image_shape[:2] == (bench.image_size, bench.image_size):
                return (splits.x_train[: quality.train_images], splits.x_validation[: quality.held_out_images],
                        "fashion_mnist")
        except UserError as error:
            log(f"time to quality: Fashion-MNIST unavailable ({error}); using the built-in shapes")
    images, _ = data.make_shapes(quality.train_images, seed=bench.seed, size=bench.image_size)
    held_out, _ = data.make_shapes(quality.held_out_images, seed=bench.seed + 1, size=bench.image_size)
    return images, held_out, "shapes"


def _first_reaching(curve, target) -> Optional[dict]:
    for point in curve:
        if point["elbo"] >= target:
            return point
    return None


def time_to_quality(bench: BenchConfig, quality: QualityConfig = QualityConfig(), log=print) -> dict:
    """Train both contenders epoch by epoch; return their curves, the target and the time ratio."""
    config = bench.model_config(quality.arch)
    images, held_out, dataset = _images(quality, bench, log)
    held_out_binary = data.binarize_fixed(held_out, bench.seed)
    steps = len(images) // bench.batch_size
    if steps < 1:
        raise UserError(f"time to quality needs at least {bench.batch_size} training images")

    keras.utils.set_random_seed(bench.seed)
    recipe = keras_recipe(config, bench.learning_rate, bench.baseline_precision(quality.arch), kl_weight=0.5)
    keras_curve, seconds = [], 0.0
    for epoch in range(quality.epochs):
        batches = data.training_batches(images, bench.batch_size, binarize=True, seed=bench.seed, epoch=epoch)
        started = time.perf_counter()
        recipe.fit(batches.map(lambda x: (x, x)), epochs=1, verbose=0)
        seconds += time.perf_counter() - started
        elbo = -float(recipe.evaluate(held_out_binary, held_out_binary, batch_size=bench.eval_batch_size, verbose=0))
        keras_curve.append({"epoch": epoch + 1, "seconds": seconds, "elbo": elbo})
        log(f"time to quality: keras_fit epoch {epoch + 1}: held-out ELBO {elbo:.2f} ({seconds:.1f} s)")
    target = keras_curve[-1]["elbo"]

    keras.utils.set_random_seed(bench.seed)
    with precision.compute_policy(bench.precision_of(quality.arch)):
        model = VAE(config)
    # The benchmark's trainer runs successive epochs of `images` (its first, untimed call compiles).
    trainer = probvae_trainer(model, bench, images, precision.use_jit_compile(quality.arch))
    probvae_curve, seconds = [], trainer.first_step_seconds
    for epoch in range(2 * quality.epochs):
        started = time.perf_counter()
        trainer.run()
        seconds += time.perf_counter() - started
        elbo = evaluation.evaluate_elbo(model, held_out, seed=bench.seed, batch_size=bench.eval_batch_size,
                                        binarization_seed=bench.seed)["elbo"]
        probvae_curve.append({"epoch": epoch + 1, "seconds": seconds, "elbo": elbo})
        log(f"time to quality: probvae epoch {epoch + 1}: held-out ELBO {elbo:.2f} ({seconds:.1f} s)")
        if elbo >= target:
            break
    keras_point, probvae_point = _first_reaching(keras_curve, target), _first_reaching(probvae_curve, target)
    return {
        "dataset": dataset,
        "arch": quality.arch,
        "train_images": int(len(images)),
        "held_out_images": int(len(held_out)),
        "steps_per_epoch": steps,
        "target_elbo": target,
        "keras_fit": {"curve": keras_curve, "reached": keras_point},
        "probvae": {"curve": probvae_curve, "reached": probvae_point},
        # keras's time to the target over probvae's (None: probvae did not reach it in twice the epochs).
        "speedup": keras_point["seconds"] / probvae_point["seconds"] if probvae_point else None,
        "target_speedup": TARGET_SPEEDUP,
    }


def format_quality(result: dict) -> str:
    reached = {name: result[name]["reached"] for name in ("keras_fit", "probvae")}

    def describe(point):
        return "not reached" if point is None else f"{point['seconds']:.1f} s (epoch {point['epoch']})"

    speedup = "n/a" if result["speedup"] is None else f"{result['speedup']:.2f}x"
    return (f"time to quality ({result['arch']}, {result['dataset']}: {result['train_images']} training images, "
            f"held-out ELBO >= {result['target_elbo']:.2f}, keras_fit's after {len(result['keras_fit']['curve'])} "
            f"epochs): keras_fit {describe(reached['keras_fit'])}, probvae {describe(reached['probvae'])}: "
            f"{speedup} faster (target {result.get('target_speedup', TARGET_SPEEDUP):.1f}x: "
            f"{'met' if (result['speedup'] or 0) >= result.get('target_speedup', TARGET_SPEEDUP) else 'missed'})")
