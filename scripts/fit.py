"""Train a VAE and write its run directory.

    python scripts/fit.py --dataset fashion_mnist
    python scripts/fit.py --dataset shapes --arch mlp --latent-dim 2 --epochs 5
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from probvae import cli  # noqa: E402

cli.prefer_onednn()  # before TensorFlow is imported


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="fashion_mnist",
                      help="fashion_mnist, mnist, kmnist, cifar10, shapes (built-in, offline) or npz:PATH")
    data.add_argument("--data-dir", help="folder with IDX files and TFDS data")
    data.add_argument("--validation-fraction", type=float, help="share of train held out (default 0.1)")
    data.add_argument("--max-train-examples", type=int, help="train on the first N examples only")
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=["conv", "mlp"])
    model.add_argument("--latent-dim", type=int)
    model.add_argument("--posterior", choices=["full", "diag"])
    model.add_argument("--likelihood", choices=["bernoulli", "normal"])
    model.add_argument("--normal-scale", choices=["shared", "channel", "pixel"])
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--beta", type=float, help="KL weight in the training loss (reported ELBO keeps 1)")
    train.add_argument("--seed", type=int)
    train.add_argument("--eager", action="store_true", default=None, help="run the step eagerly, for debugging")
    train.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the step with XLA (default: the MLP always, conv on a GPU)")
    train.add_argument("--mixed-precision", action="store_true", default=None,
                       help="float16 compute with loss scaling (for GPUs)")
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", help="where to write the run (default: runs/<timestamp>)")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


SECTIONS = {
    "data": ("dataset", "data_dir", "validation_fraction", "max_train_examples"),
    "model": ("arch", "latent_dim", "posterior", "likelihood", "normal_scale"),
    "train": ("epochs", "batch_size", "learning_rate", "beta", "seed", "eager", "jit_compile", "mixed_precision"),
}


def main():
    args = parse_args()
    from probvae import runs
    from probvae.config import RunConfig

    overrides = {
        section: {name: getattr(args, name) for name in names if getattr(args, name) is not None}
        for section, names in SECTIONS.items()
    }
    config = RunConfig().replace(**overrides)  # validated before TensorFlow loads
    from probvae.training import fit

    run_dir = args.run_dir or runs.new_run_dir("runs", prefix=f"{config.data.dataset.replace(':', '-').replace('/', '_')}-")
    print(f"run directory: {os.path.abspath(run_dir)}")
    fit(config, run_dir, overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run(main)
