"""Train a VAE and write its run directory.

    probvae fit --dataset fashion_mnist
    probvae fit --dataset shapes --arch mlp --latent-dim 2 --epochs 5
    probvae fit --resume runs/shapes-20250101-120000   # continue a stopped run
    probvae fit --preset mnist-conv-2d --epochs 5      # flags override the preset
    probvae fit --preset celeba-faces --dataset folder:~/faces --image-shape 64,64,3
    probvae fit --list-presets
    probvae fit --strategy mirrored --batch-size 1024   # every GPU of this host (docs/distributed.md)
"""

import argparse
import os

from probvae.cli import common
from probvae.config import OBJECTIVES, STRATEGIES
from probvae.registry import MODEL_REGISTRIES, NETWORKS, TRAIN_REGISTRIES

__all__ = ["parse_args", "main"]


def parse_args(argv=None):
    parser = common.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="start from a named configuration (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets, one a line, and exit")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="fashion_mnist (default), mnist, kmnist, cifar10, celeb_a, shapes "
                      "(built-in, offline), npz:PATH or folder:PATH (JPEG/PNG images, streamed)")
    data.add_argument("--data-dir", help="folder with IDX files and TFDS data")
    data.add_argument("--validation-fraction", type=float, help="share of train held out (default 0.1)")
    data.add_argument("--max-train-examples", type=int, help="train on the first N examples only")
    model = parser.add_argument_group("model")
    model.add_argument("--latent-dim", type=common.latent_sizes_argument,
                       help="dimension of z (default 40); with --latent-layers, one per level from the bottom, "
                       "e.g. 40,40")
    model.add_argument("--latent-layers", type=int,
                       help="stochastic levels: 2 for the hierarchical VAE p(z2) p(z1|z2) p(x|z1,z2) (default 1)")
    model.add_argument("--level-units", type=int,
                       help="hidden width of the lower levels' networks q(z1|x,z2), p(z1|z2) (default 300)")
    model.add_argument("--image-shape", type=common.image_shape_argument,
                       help="H,W,C; folder and celeb_a images are resized and cropped to it")
    model.add_argument("--decoder-arch", choices=NETWORKS.names(), help="decoder family (default: the encoder's --arch)")
    model_fields = common.add_registry_arguments(model, MODEL_REGISTRIES)
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, help="passes over the training images")
    train.add_argument("--batch-size", type=int, help="images per step (the global batch under a --strategy)")
    train.add_argument("--learning-rate", type=float, help="initial step size (default 1e-3)")
    train_fields = common.add_registry_arguments(train, TRAIN_REGISTRIES)
    train.add_argument("--patience", type=int,
                       help="stop after this many epochs without a better validation ELBO (the IWAE bound under "
                       "--objective iwae) (default 0: never)")
    train.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=None,
                       help="evaluate with the weights of the best validation epoch (default: yes)")
    train.add_argument("--beta", type=float, help="KL weight in the training loss (reported ELBO keeps 1)")
    train.add_argument("--kl-warmup-epochs", type=int, help="raise the KL weight linearly from 0 to beta")
    train.add_argument("--objective", choices=OBJECTIVES,
                       help="elbo (default) or iwae, the importance-weighted bound of --train-samples samples")
    train.add_argument("--train-samples", type=int, help="importance samples K of the iwae objective (default 1)")
    train.add_argument("--free-bits", type=float, help="nats of KL per latent dimension left free in training")
    train.add_argument("--seed", type=int, help="seed of the initial weights, the data order and every sample")
    train.add_argument("--deterministic", action="store_true", default=None,
                       help="deterministic ops: with --seed, a CPU run repeats bit for bit")
    train.add_argument("--skip-nonfinite", action="store_true", default=None,
                       help="skip batches with a non-finite loss or gradient instead of stopping")
    train.add_argument("--checkpoint-every", dest="checkpoint_every_steps", type=int, metavar="STEPS",
                       help="save a checkpoint every STEPS steps as well as at each epoch end (default 500; 0: "
                       "epoch ends only)")
    train.add_argument("--test-iwae-samples", type=int,
                       help="importance samples K of the final test log-likelihood (default 100)")
    train.add_argument("--eager", action="store_true", default=None, help="run the step eagerly, for debugging")
    train.add_argument("--steps-per-call", type=int, metavar="N",
                       help="training steps per compiled call (default 0: as many as take about 0.1 s); the "
                       "numbers do not depend on it")
    train.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the step with XLA (default: the MLP always, conv on a GPU)")
    train.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                       help="float16 compute with loss scaling (for GPUs)")
    train.add_argument("--init-from", metavar="RUN_DIR",
                       help="start from the weights of the run in RUN_DIR (its best epoch's) instead of a fresh "
                       "initialisation, e.g. to fine-tune with --objective iwae; same model and data split; the KL "
                       "warm-up runs again unless --kl-warmup-epochs 0")
    train.add_argument("--strategy", choices=STRATEGIES, help="tf.distribute strategy (default auto: multi-worker with "
                       "a TF_CONFIG cluster, mirrored with several GPUs, else one-device); --batch-size is global")
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", help="where to write the run (default: runs/<dataset>-<timestamp>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    run.add_argument("--snapshot-latents", action="store_true",
                     help="draw the 2-D latent space after each epoch and animate it (RUN_DIR/latent_evolution/)")
    run.add_argument("--dry-run", action="store_true", help="check flags, data and run directory; train nothing")
    sections = {
        "data": ("dataset", "data_dir", "validation_fraction", "max_train_examples"),
        "model": ("latent_dim", "latent_layers", "level_units", "image_shape", "decoder_arch") + model_fields,
        "train": ("epochs", "batch_size", "learning_rate", "patience", "keep_best", "beta", "kl_warmup_epochs",
                  "free_bits", "objective", "train_samples", "seed", "deterministic", "skip_nonfinite", "checkpoint_every_steps", "eager",
                  "steps_per_call", "test_iwae_samples", "jit_compile", "mixed_precision", "strategy", "init_from")
        + train_fields,
    }
    common.show_config_defaults(parser, sections)
    args = parser.parse_args(argv)
    args.sections = sections
    return args


def main(argv=None):
    """`fit.py` / `probvae fit`: train, resume or check a run."""
    args = parse_args(argv)
    from probvae import presets, runs
    from probvae.config import RunConfig
    from probvae.errors import UserError

    if args.list_presets:
        print(presets.describe())
        return
    if args.resume and args.run_dir and os.path.abspath(args.run_dir) != os.path.abspath(args.resume):
        raise UserError("--resume RUN_DIR names the run directory; drop --run-dir")
    if args.resume and args.preset:
        raise UserError("--resume continues a run with its saved config; drop --preset")
    overrides = {
        section: {name: getattr(args, name) for name in names if getattr(args, name) is not None}
        for section, names in args.sections.items()
    }
    if args.resume:
        base = runs.resume_config(args.resume)
    else:
        base = presets.get(args.preset) if args.preset else RunConfig()
    config = base.replace(**overrides)  # validated before TensorFlow loads
    name = args.preset or config.data.dataset.replace(":", "-").replace("/", "_")
    run_dir = args.resume or args.run_dir or runs.new_run_dir("runs", prefix=f"{name}-")
    if "TF_CONFIG" not in os.environ:  # (a cluster's workers share RUN_DIR; only the chief locks it)
        runs.RunLock(run_dir).check()
    from probvae import training

    if args.dry_run:
        config, _ = training.prepare_run(config, run_dir, overwrite=args.overwrite, resume=bool(args.resume))
        print(f"dry run: the flags, data and run directory {os.path.abspath(run_dir)} are fine; nothing was "
              f"written\n{config.to_json()}")
        return
    on_epoch_end = None
    if args.snapshot_latents:
        from probvae.analysis.report import LatentSnapshots

        on_epoch_end = LatentSnapshots.for_config(config)
    training.fit(config, run_dir, overwrite=args.overwrite, resume=bool(args.resume), on_epoch_end=on_epoch_end)
