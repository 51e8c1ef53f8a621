"""The tutorial's workload: its model, loss, optimizer, metric and data.

The model is the one of "Writing a training loop from scratch" as
`examples/mnist_custom_loop.py` trains it: Conv2D(64, 3, relu), Flatten,
Dense(10) logits, with SparseCategoricalCrossentropy(from_logits=True), Adam
and SparseCategoricalAccuracy. The data is synthetic and MNIST-shaped
(28x28x1 float32 images in [0, 1), labels 0-9), so the benchmark needs no
download and every loop sees the same batches.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from customfit import CustomModel

IMAGE_SHAPE = (28, 28, 1)
CLASSES = 10


class Net(CustomModel):
    """The tutorial's convnet: one convolution, then a linear classifier."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(64, 3, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.classifier = keras.layers.Dense(CLASSES)

    def call(self, x, training=False):
        return self.classifier(self.flatten(self.conv(x)))


def loss_function() -> keras.losses.Loss:
    """The tutorial's loss: cross-entropy on logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy_metric() -> keras.metrics.Metric:
    """The tutorial's metric."""
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def build_model(
    *,
    seed: int = 0,
    steps_per_execution: int = 1,
    jit_compile: bool | str = "auto",
    model_class: type[Net] = Net,
) -> Net:
    """Returns a fresh, compiled tutorial model; same seed, same weights.

    Args:
        seed: Seeds Python, NumPy and Keras before the model is built.
        steps_per_execution: Passed to `compile`.
        jit_compile: Passed to `compile` ("auto" is fit's default: no XLA
            on a CPU-only machine).
        model_class: `Net` or a subclass (the trace counter uses one).

    Returns:
        A compiled model; its variables are created by the first step, as
        in the tutorial.
    """
    keras.utils.set_random_seed(seed)
    model = model_class()
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=loss_function(),
        metrics=[accuracy_metric()],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model


def make_arrays(samples: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Returns MNIST-shaped synthetic `(images, labels)` arrays.

    Args:
        samples: How many examples.
        seed: Seeds the generator, so every run sees the same data.
    """
    rng = np.random.default_rng(seed)
    images = rng.random((samples, *IMAGE_SHAPE), dtype=np.float32)
    labels = rng.integers(0, CLASSES, size=samples).astype("int32")
    return images, labels


def make_dataset(
    samples: int, batch_size: int, *, prefetch: bool = True, seed: int = 0
) -> tf.data.Dataset:
    """Returns the batched synthetic data as a `tf.data.Dataset`.

    Args:
        samples: Examples per epoch; a last batch smaller than `batch_size`
            is kept (a ragged last batch), as `model.fit` keeps it.
        batch_size: Examples per batch.
        prefetch: Whether to end the pipeline with
            `prefetch(tf.data.AUTOTUNE)`, as the tutorial does.
        seed: Seeds the data.
    """
    dataset = tf.data.Dataset.from_tensor_slices(make_arrays(samples, seed))
    dataset = dataset.batch(batch_size)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset
