import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import ops

from probvae._keras import keras
from probvae.benchmarks import measure
from probvae.config import ModelConfig
from probvae.model import VAE

from conftest import tiny_model_config


def test_layer_flops_follow_the_formulas():
    dense = keras.layers.Dense(7)
    dense.build((None, 5))
    assert measure.layer_flops(dense) == 2 * 5 * 7
    conv = keras.Sequential([keras.layers.InputLayer(input_shape=(8, 6, 3)),
                             keras.layers.Conv2D(4, 3, strides=2, padding="same")])
    # Output 4 x 3 positions, each 3 * 3 * 3 inputs times 4 filters.
    assert measure.layer_flops(conv) == 2 * (4 * 3) * (3 * 3 * 3 * 4)
    transposed = keras.Sequential([keras.layers.InputLayer(input_shape=(4, 3, 5)),
                                   keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")])
    # Each of the 4 x 3 input positions scatters 5 channels through a 3 x 3 x 2 kernel.
    assert measure.layer_flops(transposed) == 2 * (4 * 3) * (3 * 3 * 5 * 2)


def test_forward_flops_of_the_conv_model():
    model = VAE(ModelConfig(arch="conv", latent_dim=32, posterior="full", image_shape=(28, 28, 1)))
    flops = measure.forward_flops(model)
    # Encoder: conv 1->32 at 14x14, conv 32->64 at 7x7, dense 3136->256, dense 256->560 (32 + 32*33/2).
    encoder = 2 * (14 * 14 * 9 * 32 + 7 * 7 * 9 * 32 * 64 + 3136 * 256 + 256 * 560)
    # Decoder: dense 32->256, 256->3136, transposed 64->64 from 7x7, 64->32 from 14x14, conv 32->1 at 28x28.
    decoder = 2 * (32 * 256 + 256 * 3136 + 7 * 7 * 9 * 64 * 64 + 14 * 14 * 9 * 64 * 32 + 28 * 28 * 9 * 32)
    assert flops == {"encoder": encoder, "decoder": decoder}


def test_alternate_runs_a_warm_up_then_rounds_in_turn():
    calls = []

    def contender(name, units):
        def run():
            calls.append(name)
            return units
        return run

    rates = measure.alternate({"a": contender("a", 10), "b": contender("b", 20)}, repeats=3)
    assert calls == ["a", "b"] * 4
    assert len(rates["a"].values) == 3 and all(r > 0 for r in rates["a"].values)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    ratio = measure.paired_ratio(measure.Rates([2.0, 4.0, 6.0]), measure.Rates([1.0, 1.0, 3.0]))
    assert ratio == 2.0  # ratios 2, 4, 2
    assert measure.Rates([3.0, 1.0, 2.0]).to_dict()["median"] == 2.0


def test_peak_memory_is_at_least_the_current_resident_size():
    psutil = pytest.importorskip("psutil")
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    resident = psutil.Process().memory_info().rss / 2**20
    assert block.sum() > 0 and resident > 64
    assert measure.peak_memory_mb() >= resident - 1


# Ops that multiply and add; the others (bias, activations, batch norm) are not in the formulas.
MULTIPLY_ADD_OPS = ("MatMul", "Conv2D", "Conv2DBackpropInput")


def graph_flops(fn, *specs) -> dict:
    """FLOPs per op type of the graph `fn` traces for fully defined `specs`, as
    TensorFlow's own op statistics (its profiler's registry) count them."""
    function = fn if hasattr(fn, "get_concrete_function") else tf.function(fn)
    graph = function.get_concrete_function(*specs).graph
    counts = {}
    for op in graph.get_operations():
        try:
            value = ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # no statistics registered for this op type
            continue
        counts[op.type] = counts.get(op.type, 0) + int(value or 0)
    return counts


def multiply_add_flops(counts) -> int:
    return sum(counts.get(name, 0) for name in MULTIPLY_ADD_OPS)


@pytest.mark.parametrize("changes", [
    dict(arch="mlp", hidden_units=(7, 3)),
    dict(arch="gated", hidden_units=(5,), latent_dim=3),
    # Odd sizes, a stride-1 5x5 stage, two channels, batch norm, a cropped decoder.
    dict(arch="conv", conv_layers=((4, 3, 2), (6, 5, 1)), batch_norm=True, dense_units=5, image_shape=(7, 6, 2)),
    dict(arch="conv", conv_filters=(3, 5), dense_units=0, posterior="diag"),
], ids=["mlp", "gated", "conv-batch-norm", "conv-no-dense"])
def test_forward_flops_equal_tensorflows_count_of_the_traced_graph(changes):
    model = VAE(tiny_model_config(**changes))
    flops = measure.forward_flops(model)
    # One example through the encoder and the posterior's parameter layer, one latent through the decoder.
    encoder = graph_flops(lambda x: model.posterior_params(model.encoder(x)), tf.TensorSpec((1,) + model.image_shape))
    decoder = graph_flops(lambda z: model.decoder(z), tf.TensorSpec((1, model.latent_dim)))
    assert multiply_add_flops(encoder) > 0 and multiply_add_flops(decoder) > 0
    assert flops == {"encoder": multiply_add_flops(encoder), "decoder": multiply_add_flops(decoder)}
    if changes["arch"] != "conv":
        # Dense layers only: 2 * inputs * units of every kernel (a gated kernel is [in, 2 units]).
        kernels = [w for part in (model.encoder, model.posterior_params) for w in part.weights if w.shape.rank == 2]
        assert flops["encoder"] == sum(2 * w.shape[0] * w.shape[1] for w in kernels)


def test_matmul_contender_counts_the_flops_of_the_matmul_it_runs():
    run = measure.matmul_contender(16)
    product = next(cell.cell_contents for cell in run.__closure__
                   if hasattr(cell.cell_contents, "get_concrete_function"))
    counted = graph_flops(product, tf.TensorSpec((16, 16)), tf.TensorSpec((16, 16)))
    assert counted["MatMul"] == 2 * 16**3  # 16^2 outputs, each 16 multiply-adds
    assert run() == multiply_add_flops(counted)
    tiny = VAE(tiny_model_config(arch="mlp"))
    # Decoder of the tiny MLP: dense 2 -> 7, dense 7 -> 64 (8 x 8 x 1 logits).
    assert measure.forward_flops(tiny)["decoder"] == 2 * (2 * 7 + 7 * 64)
