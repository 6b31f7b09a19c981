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

__all__ = ["parse_args", "config_from_args", "main"]


def parse_args(argv=None, prog="probvae fit"):
    """The command line as flags; `args.sections` ({section: field names}) says which set the config."""
    # --import, and the modules of the run resumed or started from, before the registries make the choices
    common.import_components(argv, prog, run_flags=("--resume", "--init-from"))
    parser = common.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="start from a named configuration (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets, one a line, and exit")
    sections = common.add_config_arguments(parser, {"train": "training"})
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", help="where to write the run (default: runs/<dataset>-<timestamp>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    run.add_argument("--snapshot-latents", action="store_true",
                     help="draw the 2-D latent space after each epoch and animate it (RUN_DIR/latent_evolution/)")
    run.add_argument("--dry-run", action="store_true", help="check flags, data and run directory; train nothing")
    args = parser.parse_args(argv)
    args.sections = sections
    return args


def config_from_args(args):
    """The `RunConfig` the command line asks for: the resumed run's config, the
    preset or the defaults, with the flags given on top (checked, before
    TensorFlow loads). A flag of a component the config does not choose is
    refused, naming the component; a preset may carry such fields."""
    from probvae import presets, runs
    from probvae.config import RunConfig
    from probvae.errors import UserError

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
    config = base.replace(**overrides)
    for section, values in overrides.items():
        for name in values:
            owner = common.component_of(getattr(config, section), name)
            if owner is not None:
                raise UserError(f"--{name.replace('_', '-')} belongs to {owner}, which this run does not use; "
                                "drop the flag or choose that component")
    return config


def main(argv=None, prog="probvae fit"):
    """`fit.py` / `probvae fit`: train, resume or check a run."""
    args = parse_args(argv, prog)
    from probvae import presets, runs

    if args.list_presets:
        print(presets.describe())
        return
    config = config_from_args(args)
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
