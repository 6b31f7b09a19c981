"""Analyse a trained run through probvae's distributions.

Loads a run in a fresh process, encodes the test set, and reports:
- the mean posterior location of each class (when the data have labels);
- the KL of each latent dimension to the prior, averaged over the test set;
- a Monte Carlo estimate of KL(aggregate posterior || prior), the part of the
  prior the encoder never uses.
It saves a figure of the posterior means of the first two latent dimensions.

    python docs/examples/analyse_run.py RUN_DIR --out analysis.png
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import probvae  # noqa: E402
from probvae.distributions import aggregate_posterior, kl_per_dimension  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("run_dir")
parser.add_argument("--n", type=int, default=2000, help="test images to encode")
parser.add_argument("--out", default="analysis.png")
args = parser.parse_args()

vae = probvae.load_run(args.run_dir)
config = probvae.runs.load_config(args.run_dir)
splits = probvae.load_dataset(config.data.dataset, config.data.data_dir)
images, labels = splits.x_test[: args.n], splits.y_test
q = vae.posterior(images)  # raw uint8 in; batch [n], event [d]
means = q.mean().numpy()  # [n, d]

kl_dims = tf.reduce_mean(kl_per_dimension(q, vae.prior), axis=0).numpy()  # [d], nats
q_agg = aggregate_posterior(q)
z = q_agg.sample(2000, seed=(0, 1))  # [2000, d]
kl_agg = tf.reduce_mean(q_agg.log_prob(z) - vae.prior.log_prob(z)).numpy()

print(f"encoded {len(means)} test images into {vae.latent_dim} latent dimensions")
print("mean KL per dimension (nats): " + " ".join(f"{v:.2f}" for v in kl_dims))
print(f"KL(aggregate posterior || prior) ~ {kl_agg:.3f} nats (Monte Carlo, 2000 samples)")

figure, axis = plt.subplots(figsize=(6, 5))
if labels is not None:
    labels = labels[: len(means)]
    for label in np.unique(labels):
        centre = means[labels == label].mean(axis=0)
        print(f"class {label}: mean posterior location {np.round(centre[:2], 2).tolist()}")
        axis.scatter(means[labels == label, 0], means[labels == label, -1 if vae.latent_dim == 1 else 1],
                     s=4, alpha=0.5, label=str(label))
    axis.legend(title="class", markerscale=3, fontsize=8)
else:
    axis.scatter(means[:, 0], means[:, min(1, vae.latent_dim - 1)], s=4, alpha=0.5)
axis.set_xlabel("posterior mean, z_1")
axis.set_ylabel("posterior mean, z_2")
axis.set_title(f"Test-set posterior means ({config.data.dataset})")
figure.tight_layout()
figure.savefig(args.out, dpi=100)
print(f"figure written to {os.path.abspath(args.out)}")
