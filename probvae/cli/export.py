"""Export a trained run as a TensorFlow SavedModel that loads without probvae.

    probvae export runs/fashion_mnist-20250101-120000 exported/fm
    python -c "import tensorflow as tf; m = tf.saved_model.load('exported/fm'); print(list(m.signatures))"

Signatures: encode (images -> posterior loc, scale_tril), decode (z ->
likelihood mean and parameters), log_likelihood (images, num_samples -> nats);
see probvae/export.py.
"""

import argparse

from probvae.cli import common

__all__ = ["parse_args", "main"]


def parse_args(argv=None, prog="probvae export"):
    common.import_components(argv, prog)  # before the registries make the choices
    parser = common.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by fit.py")
    parser.add_argument("out", metavar="OUT", help="a new folder for the SavedModel, in an existing folder")
    parser.add_argument("--checkpoint", help="checkpoint name or path, latest or best (default: the run's model: "
                        "the best validation epoch's weights if the run kept them, else the latest)")
    return parser.parse_args(argv)


def main(argv=None, prog="probvae export"):
    """`probvae export`: write the SavedModel and print its path."""
    import os

    args = parse_args(argv, prog)
    from probvae import runs

    runs.load_config(args.run_dir)  # a wrong folder fails here, before TensorFlow loads
    runs.check_new_folder(args.out, "the exported model")
    from probvae.export import export_run

    path = export_run(args.run_dir, args.out, args.checkpoint)
    print(f"SavedModel with signatures encode, decode, log_likelihood written to {os.path.abspath(path)}")
