import numpy as np
import pytest

from conftest import tiny_model_config
from probvae.benchmarks import measure
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.model import VAE


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
    model = VAE(ModelConfig(arch="conv", image_shape=(28, 28, 1)))
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


def test_matmul_contender_counts_two_n_cubed():
    assert measure.matmul_contender(16)() == 2 * 16**3
    tiny = VAE(tiny_model_config(arch="mlp"))
    assert measure.forward_flops(tiny)["decoder"] == 2 * (2 * 7 + 7 * 64)
