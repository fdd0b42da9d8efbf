"""Run by tests/test_distribution.py in a subprocess (devices must be configured before
the backend starts):

    python tests/distributed_check.py mirrored|mirrored_sync_bn|data_parallel

trains the same FSNN for two steps on one device and with a distribution over two
logical CPU devices, from the same initial weights, and prints a JSON line with both
loss histories and the largest difference of any weight afterwards."""

import json
import os
import sys

MODE = sys.argv[1]
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
if MODE == "data_parallel":
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
else:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_fsnn import FeedbackSpikingBlock  # noqa: E402


def stage(filters, strides):
    layers = [keras.layers.Conv2D(filters, 3, strides=strides, padding="same")]
    if MODE != "mirrored":  # plain data parallelism has per-replica batch-norm statistics
        layers.append(keras.layers.BatchNormalization(synchronized=MODE == "mirrored_sync_bn"))
    return keras.Sequential(layers)


def build():
    keras.utils.set_random_seed(0)
    block = FeedbackSpikingBlock(
        forward=[stage(4, 1), stage(8, 2)],
        feedback=keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", use_bias=False),
        time_steps=8, neuron="lif", bn_statistics="released_code" if MODE == "mirrored_sync_bn" else "paper",
        name="fsnn")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(block(inputs))))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=MODE == "data_parallel")
    return model


def main():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 8, 8, 1)).astype("float32") * 3
    y = rng.integers(0, 3, 16)
    single = build()
    initial = single.get_weights()
    single_losses = single.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]

    if MODE == "data_parallel":
        import jax

        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        distributed = build()
    else:
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
        devices = strategy.extended.worker_devices
        with strategy.scope():
            distributed = build()
    distributed.set_weights(initial)
    losses = distributed.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                     for a, b in zip(single.get_weights(), distributed.get_weights()))
    print(json.dumps({"devices": len(devices), "single": single_losses, "distributed": losses,
                      "weight_difference": difference,
                      "diagnostics": distributed.get_layer("fsnn").diagnostics()}))


if __name__ == "__main__":
    main()
