"""Training on the importance-weighted bound (`--objective iwae --train-samples K`)."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from probvae import objectives
from probvae.config import ModelConfig, TrainConfig
from probvae.model import VAE

SHAPE = (5, 4, 1)


def images(n, seed):
    return tf.constant((np.random.default_rng(seed).uniform(size=(n,) + SHAPE) < 0.4).astype(np.float32))


def model(train_samples, **changes):
    values = dict(arch="mlp", hidden_units=(9,), latent_dim=3, posterior="diag", image_shape=SHAPE)
    values.update(changes)
    return VAE(ModelConfig(**values), train_samples=train_samples)


def copy_weights(source, target):
    target.set_weights(source.get_weights())
    return target


def test_k1_is_the_elbo_objective_at_the_same_sample():
    """Without a closed-form KL both objectives are log p(x|z) + log p(z) - log q(z|x) at one z."""
    changes = dict(prior="vamp", prior_components=4)
    elbo_model = model(0, **changes)
    iwae_model = copy_weights(elbo_model, model(1, **changes))
    x, seed = images(6, 1), tf.constant([4, 5])
    elbo_loss, elbo_parts = elbo_model.training_loss(x, seed)
    iwae_loss, iwae_parts = iwae_model.training_loss(x, seed)
    np.testing.assert_allclose(iwae_loss, elbo_loss, rtol=1e-5)
    np.testing.assert_allclose(iwae_parts.elbo, elbo_parts.elbo, rtol=1e-6)


@pytest.mark.parametrize("changes", [{}, dict(latent_dim=(3, 2), latent_layers=2, level_units=6, prior="mixture")])
def test_k1_with_an_analytic_kl_has_the_elbo_objective_s_expectation(changes):
    """With analytic KLs (the standard prior's; a hierarchy's lower levels) the
    ELBO objective and L_1 differ per sample but agree in expectation."""
    elbo_model = model(0, **changes)
    iwae_model = copy_weights(elbo_model, model(1, **changes))
    x = tf.repeat(images(2, 2), 500, axis=0)  # 500 independent samples of each of 2 images
    seed = tf.constant([6, 7])
    _, parts = elbo_model.training_loss(x, seed)
    loss, _ = iwae_model.training_loss(x, seed)  # -mean_n L_1
    terms = iwae_model.elbo_terms(x, seed)  # the same sample z
    log_w = (terms.parts.reconstruction + terms.prior.log_prob(terms.z) - terms.posterior.log_prob(terms.z)).numpy()
    assert float(loss) == pytest.approx(-log_w.mean(), rel=1e-5)
    elbo = parts.elbo.numpy()
    stderr = np.sqrt(elbo.var() / len(elbo) + log_w.var() / len(log_w))
    assert abs(log_w.mean() - elbo.mean()) < 4 * stderr, (log_w.mean(), elbo.mean(), stderr)


def test_more_samples_give_a_higher_bound_and_the_reported_elbo_stays_the_elbo():
    base = model(0, prior="vamp", prior_components=3)
    x, seed = tf.repeat(images(3, 3), 200, axis=0), tf.constant([8, 9])
    losses = {k: float(copy_weights(base, model(k, prior="vamp", prior_components=3)).training_loss(x, seed)[0])
              for k in (1, 5, 25)}
    assert losses[25] < losses[5] < losses[1], losses
    _, parts = copy_weights(base, model(5, prior="vamp", prior_components=3)).training_loss(x, seed)
    _, elbo_parts = base.training_loss(x, seed)
    np.testing.assert_allclose(parts.elbo, elbo_parts.elbo, rtol=1e-6)


def test_with_the_exact_posterior_the_bound_is_log_p_x_for_every_k():
    """A decoder that ignores z (zero kernels: logits = the last bias b) and
    q(z|x) = p(z) = N(0, I) make every weight log w_k = log p(x) =
    sum_pixels log Bernoulli(x; b), so L_K = log p(x) exactly for every K
    (a bound without its -log K would sit log K above it)."""
    rng = np.random.default_rng(3)
    x = images(4, 5)
    for k in (1, 5, 25):
        vae = model(k)
        vae.training_loss(x, tf.constant([1, 2]))  # builds the weights
        dense = [layer for layer in vae.decoder.layers if layer.get_weights()]  # Dense(9), Dense(20); Reshape
        for layer in dense:
            kernel, bias = layer.get_weights()
            layer.set_weights([np.zeros_like(kernel), rng.normal(size=bias.shape).astype(np.float32)])
        kernel, bias = vae.posterior_params.get_weights()
        raw_scale = np.log(np.expm1(1.0 - 1e-5))  # softplus(raw) + 1e-5 = 1
        vae.posterior_params.set_weights([np.zeros_like(kernel), np.repeat([0.0, raw_scale], 3).astype(np.float32)])
        logits = np.asarray(dense[-1].get_weights()[1], np.float64).reshape(SHAPE)
        pixels = x.numpy().astype(np.float64)
        # log Bernoulli(x; logits) = x * logits - log(1 + exp(logits))
        log_px = (pixels * logits - np.logaddexp(0.0, logits)).reshape(len(pixels), -1).sum(-1)
        loss, _ = vae.training_loss(x, tf.constant([7, k]))
        assert float(loss) == pytest.approx(-log_px.mean(), rel=1e-5, abs=1e-4), k


def test_the_kl_weight_anneals_inside_each_weight():
    log_px = tf.constant([[-3.0, -1.0], [-2.0, -4.0]])  # [K, n]
    log_w = log_px + tf.constant([[-0.5, 0.2], [-1.0, -0.3]])
    no_kl = objectives.iwae_bound(log_w, 0.0, log_px)
    np.testing.assert_allclose(no_kl, np.log(np.mean(np.exp(log_px.numpy()), axis=0)), rtol=1e-6)
    np.testing.assert_allclose(objectives.iwae_bound(log_w, 1.0, log_px),
                               np.log(np.mean(np.exp(log_w.numpy()), axis=0)), rtol=1e-6)


def test_config_checks():
    assert TrainConfig(objective="iwae", train_samples=5).train_samples == 5
    with pytest.raises(ValueError, match="needs the iwae objective"):
        TrainConfig(train_samples=5)
    with pytest.raises(ValueError, match="free bits"):
        TrainConfig(objective="iwae", train_samples=5, free_bits=0.5)
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="vimco")


@pytest.mark.slow
def test_fit_resume_and_load_a_hierarchical_model_trained_on_the_iwae_bound(tmp_path):
    from probvae import data, evaluation, runs, training
    from probvae.config import DataConfig, RunConfig

    config = RunConfig(
        data=DataConfig(dataset="shapes", max_train_examples=60),
        model=ModelConfig(arch="gated", hidden_units=(11,), latent_dim=(3, 2), latent_layers=2, level_units=6,
                          prior="vamp", prior_components=3, posterior="diag"),
        train=TrainConfig(epochs=2, batch_size=16, objective="iwae", train_samples=3, test_iwae_samples=4,
                          eval_batch_size=128, checkpoint_every_steps=0, kl_warmup_epochs=1, jit_compile=False),
    )
    splits = data.load_dataset("shapes", max_train_examples=60)
    splits = dataclasses.replace(splits, x_validation=splits.x_validation[:30], x_test=splits.x_test[:40])
    run_dir = str(tmp_path / "run")
    training.fit(config, run_dir, splits=splits)
    metrics = json.load(open(f"{run_dir}/metrics.json"))
    first = metrics["epochs"][0]["train"]
    assert first["loss"] != pytest.approx(-first["elbo"], abs=1e-3)  # the loss is the bound, the ELBO is reported
    # The run is judged by its validation bound with K = 3, which lies above the validation ELBO.
    bounds = [e["validation"]["iwae_bound"] for e in metrics["epochs"]]
    assert all(e["validation"]["iwae_samples"] == 3 for e in metrics["epochs"])
    assert all(b > e["validation"]["elbo"] for b, e in zip(bounds, metrics["epochs"]))
    assert metrics["best"]["epoch"] == 1 + int(np.argmax(bounds))
    assert metrics["best"]["validation_iwae_bound"] == max(bounds)
    longer = json.loads(open(f"{run_dir}/config.json").read())
    longer["train"]["epochs"] = 3
    open(f"{run_dir}/config.json", "w").write(json.dumps(longer))
    training.fit(RunConfig.from_dict(longer), run_dir, resume=True, splits=splits)
    loaded = runs.open_run(run_dir)
    assert loaded.model.levels and loaded.model.latent_dim == 5 and loaded.model.train_samples == 0
    test = json.load(open(f"{run_dir}/metrics.json"))["test"]
    images = runs.load_config(run_dir)
    result = evaluation.evaluate(loaded.model, splits.x_test, iwae_samples=4, seed=10_000, batch_size=128)
    assert result["elbo"] == pytest.approx(test["elbo"], abs=1e-3) and images.model.latent_layers == 2
    assert test["n_examples"] == result["n_examples"] == 40
