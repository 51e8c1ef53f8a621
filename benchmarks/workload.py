"""The workloads: models, loss, optimizer, metric and synthetic data.

The main one is the model of "Writing a training loop from scratch" as
`examples/mnist_custom_loop.py` trains it: Conv2D(64, 3, relu), Flatten,
Dense(10) logits, with SparseCategoricalCrossentropy(from_logits=True), Adam
and SparseCategoricalAccuracy, on MNIST-shaped data (28x28x1 float32 images
in [0, 1), labels 0-9). `FAMILIES` adds three other kinds of model with the
same loss, optimizer and metric: MobileNetV3Small (no weights, 32x32x3
images), an Embedding + LSTM classifier and a small Transformer block (token
sequences of length 32). All data is synthetic, so the benchmark needs no
download and every loop sees the same batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
    compile_model(model, steps_per_execution, jit_compile)
    return model


def compile_model(
    model: keras.Model, steps_per_execution: int, jit_compile: bool | str
) -> None:
    """Compiles `model` with the tutorial's optimizer, loss and metric."""
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=loss_function(),
        metrics=[accuracy_metric()],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )


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


SEQUENCE_LENGTH = 32
VOCABULARY = 1000


def mobilenet() -> keras.Model:
    """MobileNetV3Small from keras.applications: no weights, 32x32x3 input."""
    inputs = keras.Input((32, 32, 3))
    network = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        weights=None,
        classes=CLASSES,
        include_preprocessing=False,
        classifier_activation=None,
    )
    return CustomModel(inputs, network(inputs))


def lstm() -> keras.Model:
    """An Embedding + LSTM classifier of token sequences."""
    inputs = keras.Input((SEQUENCE_LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 32)(inputs)
    x = keras.layers.LSTM(32)(x)
    return CustomModel(inputs, keras.layers.Dense(CLASSES)(x))


def transformer() -> keras.Model:
    """One small Transformer encoder block, then a classifier."""
    inputs = keras.Input((SEQUENCE_LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 32)(inputs)
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16)
    x = keras.layers.LayerNormalization()(x + attention(x, x))
    hidden = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return CustomModel(inputs, keras.layers.Dense(CLASSES)(x))


@dataclasses.dataclass(frozen=True)
class Family:
    """A kind of model the benchmark also drives, and its input.

    Attributes:
        name: The short name in loop keys, e.g. "lstm".
        label: How the tables name it.
        build: Returns a fresh, uncompiled model.
        input_shape: One example's shape.
        dtype: The input's dtype; integer inputs are tokens.
        fraction: Samples per epoch, as a fraction of `--samples`
            (a bigger model gets fewer, to keep epochs short).
    """

    name: str
    label: str
    build: Callable[[], keras.Model]
    input_shape: tuple[int, ...]
    dtype: str = "float32"
    fraction: float = 1.0


FAMILIES = (
    Family(
        "mobilenet", "MobileNetV3Small", mobilenet, (32, 32, 3), "float32", 0.05
    ),
    Family("lstm", "Embedding + LSTM", lstm, (SEQUENCE_LENGTH,), "int32", 0.25),
    Family(
        "transformer",
        "Transformer block",
        transformer,
        (SEQUENCE_LENGTH,),
        "int32",
        0.25,
    ),
)


def build_family_model(
    family: Family,
    *,
    seed: int = 0,
    steps_per_execution: int = 1,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """A fresh, compiled model of `family`; same seed, same weights."""
    keras.utils.set_random_seed(seed)
    model = family.build()
    compile_model(model, steps_per_execution, jit_compile)
    return model


def make_family_dataset(
    family: Family, samples: int, batch_size: int, *, seed: int = 0
) -> tf.data.Dataset:
    """Synthetic batches for `family`: images in [0, 1) or tokens."""
    rng = np.random.default_rng(seed)
    shape = (samples, *family.input_shape)
    if family.dtype == "int32":
        x = rng.integers(0, VOCABULARY, size=shape).astype("int32")
    else:
        x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, CLASSES, size=samples).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
