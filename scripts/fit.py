"""Train a VAE and write its run directory.

    python scripts/fit.py --dataset fashion_mnist
    python scripts/fit.py --dataset shapes --arch mlp --latent-dim 2 --epochs 5
    python scripts/fit.py --preset mnist-conv-2d --epochs 5      # flags override the preset
    python scripts/fit.py --preset celeba-faces --dataset folder:~/faces --image-shape 64,64,3
    python scripts/fit.py --list-presets
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from probvae import cli  # noqa: E402
from probvae.config import LIKELIHOODS, OPTIMIZERS, PRIORS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="start from a named configuration (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets, one a line, and exit")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="fashion_mnist (default), mnist, kmnist, cifar10, celeb_a, shapes "
                      "(built-in, offline), npz:PATH or folder:PATH (JPEG/PNG images, streamed)")
    data.add_argument("--data-dir", help="folder with IDX files and TFDS data")
    data.add_argument("--validation-fraction", type=float, help="share of train held out (default 0.1)")
    data.add_argument("--max-train-examples", type=int, help="train on the first N examples only")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=["conv", "mlp"])
    model.add_argument("--latent-dim", type=int)
    model.add_argument("--posterior", choices=["full", "diag"])
    model.add_argument("--likelihood", choices=LIKELIHOODS, help="bernoulli binarizes the data; the others do not")
    model.add_argument("--prior", choices=PRIORS)
    model.add_argument("--prior-components", type=int, help="mixture components or VampPrior pseudo-inputs")
    model.add_argument("--normal-scale", choices=["shared", "channel", "pixel"])
    model.add_argument("--image-shape", type=cli.image_shape_argument,
                       help="H,W,C; folder and celeb_a images are resized and cropped to it")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--beta", type=float, help="KL weight in the training loss (reported ELBO keeps 1)")
    train.add_argument("--kl-warmup-epochs", type=int, help="raise the KL weight linearly from 0 to beta")
    train.add_argument("--free-bits", type=float, help="nats of KL per latent dimension left free in training")
    train.add_argument("--seed", type=int)
    train.add_argument("--eager", action="store_true", default=None, help="run the step eagerly, for debugging")
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", help="where to write the run (default: runs/<timestamp>)")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


SECTIONS = {
    "data": ("dataset", "data_dir", "validation_fraction", "max_train_examples"),
    "model": ("arch", "latent_dim", "posterior", "likelihood", "normal_scale", "prior", "prior_components",
              "image_shape"),
    "train": ("epochs", "batch_size", "optimizer", "learning_rate", "beta", "kl_warmup_epochs", "free_bits",
              "seed", "eager"),
}


def main():
    args = parse_args()
    from probvae import presets, runs
    from probvae.config import RunConfig

    if args.list_presets:
        print(presets.describe())
        return

    overrides = {
        section: {name: getattr(args, name) for name in names if getattr(args, name) is not None}
        for section, names in SECTIONS.items()
    }
    base = presets.get(args.preset) if args.preset else RunConfig()
    config = base.replace(**overrides)  # validated before TensorFlow loads
    from probvae.training import fit

    name = args.preset or config.data.dataset.replace(":", "-").replace("/", "_")
    run_dir = args.run_dir or runs.new_run_dir("runs", prefix=f"{name}-")
    print(f"run directory: {os.path.abspath(run_dir)}")
    fit(config, run_dir, overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run(main)
