"""The one place probvae chooses its Keras.

TensorFlow >= 2.16 ships Keras 3 as `tf.keras`, while `tfp.layers` is built on
Keras 2 (the `tf_keras` package). probvae imports `tf_keras` directly instead of
setting `TF_USE_LEGACY_KERAS`, so importing probvae never changes what a user's
own `tf.keras` is (the commands, processes of their own, set it before
TensorFlow loads: `probvae.cli.common.prepare_process`). Every probvae module
takes Keras from here.
"""

import tf_keras as keras

__all__ = ["keras"]
