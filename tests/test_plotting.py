"""Every plot writes a PNG with content, drawn from a tiny fixed-seed model."""

import os

import numpy as np
import pytest
from PIL import Image

from probvae.analysis import inspection, plot_curves, plotting
from probvae.model import VAE

from conftest import IMAGE_SHAPE, tiny_model_config


def picture(path) -> np.ndarray:
    """The RGB pixels of a non-empty PNG that is not a single flat colour."""
    assert os.path.getsize(path) > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"), np.float64)
    assert pixels.std() > 5.0, f"{path} is (nearly) one flat colour"
    return pixels


def has_colour(pixels, hex_colour, tolerance=3.0) -> bool:
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], np.float64)
    return bool(np.any(np.abs(pixels - target).max(axis=-1) <= tolerance))


@pytest.fixture(scope="module")
def model():
    import tensorflow as tf

    tf.random.set_seed(0)
    return VAE(tiny_model_config(latent_dim=3))


@pytest.fixture(scope="module")
def inputs():
    return (np.random.default_rng(2).uniform(size=(30,) + IMAGE_SHAPE) < 0.4).astype(np.float32)


def test_latent_marginals_page_through_dims_and_mark_collapsed_ones(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((300, 5)) * [1.0, 0.3, 1.0, 2.0, 1.0] + [0.0, 0.0, 1.0, 0.0, 0.0]
    ks = inspection.ks_statistic(samples)
    collapsed = np.array([False, False, False, False, True])
    paths = plotting.plot_latent_marginals(samples, ks, samples.mean(0), samples.std(0), collapsed,
                                           str(tmp_path / "marginals"), per_page=4)
    assert [os.path.basename(p) for p in paths] == ["marginals_page1.png", "marginals_page2.png"]
    first, second = picture(paths[0]), picture(paths[1])
    # The collapsed dimension (index 4, on page 2) has the tinted panel; page 1 has none.
    assert has_colour(second, plotting.COLLAPSED_FACE) and not has_colour(first, plotting.COLLAPSED_FACE)
    single = plotting.plot_latent_marginals(samples[:, :2], ks[:2], samples.mean(0)[:2], samples.std(0)[:2],
                                            collapsed[:2], str(tmp_path / "two"))
    assert [os.path.basename(p) for p in single] == ["two.png"]
    picture(single[0])


def test_latent_summary(tmp_path):
    path = plotting.plot_latent_summary(np.array([0.05, 0.4, 0.01]), np.array([1.2, 0.3, 1e-5]),
                                        np.array([2.0, 0.5, 0.0]), np.array([False, False, True]), 0.01,
                                        str(tmp_path / "summary.png"))
    assert has_colour(picture(path), plotting.COLLAPSED_COLOUR)


def test_posterior_inspection(tmp_path, model, inputs):
    result = inspection.inspect_posterior(model, inputs[:2], num_samples=3, seed=0)
    path = plotting.plot_posterior_inspection(result.inputs, result.reconstructions, result.loc, result.stddev,
                                              result.correlation, str(tmp_path / "posterior.png"), indices=[4, 7])
    picture(path)


def test_reconstructions_and_prior_samples(tmp_path, model, inputs):
    rows = {"input": inputs[:5], "reconstruction": model(inputs[:5]).numpy()}
    picture(plotting.plot_reconstructions(rows, str(tmp_path / "reconstructions.png")))
    _, means, draws = inspection.prior_samples(model, 10, seed=0)
    picture(plotting.plot_prior_samples(means, str(tmp_path / "prior.png"), samples=draws, cols=4))
    picture(plotting.plot_prior_samples(means, str(tmp_path / "prior_means.png")))


def test_latent_scatter_with_and_without_labels(tmp_path, model, inputs):
    loc = model.posterior(inputs).mean().numpy()[:, :2]
    labels = np.arange(len(inputs)) % 3
    picture(plotting.plot_latent_scatter(loc, str(tmp_path / "labelled.png"), labels=labels,
                                         class_names=["a", "b", "c"], dims=(0, 1)))
    fixed = plotting.plot_latent_scatter(loc * 10, str(tmp_path / "fixed.png"), limit=4.0, tight=False)
    again = plotting.plot_latent_scatter(loc, str(tmp_path / "again.png"), limit=4.0, tight=False)
    assert picture(fixed).shape == picture(again).shape  # frames of an animation keep their size


def test_manifold_is_drawn_at_a_whole_number_zoom(tmp_path, model):
    values = inspection.grid_values(4)
    images = inspection.decode_grid(model, (0, 2), values)
    path = plotting.plot_manifold(images, values, str(tmp_path / "manifold.png"), dims=(0, 2))
    picture(path)
    mosaic = plotting.image_mosaic(images)
    assert mosaic.shape == (4 * 9 - 1, 4 * 9 - 1, 1)
    np.testing.assert_array_equal(mosaic[9:17, 18:26], images[1, 2])
    assert np.all(mosaic[8, :] == 1.0)  # the white gap between rows


def test_interpolation_and_training_curves(tmp_path, model, inputs):
    t, _, decoded = inspection.interpolate(model, inputs[0], inputs[1], steps=5)
    picture(plotting.plot_interpolation(inputs[0], inputs[1], decoded, t, str(tmp_path / "interpolation.png")))
    curves = {"epoch": np.array([1, 2, 3])}
    for split, offset in (("train", 0.0), ("validation", 5.0)):
        curves[split] = {"elbo": np.array([-300.0, -250.0, -240.0]) + offset,
                         "reconstruction": np.array([-290.0, -238.0, -226.0]) + offset,
                         "kl": np.array([10.0, 12.0, 14.0])}
    test = {"elbo": -236.0, "reconstruction": -222.0, "kl": 14.0}
    picture(plotting.plot_training_curves(curves, str(tmp_path / "curves.png"), test=test))


def test_training_curves_add_the_gradient_norms_when_recorded(tmp_path, monkeypatch):
    from probvae.analysis import plot_curves

    drawn = []
    monkeypatch.setattr(plot_curves, "save", lambda figure, path: drawn.append(figure) or path)
    curves = {"epoch": np.array([1, 2, 3])}
    for split in ("train", "validation"):
        curves[split] = {name: np.array([-300.0, -250.0, -240.0]) for name in ("elbo", "reconstruction", "kl")}
    plotting.plot_training_curves(curves, str(tmp_path / "three.png"))
    curves["gradient_norm"] = {"mean": np.array([np.nan, 40.0, 38.0]), "max": np.array([np.nan, 61.0, 900.0])}
    plotting.plot_training_curves(curves, str(tmp_path / "four.png"))
    assert [len(figure.axes) for figure in drawn] == [3, 4]
    panel = drawn[1].axes[3]
    assert panel.get_yscale() == "log" and "gradient norm" in panel.get_title()
    (mean, largest) = panel.get_lines()
    np.testing.assert_array_equal(mean.get_ydata(), [np.nan, 40.0, 38.0])
    np.testing.assert_array_equal(largest.get_ydata(), [np.nan, 61.0, 900.0])
    assert [mean.get_label(), largest.get_label()] == ["mean", "largest"]
    monkeypatch.undo()
    picture(plotting.plot_training_curves(curves, str(tmp_path / "drawn.png")))


def test_assemble_gif(tmp_path, model, inputs):
    frames = []
    for epoch in range(3):
        loc = model.posterior(inputs).mean().numpy()[:, :2] * (epoch + 1)
        frames.append(plotting.plot_latent_scatter(loc, str(tmp_path / f"frame{epoch}.png"), limit=4.0,
                                                   tight=False, title=f"epoch {epoch}"))
    path = plotting.assemble_gif(frames, str(tmp_path / "evolution.gif"))
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    with pytest.raises(ValueError, match="at least one frame"):
        plotting.assemble_gif([], str(tmp_path / "empty.gif"))


def test_a_huge_first_epoch_does_not_flatten_the_curves():
    epochs = 40
    rising = -240.0 - 10.0 * np.exp(-np.arange(epochs) / 10.0)  # [40]: -250 rising towards -240
    values = np.stack([rising, rising - 1.0])  # train, validation
    values[:, 0] = -3e10  # the first epoch of a run whose KL weight starts at 0
    low, high = plot_curves._settled_range(values, epochs)
    # The axis spans epochs 4..39 of both curves, with a 5% margin.
    assert low == pytest.approx(values[1, 4:].min() - 0.05 * (values[0, 4:].max() - values[1, 4:].min()))
    assert high == pytest.approx(values[0, 4:].max() + 0.05 * (values[0, 4:].max() - values[1, 4:].min()))
    assert plot_curves._settled_range(values[:, :10], 10) is None  # short runs keep the full range
    assert plot_curves._settled_range(np.stack([rising, rising]), epochs) is None  # nothing to cut


def test_plotting_gathers_every_picture_of_its_modules():
    from probvae.analysis import plot_canvas, plot_images, plot_latents

    for module in (plot_canvas, plot_curves, plot_images, plot_latents):
        for name in module.__all__:
            if name.startswith("plot_") or name in ("image_mosaic", "assemble_gif"):
                assert name in plotting.__all__ and getattr(plotting, name) is getattr(module, name), name
    assert all(hasattr(plotting, name) for name in plotting.__all__)
