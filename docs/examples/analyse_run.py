"""Analyse a trained run through probvae's distributions.

Loads a run in a fresh process, encodes the test set, and reports:
- the mean posterior location of each class (when the data have labels);
- the KL of each latent dimension to the prior, averaged over the test set;
- a Monte Carlo estimate of KL(aggregate posterior || prior), the part of the
  prior the encoder never uses.
It works for every prior, likelihood and latent hierarchy, and for runs on
image folders at their own --image-shape.
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

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("run_dir")
parser.add_argument("--n", type=int, default=2000, help="test images to encode")
parser.add_argument("--out", default="analysis.png")
args = parser.parse_args()

vae = probvae.load_run(args.run_dir)
config = probvae.runs.load_config(args.run_dir)
splits = probvae.data.load_config_dataset(config)  # the run's data, at the run's image shape
images, labels = splits.x_test[: args.n], splits.y_test
x = vae.prepare_inputs(images)  # raw uint8 in; binarized once for a Bernoulli likelihood
means = probvae.encode(vae, x).loc  # [n, D] posterior locations, every level of a hierarchy

# Per-dimension KL to the prior, for any prior (a mixture or VampPrior has no
# closed form: the marginal KLs are estimated at the ELBO's z).
terms = vae.elbo_terms(x, seed=tf.constant([0, 0]))
kl_dims = tf.reduce_mean(vae.latent_statistics(terms).kl_per_dimension, axis=0).numpy()  # [D], nats

# KL(q(z) || p(z)) for the aggregate posterior q(z) = (1/n) sum_j q(z|x_j), by
# Monte Carlo at z_i ~ q(z|x_i): log q(z_i) = logmeanexp_j log q(z_i|x_j).
z = terms.z  # [n, D], one draw per image
log_q = tf.concat([tf.reduce_logsumexp(terms.posterior.log_prob(z[i: i + 50, tf.newaxis, :]), axis=1)
                   for i in range(0, len(means), 50)], axis=0) - np.log(len(means))  # [n]
kl_agg = tf.reduce_mean(log_q - terms.prior.log_prob(z)).numpy()

print(f"encoded {len(means)} test images into {vae.latent_dim} latent dimensions")
print("mean KL per dimension (nats): " + " ".join(f"{v:.2f}" for v in kl_dims))
print(f"KL(aggregate posterior || prior) ~ {kl_agg:.3f} nats (Monte Carlo, {len(means)} samples)")

figure, axis = plt.subplots(figsize=(6, 5))
if labels is not None:
    labels = labels[: len(means)]
    for label in np.unique(labels):
        centre = means[labels == label].mean(axis=0)
        print(f"class {label}: mean posterior location {np.round(centre[:2].astype(float), 2).tolist()}")
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
