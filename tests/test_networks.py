import numpy as np
import pytest
import tensorflow as tf

from probvae import networks
from probvae._keras import keras
from probvae.networks.conv import decoder_start_shape, encoder_conv_layers
from probvae.networks.dense import GatedDense

from conftest import tiny_model_config


def parameter_count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def test_default_conv_architecture_is_unchanged():
    # conv_filters (4, 6), dense 5, latent 2, 8x8x1 images, by hand:
    # encoder: 3x3 convs 1->4 (40) and 4->6 (222); dense 2*2*6=24 -> 5 (125).
    # decoder: dense 2->5 (15), 5->24 (144); transposed 6->6 (330), 6->4 (220); conv 4->1 (37).
    config = tiny_model_config()
    assert encoder_conv_layers(config) == ((4, 3, 2), (6, 3, 2))
    encoder, decoder = networks.encoder(config), networks.decoder(config, 1)
    assert parameter_count(encoder) == 40 + 222 + 125
    assert parameter_count(decoder) == 15 + 144 + 330 + 220 + 37
    assert [type(layer).__name__ for layer in decoder.layers] == [
        "Dense", "Dense", "Reshape", "Conv2DTranspose", "Conv2DTranspose", "Conv2D"]


def test_layer_specs_batch_norm_and_no_dense_layer():
    config = tiny_model_config(conv_layers=((3, 5, 1), (5, 3, 2)), decoder_conv_layers=((4, 3, 2),),
                               batch_norm=True, dense_units=0, image_shape=(7, 7, 2))
    encoder, decoder = networks.encoder(config), networks.decoder(config, 4)
    names = [type(layer).__name__ for layer in encoder.layers]
    assert names == ["Conv2D", "BatchNormalization", "Activation", "Conv2D", "BatchNormalization", "Activation",
                     "Flatten"]
    assert [layer.kernel_size for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)] == [(5, 5), (3, 3)]
    assert encoder.output_shape == (None, 4 * 4 * 5)  # 7 -> 7 (stride 1) -> 4 (stride 2, same padding)
    # One stride-2 decoder stage: start ceil(7/2) = 4 with the encoder's 5 filters, 8x8 out, cropped to 7x7.
    assert decoder_start_shape(config) == (4, 4, 5)
    assert decoder.output_shape == (None, 7, 7, 4)
    assert "Dense" == type(decoder.layers[0]).__name__ and decoder.layers[0].units == 4 * 4 * 5


def test_the_crop_keeps_the_centre():
    # 28x28 through four stride-2 stages: 2x2 start, 32x32 out, 2 pixels cropped on each side.
    config = tiny_model_config(conv_layers=((2, 3, 2),) * 4, dense_units=0, image_shape=(28, 28, 1))
    decoder = networks.decoder(config, 1)
    crop = decoder.layers[-1]
    assert isinstance(crop, keras.layers.Cropping2D) and crop.cropping == ((2, 2), (2, 2))
    full = tf.reshape(tf.range(32 * 32, dtype=tf.float32), [1, 32, 32, 1])
    np.testing.assert_array_equal(crop(full)[0, :, :, 0], full[0, 2:30, 2:30, 0])


def test_bad_image_shapes_are_refused():
    with pytest.raises(ValueError, match="height, width, channels"):
        networks.check_image_shape((8, 8))


def test_gated_dense_layer_against_numpy():
    layer = GatedDense(5)
    x = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    y = layer(x).numpy()
    kernel, bias = (w.numpy().astype(np.float64) for w in layer.dense.weights)
    linear = x @ kernel[:, :5] + bias[:5]  # W x + b
    gate = x @ kernel[:, 5:] + bias[5:]  # V x + c
    np.testing.assert_allclose(y, linear / (1.0 + np.exp(-gate)), rtol=1e-5, atol=1e-6)
    assert y.shape == (3, 5)


def test_gated_networks_mirror_their_hidden_layers():
    config = tiny_model_config(arch="gated", hidden_units=(7, 4))
    encoder, decoder = networks.encoder(config), networks.decoder(config, 2)
    assert [type(layer).__name__ for layer in encoder.layers] == ["Flatten", "GatedDense", "GatedDense"]
    assert [layer.units for layer in decoder.layers if isinstance(layer, GatedDense)] == [4, 7]
    # Each gated layer has twice the parameters of a dense layer of its width:
    # encoder 64 -> 7 -> 4: 2 * (64 * 7 + 7) + 2 * (7 * 4 + 4); decoder 2 -> 4 -> 7 -> 8x8x2.
    assert parameter_count(encoder) == 2 * (64 * 7 + 7) + 2 * (7 * 4 + 4)
    assert parameter_count(decoder) == 2 * (2 * 4 + 4) + 2 * (4 * 7 + 7) + (7 * 128 + 128)
    assert decoder(np.zeros((3, 2), np.float32)).shape == (3, 8, 8, 2)


def test_encoder_and_decoder_families_are_chosen_separately():
    config = tiny_model_config(arch="conv", decoder_arch="gated", hidden_units=(7, 4))
    encoder, decoder = networks.encoder(config), networks.decoder(config, 1)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in encoder.layers)
    assert [layer.units for layer in decoder.layers if isinstance(layer, GatedDense)] == [4, 7]
    assert decoder(np.zeros((3, 2), np.float32)).shape == (3, 8, 8, 1)


def test_bfloat16_refuses_a_conv_net_whose_strides_reach_a_1x1_input():
    """oneDNN's bfloat16 convolution of a 1x1 input returns non-finite numbers on a CPU
    (docs/performance.md): the celeba-faces layers on 8x8 images reach 1x1 before their last
    convolution (8, 4, 2, 1), so bfloat16 is refused there in one line; float32 is not, and
    neither is a net that stops at 2x2."""
    from probvae import networks
    from probvae.config import ModelConfig
    from probvae.errors import UserError

    layers = ((32, 3, 2), (64, 3, 2), (64, 3, 2), (64, 3, 2))
    tiny = ModelConfig(arch="conv", conv_layers=layers, image_shape=(8, 8, 3))
    with pytest.raises(UserError, match="encoder convolution 4 of the conv network takes a 1x1 input"):
        networks.check_precision(tiny, "bfloat16")
    networks.check_precision(tiny, "float32")
    networks.check_precision(tiny, "float16")
    networks.check_precision(ModelConfig(arch="conv", conv_layers=layers[:3], image_shape=(8, 8, 3)), "bfloat16")
    networks.check_precision(ModelConfig(arch="conv", image_shape=(28, 28, 1)), "bfloat16")
    networks.check_precision(ModelConfig(arch="mlp", image_shape=(1, 1, 1)), "bfloat16")
