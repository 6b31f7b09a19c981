"""Pictures of a VAE: every function takes numpy arrays, saves a PNG and
returns its path. This module gathers them from the modules that draw them,
which with it are the only probvae modules importing matplotlib or seaborn:

- `plot_canvas`: the Agg canvas (no pyplot), the text style, saving, `image_mosaic`;
- `plot_latents`: marginals, per-dimension summary, posterior of examples,
  scatter of posterior means and its animation (`assemble_gif`);
- `plot_images`: reconstructions, prior samples, the decoded grid, interpolations;
- `plot_curves`: training curves and validation curves of several runs.

Images are floats in [0, 1], [..., h, w, c] with c = 1 (drawn grey, black 0
to white 1, always on that fixed scale) or c = 3 (RGB).
"""

from probvae.analysis.plot_canvas import image_mosaic
from probvae.analysis.plot_curves import plot_training_curves, plot_validation_curves
from probvae.analysis.plot_images import plot_interpolation, plot_manifold, plot_prior_samples, plot_reconstructions
from probvae.analysis.plot_latents import (
    COLLAPSED_COLOUR,
    COLLAPSED_FACE,
    assemble_gif,
    plot_latent_marginals,
    plot_latent_scatter,
    plot_latent_summary,
    plot_posterior_inspection,
)

__all__ = [
    "COLLAPSED_COLOUR",
    "COLLAPSED_FACE",
    "image_mosaic",
    "plot_latent_marginals",
    "plot_latent_summary",
    "plot_posterior_inspection",
    "plot_reconstructions",
    "plot_prior_samples",
    "plot_validation_curves",
    "plot_latent_scatter",
    "plot_manifold",
    "plot_interpolation",
    "plot_training_curves",
    "assemble_gif",
]
