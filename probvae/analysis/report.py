"""From a trained run to a folder of pictures: `inspect_run` and the
latent-snapshot hook for training.

`inspect_run(run_dir)` loads the model (`runs.load_run`) and the data its
config names, computes the numbers (`probvae.analysis.inspection`), draws them
(`probvae.analysis.plotting`) and writes, by default into RUN_DIR/plots/:

    latent_marginals.png (or _pageK.png)   aggregate posterior per dimension vs N(0, 1)
    latent_summary.png                     KS, activity and KL per dimension
    latent_marginals.json                  the numbers behind both
    posterior.png                          q(z|x) of chosen examples
    reconstructions.png, prior_samples.png
    latent_scatter.png, manifold.png (manifold_range.png)
    interpolation.png, training_curves.png
    index.html                             every picture with a line on what it shows

`LatentSnapshots` is an `on_epoch_end` hook for `probvae.training.fit`: after
each epoch it draws the posterior means of a fixed set of validation images
to RUN_DIR/latent_evolution/epoch_NNNN.png and rebuilds
RUN_DIR/latent_evolution/latent_evolution.gif from the frames so far.
"""

from __future__ import annotations

import dataclasses
import glob
import html
import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from probvae import data as data_lib
from probvae import evaluation, runs
from probvae.analysis import inspection, plotting
from probvae.errors import UserError

__all__ = ["SNAPSHOT_DIR", "GIF_NAME", "LatentSnapshots", "inspect_run", "write_index"]

SNAPSHOT_DIR = "latent_evolution"
GIF_NAME = "latent_evolution.gif"
# Axis range of the animation frames: the prior puts 99.99% of each coordinate in it.
SNAPSHOT_LIMIT = 4.0


class LatentSnapshots:
    """`fit(..., on_epoch_end=LatentSnapshots(...))`: one latent scatter per epoch and a GIF.

    Args:
      num_examples: how many validation images to encode (the first ones).
      dims: the two latent dimensions drawn.
      binarization_seed: seed of the fixed binarization (the run's split_seed).
      seconds_per_frame: GIF frame duration.
    """

    def __init__(self, num_examples: int = 2000, dims=(0, 1), binarization_seed: int = 0,
                 seconds_per_frame: float = 0.6):
        self.num_examples = num_examples
        self.dims = tuple(dims)
        self.binarization_seed = binarization_seed
        self.seconds_per_frame = seconds_per_frame
        self.frames = []

    @classmethod
    def for_config(cls, config, **kwargs) -> "LatentSnapshots":
        """Snapshots for a run of `config`; a UserError if its latent is 1-D."""
        if config.model.latent_dim < 2:
            raise UserError("--snapshot-latents draws 2-D latents; use --latent-dim 2 or more")
        return cls(binarization_seed=config.data.split_seed, **kwargs)

    def __call__(self, epoch: int, model, splits, run_dir: str) -> str:
        directory = os.path.join(run_dir, SNAPSHOT_DIR)
        if epoch == 1 or not self.frames:
            # A new run: frames of an earlier run in this folder do not belong to it.
            for stale in glob.glob(os.path.join(directory, "epoch_*.png")):
                os.remove(stale)
            self.frames = []
        dims = inspection.choose_dims(np.zeros(model.latent_dim), self.dims)
        images, labels = splits.labelled("validation", self.num_examples)
        x = model.prepare_inputs(images, self.binarization_seed)
        loc = model.location(x).numpy()[:, list(dims)]
        frame = plotting.plot_latent_scatter(
            loc, os.path.join(directory, f"epoch_{epoch:04d}.png"),
            labels=labels,
            class_names=data_lib.CLASS_NAMES.get(splits.name), dims=dims,
            title=f"Epoch {epoch}: posterior means of {len(images)} validation images",
            limit=SNAPSHOT_LIMIT, tight=False)
        self.frames.append(frame)
        return plotting.assemble_gif(self.frames, os.path.join(directory, GIF_NAME), self.seconds_per_frame)


def _prior_name(model) -> str:
    """How captions name the model's prior: "N(0, I)" for the standard Normal of a
    one-level model, else what it is (learned priors, hierarchies)."""
    name = model.config.prior
    if len(model.latent_dims) > 1:
        return f"p(z), the hierarchy's prior ({name} on the top level)"
    if name == "standard_normal":
        return "N(0, I)"
    return f"p(z), the learned {name.replace('_', ' ')} prior"


def _pick_pair(labels, count: int):
    """Two example indices for an interpolation: 0 and the first with another label."""
    if labels is not None:
        for index in range(1, count):
            if labels[index] != labels[0]:
                return 0, index
    return 0, min(1, count - 1)


def _check_indices(indices, count: int, flag: str):
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise UserError(f"{flag} {bad} out of range: the split has examples 0..{count - 1}")
    return indices


def write_index(out_dir: str, title: str, summary: Sequence[str], entries: Sequence[tuple]) -> str:
    """index.html in `out_dir`: `summary` lines, then per (heading, image path,
    explanation) entry the heading, the explanation and the image."""
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}p{max-width:75em}figure{margin:0 0 2.5em 0}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(line)}</p>" for line in summary]
    for heading, path, explanation in entries:
        source = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
        parts += [f"<figure><h2>{html.escape(heading)}</h2>", f"<p>{html.escape(explanation)}</p>",
                  f"<a href='{html.escape(source)}'><img src='{html.escape(source)}' alt='{html.escape(heading)}'></a>",
                  "</figure>"]
    parts.append("</body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w") as stream:
        stream.write("\n".join(parts) + "\n")
    return path


@dataclasses.dataclass
class _Inputs:
    """What every section of the report draws from."""

    model: object
    images: np.ndarray  # uint8 [n, h, w, c]
    x: np.ndarray  # model inputs [n, h, w, c]
    labels: Optional[np.ndarray]
    class_names: Optional[Sequence[str]]
    split: str
    seed: int
    out: Callable[[str], str]  # file name -> path in the output folder


def _marginal_entries(inputs: _Inputs, marginals) -> list:
    latent_dim = inputs.model.latent_dim
    collapsed = [int(u) for u in np.flatnonzero(marginals.collapsed)]
    pages = plotting.plot_latent_marginals(
        marginals.samples, marginals.ks, marginals.mean, marginals.std, marginals.collapsed,
        inputs.out("latent_marginals"),
        title=f"Aggregate posterior marginals against N(0, 1), {len(inputs.x)} {inputs.split} images")
    entries = [("Latent marginals" + (f" ({number}/{len(pages)})" if len(pages) > 1 else ""), page,
                "Per latent dimension: a histogram of one z ~ q(z|x) per held-out image (the aggregate "
                "posterior) with the N(0, 1) density drawn over it; titles give the KS statistic, mean and sd. "
                f"Tinted panels mark collapsed dimensions ({len(collapsed)} of {latent_dim}: {collapsed or 'none'}), "
                "whose posterior ignores the input.")
               for number, page in enumerate(pages, start=1)]
    entries.append(("Per-dimension summary", plotting.plot_latent_summary(
        marginals.ks, marginals.activity, marginals.kl, marginals.collapsed, marginals.threshold,
        inputs.out("latent_summary.png")),
        "KS statistic, activity Var_n E[z_u|x_n] (log scale; below the dashed line a dimension counts as "
        "collapsed) and mean marginal KL in nats, per dimension."))
    return entries


def _example_entries(inputs: _Inputs, chosen: Sequence[int]) -> list:
    model, x, binarize = inputs.model, inputs.x, inputs.model.likelihood_head.binarize
    posterior = inspection.inspect_posterior(model, tf.constant(x[chosen]), num_samples=5, seed=inputs.seed)
    entries = [("Posterior inspection", plotting.plot_posterior_inspection(
        posterior.inputs, posterior.reconstructions, posterior.loc, posterior.stddev, posterior.correlation,
        inputs.out("posterior.png"), indices=chosen),
        "Each row: a held-out input, the means of p(x|z) for five draws z ~ q(z|x), the posterior mean with "
        "+-1 sd per dimension (grey band: the prior's +-1 sd) and the posterior correlation matrix "
        "D^-1/2 L L^T D^-1/2 from the MultivariateNormalTriL scale L.")]
    shown = min(12, len(x))
    rows = {"original": inputs.images[:shown].astype(np.float32) / 255.0} if binarize else {}
    rows["input"] = x[:shown]
    rows["reconstruction"] = model(tf.constant(x[:shown])).numpy()
    entries.append(("Reconstructions", plotting.plot_reconstructions(
        rows, inputs.out("reconstructions.png"), title=f"Reconstructions of the first {shown} {inputs.split} images"),
        "Held-out images" + (" (grey original, then the fixed binarization the model sees)" if binarize else "")
        + " over the mean of p(x|z) at the posterior mean z = E[z|x]."))
    _, prior_means, prior_draws = inspection.prior_samples(model, 64, seed=inputs.seed)
    prior = _prior_name(model)
    entries.append(("Prior samples", plotting.plot_prior_samples(
        prior_means, inputs.out("prior_samples.png"), samples=prior_draws if binarize else None, prior=prior),
        f"64 latents z ~ {prior} decoded: the mean of p(x|z)"
        + (" and one Bernoulli draw x ~ p(x|z) of each, which is what the model's samples really are."
           if binarize else ".")))
    return entries


def _plane_entries(inputs: _Inputs, marginals, plane, grid_size: int, grid_range: Optional[float]) -> list:
    latent_dim = inputs.model.latent_dim
    other = "" if latent_dim == 2 else f"; the other {latent_dim - 2} dimensions held at 0"
    entries = [("Latent space", plotting.plot_latent_scatter(
        marginals.loc[:, list(plane)], inputs.out("latent_scatter.png"), labels=inputs.labels,
        class_names=inputs.class_names, dims=plane, title=f"Posterior means of {len(inputs.x)} {inputs.split} images"),
        f"Posterior means E[z|x] of the held-out images in dimensions {plane}, coloured by label when the data "
        "have labels; dashed circles: the prior's 1 and 2 sd.")]
    values = inspection.grid_values(grid_size)
    entries.append(("Decoded manifold", plotting.plot_manifold(
        inspection.decode_grid(inputs.model, plane, values), values, inputs.out("manifold.png"), dims=plane,
        title=f"Decoded grid z = Phi^-1((i + 0.5) / {grid_size}){other}"),
        f"Means of p(x|z) over a {grid_size}x{grid_size} grid in dimensions {plane}, spaced by the inverse "
        f"normal CDF so each cell holds equal prior mass{other}."))
    if grid_range is not None:
        values = inspection.grid_values(grid_size, limit=grid_range)
        entries.append((f"Decoded manifold over [-{grid_range:g}, {grid_range:g}]", plotting.plot_manifold(
            inspection.decode_grid(inputs.model, plane, values), values, inputs.out("manifold_range.png"),
            dims=plane, title=f"Decoded grid over [-{grid_range:g}, {grid_range:g}]{other}"),
            "The same grid evenly spaced over a fixed range, reaching beyond the prior's bulk."))
    return entries


def _interpolation_entry(inputs: _Inputs, pair) -> tuple:
    x, labels, names = inputs.x, inputs.labels, inputs.class_names
    t, _, decoded = inspection.interpolate(inputs.model, x[pair[0]], x[pair[1]], steps=10)
    titles = [f"#{i}" + (f" {names[labels[i]]}" if labels is not None and names else "") for i in pair]
    return ("Interpolation", plotting.plot_interpolation(x[pair[0]], x[pair[1]], decoded, t,
                                                         inputs.out("interpolation.png"), names=titles),
            f"The straight line between the posterior means of {inputs.split} examples {titles[0]} and "
            f"{titles[1]}, decoded at 10 points.")


def _training_entries(inputs: _Inputs, run_dir: str, metrics: dict) -> list:
    entries = []
    if metrics.get("epochs"):
        entries.append(("Training curves", plotting.plot_training_curves(
            inspection.training_curves(metrics), inputs.out("training_curves.png"), test=metrics.get("test")),
            "Train (mean over the epoch's steps) and validation ELBO with its reconstruction and KL "
            "parts per epoch, nats per example; the star is the final test value. When the run recorded "
            "them, a fourth panel: the training gradients' global norm, mean and largest of each epoch "
            "(log scale), where an unstable step stands out."))
    gif = os.path.join(run_dir, SNAPSHOT_DIR, GIF_NAME)
    if os.path.exists(gif):
        entries.append(("Latent evolution", gif, "Posterior means of validation images after each training "
                        "epoch (fit.py --snapshot-latents), as an animation."))
    return entries


def _summary(run_dir, config, checkpoint, metrics, json_values, data) -> list:
    """The lines at the top of index.html."""
    model = config.model
    summary = [f"Run {os.path.abspath(run_dir)}: {model.arch} encoder, latent {model.latent_dim}, "
               f"{model.posterior} posterior, {model.likelihood} likelihood, checkpoint "
               f"{os.path.basename(checkpoint)}; {data}.",
               f"Collapsed dimensions: {json_values['collapsed_dims'] or 'none'}. "
               "Numbers per dimension: latent_marginals.json."]
    if "test" in metrics:
        test = metrics["test"]
        summary.insert(1, f"Test ELBO {test['elbo']:.2f} +- {test['elbo_stderr']:.2f} nats "
                          f"(reconstruction {test['reconstruction']:.2f}, KL {test['kl']:.2f}).")
    return summary + evaluation_lines(run_dir)


def evaluation_lines(run_dir: str) -> list:
    """One line per evaluation written into the run (scripts/evaluate.py), so
    ELBO, importance-weighted and AIS estimates of log p(x) stand side by side."""
    lines = []
    for result in evaluation.read_evaluations(run_dir):
        try:
            line = (f"{result['split'].capitalize()} split, {result['n_examples']} images, "
                    f"{evaluation.estimator_label(result)}: log p(x) {result['log_likelihood']:.2f} +- "
                    f"{result['log_likelihood_stderr']:.2f} nats (Monte Carlo error "
                    f"{result['log_likelihood_mc_stderr']:.2f}); ELBO {result['elbo']:.2f}")
        except (KeyError, TypeError, AttributeError):
            continue  # not an evaluation result
        if "bdmc" in result:
            b = result["bdmc"]
            line += (f"; BDMC gap {b['gap']:.2f} +- {b['gap_stderr']:.2f} nats on {b['examples']} images "
                     "simulated from the model")
        lines.append(f"{line} ({result['file']}).")
    return lines


def inspect_run(run_dir: str, split: str = "test", out_dir: Optional[str] = None, num_shown: int = 4,
                indices: Optional[Sequence[int]] = None, max_examples: Optional[int] = None,
                dims: Optional[Sequence[int]] = None, grid_size: int = 20, grid_range: Optional[float] = None,
                interpolate: Optional[Sequence[int]] = None, seed: int = 0, checkpoint: Optional[str] = None,
                log: Callable[[str], None] = print, data_dir: Optional[str] = None) -> list:
    """Draw every picture of a trained run and write index.html and latent_marginals.json.

    Args:
      run_dir: a directory written by `probvae.fit`.
      split: the held-out split to look at ("test", "validation" or "train").
      out_dir: where to write (default RUN_DIR/plots).
      num_shown: posterior inspection of the first `num_shown` examples ...
      indices: ... or of these example indices.
      max_examples: use only the first N examples of the split for the statistics.
      dims: the two latent dimensions of the 2-D plots (default: the two most active).
      grid_size: points per axis of the decoded manifold.
      grid_range: also decode a grid over [-grid_range, grid_range].
      interpolate: two example indices to interpolate between.
      seed: seed of every posterior and prior sample.
      checkpoint: checkpoint name or path, "latest" or "best" (default: the
        run's model, its best epoch's weights if it kept them).
      data_dir: read the data from this folder instead of the run's own.

    Returns:
      The paths written (each also passed to `log`): pictures, then
      latent_marginals.json and index.html.

    Raises:
      UserError: no such run or split, or indices or dims out of range
        (checked before anything is drawn).
    """
    if dims is not None:
        inspection.choose_dims(np.ones(runs.load_config(run_dir).model.latent_dim), dims)
    out_dir = out_dir or os.path.join(run_dir, "plots")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"output folder {out_dir} is a file; pass a folder path for the pictures")
    model, config, checkpoint = runs.open_run(run_dir, checkpoint=checkpoint)
    if data_dir is not None:
        config = config.replace(data={"data_dir": data_dir})
    d = config.data
    splits = data_lib.load_config_dataset(config)
    images, labels = splits.labelled(split, max_examples)
    chosen = _check_indices(indices, len(images), "--examples") if indices else list(range(min(num_shown, len(images))))
    if interpolate is not None and len(interpolate) != 2:
        raise UserError(f"--interpolate takes two example indices, got {len(interpolate)}")
    pair = _check_indices(interpolate, len(images), "--interpolate") if interpolate else _pick_pair(labels, len(images))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {out_dir}: {error.strerror}") from None
    inputs = _Inputs(model=model, images=images, x=model.prepare_inputs(images, d.split_seed).numpy(),
                     labels=labels, class_names=data_lib.CLASS_NAMES.get(splits.name), split=split, seed=seed,
                     out=lambda name: os.path.join(out_dir, name))

    marginals = inspection.latent_marginals(model, inputs.x, seed=seed)
    json_values = marginals.to_dict()
    json_values.update({"split": split, "checkpoint": os.path.basename(checkpoint)})
    entries = _marginal_entries(inputs, marginals) + _example_entries(inputs, chosen)
    if model.latent_dim >= 2:
        plane = inspection.choose_dims(marginals.activity, dims)
        json_values["plot_dims"] = list(plane)
        entries += _plane_entries(inputs, marginals, plane, grid_size, grid_range)
    entries.append(_interpolation_entry(inputs, pair))
    metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
    metrics = runs.read_json(metrics_path) if os.path.exists(metrics_path) else {}
    entries += _training_entries(inputs, run_dir, metrics)

    summary = _summary(run_dir, config, checkpoint, metrics, json_values, f"{len(images)} {split} images of "
                       f"{splits.name}")
    written = [path for _, path, _ in entries]
    written.append(runs.write_json(inputs.out("latent_marginals.json"), json_values))
    written.append(write_index(out_dir, f"Inside {os.path.basename(os.path.abspath(run_dir))}", summary, entries))
    for path in written:
        log(path)
    return written
